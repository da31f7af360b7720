"""Server-side batching: requests that arrive together are answered by one model call, each caller getting back
its own rows.

A batch is cut when it holds `max_rows` rows, or when nobody else is on the way: a request counts as on its way
from the moment the server has routed it until it is parsed (`expect` / `submit`). The batcher waits for those
at most `timeout` after the batch's first request was queued; a lone client therefore never waits, and a
crowd fills batches while the previous one runs (the queue is looked at once per turn of the event loop, so
requests that became ready in the same turn share a call). Only requests whose rows have the same shapes share
a call (an input whose size may vary, such as a sequence, batches with its like). A request is never split: one
larger than `max_rows` runs alone. `max_rows=1` turns batching off: one request per call.

The model call itself is blocking TensorFlow work: it runs in a worker thread, one call at a time per batcher,
so the event loop keeps accepting requests meanwhile. The loop hands a batch to the thread, and the thread hands
the answers back with one `call_soon_threadsafe`, which settles every caller's future at once (no task of the
batcher's own to wake in between: each hop through the loop costs a request tens of microseconds). If a merged
call fails, each of its requests is tried alone, in the same thread, so one bad request cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

log = logging.getLogger("trainflow.serving")

Call = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class _Job:
    inputs: dict[str, np.ndarray]
    rows: int
    shapes: tuple
    future: asyncio.Future
    queued: float = field(default_factory=time.monotonic)


class Batcher:
    """Coalesces concurrent requests for one model into calls of at most `max_rows` rows."""

    def __init__(self, call: Call, max_rows: int, timeout: float, executor: Optional[Executor] = None,
                 on_batch: Optional[Callable[[int, int], None]] = None):
        self.call, self.max_rows, self.timeout = call, max(1, int(max_rows)), max(0.0, float(timeout))
        self.executor, self.on_batch = executor, on_batch
        self.queue: deque[_Job] = deque()
        self.arriving = 0  # requests routed here and not yet parsed
        self.calls = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._own_executor: Optional[ThreadPoolExecutor] = None
        self._running: Optional[list[_Job]] = None  # the batch in the worker thread
        self._looking = False  # a look at the queue is scheduled for this turn of the loop
        self._timer: Optional[asyncio.TimerHandle] = None
        self._closed = False

    def start(self) -> None:
        """Bind to the running event loop (the server's)."""
        self._loop = asyncio.get_running_loop()
        if self.executor is None:
            self.executor = self._own_executor = ThreadPoolExecutor(1, thread_name_prefix="trainflow-batcher")

    async def close(self) -> None:
        """Stop: what is still queued is cancelled (the caller makes sure nothing more will be queued)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        while self.queue:
            self.queue.popleft().future.cancel()
        if self._own_executor is not None:
            self._own_executor.shutdown(wait=False)

    def expect(self) -> None:
        """A request is on its way here (routed, being read and parsed)."""
        self.arriving += 1

    def give_up(self) -> None:
        """An expected request will not come (it was refused or its client left)."""
        self.arriving -= 1
        self._look_soon()

    async def submit(self, inputs: dict[str, np.ndarray], rows: int, shapes: tuple) -> dict[str, np.ndarray]:
        """This request's own rows of the model's outputs (call `expect` first)."""
        if self._loop is None:
            self.start()
        future = self._loop.create_future()
        self.arriving -= 1
        self.queue.append(_Job(inputs, rows, shapes, future))
        self._look_soon()
        return await future

    # ------------------------------------------------------------------ on the event loop

    def _look_soon(self) -> None:
        """Look at the queue once this turn of the loop is over: every request ready in it can join the batch."""
        if not self._looking and self._loop is not None:
            self._looking = True
            self._loop.call_soon(self._look)

    def _look(self) -> None:
        self._looking = False
        if self._running is not None or self._closed:
            return  # the call's end looks again
        while self.queue and self.queue[0].future.done():  # its caller is gone
            self.queue.popleft()
        if not self.queue:
            return
        first = self.queue[0]
        if self.arriving > 0 and self._queued_rows(first.shapes) < self.max_rows:
            left = first.queued + self.timeout - time.monotonic()
            if left > 0:  # others are on their way: wait for them, at most until the first one's deadline
                if self._timer is None:
                    self._timer = self._loop.call_later(left, self._deadline)
                return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._running = self._take(first.shapes)
        self.executor.submit(self._work, self._running)

    def _deadline(self) -> None:
        self._timer = None
        self._look()

    def _queued_rows(self, shapes: tuple) -> int:
        return sum(job.rows for job in self.queue if job.shapes == shapes)

    def _take(self, shapes: tuple) -> list[_Job]:
        """The first queued request, and those after it alike in shape, up to max_rows rows (in order)."""
        batch, rows, kept = [], 0, deque()
        while self.queue:
            job = self.queue[0]
            if job.future.done():  # its caller is gone
                self.queue.popleft()
                continue
            if job.shapes != shapes:
                kept.append(self.queue.popleft())
                continue
            if batch and rows + job.rows > self.max_rows:
                break  # full: the rest wait for the next call, in order
            batch.append(self.queue.popleft())
            rows += job.rows
        kept.extend(self.queue)
        self.queue = kept
        return batch

    def _settle(self, answers: list) -> None:
        """Back on the loop: each caller's rows (or its failure), then the next batch."""
        for job, (result, exception) in zip(self._running, answers):
            if not job.future.done():
                if exception is not None:
                    job.future.set_exception(exception)
                else:
                    job.future.set_result(result)
        self._running = None
        self._look()

    # ------------------------------------------------------------------ in the worker thread

    def _work(self, batch: list[_Job]) -> None:
        try:
            answers = self._answers(batch)
        except BaseException as exc:  # pragma: no cover - _answers hands every failure to its callers
            log.exception("the batcher failed")
            answers = [(None, exc)] * len(batch)
        try:
            self._loop.call_soon_threadsafe(self._settle, answers)
        except RuntimeError:  # the loop is closed: the server stopped meanwhile
            pass

    def _answers(self, batch: list[_Job]) -> list[tuple]:
        """(rows of the outputs, None) per request of a batch, or (None, its failure)."""
        try:
            outputs = self._call(batch)
        except Exception as exc:
            if len(batch) == 1:
                return [(None, exc)]
            return [answer for job in batch for answer in self._answers([job])]  # one bad request fails alone
        if len(batch) == 1:
            return [(outputs, None)]
        answers, start, total = [], 0, sum(job.rows for job in batch)
        for job in batch:
            answers.append(({k: v[start:start + job.rows] if v.ndim and len(v) == total else v
                             for k, v in outputs.items()}, None))
            start += job.rows
        return answers

    def _call(self, batch: list[_Job]) -> dict[str, np.ndarray]:
        """The batch's inputs joined row-wise, the model called once."""
        inputs = batch[0].inputs if len(batch) == 1 else {
            key: _join([job.inputs[key] for job in batch]) for key in batch[0].inputs}
        outputs = self.call(inputs)
        self.calls += 1
        if self.on_batch is not None:
            self.on_batch(sum(job.rows for job in batch), len(batch))
        return outputs


def _join(parts: list):
    """Requests' values of one input, row after row: NumPy arrays, or lists of cells (a table's columns)."""
    return [cell for part in parts for cell in part] if isinstance(parts[0], list) else np.concatenate(parts)
