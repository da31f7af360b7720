"""The experiment's task graph, declared once: what each task calls, which spec sections it reads, what it
needs from upstream, and the name of what it produces.

Everything that knows the graph reads this table: `flows.run.plan` derives each task's cache key from it
(the sections it reads, its code, its upstream keys), `flows.run.experiment` calls the tasks from it, and
`trainflow plan` explains re-runs from it. Adding a task is one entry here plus its function in `tasks/`.
Kedro's `node(func, inputs, outputs)` is the model. Nothing here imports TensorFlow or Prefect.

A node's function is called with keyword arguments only: each section in `reads` under the section's name
(`seed` is the run's resolved seed), each of `inputs` under its name, and `hooks` when the node takes them
(progress, messages and resume snapshots: runtime only, never part of a key). Publishing is not a node:
it is never cached, and it finds or creates the version under the store's lock (`flows.run.publish`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Node:
    name: str  # the task's name in the Prefect UI, the manifest and `--json`
    func: str  # "module:function" in tasks/
    reads: tuple[str, ...]  # top-level spec sections, passed under their names
    output: str  # what downstream nodes receive this node's result as
    inputs: tuple[str, ...] = ()  # outputs of upstream nodes
    hooks: bool = False  # takes a `tasks.train.driver.Hooks` (progress, messages, resume)
    reads_file: bool = False  # data.path's content hash is part of the key
    retry_transient: bool = False  # a read that failed on I/O is retried (Prefect task retries)

    @property
    def module(self) -> str:
        return self.func.partition(":")[0]

    def function(self) -> Callable:
        module, _, name = self.func.partition(":")
        return getattr(importlib.import_module(module), name)


NODES: tuple[Node, ...] = (
    Node("data", "tasks.data.load:load", reads=("seed", "data"), output="dataset", reads_file=True, retry_transient=True),
    Node("model", "tasks.model.models:initial_state", reads=("seed", "model"), inputs=("dataset",), output="initial"),
    Node("train", "tasks.train.trainers:fit", reads=("seed", "model", "training"), inputs=("dataset", "initial"),
         output="trained", hooks=True),
    Node("plots", "tasks.plots.draw:draw", reads=("data", "plots"), inputs=("dataset", "trained"), output="figures"),
    Node("checkpoint", "tasks.checkpoint.save:files", reads=("seed", "model", "checkpoint"), inputs=("trained",),
         output="checkpoint_files"),
)

#: Spec sections the publish step records besides the nodes' outputs.
PUBLISH_READS = ("name", "description")
#: Modules whose code makes a version's files (part of the version fingerprint, not of any task's key): the
#: store, the report and the renderer that draws the figures once the version's label is known.
PUBLISH_MODULES = ("tasks.publish.store", "tasks.publish.report", "tasks.plots.render")

BY_NAME = {node.name: node for node in NODES}
BY_OUTPUT = {node.output: node for node in NODES}


def upstream(node: Node) -> tuple[str, ...]:
    """Names of the nodes whose outputs `node` takes."""
    return tuple(BY_OUTPUT[name].name for name in node.inputs)
