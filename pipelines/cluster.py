"""A Dask client from one choice: a local cluster (default), a scheduler address, or a
cluster profile (``configs/cluster/*.yaml``: ``kind: local`` or ``kind: slurm``).

Local clusters are worker *processes* with one thread each (the model and GDAL are not
thread-friendly, and torch gets one thread per worker), one per CPU core unless
``--workers`` says otherwise. SLURM goes through dask-jobqueue, imported lazily; its job
script can be generated and shown without SLURM (``--dry-run``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from geoseg.config import load_yaml
from geoseg.errors import ConfigError

LOCAL_DEFAULTS = {"n_workers": None, "threads_per_worker": 1, "memory_limit": "auto",
                  "dashboard_address": "127.0.0.1:8787"}
"""The dashboard listens on localhost only unless ``--dashboard`` opens it wider."""
SLURM_KEYS = {"cores", "processes", "memory", "walltime", "queue", "account", "job_name",
              "job_extra_directives", "worker_extra_args", "job_script_prologue",
              "local_directory", "log_directory", "interface", "python", "job_cpu", "job_mem",
              "death_timeout", "scheduler_options"}
SLURM_SCALE_KEYS = {"jobs", "minimum_jobs", "maximum_jobs"}
RUNNERS = ("auto", "local", "dask")
"""Who runs a batch (``--runner``): ``local``, every scene in this process with no cluster;
``dask``, the cluster of ``--scheduler``/``--cluster`` or a local one; ``auto``, local for
a small batch when no cluster was asked for (``pipelines.local.LOCAL_MAX_PIXELS``)."""


@dataclass(frozen=True)
class ClusterChoice:
    """Where tasks run: ``kind`` is ``local``, ``address`` or ``slurm``."""

    kind: str
    address: str | None = None
    options: dict = field(default_factory=dict)
    source: str | None = None


def available_cores() -> int:
    """CPU cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def choose_cluster(*, scheduler: str | None = None, cluster: str | None = None,
                   workers: int | None = None, dashboard: str | None = None) -> ClusterChoice:
    """Normalize the CLI's cluster options into one :class:`ClusterChoice`.

    ``dashboard`` is the local cluster's dashboard address (``HOST:PORT``, ``:PORT`` for
    every interface, ``none`` for no dashboard); by default it listens on 127.0.0.1.
    """
    if scheduler and cluster:
        raise ConfigError("--scheduler and --cluster both given; choose one: an existing "
                          "scheduler's address, or a cluster profile to start")
    if workers is not None and workers <= 0:
        raise ConfigError(f"--workers {workers} must be a positive integer")
    if dashboard is not None and scheduler:
        raise ConfigError("--dashboard sets the dashboard of a local cluster geoseg starts; "
                          "a running scheduler has its own")
    if scheduler:
        if workers is not None:
            raise ConfigError("--workers sizes a cluster geoseg starts; with --scheduler the "
                              "cluster is already running")
        return ClusterChoice("address", address=scheduler)
    if cluster:
        data = load_yaml(cluster)
        data = data.get("cluster", data)
        kind = data.pop("kind", "local")
        if kind == "local":
            return _local(data, workers, source=str(cluster), dashboard=dashboard)
        if kind == "slurm":
            unknown = sorted(set(data) - SLURM_KEYS - SLURM_SCALE_KEYS)
            if unknown:
                raise ConfigError(f"{cluster}: unknown SLURM option(s) {', '.join(unknown)}; "
                                  f"valid: {', '.join(sorted(SLURM_KEYS | SLURM_SCALE_KEYS))}")
            if dashboard is not None:
                raise ConfigError("--dashboard sets the dashboard of a local cluster; a "
                                  "SLURM cluster's is set by scheduler_options")
            if workers is not None:
                data["jobs"] = workers
            return ClusterChoice("slurm", options=data, source=str(cluster))
        raise ConfigError(f"{cluster}: unknown cluster kind {kind!r}; valid: local, slurm")
    return _local({}, workers, dashboard=dashboard)


def _local(data: dict, workers: int | None, source: str | None = None,
           dashboard: str | None = None) -> ClusterChoice:
    unknown = sorted(set(data) - set(LOCAL_DEFAULTS))
    if unknown:
        raise ConfigError(f"{source}: unknown local cluster option(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(LOCAL_DEFAULTS)}")
    options = {**LOCAL_DEFAULTS, **{k: v for k, v in data.items() if v is not None}}
    if workers is not None:
        options["n_workers"] = workers
    if dashboard is not None:
        options["dashboard_address"] = None if dashboard.lower() == "none" else dashboard
    if options["n_workers"] is None:
        options["n_workers"] = max(1, available_cores() // int(options["threads_per_worker"]))
    return ClusterChoice("local", options=options, source=source)


def _jobqueue() -> ModuleType:
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ConfigError("a SLURM cluster needs dask-jobqueue: pip install "
                          "'geoseg[slurm]' (or pip install dask-jobqueue)") from exc
    return dask_jobqueue


def _slurm_kwargs(options: dict) -> dict:
    kwargs = {k: v for k, v in options.items() if k in SLURM_KEYS and v is not None}
    kwargs.setdefault("job_name", "geoseg")
    return kwargs


def slurm_job_script(options: dict, *, scheduler: str = "tcp://SCHEDULER:8786") -> str:
    """The batch script each SLURM job runs, without starting anything (no SLURM needed)."""
    _jobqueue()
    from dask_jobqueue.slurm import SLURMJob

    kwargs = _slurm_kwargs(options)
    kwargs.pop("scheduler_options", None)
    return SLURMJob(scheduler=scheduler, name="geoseg-worker", **kwargs).job_script()


def describe(choice: ClusterChoice) -> str:
    """What would be started or joined (for --dry-run); for SLURM, the job script."""
    if choice.kind == "address":
        return f"existing scheduler at {choice.address}"
    if choice.kind == "local":
        o = choice.options
        return (f"local cluster: {o['n_workers']} worker process(es) x "
                f"{o['threads_per_worker']} thread(s), memory limit {o['memory_limit']}")
    jobs = choice.options.get("jobs", 1)
    return (f"SLURM cluster ({choice.source}): {jobs} job(s); each job runs:\n"
            + slurm_job_script(choice.options))


def stop_local_workers(cluster: Any) -> None:
    """Kill a local cluster's worker processes at once (Ctrl-C): closing it would otherwise
    wait for the running tasks, then for the nannies' kill timeout. What they were
    writing is staging or part files, which the run removes."""
    import signal

    for nanny in list(cluster.workers.values()):
        nanny.auto_restart = False
        pid = getattr(nanny, "pid", None)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@contextmanager
def connect(choice: ClusterChoice, *,
            echo: Callable[[str], object] = print) -> Iterator[Any]:
    """A ``distributed.Client`` for ``choice``; clusters started here are closed on exit.
    The dashboard address is echoed at start."""
    from distributed import Client, LocalCluster

    if choice.kind == "address":
        with Client(choice.address) as client:
            echo(f"scheduler {choice.address}, dashboard {client.dashboard_link}")
            yield client
        return
    if choice.kind == "local":
        import dask

        o = choice.options
        # Few malloc arenas: the block reader and batch threads otherwise each keep an arena
        # of freed pages (measured: 1288 -> 1058 MB peak on the 4096^2 Unet benchmark).
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_ARENA_MAX": 2}), \
                LocalCluster(n_workers=int(o["n_workers"]),
                          threads_per_worker=int(o["threads_per_worker"]), processes=True,
                          memory_limit=o["memory_limit"],
                          dashboard_address=o["dashboard_address"]) as cluster, \
                Client(cluster) as client:
            echo(f"local cluster: {o['n_workers']} worker process(es), dashboard "
                 f"{client.dashboard_link}")
            try:
                yield client
            except KeyboardInterrupt:
                stop_local_workers(cluster)
                raise
        return
    jobqueue = _jobqueue()
    o = choice.options
    with jobqueue.SLURMCluster(**_slurm_kwargs(o)) as cluster:
        if "minimum_jobs" in o or "maximum_jobs" in o:
            cluster.adapt(minimum_jobs=int(o.get("minimum_jobs", 0)),
                          maximum_jobs=int(o.get("maximum_jobs", o.get("jobs", 1))))
        else:
            cluster.scale(jobs=int(o.get("jobs", 1)))
        with Client(cluster) as client:
            echo(f"SLURM cluster: dashboard {client.dashboard_link}; waiting for the first "
                 "worker to start")
            client.wait_for_workers(1)
            yield client
