"""A Dask client from one choice: a local cluster (default), a scheduler address, or a
cluster profile (``configs/cluster/*.yaml``: ``kind: local``, ``slurm`` or ``pbs``).

A local cluster is laid out from the hardware (:mod:`pipelines.hardware`): one model worker
per GPU, pinned to it, where there are GPUs; one single-threaded worker process per CPU
core where there are none (the model and GDAL are not thread-friendly, and torch gets one
thread per worker). SLURM and PBS go through dask-jobqueue, imported lazily; their job
scripts can be generated and shown without a batch system (``--dry-run``). A batch
system's cluster is started with one job and adapts from there, and waits at most
``start_timeout`` seconds for its first worker: a queue that never starts a job is one
error line, never a hang.
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

from .hardware import Layout, plan_layout, this_machine
from .outcomes import error_line

LOCAL_DEFAULTS = {"n_workers": None, "threads_per_worker": None, "memory_limit": "auto",
                  "dashboard_address": "127.0.0.1:8787"}
"""The dashboard listens on localhost only unless ``--dashboard`` opens it wider."""
JOB_KEYS = {"cores", "processes", "memory", "walltime", "queue", "account", "job_name",
            "job_extra_directives", "worker_extra_args", "job_script_prologue",
            "local_directory", "log_directory", "interface", "python", "death_timeout",
            "scheduler_options"}
BATCH_SYSTEM_KEYS = {"slurm": JOB_KEYS | {"job_cpu", "job_mem"},
                     "pbs": JOB_KEYS | {"resource_spec", "project"}}
"""dask-jobqueue's options by batch system (its SLURMCluster and PBSCluster)."""
SCALE_KEYS = {"jobs", "minimum_jobs", "maximum_jobs", "start_timeout"}
START_TIMEOUT = 3600
"""Seconds a batch system's cluster waits for its first worker (``start_timeout``)."""
LOCAL_START_TIMEOUT = 300
"""Seconds a local cluster's worker processes may take to start (import geoseg and its
libraries, join the scheduler) before the batch gives up with one line."""
LOG_LENGTH = 100
"""Messages and transitions a local cluster's scheduler keeps for debugging, per worker
stream (Dask's ``distributed.admin.low-level-log-length``, 1000 by default). Each message
to a worker carries its task with the scene's plan: at 1000 the scheduler (in the client's
process) held the last 1000 scenes' plans per worker (10,000 tiny scenes on 2 workers: 209
against 204 MB peak RSS, ``benchmarks/bench_many_scenes.py``)."""
RUNNERS = ("auto", "local", "dask")
"""Who runs a batch (``--runner``): ``local``, every scene in this process with no cluster;
``dask``, the cluster of ``--scheduler``/``--cluster`` or a local one; ``auto``, local for
a small batch when no cluster was asked for (``pipelines.local.LOCAL_MAX_PIXELS``) on a
machine with at most one GPU (with several, a local cluster runs one model worker on each)."""


@dataclass(frozen=True)
class ClusterChoice:
    """Where tasks run: ``kind`` is ``local``, ``address`` or ``slurm``."""

    kind: str
    address: str | None = None
    options: dict = field(default_factory=dict)
    source: str | None = None
    layout: Layout | None = None
    """The workers of a local cluster (:func:`pipelines.hardware.plan_layout`)."""


def choose_cluster(*, scheduler: str | None = None, cluster: str | None = None,
                   workers: int | None = None, dashboard: str | None = None,
                   device: str = "auto") -> ClusterChoice:
    """Normalize the CLI's cluster options into one :class:`ClusterChoice`.

    ``dashboard`` is the local cluster's dashboard address (``HOST:PORT``, ``:PORT`` for
    every interface, ``none`` for no dashboard); by default it listens on 127.0.0.1.
    ``device`` (``--device``) shapes a local cluster's layout.
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
            return _local(data, workers, source=str(cluster), dashboard=dashboard,
                          device=device)
        if kind in BATCH_SYSTEM_KEYS:
            valid = BATCH_SYSTEM_KEYS[kind] | SCALE_KEYS
            unknown = sorted(set(data) - valid)
            if unknown:
                raise ConfigError(f"{cluster}: unknown {kind.upper()} option(s) "
                                  f"{', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
            if dashboard is not None:
                raise ConfigError(f"--dashboard sets the dashboard of a local cluster; a "
                                  f"{kind.upper()} cluster's is set by scheduler_options")
            if workers is not None:
                data["jobs"] = workers
            return ClusterChoice(kind, options=data, source=str(cluster))
        raise ConfigError(f"{cluster}: unknown cluster kind {kind!r}; valid: local, "
                          f"{', '.join(BATCH_SYSTEM_KEYS)}")
    return _local({}, workers, dashboard=dashboard, device=device)


def _local(data: dict, workers: int | None, source: str | None = None,
           dashboard: str | None = None, device: str = "auto") -> ClusterChoice:
    unknown = sorted(set(data) - set(LOCAL_DEFAULTS))
    if unknown:
        raise ConfigError(f"{source}: unknown local cluster option(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(LOCAL_DEFAULTS)}")
    options = {**LOCAL_DEFAULTS, **{k: v for k, v in data.items() if v is not None}}
    if workers is not None:
        options["n_workers"] = workers
    if dashboard is not None:
        options["dashboard_address"] = None if dashboard.lower() == "none" else dashboard
    count, threads = options["n_workers"], options["threads_per_worker"]
    layout = plan_layout(this_machine(), device=device,
                         workers=None if count is None else int(count),
                         threads_per_worker=None if threads is None else int(threads))
    options["n_workers"] = len(layout.workers)
    return ClusterChoice("local", options=options, source=source, layout=layout)


def _jobqueue() -> ModuleType:
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ConfigError("a SLURM or PBS cluster needs dask-jobqueue: pip install "
                          "'geoseg[slurm]' (or pip install dask-jobqueue)") from exc
    return dask_jobqueue


def _job_kwargs(kind: str, options: dict) -> dict:
    kwargs = {k: v for k, v in options.items() if k in BATCH_SYSTEM_KEYS[kind] and v is not None}
    kwargs.setdefault("job_name", "geoseg")
    return kwargs


def job_script(kind: str, options: dict, *, scheduler: str = "tcp://SCHEDULER:8786") -> str:
    """The batch script each SLURM or PBS job runs, without starting anything (no batch
    system needed)."""
    _jobqueue()
    from dask_jobqueue.pbs import PBSJob
    from dask_jobqueue.slurm import SLURMJob

    job: type[Any] = PBSJob if kind == "pbs" else SLURMJob
    kwargs = _job_kwargs(kind, options)
    kwargs.pop("scheduler_options", None)
    return job(scheduler=scheduler, name="geoseg-worker", **kwargs).job_script()


def describe(choice: ClusterChoice) -> str:
    """What would be started or joined (for --dry-run): a local cluster's worker layout, a
    batch system's jobs and the script each runs."""
    if choice.kind == "address":
        return (f"existing scheduler at {choice.address}; its workers report their devices "
                "when the batch starts")
    if choice.kind == "local":
        assert choice.layout is not None
        text = choice.layout.describe()
        if choice.options.get("memory_limit") not in (None, "auto"):
            text += f"\n  memory limit per worker set to {choice.options['memory_limit']}"
        return text
    o = choice.options
    jobs = (f"{o.get('minimum_jobs', 0)}-{o['maximum_jobs']} job(s), adapting"
            if "maximum_jobs" in o else f"{o.get('jobs', 1)} job(s)")
    return (f"{choice.kind.upper()} cluster ({choice.source}): {jobs}, "
            f"{o.get('processes', 1)} worker process(es) each; each job runs:\n"
            + job_script(choice.kind, o))


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
    from distributed import Client

    if choice.kind == "address":
        try:
            client = Client(choice.address)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"--scheduler {choice.address}: cannot reach a Dask scheduler "
                              f"there ({str(exc).splitlines()[0]}); start one (dask "
                              "scheduler) or check the address") from exc
        with client:
            echo(f"scheduler {choice.address}, dashboard {client.dashboard_link}")
            yield client
        return
    if choice.kind == "local":
        import dask

        o, layout = choice.options, choice.layout
        assert layout is not None
        # Few malloc arenas: the block reader and batch threads otherwise each keep an arena
        # of freed pages (measured: 1288 -> 1058 MB peak on the 4096^2 Unet benchmark).
        # --dashboard none: distributed starts its HTTP server (health and metrics routes)
        # whatever the address, on port 8787 when given none; here it gets a free port on
        # localhost and no dashboard
        address = o["dashboard_address"]
        web = ({"dashboard_address": address} if address is not None else
               {"dashboard_address": "127.0.0.1:0", "scheduler_kwargs": {"dashboard": False}})
        # a CPU machine's default: one worker in this process (its threads), started with
        # the cluster; otherwise worker processes, started from the layout's specs
        in_process = layout.in_process
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_ARENA_MAX": 2,
                              "distributed.admin.low-level-log-length": LOG_LENGTH}):
            cluster = _local_cluster(layout, memory_limit=o["memory_limit"], web=web)
            with cluster, Client(cluster) as client:
                if not in_process:
                    start_layout(cluster, layout)
                wait_for_local_workers(cluster, client, len(layout.workers))
                workers = (f"1 worker in this process ({layout.workers[0].threads} threads)"
                           if in_process else f"{len(layout.workers)} worker process(es)")
                echo(f"local cluster: {workers}"
                     f"{f' on {layout.gpu_workers} GPU(s)' if layout.gpu_workers else ''}, "
                     + (f"dashboard {client.dashboard_link}" if address is not None
                        else "no dashboard"))
                try:
                    yield client
                except KeyboardInterrupt:
                    if not in_process:  # a worker in this process ends its step and stops
                        stop_local_workers(cluster)
                    raise
        return
    jobqueue = _jobqueue()
    o = choice.options
    cls = jobqueue.PBSCluster if choice.kind == "pbs" else jobqueue.SLURMCluster
    with cls(**_job_kwargs(choice.kind, o)) as cluster:
        # one job first: the workers report their devices before anything is submitted
        cluster.scale(jobs=max(1, int(o.get("minimum_jobs", o.get("jobs", 1)))))
        with Client(cluster) as client:
            echo(f"{choice.kind.upper()} cluster: dashboard {client.dashboard_link}; waiting "
                 "for the first worker to start")
            timeout = int(o.get("start_timeout", START_TIMEOUT))
            try:
                client.wait_for_workers(1, timeout=timeout)
            except TimeoutError as exc:
                raise ConfigError(
                    f"no {choice.kind.upper()} worker started within {timeout} s; check the "
                    f"queue ({'qstat' if choice.kind == 'pbs' else 'squeue --me'}) and the "
                    "job logs (log_directory), or raise start_timeout") from exc
            if "minimum_jobs" in o or "maximum_jobs" in o:
                cluster.adapt(minimum_jobs=int(o.get("minimum_jobs", 0)),
                              maximum_jobs=int(o.get("maximum_jobs", o.get("jobs", 1))))
            yield client


def _local_cluster(layout: Layout, *, memory_limit: Any, web: dict) -> Any:
    """The local cluster of ``layout``: with its one worker when that runs in this process
    (it starts here, so its preload or imports may fail: one ConfigError line), else with
    none (:func:`start_layout` adds the worker processes)."""
    from distributed import LocalCluster

    in_process = layout.in_process
    try:
        return LocalCluster(n_workers=1 if in_process else 0,
                            threads_per_worker=layout.workers[0].threads if in_process else 1,
                            processes=not in_process, memory_limit=memory_limit, **web)
    except Exception as exc:  # noqa: BLE001 - any failure to start is one line
        raise ConfigError(f"the local Dask cluster did not start ({error_line(exc)})") from exc


def wait_for_local_workers(cluster: Any, client: Any, count: int, *,
                           timeout: float = LOCAL_START_TIMEOUT) -> None:
    """Wait until ``count`` workers of the local ``cluster`` have joined; a worker process
    that failed to start (a worker preload or an import that fails, a process killed as it
    starts) is one ConfigError at once, not a batch waiting for a worker that never comes
    (distributed logs the cause, which goes to OUT/geoseg.log)."""
    import time

    from distributed.core import Status

    deadline = time.monotonic() + timeout
    while True:
        try:
            client.wait_for_workers(count, timeout=0.5)
            return
        except TimeoutError:
            pass
        failed = [worker for worker in cluster.workers.values()
                  if worker.status in (Status.failed, Status.closed)]
        if failed:
            # the nanny keeps why it failed (distributed's Server, a private name)
            cause = getattr(failed[0], "_Server__startup_exc", None)
            cause = getattr(cause, "__cause__", None) or cause
            raise ConfigError(f"{len(failed)} of the local cluster's {count} worker "
                              "process(es) failed to start"
                              f"{f' ({error_line(cause)})' if cause is not None else ''}; "
                              "more in geoseg.log in the output folder")
        if time.monotonic() > deadline:
            raise ConfigError(f"the local cluster's worker processes did not all start "
                              f"within {timeout:.0f} s; see geoseg.log in the output folder")


def start_layout(cluster: Any, layout: Layout) -> None:
    """Start ``layout``'s workers in a LocalCluster made with none: each takes the
    cluster's worker options (logs, memory limit, host) plus its own threads, resources and
    pinned GPU (the Nanny sets CUDA_VISIBLE_DEVICES before the worker process starts)."""
    template = cluster.new_spec
    for spec in layout.workers:
        options = {**template["options"], "nthreads": spec.threads,
                   "resources": spec.resources}
        if spec.gpu is not None:
            options["env"] = {**options.get("env", {}), "CUDA_VISIBLE_DEVICES": spec.gpu}
        cluster.worker_spec[spec.name] = {"cls": template["cls"], "options": options}
    cluster.scale(len(cluster.worker_spec))  # no new specs: starts the ones added
