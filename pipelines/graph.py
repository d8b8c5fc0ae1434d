"""One scene's flow as Dask tasks: keys, dependencies, priorities and resources.

The graph of one scene (block ``(r, c)`` in row-major order)::

    predict(r, c) --> spills(r, c) ---> finish(b) for b in the blocks it spills into
          '-------------------------> finish(r, c) -> part files (classes, probabilities,
                                                      polygon pieces)
    finish(all) --> rasters (parts -> classes.tif [+ probabilities.tif], COG) --.
    finish(all) --> polygons (pieces -> seam merge -> polygons.gpkg) ------------+--> outputs

A scene of one block on workers that need no resource (a CPU cluster; a batch of chips) is
one ``scene`` task instead: read, model, finish and outputs as the in-process runner writes
them, with no spill strips, part files or assembling task (24 chips of 200^2 on 2 cores,
``benchmarks/bench_runners.py``). On GPU workers it stays split, so the ``GPU`` resource is
held only while the model runs.

A finish task takes exactly the spills of ``BlockGrid.sources(block)``. ``predict`` holds
the block's int32 accumulator on its worker; ``finish`` is scheduled there (its largest
input) and pulls only the neighbours' spill strips. Earlier blocks and scenes get higher
priority, so a block finishes right after it is computed and few accumulators wait in
memory; every block of every scene is a task, so a batch keeps all workers busy and one
large scene spreads over the cluster. Polygons come from the finished blocks themselves:
classes.tif is never read back. A block that an interrupted earlier run finished (its
``done`` part exists, with the run's identity) is neither predicted nor finished again:
``saved_done`` and ``saved_spills`` read its record back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.prediction.flow import block_steps

from . import tasks


@dataclass
class SceneGraph:
    """The futures of one submitted scene: its block finishes, the steps that publish its
    outputs (``parts``) and the final outputs."""

    finishes: list = field(default_factory=list)
    parts: list = field(default_factory=list)
    final: Any = None
    whole: bool = False
    """One task for the whole scene (:func:`tasks.scene_task`): ``final`` gives the block's
    record and the outputs."""

    @property
    def blocks(self) -> int:
        """Blocks the run loop counts as they finish."""
        return 1 if self.whole else len(self.finishes)

    @property
    def watched(self) -> list:
        """What the run loop waits on: each finish (progress, tallies) and the final."""
        return [*self.finishes, self.final]

    @property
    def held(self) -> list:
        """Every future the client holds. Cancelling a task cancels its dependents, and
        the scheduler requires each of them to be held by a client: the publishing steps
        are held for that."""
        return [*self.finishes, *self.parts, self.final]


def is_whole(job: tasks.SceneJob, *, resources: dict | None,
             finished: frozenset[tuple[int, int]] = frozenset()) -> bool:
    """Whether the scene runs as one ``scene`` task (see the module docstring)."""
    return len(job.flow.plan.blocks) == 1 and not finished and not resources


def submit_scene(client: Any, job: tasks.SceneJob, *, resources: dict | None, token: str,
                 priority: int, finished: frozenset[tuple[int, int]] = frozenset()
                 ) -> tuple[SceneGraph, int]:
    """Submit one scene's graph (see the module docstring); returns it and the next
    priority. Blocks in ``finished`` (done by an earlier, interrupted run of the same
    identity) are not predicted again: their record and spill strips are read back."""
    name = f"{Path(job.flow.scene).stem}-{token}"
    if is_whole(job, resources=resources, finished=finished):
        final = client.submit(tasks.scene_task, job, key=f"scene-{name}", priority=priority)
        return SceneGraph(final=final, whole=True), priority - 1
    spills: dict = {}
    graph = SceneGraph()
    for step in block_steps(job.flow):
        r, c = step.key
        if step.key in finished:
            spills[(r, c)] = client.submit(tasks.saved_spills_task, job, r, c,
                                           key=f"spills-{name}-{r}-{c}", priority=priority)
            graph.finishes.append(client.submit(tasks.saved_done_task, job, r, c,
                                                key=f"finish-{name}-{r}-{c}",
                                                priority=priority))
            priority -= 1
            continue
        predicted = client.submit(tasks.predict_task, job, r, c, key=f"predict-{name}-{r}-{c}",
                                  resources=resources, priority=priority)
        spills[(r, c)] = client.submit(tasks.spills_task, job, predicted,
                                       key=f"spills-{name}-{r}-{c}", priority=priority)
        sources = [spills[key] for key in step.sources]
        graph.finishes.append(client.submit(tasks.finish_task, job, predicted, *sources,
                                            outgoing=spills[(r, c)],
                                            key=f"finish-{name}-{r}-{c}", priority=priority))
        priority -= 1
    graph.parts = [client.submit(tasks.rasters_task, job, *graph.finishes,
                                 key=f"rasters-{name}", priority=priority)]
    if job.flow.vector is not None:
        graph.parts.append(client.submit(tasks.polygons_task, job, *graph.finishes,
                                         key=f"polygons-{name}", priority=priority))
    graph.final = client.submit(tasks.outputs_task, *graph.parts, key=f"outputs-{name}",
                                priority=priority)
    return graph, priority - 1
