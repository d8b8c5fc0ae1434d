"""The GPU check: does geoseg's CUDA path give the right pixels, how fast is it end to end
against the network alone, and how does the Dask runner lay out a GPU machine?

One command, sized for about 10 minutes on one GPU from a fresh copy of the repository
(the lent GPU machine has no network: ``benchmarks/gpu_check.sh`` installs the wheels that
travel with the tree, then runs this). It needs nothing outside the repository: the demo
scene and the shipped model are in it, and larger scenes are mirror-enlargements of the
demo scene written here. Stages, most important first; each is skipped when the time left
(``--minutes``) is too short for it, and a failing stage is reported with its error line
while the others go on:

env         versions, devices and what ``auto`` resolves to, the local cluster's layout
agree       the demo scene with the shipped model (``--tta none``) on the device against
            CPU float32, per precision (auto, float32, tf32, float16): share of valid
            pixels whose class agrees (target >= 0.999), largest probability difference
identity    byte identity of classes.tif and probabilities.tif on the device across block
            sizes, batch sizes and a rerun
throughput  Unet resnet18 (random weights) on an enlargement of the demo scene: the network
            alone on device tensors against the same tiles through ``predict_scene`` (plan,
            block loop and tail timed apart, peak GPU memory, GPU utilization) and
            ``geoseg predict`` as a process (start-up included)
dask        ``geoseg predict --runner dask`` (the hardware layout) against ``--runner
            local`` on the same scene: seconds and byte identity

``--device cpu --quick`` runs every stage on small scenes on the CPU: the test suite runs it
that way, so the script cannot rot. Writes ``report.json`` and ``report.md`` into ``--out``
(default ``$OUT`` when set, else benchmarks/work/gpu-check) after every stage.

    python -m benchmarks.gpu_check                     # CUDA, about 10 minutes
    python -m benchmarks.gpu_check --device cpu --quick
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.bench_gpu import GpuSampler
from benchmarks.common import ROOT, WORK, mirror_enlarge

DEMO = ROOT / "data" / "demo" / "23429155_15_uint8_clipped.tif"
SHIPPED = ROOT / "models" / "buildings.safetensors"
AGREE_TARGET = 0.999


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _predict(scene: Path, out: Path, model: Path | object, **options: object) -> dict:
    """``predict_scene`` into a fresh ``out`` with probabilities, no preview."""
    from geoseg.prediction.flow import predict_scene
    from geoseg.prediction.options import options_from

    shutil.rmtree(out, ignore_errors=True)
    opts = options_from({"probabilities": True, "preview": False, "overwrite": True,
                         **options})
    return predict_scene(scene, out, model=model, options=opts)


def _read(path: str) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read()


# --- stages -------------------------------------------------------------------------------

def stage_env(ctx: dict) -> dict:
    import platform

    import torch

    from geoseg.model.devices import probe_capabilities, resolve_precision, visible_gpus
    from geoseg_pipelines.hardware import plan_layout, this_machine

    caps = probe_capabilities()
    device = ctx["device"]
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
           "devices": list(caps.cuda), "native_bf16": list(caps.cuda_bf16),
           "cpu_bf16": caps.cpu_bf16, "visible_gpus": list(visible_gpus()),
           "cores": os.cpu_count(), "auto_precision": resolve_precision("auto", device, caps),
           "tf32_default": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                            "cudnn": torch.backends.cudnn.allow_tf32},
           "layout": plan_layout(this_machine()).describe()}
    for name in ("rasterio", "dask", "distributed", "segmentation_models_pytorch"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    if rasterio_version := out.get("rasterio"):
        import rasterio

        out["rasterio"] = f"{rasterio_version} (GDAL {rasterio.__gdal_version__})"
    return out


def stage_agree(ctx: dict) -> dict:
    """The device's classes and probabilities against CPU float32, per precision."""
    work, device = ctx["work"] / "agree", ctx["device"]
    common = {"tta": "none", "block_size": 512 if ctx["quick"] else 1024}
    reference = _predict(DEMO, work / "cpu", SHIPPED, device="cpu", precision="float32",
                         **common)
    ref_classes = _read(reference["outputs"]["classes"])[0]
    ref_probs = _read(reference["outputs"]["probabilities"]).astype(np.int16)
    valid = ref_classes != 255
    precisions = (["auto", "float32", "tf32", "float16"] if device.startswith("cuda")
                  else ["float32"])
    rows = {}
    for precision in precisions:
        run = _predict(DEMO, work / precision, SHIPPED, device=device, precision=precision,
                       batch_size=32 if ctx["quick"] else 8, **common)
        classes = _read(run["outputs"]["classes"])[0]
        probs = _read(run["outputs"]["probabilities"]).astype(np.int16)
        agree = float((classes[valid] == ref_classes[valid]).mean())
        rows[precision] = {"agree": round(agree, 6),
                           "pixels_differing": int((classes != ref_classes).sum()),
                           "max_probability_difference_of_255": int(
                               np.abs(probs - ref_probs).max()),
                           "ok": agree >= AGREE_TARGET}
    return {"scene": DEMO.name, "valid_pixels": int(valid.sum()), "target": AGREE_TARGET,
            "precisions": rows, "ok": all(r["ok"] for r in rows.values())}


def stage_identity(ctx: dict) -> dict:
    """The same outputs, byte for byte, across block sizes and a rerun (one forward size a
    scene: promised); across batch sizes (another forward size: reported, not promised)."""
    work, device = ctx["work"] / "identity", ctx["device"]
    size = 768 if ctx["quick"] else 2048
    scene = mirror_enlarge(DEMO, size, ctx["work"] / f"demo_{size}.tif")
    runs = ([(256, 8), (512, 8), (512, 32), (512, 8)] if ctx["quick"]
            else [(512, 8), (1024, 8), (2048, 8), (1024, 32), (1024, 8)])
    hashes, by_batch = {}, {}
    for i, (block, batch) in enumerate(runs):
        run = _predict(scene, work / str(i), SHIPPED, device=device, tta="none",
                       block_size=block, batch_size=batch)
        got = {kind: sha256(Path(run["outputs"][kind])) for kind in ("classes", "probabilities")}
        hashes[f"block {block}, batch {batch}, run {i}"] = got
        by_batch.setdefault(batch, []).append(got)
    kinds = ("classes", "probabilities")
    distinct = {f"batch {batch}": {kind: len({h[kind] for h in runs_}) for kind in kinds}
                for batch, runs_ in by_batch.items()}
    across = {kind: len({h[kind] for h in hashes.values()}) for kind in kinds}
    return {"scene": f"{size}^2", "runs": hashes, "distinct_across_blocks": distinct,
            "distinct_across_batch_sizes": across,
            "ok": all(n == 1 for d in distinct.values() for n in d.values())}


def stage_throughput(ctx: dict) -> dict:
    """Network alone against predict_scene and the command, on the same tiles."""
    import torch

    from benchmarks.bench_gpu import model_only, tile_count
    from benchmarks.bench_predict import make_models
    from geoseg.model import read_meta
    from geoseg.model.loading import load_for_prediction

    device, quick = ctx["device"], ctx["quick"]
    size = 768 if quick else (16384 if device.startswith("cuda") else 4096)
    scene = mirror_enlarge(DEMO, size, ctx["work"] / f"demo_{size}.tif")
    model = make_models()["Unet"]
    meta = read_meta(model)
    tiles, pixels = tile_count(scene, meta.tile_size, meta.overlap)
    mpix = pixels / 1e6
    batch = ctx["batch"]
    alone = model_only(model, device, batch, tiles, meta.in_channels)
    cuda = device.startswith("cuda")
    bundle = load_for_prediction(model, device=device, batch_size=batch)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    marks: list[float] = []
    start = time.perf_counter()
    with GpuSampler() as gpu:
        from geoseg.prediction.flow import predict_scene
        from geoseg.prediction.options import options_from

        out = ctx["work"] / "throughput"
        shutil.rmtree(out, ignore_errors=True)
        summary = predict_scene(scene, out, model=bundle, options=options_from(
            {"device": device, "tta": "none", "batch_size": batch, "overwrite": True}),
            progress=lambda n: marks.append(time.perf_counter()))
    total = time.perf_counter() - start
    loop = (marks[-1] - marks[0]) if len(marks) > 1 else total
    tail = total - (marks[-1] - start) if marks else 0.0
    process = _command(scene, model, device, batch, ctx["work"] / "throughput-cli")
    result = {"scene": f"{size}^2", "mpix": round(mpix, 1), "tiles": tiles,
              "batch": batch, "precision": alone["precision"],
              "model_only_seconds": round(alone["seconds"], 3),
              "model_only_mpix_s": round(mpix / alone["seconds"], 2),
              "in_process_seconds": round(total, 3),
              "block_loop_seconds": round(loop, 3),
              "before_loop_seconds": round(marks[0] - start if marks else 0.0, 3),
              "tail_seconds": round(tail, 3),
              "in_process_mpix_s": round(mpix / total, 2),
              "command_seconds": round(process, 3),
              "command_mpix_s": round(mpix / process, 2),
              "start_up_seconds": round(process - summary["seconds"], 3),
              "ratio_scene_to_model_only": round(alone["seconds"] / summary["seconds"], 3),
              "gpu_utilization": gpu.summary()}
    if cuda:
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def _command(scene: Path, model: Path, device: str, batch: int, out: Path,
             *extra: str) -> float:
    """Seconds of ``geoseg predict`` as a process (start-up included)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-c", "from geoseg_pipelines.cli import main; main()", "predict",
           str(scene), "-m", str(model), "-o", str(out), "--device", device, "--tta", "none",
           "--batch-size", str(batch), "--no-preview", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"geoseg predict {' '.join(extra)} failed: "
                           f"{proc.stderr.strip().splitlines()[-1:]}")
    return seconds


def stage_dask(ctx: dict) -> dict:
    """The Dask runner with the hardware layout against the in-process runner."""
    from benchmarks.bench_predict import make_models

    device, quick = ctx["device"], ctx["quick"]
    size = 768 if quick else (8192 if device.startswith("cuda") else 2048)
    scene = mirror_enlarge(DEMO, size, ctx["work"] / f"demo_{size}.tif")
    model = make_models()["Unet"]
    runs = {}
    for runner in ("local", "dask"):
        out = ctx["work"] / f"dask-{runner}"
        extra = ["--runner", runner, "--probabilities"]
        if runner == "dask":
            extra += ["--dashboard", "127.0.0.1:0"]
        seconds = _command(scene, model, device, ctx["batch"], out, *extra)
        folder = next(p for p in out.iterdir() if p.is_dir())
        runs[runner] = {"seconds": round(seconds, 3),
                        "classes": sha256(folder / "classes.tif"),
                        "probabilities": sha256(folder / "probabilities.tif")}
    dry = subprocess.run([sys.executable, "-c", "from geoseg_pipelines.cli import main; main()",
                          "predict", str(scene), "-m", str(model), "-o",
                          str(ctx["work"] / "dry"), "--device", device, "--runner", "dask",
                          "--dry-run"], capture_output=True, text=True, cwd=ROOT)
    layout = [line for line in dry.stdout.splitlines() if line.startswith(("local", "  "))]
    same = all(runs["local"][k] == runs["dask"][k] for k in ("classes", "probabilities"))
    return {"scene": f"{size}^2", "layout": layout, "runs": runs,
            "dask_over_local": round(runs["dask"]["seconds"] / runs["local"]["seconds"], 3),
            "byte_identical": same, "ok": same}


STAGES: list[tuple[str, Callable[[dict], dict], int]] = [
    ("env", stage_env, 10),
    ("agree", stage_agree, 60),
    ("identity", stage_identity, 60),
    ("throughput", stage_throughput, 150),
    ("dask", stage_dask, 120),
]
"""(name, function, seconds it needs at least on a GPU machine)."""


def report_markdown(report: dict) -> str:
    lines = [f"# geoseg GPU check ({report['device']}{', quick' if report['quick'] else ''})",
             "", f"{report['finished'] or 'unfinished'}; {report['seconds']:.0f} s in all", ""]
    for name, stage in report["stages"].items():
        status = stage["status"]
        lines += [f"## {name}: {status} ({stage.get('seconds', 0):.1f} s)", ""]
        if status == "failed":
            lines += [f"    {stage['error']}", ""]
        elif "result" in stage:
            lines += ["```", json.dumps(stage["result"], indent=2), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="small scenes (the CPU mode)")
    parser.add_argument("--minutes", type=float, default=10.0, help="time budget")
    parser.add_argument("--batch-size", type=int, default=8, dest="batch")
    parser.add_argument("--stages", default=",".join(n for n, _, _ in STAGES),
                        help="stages to run, comma-separated")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default: $OUT, else benchmarks/work/gpu-check)")
    args = parser.parse_args(argv)
    out = args.out or Path(os.environ.get("OUT") or WORK / "gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GEOSEG_PROGRESS_SECONDS", "3600")
    started = time.perf_counter()
    deadline = started + args.minutes * 60
    ctx = {"device": args.device, "quick": args.quick, "batch": args.batch,
           "work": WORK / "gpu-check-work"}
    ctx["work"].mkdir(parents=True, exist_ok=True)
    report: dict = {"device": args.device, "quick": args.quick, "stages": {},
                    "finished": None, "seconds": 0.0}
    wanted = args.stages.split(",")
    for name, stage, needs in STAGES:
        if name not in wanted:
            continue
        left = deadline - time.perf_counter()
        if not args.quick and left < needs:
            report["stages"][name] = {"status": f"skipped ({left:.0f} s left, needs {needs})"}
            continue
        t0 = time.perf_counter()
        try:
            result = stage(ctx)
            status = "ok" if result.get("ok", True) else "target missed"
            report["stages"][name] = {"status": status, "result": result}
        except Exception as exc:  # noqa: BLE001 - a failed stage is reported, the rest go on
            report["stages"][name] = {"status": "failed",
                                      "error": f"{type(exc).__name__}: {exc}"[:500],
                                      "traceback": traceback.format_exc()[-4000:]}
        report["stages"][name]["seconds"] = round(time.perf_counter() - t0, 1)
        report["seconds"] = time.perf_counter() - started
        (out / "report.json").write_text(json.dumps(report, indent=2))
        (out / "report.md").write_text(report_markdown(report))
        print(f"{name}: {report['stages'][name]['status']} "
              f"({report['stages'][name]['seconds']} s)", flush=True)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    report["seconds"] = time.perf_counter() - started
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(report_markdown(report))
    print(report_markdown(report))
    return report


if __name__ == "__main__":
    main()
