"""The hardware decides the layout (DESIGN.md promise 12): one model worker per GPU, pinned,
with the GPU resource; device and precision resolved from what the model's workers report,
never from the client's devices."""

from __future__ import annotations

import os

import pytest

from geoseg.errors import ConfigError
from geoseg.model.devices import Capabilities
from geoseg.prediction.options import PredictOptions
from geoseg_pipelines.hardware import Hardware, plan_layout
from geoseg_pipelines.run import resolve_on_workers

GIB = 2**30


@pytest.mark.parametrize("gpus", [0, 1, 2, 8])
def test_one_model_worker_per_gpu_pinned_with_the_gpu_resource(gpus):
    machine = Hardware(cores=16 * max(1, gpus), gpus=tuple(str(i) for i in range(gpus)),
                       memory=128 * GIB)
    layout = plan_layout(machine)
    if gpus == 0:  # a CPU machine: one worker in the client's process, a thread per core
        assert layout.in_process and len(layout.workers) == 1
        (worker,) = layout.workers
        assert worker.threads == 16 and worker.gpu is None and not worker.resources
        assert layout.device == "auto" and worker.memory == 128 * GIB
        assert "1 worker in this process, 16 thread(s)" in layout.describe()
        return
    assert len(layout.workers) == gpus
    assert [w.gpu for w in layout.workers] == [str(i) for i in range(gpus)]
    assert all(w.resources == {"GPU": 1} for w in layout.workers)
    assert all(w.threads == 16 for w in layout.workers)  # the cores, shared out
    assert sum(w.memory for w in layout.workers) == 128 * GIB
    assert layout.device == "cuda"  # each sees its own GPU as cuda
    text = layout.describe()
    assert f"{gpus} worker process(es), one per GPU" in text
    assert "16 thread(s)" in text and "CUDA_VISIBLE_DEVICES" in text


def test_worker_processes_on_a_cpu_machine_when_asked_for():
    """--workers N (or threads_per_worker) asks for worker processes: N single-threaded
    ones, or as many of the given threads as the cores hold."""
    machine = Hardware(cores=16, memory=128 * GIB)
    four = plan_layout(machine, workers=4)
    assert not four.in_process and [w.threads for w in four.workers] == [1] * 4
    assert all(w.memory == 8 * GIB for w in four.workers)  # its threads' share
    assert "4 worker process(es), CPU only" in four.describe()
    pairs = plan_layout(machine, threads_per_worker=2)
    assert not pairs.in_process and [w.threads for w in pairs.workers] == [2] * 8


def test_gpu_layout_choices():
    machine = Hardware(cores=32, gpus=("0", "1", "2", "3"), memory=256 * GIB)
    assert [w.gpu for w in plan_layout(machine, workers=2).workers] == ["0", "1"]
    assert plan_layout(machine, workers=2).workers[0].threads == 16
    one = plan_layout(machine, device="cuda:2")
    assert [w.gpu for w in one.workers] == ["2"] and one.device == "cuda"
    cpu = plan_layout(machine, device="cpu")
    assert cpu.in_process and cpu.workers[0].threads == 32 and cpu.device == "cpu"
    assert not cpu.gpu_workers
    uuids = Hardware(cores=8, gpus=("GPU-aa", "GPU-bb"))
    assert [w.gpu for w in plan_layout(uuids).workers] == ["GPU-aa", "GPU-bb"]


@pytest.mark.parametrize("kwargs, words", [
    (dict(workers=5), "one model worker per GPU"),
    (dict(device="cuda:4"), "see 4 GPU"),
])
def test_a_second_model_copy_on_a_gpu_is_refused(kwargs, words):
    machine = Hardware(cores=32, gpus=("0", "1", "2", "3"), memory=256 * GIB)
    with pytest.raises(ConfigError, match=words):
        plan_layout(machine, **kwargs)


def test_cuda_on_a_machine_without_a_gpu_is_refused_before_any_cluster():
    with pytest.raises(ConfigError, match="no CUDA device"):
        plan_layout(Hardware(cores=4), device="cuda")


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    from geoseg.model.devices import visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ("2", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")  # CUDA stops at an invalid entry
    assert visible_gpus() == ("1",)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == ()


def test_gpus_are_counted_from_the_device_nodes(monkeypatch):
    import glob

    import geoseg.model.devices as devices

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices, "cuda_present", lambda: True)
    nodes = ["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    monkeypatch.setattr(glob, "glob", lambda pattern: nodes)
    assert devices.visible_gpus() == ("0", "1")
    nodes[:] = []  # WSL2 or ROCm: a GPU the nodes cannot count
    assert devices.visible_gpus() == ("0",)
    monkeypatch.setattr(devices, "cuda_present", lambda: False)
    assert devices.visible_gpus() == ()


def test_a_local_cluster_starts_the_layout_pinned_and_with_resources():
    """Two 'GPU' workers on this CPU machine: the mechanism (pinning by the nanny's env,
    the GPU resource, threads) is what a GPU machine gets; CUDA itself is not touched."""
    from geoseg_pipelines.cluster import ClusterChoice, connect
    from geoseg_pipelines.hardware import Layout, WorkerSpec

    layout = Layout((WorkerSpec("gpu-0", 2, 0, "0"), WorkerSpec("gpu-1", 1, 0, "1"),
                     WorkerSpec("cpu", 1, 0)), "cuda")
    choice = ClusterChoice("local", options={"memory_limit": "auto",
                                             "dashboard_address": "127.0.0.1:0"}, layout=layout)
    lines = []
    with connect(choice, echo=lines.append) as client:
        env = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        info = client.scheduler_info()["workers"]
        seen = {w["name"]: (w["nthreads"], w.get("resources") or {}, env[address])
                for address, w in info.items()}
        assert all(address.startswith("tcp://127.0.0.1:") for address in info)
    assert seen == {"gpu-0": (2, {"GPU": 1}, "0"), "gpu-1": (1, {"GPU": 1}, "1"),
                    "cpu": (1, {}, None)}
    assert "3 worker process(es) on 2 GPU(s)" in lines[0]


H100 = Capabilities(cuda=("NVIDIA H100",), cuda_bf16=(True,), cpu_bf16=False)
T4 = Capabilities(cuda=("Tesla T4",), cuda_bf16=(False,))
LOGIN = Capabilities()


def test_the_workers_decide_device_and_precision_not_the_client():
    resolved = resolve_on_workers(PredictOptions(), [H100, H100])
    assert (resolved.device, resolved.precision) == ("cuda", "bfloat16")
    assert resolve_on_workers(PredictOptions(), [T4]).precision == "float16"  # no emulation
    assert resolve_on_workers(PredictOptions(), [H100, LOGIN]).device == "cpu"
    tf32 = resolve_on_workers(PredictOptions(device="cuda", precision="tf32"), [H100])
    assert tf32.precision == "tf32"
    assert resolve_on_workers(PredictOptions(device="cpu"), [H100]).precision == "float32"


@pytest.mark.parametrize("options, reports, words", [
    (PredictOptions(), [H100, T4], "bfloat16 and float16"),
    (PredictOptions(device="cuda:1"), [H100], "only 1 CUDA device"),
    (PredictOptions(device="cuda"), [LOGIN], "no CUDA device"),
    (PredictOptions(device="cpu", precision="tf32"), [H100], "tf32 is a CUDA precision"),
    (PredictOptions(), [], "no worker"),
])
def test_what_the_workers_cannot_run_is_one_line(options, reports, words):
    with pytest.raises(ConfigError, match=words):
        resolve_on_workers(options, reports)


def test_a_gpu_less_client_resolves_from_its_workers_probes():
    """A login node without a GPU drives GPU workers: the workers' own probes (patched
    here in the worker processes only) decide cuda + bfloat16."""
    from distributed import Client, LocalCluster

    from geoseg.model.devices import probe_capabilities
    from geoseg_pipelines.run import worker_capabilities

    def report_an_h100(caps: Capabilities = H100) -> None:  # runs in each worker process
        import geoseg.model.devices as devices

        devices.probe_capabilities = lambda: caps

    assert not probe_capabilities().cuda  # this client has no GPU
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.run(report_an_h100)
        reports = worker_capabilities(client)
    assert reports == [H100, H100]
    resolved = resolve_on_workers(PredictOptions(), reports)
    assert (resolved.device, resolved.precision) == ("cuda", "bfloat16")
    assert resolved.identity()["precision"] == "bfloat16"
