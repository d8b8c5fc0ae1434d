"""The worker layout of a local cluster, from the hardware (DESIGN.md promise 12).

:func:`plan_layout` is a pure function from a machine (:class:`Hardware`: cores, the GPUs
a process started here sees, memory) and the batch's choices to the worker processes a
local cluster starts (:class:`Layout`):

* a machine with GPUs: **one model worker per GPU**, pinned to it (``CUDA_VISIBLE_DEVICES``,
  so it sees its GPU as ``cuda``), offering the resource ``GPU=1`` (a block's model task
  needs it, so one runs at a time per GPU), with the machine's cores shared out as its
  threads: reads, finishing, part files and rasters run on them around the model. Never a
  model copy per CPU core on a shared GPU.
* a machine without (or ``--device cpu``): **one worker in the client's own process**, a
  thread per core: no worker process to start, the model loaded once and taking every core
  (torch's or ONNX Runtime's own threads, one block through it at a time), the other
  threads reading, finishing and writing around it, as the in-process runner does. Against
  one single-threaded worker process per core (the layout before), a batch of 24 chips of
  200^2 took 3.7-4.0 s against 5.2-5.3 s on 2 cores (with its one-block scenes as single
  tasks, ``pipelines.graph``), the 4096^2 field 1.095x the in-process runner against
  1.118x (``benchmarks/bench_runners.py``). ``--workers N`` (or ``threads_per_worker``) asks for
  worker processes: N of them, single-threaded unless told otherwise.

Memory per worker is the machine's share for its threads (what ``memory_limit: auto`` gives
each worker). ``--dry-run`` prints the layout; :func:`pipelines.cluster.connect` starts it.
"""

from __future__ import annotations

from dataclasses import dataclass

from geoseg.errors import ConfigError

GPU_RESOURCE = "GPU"
"""The resource a model worker offers per GPU and a model task asks for."""


@dataclass(frozen=True, slots=True)
class Hardware:
    """A machine as a layout sees it."""

    cores: int
    gpus: tuple[str, ...] = ()
    """The GPUs a process started here sees: ids or UUIDs, as CUDA_VISIBLE_DEVICES takes."""
    memory: int = 0
    """Bytes of RAM (0: unknown)."""


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One worker process."""

    name: str
    threads: int
    memory: int
    """Its memory limit in bytes (0: none)."""
    gpu: str | None = None
    """The GPU it is pinned to (its CUDA_VISIBLE_DEVICES), None for a CPU worker."""
    in_process: bool = False
    """A worker in the client's process (its threads), not a process of its own."""

    @property
    def resources(self) -> dict[str, int]:
        return {GPU_RESOURCE: 1} if self.gpu is not None else {}


@dataclass(frozen=True, slots=True)
class Layout:
    """The worker processes of a local cluster, and the device name its workers use."""

    workers: tuple[WorkerSpec, ...]
    device: str
    """``cuda`` on pinned GPU workers (each sees only its GPU), else the batch's device."""

    @property
    def gpu_workers(self) -> int:
        return sum(w.gpu is not None for w in self.workers)

    @property
    def in_process(self) -> bool:
        """One worker in the client's process (a CPU machine's default)."""
        return len(self.workers) == 1 and self.workers[0].in_process

    def describe(self) -> str:
        """What would start (for ``--dry-run``): processes, threads, GPU and memory each."""
        if not self.workers:
            return "local cluster: no workers"
        if self.in_process:
            w = self.workers[0]
            return (f"local cluster: 1 worker in this process, {w.threads} thread(s), CPU "
                    "only (the model takes every core, one block at a time; the other "
                    f"threads read, finish and write), memory limit {_gib(w.memory)}")
        lines = [f"local cluster: {len(self.workers)} worker process(es)"
                 + (f", one per GPU (model tasks hold {GPU_RESOURCE}=1)" if self.gpu_workers
                    else ", CPU only")]
        groups: dict[tuple[int, int, bool], list[WorkerSpec]] = {}
        for w in self.workers:
            groups.setdefault((w.threads, w.memory, w.gpu is not None), []).append(w)
        for (threads, memory, gpu), members in groups.items():
            where = (f"GPU {', '.join(str(w.gpu) for w in members)} (CUDA_VISIBLE_DEVICES, "
                     "seen as cuda)" if gpu else "no GPU")
            lines.append(f"  {len(members)} x {threads} thread(s), {where}, memory limit "
                         f"{_gib(memory)}")
        return "\n".join(lines)


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes else "none"


def plan_layout(hardware: Hardware, *, device: str = "auto", workers: int | None = None,
                threads_per_worker: int | None = None) -> Layout:
    """The local cluster for ``hardware`` (see the module's docstring).

    ``device`` is the batch's ``--device``: ``cpu`` lays out CPU workers even where there
    are GPUs; ``cuda:N`` one model worker pinned to the N-th visible GPU. ``workers``
    (``--workers``) is the number of worker processes: on a GPU machine, how many of its
    GPUs to use (more than it has would share a GPU between model copies, and is refused).
    ``threads_per_worker`` applies to CPU worker processes; with neither, a CPU machine
    gets one worker in the client's process with a thread per core.
    """
    cores = max(1, hardware.cores)
    gpus = hardware.gpus if device != "cpu" else ()
    if device.startswith("cuda") and not gpus:
        raise ConfigError(f"--device {device}: this machine has no CUDA device to start a "
                          "model worker on; use --device cpu or auto")
    if device.startswith("cuda:"):
        index = int(device[5:])
        if index >= len(gpus):
            raise ConfigError(f"--device {device}: this machine's processes see "
                              f"{len(gpus)} GPU(s) (cuda:0-cuda:{len(gpus) - 1})")
        gpus = (gpus[index],)
    if gpus:
        if workers is not None and workers > len(gpus):
            raise ConfigError(f"--workers {workers}: this machine has {len(gpus)} GPU(s), "
                              "and geoseg runs one model worker per GPU; give --workers "
                              f"{len(gpus)} or fewer (or --device cpu for CPU workers)")
        used = gpus[:workers] if workers is not None else gpus
        threads = max(1, cores // len(used))
        memory = hardware.memory // len(used)
        specs = tuple(WorkerSpec(f"gpu-{gpu}", threads, memory, gpu) for gpu in used)
        return Layout(specs, "cuda")
    if workers is None and threads_per_worker is None:
        return Layout((WorkerSpec("0", cores, hardware.memory, in_process=True),), device)
    threads = max(1, threads_per_worker or 1)
    count = workers if workers is not None else max(1, cores // threads)
    memory = int(hardware.memory * min(1.0, threads / cores))
    specs = tuple(WorkerSpec(str(i), threads, memory) for i in range(count))
    return Layout(specs, device)


def this_machine() -> Hardware:
    """This machine: the cores this process may use, the GPUs a worker started here would
    see (no torch, no CUDA initialized) and its RAM."""
    import psutil

    from geoseg.model.devices import available_cores, visible_gpus

    return Hardware(available_cores(), visible_gpus(), int(psutil.virtual_memory().total))
