"""The GPU benchmark runs on the CPU too (``--device cpu --quick``): the one command a CUDA
machine runs is checked here, on a tiny model and scene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import smooth_noise, write_raster

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_runs_on_the_cpu(tmp_path, tiny_model_file):
    scene = write_raster(tmp_path / "scene.tif", smooth_noise((256, 192), seed=4))
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_gpu", "--device", "cpu",
                           "--quick", "--scene", str(scene), "--model", str(tiny_model_file),
                           "--batches", "4,8", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "end to end / model only:" in proc.stdout
    result = json.loads(out.read_text())
    assert [r["batch"] for r in result["model_only"]] == [4, 8]
    assert result["batch"] in (4, 8)
    assert result["tiles"] == 35  # 7 x 5 tiles of 64 px at stride 32 (multiple of 32)
    e2e = result["end_to_end"]
    assert 0 < e2e["scene_seconds"] < e2e["seconds"] and 0 < result["ratio"]
    assert result["end_to_end"]["gpu"].startswith("n/a")
