"""Progress without a terminal: a line at least every interval with tiles, tiles/s and the
time left; each scene's seconds are its own."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

from conftest import smooth_noise, write_raster
from geoseg_pipelines.progress import TileProgress


def test_lines_come_every_interval_with_rate_and_time_left():
    stream = io.StringIO()
    with TileProgress(stream=stream, interval=0.05) as progress:
        progress.add_total(100)
        progress.advance(25)
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3
    assert re.fullmatch(r"progress: 25/100 tiles \(25%\), [\d.]+ tiles/s, \d+m\d\ds left",
                        lines[-1]), lines[-1]


def test_geoseg_predict_in_a_log_prints_progress_lines(tmp_path, make_bundle):
    model = make_bundle(arch="tinycnn", tile_size=64, overlap=32)
    scene = write_raster(tmp_path / "big.tif", smooth_noise((1200, 1200)))
    env = {**os.environ, "GEOSEG_PROGRESS_SECONDS": "0.2"}
    result = subprocess.run([sys.executable, "-c",
                             "from geoseg_pipelines.cli import main; main()", "predict",
                             str(scene), "-m", str(model), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress:")]
    assert lines, result.stderr
    assert all(re.match(r"progress: \d+/\d+ tiles \(\d+%\), [\d.]+ tiles/s", line)
               for line in lines)
