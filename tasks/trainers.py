"""The two trainers: a compiled GradientTape loop ("manual") and Keras compile/fit ("keras").

Both return the same history: one row per epoch holding the state *after* that epoch (its loss on the
whole training set, its validation loss, and w, b for linear models), so their trajectories compare row by
row. That is the guide's report with its bug fixed: the guide prints a stale loss every epoch.

The manual trainer runs many epochs per call of one `tf.function` (XLA-compiled when every batch has the
same shape), recording history in-graph; Python only sees each chunk, sized to take about half a second,
so progress is reported at a human pace without a Python round trip per epoch. Both trainers save a
resumable snapshot every `checkpoint_every` epochs when given a `ResumePoint`, and stop with
`TrainingDiverged` at the first epoch whose loss is not finite or has blown up.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from flows.spec import OptimizerSpec, Spec, TrainingSpec
from tasks import linear_moments, losses, models, tensorboard
from tasks.data import Dataset, thin
from tasks.results import ModelState, RunError, Trained, TrainResult, columns_of, history_columns
from tasks.results import rows as row_dicts
from tasks.resume import ResumePoint, Snapshot

#: Largest number of epochs one compiled call may run; also the static size of its in-graph history.
MAX_CHUNK = 4096
#: Wall time one compiled call aims for, so progress and logs arrive about twice a second.
CHUNK_SECONDS = 0.5
#: A chunk of more epochs than this reports only its last row to `progress`.
PROGRESS_ROWS = 200

#: Called after each compiled chunk with the chunk's rows (or only its last row, for a large chunk).
Progress = Callable[[list[dict]], None]
#: Called with a message when training resumes or saves a snapshot.
Notify = Callable[[str], None]


class TrainingDiverged(RunError):
    """The loss became NaN, infinite or absurdly large; nothing from this run should be published."""

    def __init__(self, epoch: int, loss: float, cause: str, learning_rate: float):
        self.epoch, self.loss = epoch, loss
        super().__init__(
            f"training diverged at epoch {epoch}: loss {loss:.6g} {cause}. "
            f"The learning rate {learning_rate:g} is probably too high; try a lower one, e.g. {learning_rate / 10:g}."
        )


class DivergenceGuard:
    """Raises `TrainingDiverged` at the first loss that is not finite or exceeds factor × the initial loss."""

    def __init__(self, factor: Optional[float], initial_loss: float, learning_rate: float):
        self.factor, self.initial, self.lr = factor, initial_loss, learning_rate
        self.limit = np.inf if self.factor is None else self.factor * max(initial_loss, 1e-12)

    def check(self, first_epoch: int, losses: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(losses) | (losses > self.limit))
        if bad.size:
            loss = float(losses[bad[0]])
            cause = ("is not finite" if not np.isfinite(loss) else
                     f"exceeds {self.factor:g} × the initial loss {self.initial:.6g} (training.divergence_factor)")
            raise TrainingDiverged(first_epoch + int(bad[0]), loss, cause, self.lr)


def fit(spec: Spec, seed: int, data: Dataset, initial: ModelState, progress: Optional[Progress] = None,
        resume: Optional[ResumePoint] = None, notify: Optional[Notify] = None) -> Trained:
    """Rebuild the model from its initial weights, train it, and predict before and after on sorted x."""
    model = models.restore(spec.model, seed, initial.weights)
    order = np.argsort(data.x_all, kind="stable")
    x, y = thin(data.x_all[order], data.y_all[order])
    before = np.asarray(model(tf.constant(x)))
    result = train(model, data, spec.training, seed, progress, resume, notify)
    events = tensorboard.event_files(result.columns, result.initial)
    return Trained(result, x, y, before, np.asarray(model(tf.constant(x))), events)


def train(model: models.Model, data: Dataset, spec: TrainingSpec, seed: int, progress: Optional[Progress] = None,
          resume: Optional[ResumePoint] = None, notify: Optional[Notify] = None) -> TrainResult:
    """Train `model` in place with the spec's trainer."""
    trainer = train_keras if spec.trainer == "keras" else train_manual
    return trainer(model, data, spec, seed, progress, resume, notify)


def make_optimizer(spec: OptimizerSpec) -> Optional[keras.optimizers.Optimizer]:
    """A Keras optimizer, or None for plain SGD, which the manual loop does as the guide's assign_sub."""
    if spec.kind == "sgd" and not any(spec.options.get(k) for k in ("momentum", "nesterov", "weight_decay")):
        return None
    return keras.optimizers.get({"class_name": spec.kind, "config": {"learning_rate": spec.learning_rate, **spec.options}})


def _optimizer_variables(optimizer: Optional[keras.optimizers.Optimizer]) -> list:
    return [] if optimizer is None else [v.value if hasattr(v, "value") else v for v in optimizer.variables]


class _Evaluator:
    """Compiled evaluation of the state a history row records: losses and, for linear models, w and b."""

    def __init__(self, model: models.Model, data: Dataset, loss_fn):
        self.model, self.loss_fn = model, loss_fn
        self.x, self.y = tf.constant(data.x), tf.constant(data.y)
        self.has_val = len(data.x_val) > 0
        self.x_val, self.y_val = tf.constant(data.x_val), tf.constant(data.y_val)
        self.linear = models.is_linear(model)
        self.names = ["loss"] + (["val_loss"] if self.has_val else []) + (["w", "b"] if self.linear else [])

    def state(self) -> tf.Tensor:
        """A vector of `self.names`, computed in-graph when called from a tf.function."""
        values = [self.loss_fn(self.y, self.model(self.x))]
        if self.has_val:
            values.append(self.loss_fn(self.y_val, self.model(self.x_val)))
        if self.linear:
            values.extend(tf.convert_to_tensor(v) for v in models.variables(self.model))
        return tf.stack(values)

    def row(self, epoch: int, values) -> dict:
        row = {"epoch": epoch}
        row.update({n: float(v) for n, v in zip(self.names, values)})
        return row

    def initial(self) -> dict:
        row = self.row(0, self.state().numpy())
        row.pop("epoch")
        return row


class _Snapshots:
    """Restores a run's last snapshot and saves new ones; a no-op without a ResumePoint."""

    def __init__(self, point: Optional[ResumePoint], model, optimizer_variables: Callable[[], list],
                 every: int, notify: Optional[Notify]):
        self.point, self.model, self.optimizer_variables, self.every = point, model, optimizer_variables, every
        self.notify = notify or (lambda message: None)

    def restore(self) -> Optional[Snapshot]:
        snapshot = self.point.load() if self.point else None
        if snapshot is None:
            return None
        models.set_weights(self.model, snapshot.weights)
        for var, value in zip(self.optimizer_variables(), snapshot.optimizer, strict=True):
            var.assign(value)
        self.notify(f"Resuming from epoch {snapshot.epoch} (saved training state)")
        return snapshot

    def save(self, epoch: int, columns: dict[str, np.ndarray]) -> None:
        if self.point is None:
            return
        self.point.save(Snapshot(epoch, models.get_weights(self.model),
                                 [np.asarray(v.numpy()) for v in self.optimizer_variables()], columns))
        self.notify(f"Saved training state at epoch {epoch}")


def train_manual(model: models.Model, data: Dataset, spec: TrainingSpec, seed: int,
                 progress: Optional[Progress] = None, resume: Optional[ResumePoint] = None,
                 notify: Optional[Notify] = None, use_moments: bool = True) -> TrainResult:
    """A GradientTape loop; plain SGD is exactly the guide's `v.assign_sub(lr * dv)`.

    A linear model with mse on a large full batch trains from data moments instead (`linear_moments`),
    with the same results; `use_moments=False` keeps the general loop (the epoch-cost benchmark uses it)."""
    loss_fn = losses.manual(spec.loss)
    evaluator = _Evaluator(model, data, loss_fn)
    variables = models.variables(model)
    optimizer = make_optimizer(spec.optimizer)
    if optimizer is not None:
        optimizer.build(variables)
    lr = tf.constant(spec.optimizer.learning_rate, tf.float32)
    x, y = evaluator.x, evaluator.y
    n = len(data.x)
    batch = n if spec.batch_size is None else min(spec.batch_size, n)
    num_batches = -(-n // batch)
    seed_t = tf.constant(seed, tf.int64)

    def step(xb, yb):
        with tf.GradientTape() as tape:
            current = loss_fn(yb, model(xb))
        grads = tape.gradient(current, variables)
        if optimizer is None:
            for var, grad in zip(variables, grads):
                var.assign_sub(lr * grad)
        else:
            optimizer.apply_gradients(zip(grads, variables))

    def one_epoch(epoch):
        if num_batches == 1 and not spec.shuffle:
            step(x, y)
            return
        order = tf.range(n)
        if spec.shuffle:  # keyed by (seed, epoch): a resumed run shuffles exactly as an uninterrupted one
            order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([seed_t, tf.cast(epoch, tf.int64)]))
        xs, ys = tf.gather(x, order), tf.gather(y, order)
        for i in tf.range(num_batches):
            lo = i * batch
            hi = tf.minimum(lo + batch, n)
            step(xs[lo:hi], ys[lo:hi])

    chunk_size = min(spec.epochs, MAX_CHUNK)

    def run_chunk(start, count):
        history = tf.TensorArray(tf.float32, size=chunk_size, element_shape=[len(evaluator.names)])
        for i in tf.range(count):
            one_epoch(start + i)
            history = history.write(i, evaluator.state())
        return history.stack()

    if use_moments and linear_moments.applies(model, spec, n, plain_sgd=optimizer is None):
        compiled = linear_moments.chunk_runner(model, x, y, evaluator.x_val, evaluator.y_val, spec, chunk_size)
        if notify:
            notify(f"Linear model, mse, full batch of {n:,}: training from one pass of data moments")
    else:
        compiled = tf.function(run_chunk, jit_compile=n % batch == 0, reduce_retracing=True)

    initial = evaluator.initial()
    guard = DivergenceGuard(spec.divergence_factor, initial["loss"], spec.optimizer.learning_rate)
    snapshots = _Snapshots(resume, model, lambda: _optimizer_variables(optimizer), spec.checkpoint_every, notify)
    restored = snapshots.restore()
    done = restored.epoch if restored else 0
    chunks: list[np.ndarray] = []
    if restored:
        chunks.append(np.stack([restored.columns[name] for name in evaluator.names], axis=1).astype(np.float32))
    count = min(chunk_size, 16)
    started = time.perf_counter()
    while done < spec.epochs:
        next_save = (done // spec.checkpoint_every + 1) * spec.checkpoint_every
        count = min(count, spec.epochs - done, next_save - done)
        t0 = time.perf_counter()
        values = compiled(tf.constant(done, tf.int32), tf.constant(count, tf.int32)).numpy()[:count]
        elapsed = time.perf_counter() - t0
        guard.check(done + 1, values[:, 0])
        chunks.append(values)
        if progress:
            shown = range(count) if count <= PROGRESS_ROWS else [count - 1]
            progress([evaluator.row(done + i + 1, values[i]) for i in shown])
        done += count
        if done == next_save and done < spec.epochs:
            snapshots.save(done, history_columns(evaluator.names, np.concatenate(chunks)))
        count = int(min(chunk_size, max(1, count * CHUNK_SECONDS / max(elapsed, 1e-6))))
    if resume:
        resume.clear()
    columns = history_columns(evaluator.names, np.concatenate(chunks))
    return TrainResult(initial, columns, models.get_weights(model), time.perf_counter() - started,
                       restored.epoch if restored else 0)


class _HistoryCallback(keras.callbacks.Callback):
    """Records the after-epoch state with the same compiled evaluator the manual trainer uses."""

    def __init__(self, evaluator: _Evaluator, guard: DivergenceGuard, progress: Optional[Progress],
                 snapshots: _Snapshots, rows: list[dict]):
        super().__init__()
        self.evaluator, self.guard, self.progress, self.snapshots = evaluator, guard, progress, snapshots
        self.state = tf.function(evaluator.state)
        self.rows = rows

    def on_epoch_end(self, epoch, logs=None):
        row = self.evaluator.row(epoch + 1, self.state().numpy())
        self.guard.check(epoch + 1, np.array([row["loss"]]))
        self.rows.append(row)
        if self.progress:
            self.progress([row])
        if (epoch + 1) % self.snapshots.every == 0 and epoch + 1 < self.params["epochs"]:
            self.snapshots.save(epoch + 1, columns_of(self.rows))


def train_keras(model: models.Model, data: Dataset, spec: TrainingSpec, seed: int,
                progress: Optional[Progress] = None, resume: Optional[ResumePoint] = None,
                notify: Optional[Notify] = None) -> TrainResult:
    """The guide's `compile(SGD, mean_squared_error)` then `fit`, with the same history as the manual loop."""
    if not isinstance(model, keras.Model):
        raise TypeError("the keras trainer needs a Keras model")
    evaluator = _Evaluator(model, data, losses.manual(spec.loss))
    optimizer = make_optimizer(spec.optimizer) or keras.optimizers.SGD(learning_rate=spec.optimizer.learning_rate)
    model.compile(optimizer=optimizer, loss=losses.for_keras(spec.loss))
    optimizer.build(model.trainable_variables)
    initial = evaluator.initial()
    snapshots = _Snapshots(resume, model, lambda: _optimizer_variables(optimizer), spec.checkpoint_every, notify)
    restored = snapshots.restore()
    rows = row_dicts(restored.columns) if restored else []
    guard = DivergenceGuard(spec.divergence_factor, initial["loss"], spec.optimizer.learning_rate)
    callback = _HistoryCallback(evaluator, guard, progress, snapshots, rows)
    started = time.perf_counter()
    if spec.batch_size is None or spec.batch_size >= len(data.x):
        # One full batch per epoch, as the guide's fit(batch_size=1000) makes it. Feeding fit the same batch
        # from a repeated tf.data pipeline, one step per epoch, gives identical updates without fit's
        # per-epoch array slicing and iterator set-up: ~3 ms instead of ~27 ms per epoch.
        batches = tf.data.Dataset.from_tensors((data.x, data.y)).repeat()
        model.fit(batches, epochs=spec.epochs, initial_epoch=len(rows), steps_per_epoch=1, shuffle=False,
                  verbose=0, callbacks=[callback])
    else:
        if spec.shuffle:
            keras.utils.set_random_seed(seed)
        model.fit(data.x, data.y, epochs=spec.epochs, initial_epoch=len(rows), batch_size=spec.batch_size,
                  shuffle=spec.shuffle, verbose=0, callbacks=[callback])
    if resume:
        resume.clear()
    result = TrainResult.from_rows(initial, rows, models.get_weights(model), time.perf_counter() - started)
    result.resumed_from = restored.epoch if restored else 0
    return result
