"""Cluster choice: local by default, a scheduler address, or a profile; the SLURM profile's
job script is generated without SLURM."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from geoseg.errors import ConfigError
from geoseg_pipelines.cluster import choose_cluster, describe, job_script
from geoseg_pipelines.hardware import this_machine

SLURM = REPO / "configs" / "cluster" / "slurm.yaml"


def test_local_is_the_default_in_this_process_on_a_cpu_machine():
    choice = choose_cluster()
    assert choice.kind == "local"
    assert choice.layout is not None and choice.options["threads_per_worker"] is None
    if not this_machine().gpus:
        assert choice.layout.in_process and choice.options["n_workers"] == 1
    assert choose_cluster(workers=3).options["n_workers"] == 3
    assert choose_cluster(cluster=REPO / "configs" / "cluster" / "local.yaml",
                          workers=2).options["n_workers"] == 2


def test_scheduler_address_joins_an_existing_cluster():
    choice = choose_cluster(scheduler="tcp://10.0.0.1:8786")
    assert (choice.kind, choice.address) == ("address", "tcp://10.0.0.1:8786")
    assert "tcp://10.0.0.1:8786" in describe(choice)


@pytest.mark.parametrize("kwargs, words", [
    (dict(scheduler="tcp://h:1", cluster=str(SLURM)), "choose one"),
    (dict(scheduler="tcp://h:1", workers=2), "already running"),
    (dict(workers=0), "positive"),
])
def test_conflicting_options_are_refused(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        choose_cluster(**kwargs)


def test_slurm_profile_job_script_has_the_configured_resources():
    config = yaml.safe_load(SLURM.read_text())["cluster"]
    choice = choose_cluster(cluster=SLURM)
    assert choice.kind == "slurm"
    script = job_script("slurm", choice.options)
    assert f"#SBATCH --cpus-per-task={config['cores']}" in script
    assert f"#SBATCH -t {config['walltime']}" in script
    assert "#SBATCH --mem=30G" in script  # 32GB (decimal) as SLURM's GiB
    assert "#SBATCH --gres=gpu:1" in script
    assert "--resources GPU=1" in script
    assert describe(choice).count("#!/usr/bin/env bash") == 1


def test_slurm_profile_values_flow_into_the_script(tmp_path):
    profile = tmp_path / "slurm.yaml"
    profile.write_text(yaml.safe_dump({"cluster": {
        "kind": "slurm", "cores": 4, "memory": "16GB", "walltime": "00:30:00",
        "processes": 2, "queue": "short"}}))
    script = job_script("slurm", choose_cluster(cluster=profile).options)
    assert "--cpus-per-task=4" in script and "-t 00:30:00" in script
    assert "#SBATCH -p short" in script and "--nworkers 2" in script
    assert "--mem=15G" in script


def test_unknown_profile_keys_are_refused(tmp_path):
    profile = tmp_path / "bad.yaml"
    profile.write_text("cluster:\n  kind: slurm\n  corse: 4\n")
    with pytest.raises(ConfigError, match="corse"):
        choose_cluster(cluster=profile)
    profile.write_text("cluster:\n  kind: kubernetes\n")
    with pytest.raises(ConfigError, match="valid: local, slurm, pbs"):
        choose_cluster(cluster=profile)


def test_slurm_dry_run_shows_the_job_script(tmp_path):
    from click.testing import CliRunner

    from conftest import smooth_noise, write_raster
    from geoseg.classes import make_classes
    from geoseg.model import create_bundle, save_bundle
    from geoseg_pipelines.cli import cli

    model = tmp_path / "m.safetensors"
    save_bundle(create_bundle(arch="pixelwise", encoder="-", classes=make_classes(("a", "b")),
                              bands=("r", "g", "b"), tile_size=64, overlap=32), model)
    scene = write_raster(tmp_path / "s.tif", smooth_noise((64, 64)))
    result = CliRunner().invoke(cli, ["predict", str(scene), "-m", str(model), "-o",
                                      str(tmp_path / "out"), "--cluster", str(SLURM),
                                      "--dry-run"], obj={})
    assert result.exit_code == 0, result.output
    assert "#SBATCH --cpus-per-task=8" in result.output
    assert "#SBATCH -t 02:00:00" in result.output


class _FakeJobQueue:
    """dask-jobqueue's SLURMCluster/PBSCluster stood in for by a LocalCluster on 127.0.0.1
    whose jobs are worker processes started here; ``starts`` False: no job ever starts
    (a queue that never runs it)."""

    def __init__(self, starts: bool = True):
        from distributed import LocalCluster

        calls, starts_ = [], starts

        class Cluster(LocalCluster):
            def __init__(self, **kwargs):
                calls.append(("init", kwargs))
                super().__init__(n_workers=0, threads_per_worker=1, processes=True,
                                 dashboard_address="127.0.0.1:0")

            def scale(self, n=None, jobs=None, **kwargs):
                calls.append(("scale", jobs))
                return super().scale(jobs if starts_ and jobs is not None else 0)

            def adapt(self, minimum_jobs=0, maximum_jobs=0, **kwargs):
                calls.append(("adapt", minimum_jobs, maximum_jobs))

        self.calls = calls
        self.SLURMCluster = self.PBSCluster = Cluster


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_an_adaptive_batch_system_cluster_starts_one_job_then_adapts(kind, monkeypatch):
    import geoseg_pipelines.cluster as cluster
    from geoseg_pipelines.cluster import ClusterChoice, connect

    fake = _FakeJobQueue()
    monkeypatch.setattr(cluster, "_jobqueue", lambda: fake)
    choice = ClusterChoice(kind, options={"cores": 2, "minimum_jobs": 0, "maximum_jobs": 3},
                           source="profile.yaml")
    with connect(choice, echo=lambda line: None) as client:
        assert len(client.scheduler_info()["workers"]) == 1
    asked = [c for c in fake.calls[1:] if c != ("scale", None)]  # None: LocalCluster's close
    assert asked == [("scale", 1), ("adapt", 0, 3)]
    assert fake.calls[0][1]["cores"] == 2 and "minimum_jobs" not in fake.calls[0][1]


def test_a_queue_that_never_starts_a_job_is_one_line_not_a_hang(monkeypatch):
    import geoseg_pipelines.cluster as cluster
    from geoseg_pipelines.cluster import ClusterChoice, connect

    monkeypatch.setattr(cluster, "_jobqueue", lambda: _FakeJobQueue(starts=False))
    choice = ClusterChoice("slurm", options={"minimum_jobs": 0, "maximum_jobs": 2,
                                             "start_timeout": 2}, source="profile.yaml")
    with pytest.raises(ConfigError, match="no SLURM worker started within 2 s"):
        with connect(choice, echo=lambda line: None):
            pass


@pytest.mark.parametrize("workers", [None, 2], ids=["in-process", "worker-processes"])
def test_local_workers_that_cannot_start_are_one_line_not_a_hang(workers):
    """A worker whose start fails (here a preload that cannot be imported; in practice an
    import or a process killed as it starts): one ConfigError naming the cause, at once,
    whether the worker runs in this process or in its own (whose nanny only logs it)."""
    import time

    import dask
    import distributed  # noqa: F401 - its config defaults first: the set below only adds

    from geoseg_pipelines.cluster import connect

    choice = choose_cluster(workers=workers, dashboard="none")
    start = time.monotonic()
    with dask.config.set({"distributed.worker.preload": ["geoseg_no_such_preload"]}):
        with pytest.raises(ConfigError, match="No module named 'geoseg_no_such_preload'"):
            with connect(choice, echo=lambda line: None):
                pass
    assert time.monotonic() - start < 60  # not the 300 s start timeout


def test_the_pbs_profile_job_script_asks_for_one_gpu_per_job():
    choice = choose_cluster(cluster=REPO / "configs" / "cluster" / "pbs.yaml")
    assert choice.kind == "pbs"
    text = describe(choice)
    assert "#PBS -l select=1:ncpus=8:ngpus=1:mem=32GB" in text
    assert "--resources GPU=1" in text and "0-4 job(s), adapting" in text


def test_an_unreachable_scheduler_is_one_line(tmp_path):
    """Nothing listens on the port: one error line, exit 2, no traceback."""
    import os
    import socket
    import subprocess
    import sys

    from conftest import smooth_noise, write_raster

    with socket.socket() as sock:  # a free port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    scene = write_raster(tmp_path / "s.tif", smooth_noise((64, 64)))
    model = REPO / "models" / "buildings-massachusetts.safetensors"
    proc = subprocess.run([sys.executable, "-c", "from geoseg_pipelines.cli import main; "
                           "main()", "predict", str(scene), "-m", str(model), "-o",
                           str(tmp_path / "out"), "--scheduler", f"tcp://127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s"})
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --scheduler tcp://127.0.0.1:")
    assert "cannot reach a Dask scheduler" in lines[0]
