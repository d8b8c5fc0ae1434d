"""Scenes from anywhere GDAL reads: an HTTP server with Range support and an S3 server, both
started here on 127.0.0.1, ``/vsimem/``, URLs in text lists; outputs byte-identical to the
same file read from the local disk."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio

from conftest import smooth_noise, write_raster
from geoseg.errors import InvalidInputError
from geoseg.prediction.flow import predict_scene
from geoseg.inputs.sources import scene_dir
from geoseg.inputs.sources import gdal_path, is_virtual, source_stem
from geoseg_pipelines.inputs import expand_inputs

GEOSEG = [sys.executable, "-c", "from geoseg_pipelines.cli import main; main()"]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cog(path: Path) -> Path:
    """A small tiled GeoTIFF (internal tiles: GDAL reads it by ranges)."""
    return write_raster(path, smooth_noise((200, 170), seed=7), tiled=True, blockxsize=64,
                        blockysize=64)


@pytest.mark.parametrize("text, vsi, stem", [
    ("http://127.0.0.1:8799/x.tif", "/vsicurl/http://127.0.0.1:8799/x.tif", "x"),
    ("https://host/a/b/scene.tif?sig=1", "/vsicurl/https://host/a/b/scene.tif?sig=1", "scene"),
    ("s3://bucket/k/y.TIF", "/vsis3/bucket/k/y.TIF", "y"),
    ("gs://bucket/z.tif", "/vsigs/bucket/z.tif", "z"),
    ("az://container/w.tif", "/vsiaz/container/w.tif", "w"),
    ("/vsicurl/http://127.0.0.1:8799/x.tif", "/vsicurl/http://127.0.0.1:8799/x.tif", "x"),
    ("/vsizip//vsis3/b/a.zip/inner.tif", "/vsizip//vsis3/b/a.zip/inner.tif", "inner"),
    ("data/local.tif", "data/local.tif", "local"),
])
def test_urls_map_to_gdal_file_systems_and_name_output_folders(text, vsi, stem):
    assert gdal_path(text) == vsi
    assert source_stem(text) == stem
    assert scene_dir("out", text) == Path("out") / stem
    assert is_virtual(text) == (not text.startswith("data/"))


def test_inputs_keep_urls_and_vsi_paths_as_written(tmp_path):
    listing = tmp_path / "scenes.txt"
    listing.write_text("http://127.0.0.1:1/a.tif\n/vsis3/b/c.tif  # remote\nlocal.tif\n")
    assert expand_inputs(["/vsicurl/http://127.0.0.1:1/x.tif", "s3://b/y.tif", listing]) == [
        "/vsicurl/http://127.0.0.1:1/x.tif", "s3://b/y.tif", "http://127.0.0.1:1/a.tif",
        "/vsis3/b/c.tif", str(tmp_path / "local.tif")]


def test_a_scene_over_http_predicts_the_same_bytes_as_on_disk(tmp_path, http_root,
                                                              tiny_model_file):
    root, url, log = http_root
    scene = cog(root / "remote.tif")
    predict_scene(scene, tmp_path / "local", model=tiny_model_file)
    for i, text in enumerate((f"{url}/remote.tif", f"/vsicurl/{url}/remote.tif")):
        out = tmp_path / f"http{i}"
        summary = predict_scene(text, out, model=tiny_model_file)
        assert summary["scene"] == text
        assert sha(out / "remote" / "classes.tif") == \
            sha(tmp_path / "local" / "remote" / "classes.tif")
    assert "bytes=" in log.read_text(), "GDAL read by ranges"


def test_a_missing_url_is_one_line(tmp_path, http_root, tiny_model_file):
    _, url, _ = http_root
    with pytest.raises(InvalidInputError, match=r"http://127\.0\.0\.1:\d+/absent\.tif: cannot "
                                                r"open \(.*\); check the URL"):
        predict_scene(f"{url}/absent.tif", tmp_path / "out", model=tiny_model_file)


def test_geoseg_predict_reads_urls_from_a_list(tmp_path, http_root, tiny_model_file):
    root, url, _ = http_root
    cog(root / "a.tif")
    cog(root / "b.tif")
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"{url}/a.tif\n/vsicurl/{url}/b.tif\n")
    proc = subprocess.run([*GEOSEG, "predict", str(listing), "-m", str(tiny_model_file), "-o",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "a" / "classes.tif").is_file()
    assert (tmp_path / "out" / "b" / "classes.tif").is_file()


def test_vsimem_scene(tmp_path, tiny_model_file):
    scene = cog(tmp_path / "mem.tif")
    predict_scene(scene, tmp_path / "disk", model=tiny_model_file)
    with rasterio.MemoryFile(scene.read_bytes(), filename="mem.tif") as memfile:
        predict_scene(memfile.name, tmp_path / "vsimem", model=tiny_model_file)
    assert sha(tmp_path / "vsimem" / "mem" / "classes.tif") == \
        sha(tmp_path / "disk" / "mem" / "classes.tif")


@pytest.fixture
def s3_bucket(monkeypatch):
    """A moto S3 server process on 127.0.0.1 (a free port) with bucket ``scenes``; GDAL
    pointed at it through its AWS_* settings. Stopped with the test."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        for _ in range(100):  # the server takes a moment to listen
            try:
                client.create_bucket(Bucket="scenes")
                break
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
        else:
            pytest.fail("the moto S3 server did not start")
        for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "AWS_REGION": "us-east-1", "AWS_S3_ENDPOINT": f"127.0.0.1:{port}",
                           "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}.items():
            monkeypatch.setenv(key, value)
        yield client
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_scene_on_s3_predicts_the_same_bytes_as_on_disk(tmp_path, s3_bucket,
                                                          tiny_model_file):
    scene = cog(tmp_path / "bucketed.tif")
    s3_bucket.upload_file(str(scene), "scenes", "dir/bucketed.tif")
    predict_scene(scene, tmp_path / "local", model=tiny_model_file)
    for i, text in enumerate(("s3://scenes/dir/bucketed.tif", "/vsis3/scenes/dir/bucketed.tif")):
        predict_scene(text, tmp_path / f"s3-{i}", model=tiny_model_file)
        assert sha(tmp_path / f"s3-{i}" / "bucketed" / "classes.tif") == \
            sha(tmp_path / "local" / "bucketed" / "classes.tif")
