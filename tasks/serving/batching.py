"""Server-side batching: requests that arrive together are answered by one model call, each caller getting back
its own rows.

A batch is cut when it holds `max_rows` rows, or when nobody else is on the way: a request counts as on its way
from the moment the server has routed it until it is parsed (`expect` / `submit`). The batcher waits for those
at most `timeout` after the batch's first request was queued; a lone client therefore never waits, and a
crowd fills batches while the previous one runs. Only requests whose rows have the same shapes share a call
(an input whose size may vary, such as a sequence, batches with its like). A request is never split: one
larger than `max_rows` runs alone. `max_rows=1` turns batching off: one request per call.

The model call itself is blocking TensorFlow work: it runs in a worker thread, one call at a time per batcher,
so the event loop keeps accepting requests meanwhile. If a merged call fails, each of its requests is tried
alone, so one bad request cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pyarrow as pa

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
        self._wake = asyncio.Event()
        self._task: Optional[asyncio.Task] = None
        self.calls = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="trainflow-batcher")

    async def close(self) -> None:
        """Stop once nothing is queued (the caller makes sure nothing more will be)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def expect(self) -> None:
        """A request is on its way here (routed, being read and parsed)."""
        self.arriving += 1

    def give_up(self) -> None:
        """An expected request will not come (it was refused or its client left)."""
        self.arriving -= 1
        self._wake.set()

    async def submit(self, inputs: dict[str, np.ndarray], rows: int, shapes: tuple) -> dict[str, np.ndarray]:
        """This request's own rows of the model's outputs (call `expect` first)."""
        future = asyncio.get_running_loop().create_future()
        self.arriving -= 1
        self.queue.append(_Job(inputs, rows, shapes, future))
        self._wake.set()
        return await future

    async def _sleep_until_woken(self, seconds: Optional[float] = None) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _queued_rows(self, shapes: tuple) -> int:
        return sum(job.rows for job in self.queue if job.shapes == shapes)

    async def _run(self) -> None:
        while True:
            while not self.queue:
                await self._sleep_until_woken()
            first = self.queue[0]
            deadline = first.queued + self.timeout
            while (self.arriving > 0 and self._queued_rows(first.shapes) < self.max_rows
                   and (left := deadline - time.monotonic()) > 0):
                await self._sleep_until_woken(left)
            batch = self._take(first.shapes)
            try:
                await self._answer(batch)
            except asyncio.CancelledError:
                for job in batch:
                    if not job.future.done():
                        job.future.cancel()
                raise
            except Exception:  # pragma: no cover - _answer hands every failure to its callers
                log.exception("the batcher failed")

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

    async def _answer(self, batch: list[_Job]) -> None:
        if not batch:
            return
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self.executor, self._call, batch)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].future, exception=exc)
                return
            for job in batch:  # one bad request must not fail the others
                await self._answer([job])
            return
        start = 0
        total = sum(job.rows for job in batch)
        for job in batch:
            _settle(job.future, result={k: v[start:start + job.rows] if v.ndim and len(v) == total else v
                                        for k, v in outputs.items()})
            start += job.rows

    def _call(self, batch: list[_Job]) -> dict[str, np.ndarray]:
        """In a worker thread: the batch's inputs joined row-wise, the model called once."""
        inputs = batch[0].inputs if len(batch) == 1 else {
            key: _join([job.inputs[key] for job in batch]) for key in batch[0].inputs}
        outputs = self.call(inputs)
        self.calls += 1
        if self.on_batch is not None:
            self.on_batch(sum(job.rows for job in batch), len(batch))
        return outputs


def _join(parts: list):
    """Requests' values of one input, row after row: NumPy arrays, or Arrow arrays (a table's columns)."""
    return pa.concat_arrays(parts) if isinstance(parts[0], pa.Array) else np.concatenate(parts)


def _settle(future: asyncio.Future, result=None, exception: Optional[BaseException] = None) -> None:
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
