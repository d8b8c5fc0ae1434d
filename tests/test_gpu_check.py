"""The GPU check's CPU mode runs every stage, so the script a GPU machine runs cannot rot."""

from __future__ import annotations

import json

from conftest import REPO


def test_the_gpu_check_runs_every_stage_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    from benchmarks.gpu_check import STAGES, main

    report = main(["--device", "cpu", "--quick", "--out", str(tmp_path)])
    stages = report["stages"]
    assert list(stages) == [name for name, _, _ in STAGES]
    failed = {name: s.get("error") for name, s in stages.items() if s["status"] == "failed"}
    assert not failed, failed
    assert stages["agree"]["result"]["precisions"]["float32"]["agree"] == 1.0
    assert stages["dask"]["result"]["byte_identical"]
    assert stages["dask"]["result"]["layout"][0].startswith("local cluster:")
    throughput = stages["throughput"]["result"]
    assert throughput["block_loop_seconds"] > 0 and throughput["model_only_mpix_s"] > 0
    assert json.loads((tmp_path / "report.json").read_text())["finished"]
    assert "## identity" in (tmp_path / "report.md").read_text()
