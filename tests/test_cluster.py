"""Cluster choice: local by default, a scheduler address, or a profile; the SLURM profile's
job script is generated without SLURM."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from geoseg.errors import ConfigError
from geoseg_pipelines.cluster import choose_cluster, describe, job_script

SLURM = REPO / "configs" / "cluster" / "slurm.yaml"


def test_local_is_the_default_with_one_process_per_core():
    choice = choose_cluster()
    assert choice.kind == "local"
    assert choice.options["n_workers"] >= 1 and choice.options["threads_per_worker"] == 1
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
