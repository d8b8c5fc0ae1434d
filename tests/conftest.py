"""Shared fixtures: tiny GeoTIFFs made in tmp_path and tiny model bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def write_raster(path, data, *, transform=None, crs="EPSG:32633", nodata=None, **profile):
    """Write (C, H, W) or (H, W) ``data`` as a GeoTIFF and return its path."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[np.newaxis]
    transform = transform or Affine(2.0, 0, 500000.0, 0, -2.0, 4000000.0)
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2],
                       count=data.shape[0], dtype=data.dtype, crs=crs, transform=transform,
                       nodata=nodata, **profile) as ds:
        ds.write(data)
    return Path(path)


def smooth_noise(shape, *, seed=0, bands=3, dtype="uint8"):
    """Spatially correlated noise (C, H, W): textures a small CNN can tell apart."""
    rng = np.random.default_rng(seed)
    height, width = shape
    out = np.empty((bands, height, width), np.float32)
    for b in range(bands):
        coarse = rng.random((height // 8 + 2, width // 8 + 2))
        up = np.kron(coarse, np.ones((8, 8)))[:height, :width]
        out[b] = 0.7 * up + 0.3 * rng.random((height, width))
    scale = 255 if dtype == "uint8" else 4000
    return (out * scale).astype(dtype)


@pytest.fixture(autouse=True, scope="session")
def onnx_graph_cache(tmp_path_factory):
    """Exported ONNX graphs (``--runtime onnxruntime``, the CPU default) go to a cache of
    the test session's own, never the user's ~/.cache; workers inherit it."""
    import os

    path = tmp_path_factory.mktemp("geoseg-cache")
    old = os.environ.get("GEOSEG_CACHE")
    os.environ["GEOSEG_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GEOSEG_CACHE", None)
    else:
        os.environ["GEOSEG_CACHE"] = old


@pytest.fixture(autouse=True)
def quiet_progress_lines(monkeypatch):
    """Commands in tests print no periodic progress line (output stays exact however slow
    the machine); tests of those lines set their own interval."""
    monkeypatch.setenv("GEOSEG_PROGRESS_SECONDS", "3600")


@pytest.fixture
def make_bundle(tmp_path):
    """``make_bundle(arch="tinycnn", bands=3, classes=("a","b"), ...) -> path``; ``bands``
    a count (named band1, band2, ...) or the band names."""
    from geoseg.classes import make_classes
    from geoseg.model import create_bundle, save_bundle

    def make(arch="tinycnn", encoder="-", bands=3, classes=("background", "building"),
             tile_size=64, overlap=32, name="tiny", seed=0, **kwargs):
        names = (tuple(f"band{i + 1}" for i in range(bands)) if isinstance(bands, int)
                 else tuple(bands))
        bundle = create_bundle(arch=arch, encoder=encoder, classes=make_classes(classes),
                               bands=names,
                               tile_size=tile_size, overlap=overlap, name=name, seed=seed,
                               **kwargs)
        path = tmp_path / f"{name}-{arch}-{seed}.safetensors"
        save_bundle(bundle, path)
        return path

    return make


def shared_data(*parts) -> Path:
    """A path under ../shared/data, skipping the test when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (real data lives in ../shared/data beside the repo; "
                    "a user's clone has none)")
    return path


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    """A seeded tinycnn bundle (bg, fg; r, g, b; tile 64, overlap 32) shared by tests that
    run `geoseg` as a process."""
    from geoseg.classes import make_classes
    from geoseg.model import create_bundle, save_bundle

    path = tmp_path_factory.mktemp("tiny-model") / "tiny.safetensors"
    save_bundle(create_bundle(arch="tinycnn", encoder="-", classes=make_classes(("bg", "fg")),
                              bands=("r", "g", "b"), tile_size=64, overlap=32), path)
    return path


HTTP_SERVER = """
import functools, sys
from http.server import ThreadingHTTPServer
from RangeHTTPServer import RangeRequestHandler

class Handler(RangeRequestHandler):
    def log_message(self, format, *args):
        print(self.headers.get("Range") or "whole file", file=sys.stderr, flush=True)

server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=sys.argv[1]))
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def http_root(tmp_path):
    """A folder served over HTTP with Range support on 127.0.0.1 (a free port) by a server
    process of its own (GDAL's reads hold the GIL at times: a server thread in the test's
    process could starve), with the Range headers it saw; stopped with the test."""
    import subprocess
    import sys

    root = tmp_path / "www"
    root.mkdir()
    log = tmp_path / "http.log"
    with open(log, "w") as err:
        server = subprocess.Popen([sys.executable, "-c", HTTP_SERVER, str(root)],
                                  stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        yield root, f"http://127.0.0.1:{port}", log
    finally:
        server.terminate()
        server.wait(timeout=10)
