"""Device manager (edgeray.device): selection order, mixed precision, memory budgets, failure classification and
failover, NVML stats. This machine has no GPU: tests that need CUDA, MPS, a TPU or NVML fake them and say so
in their names (the fake is only the probe's answers or the injected failure; the code under test is real);
the CUDA path itself is unproven here."""
from __future__ import annotations

import sys
import types

import pytest
import torch

from edgeray import device as dm
from edgeray.device import (
    autocast_context,
    cpu_autocast_runs_lstm,
    fits,
    is_device_failure,
    parse_memory_budgets,
    place,
    resolve_precision,
    run_with_failover,
    select_device,
)
from edgeray.gpu import gpu_stats
from edgeray.training.tasks import torch_mlp_demo


class FakeProbe(dm.TorchProbe):
    """Answers what a machine with `cuda` GPUs (compute capability `cap`), MPS and/or a TPU would."""

    def __init__(self, cuda: int = 0, cap=(8, 0), mps: bool = False, tpu: str | None = None):
        self.cuda, self.cap, self.mps, self._tpu = cuda, cap, mps, tpu

    def cuda_count(self):
        return self.cuda

    def cuda_unavailable_reason(self):
        return "fake: no CUDA"

    def cuda_properties(self, index):
        return {"name": f"Fake GPU {index}", "capability": self.cap, "total_memory_bytes": 8 << 30,
                "free_memory_bytes": 7 << 30}

    def mps_available(self):
        return self.mps

    def mps_unavailable_reason(self):
        return "fake: no MPS"

    def tpu(self):
        return self._tpu


def _no_progress(*_):
    return None


# ---------------------------------------------------------------------------------------------- selection

def test_selection_order_fake_cuda_then_fake_mps_then_cpu_with_reasons():
    cuda = select_device(probe=FakeProbe(cuda=2, mps=True))
    assert (cuda.name, cuda.kind, cuda.index, cuda.description) == ("cuda:0", "cuda", 0, "Fake GPU 0")
    assert cuda.autocast_dtypes == ("bf16", "fp16") and cuda.total_memory_bytes == 8 << 30 and cuda.skipped == []

    mps = select_device(probe=FakeProbe(cuda=0, mps=True))
    assert mps.name == "mps" and mps.autocast_dtypes == ("fp16",)
    assert mps.skipped == [{"device": "cuda", "reason": "fake: no CUDA"}]

    cpu = select_device(probe=FakeProbe())
    assert cpu.name == "cpu" and cpu.autocast_dtypes == ("bf16",)
    assert [s["device"] for s in cpu.skipped] == ["cuda", "mps"]


def test_fake_cuda_not_taken_by_a_task_given_no_gpu_and_preferred_device_must_exist():
    info = select_device(probe=FakeProbe(cuda=1), allow_cuda=False)
    assert info.name == "cpu" and "num_gpus=0" in info.skipped[0]["reason"]
    assert select_device("cuda:1", probe=FakeProbe(cuda=2)).name == "cuda:1"
    assert select_device("cpu", probe=FakeProbe(cuda=2)).name == "cpu"
    with pytest.raises(ValueError, match=r"device: 'cuda:3' requested .*only 2 CUDA"):
        select_device("cuda:3", probe=FakeProbe(cuda=2))
    with pytest.raises(ValueError, match=r"device: 'mps' requested .*fake: no MPS"):
        select_device("mps", probe=FakeProbe())
    with pytest.raises(ValueError, match=r"device: must be"):
        select_device("gpu", probe=FakeProbe())


def test_fake_tpu_is_reported_but_not_used():
    info = select_device(probe=FakeProbe(tpu="TPU_NAME=v4-8"))
    assert info.name == "cpu" and info.tpu == "TPU_NAME=v4-8"
    assert info.skipped[0]["device"] == "tpu" and "not supported" in info.skipped[0]["reason"]


def test_real_probe_on_this_machine_without_gpu_picks_cpu_and_says_why_not_cuda():
    info = select_device()
    assert info.name == "cpu" and info.kind == "cpu"
    reasons = {s["device"]: s["reason"] for s in info.skipped}
    assert "cuda" in reasons and reasons["cuda"]  # a reason, not just absence
    assert info.to_dict()["autocast_dtypes"] == ["bf16"]


# ---------------------------------------------------------------------------------------------- precision

def test_precision_per_device_with_fake_cuda_capabilities():
    assert resolve_precision("cuda:0", "auto", capability=(8, 0)) == "bf16"  # Ampere and later
    assert resolve_precision("cuda:0", "auto", capability=(7, 5)) == "fp16"  # Turing: no native bf16
    with pytest.raises(ValueError, match=r"params.precision: 'bf16' is not supported on device 'cuda:0'"):
        resolve_precision("cuda:0", "bf16", capability=(7, 5))
    assert resolve_precision("mps", "auto") == "fp16"
    assert resolve_precision("cpu", "auto") == "fp32"  # bf16 on the CPU must be asked for
    assert resolve_precision("cpu", "bf16") == "bf16"


@pytest.mark.parametrize("precision, match", [
    ("fp16", r"params.precision: 'fp16' is not supported on device 'cpu'"),
    ("fp8", r"params.precision: must be one of \['fp32', 'bf16', 'fp16', 'auto'\], got 'fp8'"),
])
def test_unsupported_precision_is_a_value_error_naming_the_field(precision, match):
    with pytest.raises(ValueError, match=match):
        autocast_context("cpu", precision)


def test_autocast_bf16_on_cpu_is_really_used_and_fp32_is_not():
    layer = torch.nn.Linear(4, 3)
    seen = []
    layer.register_forward_hook(lambda mod, inputs, output: seen.append(output.dtype))
    x = torch.randn(5, 4)
    with autocast_context("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        layer(x)
    with autocast_context("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
        layer(x)
    assert seen == [torch.bfloat16, torch.float32]


def test_grad_scaler_only_for_fp16_on_fake_cuda(monkeypatch):
    assert not dm.grad_scaler("cpu", "bf16").is_enabled()
    # torch disables a CUDA GradScaler where CUDA is absent; pretend it is present (fake, named so)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (8, 0))
    assert dm.grad_scaler("cuda:0", "fp16").is_enabled()
    assert not dm.grad_scaler("cuda:0", "bf16").is_enabled()  # bf16 has fp32's exponent range: no scaling


def _record_linear_dtypes():
    """A global forward hook: the dtypes every nn.Linear produced (the demo's model is built inside the task)."""
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda mod, inputs, output: seen.append(output.dtype) if isinstance(mod, torch.nn.Linear) else None)
    return seen, handle


def test_demo_task_trains_under_bf16_autocast_on_cpu_and_records_precision():
    seen, handle = _record_linear_dtypes()
    try:
        out = torch_mlp_demo({"epochs": 3, "n_samples": 128, "precision": "bf16"}, _no_progress, "cpu")
    finally:
        handle.remove()
    assert out["precision"] == "bf16" and out["device"] == "cpu"
    train_dtypes = set(seen[:-2])  # the last two calls are the fp32 accuracy pass outside autocast
    assert train_dtypes == {torch.bfloat16}
    assert out["final_loss"] < out["first_loss"]  # it still learns in bf16

    seen, handle = _record_linear_dtypes()
    try:
        out = torch_mlp_demo({"epochs": 1, "n_samples": 64}, _no_progress, "cpu")  # default: fp32
    finally:
        handle.remove()
    assert out["precision"] == "fp32" and set(seen) == {torch.float32}


def test_sport_torch_models_train_under_autocast_and_precision_is_validated():
    from edgeray.sports.models import make_model
    from edgeray.sports.train import validate_params
    from tests.test_sports_models import synthetic_frame

    frame = synthetic_frame(seasons=(2019,), days=30)
    seen, handle = _record_linear_dtypes()
    try:
        model = make_model("neural", "nba", "mlp", {"epochs": 2, "hidden_layers": [8], "precision": "bf16"})
        model.fit(frame)
    finally:
        handle.remove()
    assert model.diagnostics["precision"] == "bf16" and torch.bfloat16 in seen
    p = model.predict_proba(frame)
    assert p.dtype.kind == "f" and ((p > 0) & (p < 1)).all()  # predictions in fp32 from fp32 weights

    lstm = make_model("lstm", "nba", "lstm_weather", {"epochs": 1, "units": 4, "seq_len": 3, "head_units": 4,
                                                      "precision": "bf16"}).fit(frame)
    assert lstm.diagnostics["precision"] == "bf16"
    # oneDNN runs a bf16 LSTM only with AVX-512; elsewhere the LSTM alone falls back to fp32 and says so.
    assert lstm.diagnostics["lstm_precision"] == ("bf16" if cpu_autocast_runs_lstm("bf16") else "fp32")
    assert ((q := lstm.predict_proba(frame)) > 0).all() and (q < 1).all()

    base = {"sport": "nba", "family": "neural"}
    assert validate_params({**base, "precision": "bf16"})["model_params"]["precision"] == "bf16"
    with pytest.raises(ValueError, match=r"params.precision: 'bf16' applies only to the torch families"):
        validate_params({"sport": "nba", "family": "statistical", "precision": "bf16"})
    with pytest.raises(ValueError, match=r"params.precision: must be one of"):
        validate_params({**base, "precision": "half"})
    with pytest.raises(ValueError, match=r"params.gpu_memory_gb"):
        validate_params({**base, "gpu_memory_gb": "lots"})


# ---------------------------------------------------------------------------------------------- budgets

def test_memory_budgets_parse_the_specification_example_and_name_bad_fields():
    assert parse_memory_budgets({0: "8GB", 1: "6GB"}) == {0: 8.0, 1: 6.0}
    assert parse_memory_budgets({"1": 6, "0": "8 GiB"}) == {0: 8.0, 1: 6.0}  # JSON/YAML keys are strings
    assert parse_memory_budgets({0: "512MB"}) == {0: 0.5}
    with pytest.raises(ValueError, match=r"gpu_memory_budgets\[1\]: must be a size"):
        parse_memory_budgets({0: "8GB", 1: "six"})
    with pytest.raises(ValueError, match=r"gpu_memory_budgets\[0\]: must be a positive size"):
        parse_memory_budgets({0: 0})
    with pytest.raises(ValueError, match=r"gpu_memory_budgets: keys must be GPU indices"):
        parse_memory_budgets({"gpu0": "8GB"})


def test_budget_placement_spreads_jobs_that_do_not_fit_together():
    budgets = {0: 8.0, 1: 6.0}
    assert place(5, budgets) == 0  # most room
    assert place(5, budgets, {0: 5}) == 1  # 3 GB left on GPU 0: the second 5 GB job goes to GPU 1
    assert place(5, budgets, {0: 5, 1: 5}) is None and not fits(5, budgets, {0: 5, 1: 5})
    assert place(3, budgets, {0: 5, 1: 5}) == 0  # 3 GB still fits beside the first
    assert not fits(9, budgets)  # bigger than any GPU's budget


# ---------------------------------------------------------------------------------------------- failures

@pytest.mark.parametrize("exc, kind", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out_of_memory"),
    (RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"), "out_of_memory"),
    (RuntimeError("CUDA error: device-side assert triggered"), "device_lost"),
    (RuntimeError("No CUDA GPUs are available: no CUDA-capable device is detected"), "device_lost"),
    (RuntimeError("NVMLError_GpuIsLost: GPU is lost"), "device_lost"),
    (ValueError("params.lr must be a number > 0, got -1"), None),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x2)"), None),
])
def test_device_failures_are_classified_and_job_bugs_are_not(exc, kind):
    reason = is_device_failure(exc)
    assert (reason.split(":")[0] if reason else None) == kind


def test_run_with_failover_fake_cuda_oom_retries_smaller_then_cpu():
    """Fake: only the failure (CUDA OOM on every CUDA attempt); the training on the CPU is the real task."""
    calls = []

    def train(device, batch_size, precision):
        calls.append((device, batch_size, precision))
        if device.startswith("cuda"):
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fake) at batch {batch_size}")
        return torch_mlp_demo({"epochs": 2, "n_samples": 64, "batch_size": batch_size, "precision": precision},
                              _no_progress, device)

    result, attempts = run_with_failover(train, "cuda:0", 64, "fp16")
    assert calls == [("cuda:0", 64, "fp16"), ("cuda:0", 32, "fp16"), ("cpu", 64, "fp32")]
    assert [(a["device"], a["batch_size"], a["precision"]) for a in attempts] == calls
    assert attempts[0]["reason"].startswith("out_of_memory: OutOfMemoryError: CUDA out of memory (fake) at batch 64")
    assert attempts[1]["reason"].startswith("out_of_memory") and attempts[2]["reason"] is None
    assert result["device"] == "cpu" and result["precision"] == "fp32"  # fp16 does not exist on the CPU


def test_run_with_failover_fake_lost_device_moves_on_at_once_and_job_bugs_are_not_retried():
    calls = []

    def lost_then_ok(device, batch_size, precision):
        calls.append(device)
        if device.startswith("cuda"):
            raise RuntimeError("CUDA error: device-side assert triggered (fake)")
        return "ok"

    result, attempts = run_with_failover(lost_then_ok, "cuda:0", 64, "bf16")
    assert result == "ok" and calls == ["cuda:0", "cpu"]  # no smaller retry on a lost device
    assert attempts[1] == {"device": "cpu", "batch_size": 64, "precision": "bf16", "reason": None}

    def bug(device, batch_size, precision):
        raise ValueError("params.lr must be a number > 0")

    with pytest.raises(ValueError) as info:
        run_with_failover(bug, "cuda:0", 64)
    assert len(info.value.device_attempts) == 1  # not retried anywhere

    def cpu_oom(device, batch_size, precision):
        raise MemoryError("out of memory")

    with pytest.raises(MemoryError) as info:
        run_with_failover(cpu_oom, "cpu", 8)
    assert [(a["device"], a["batch_size"]) for a in info.value.device_attempts] == [("cpu", 8), ("cpu", 4)]


# ---------------------------------------------------------------------------------------------- NVML

def test_gpu_stats_on_this_machine_without_gpu_say_unavailable_with_a_reason():
    stats = gpu_stats()  # real: pynvml installed or not, there is no NVIDIA driver here
    assert stats["available"] is False and stats["reason"]


def test_gpu_stats_parse_a_fake_nvml_per_gpu(monkeypatch):
    mem = {0: (2 << 30, 8 << 30), 1: (1 << 30, 6 << 30)}
    fake = types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0, nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 2,
        nvmlSystemGetDriverVersion=lambda: b"550.54", nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: f"Fake GPU {h}".encode(), nvmlDeviceGetUUID=lambda h: f"GPU-{h}",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=mem[h][0], total=mem[h][1],
                                                                free=mem[h][1] - mem[h][0]),
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=40 + h, memory=10 + h),
        nvmlDeviceGetTemperature=lambda h, sensor: 60 + h)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    stats = gpu_stats()
    assert stats["available"] and stats["count"] == 2 and stats["driver_version"] == "550.54"
    gpu1 = stats["devices"][1]
    assert (gpu1["name"], gpu1["utilization_gpu_pct"], gpu1["temperature_c"]) == ("Fake GPU 1", 41.0, 61)
    assert (gpu1["memory_used_mib"], gpu1["memory_total_mib"], gpu1["memory_free_mib"]) == (1024.0, 6144.0, 5120.0)


def test_config_budgets_are_validated_naming_the_gpu():
    from pydantic import ValidationError

    from edgeray.config import SportsConfig

    assert SportsConfig(gpu_memory_budgets={"0": "8GB", 1: "6GB"}).gpu_memory_budgets == {0: "8GB", 1: "6GB"}
    with pytest.raises(ValidationError, match=r"sports.gpu_memory_budgets\[1\]: must be a size"):
        SportsConfig(gpu_memory_budgets={0: "8GB", 1: "six"})


def test_sport_models_accept_the_managers_mps_pick_and_refuse_it_where_absent():
    from edgeray.sports.models import resolve_device

    assert resolve_device("mps", uses_torch=False) == "cpu"  # sklearn families compute on the CPU anyway
    with pytest.raises(ValueError, match=r"device='mps' requested but MPS is not available here"):
        resolve_device("mps", uses_torch=True)  # real: no Apple GPU on this machine
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'mps', 'cuda' or 'cuda:N', got 'tpu'"):
        resolve_device("tpu", uses_torch=True)


def test_budgets_declare_the_placement_resource_where_edgeray_starts_ray_and_on_cluster_gpu_nodes(tmp_path):
    """The queue places jobs by the gpu_memory_gb resource, so something must declare it: a local Ray edgeray
    starts (the budgets' sum) and cluster.yaml's GPU node type."""
    import yaml

    from actors.pipeline import local_ray_options
    from edgeray.config import PipelineConfig
    from tests.conftest import ROOT, pipeline_config

    cfg = PipelineConfig.model_validate(pipeline_config(tmp_path, "budgets", sports={"gpu_memory_budgets": {0: "8GB", 1: "6GB"}}))
    assert local_ray_options(cfg)["resources"] == {dm.GPU_MEMORY_RESOURCE: 14.0}
    plain = PipelineConfig.model_validate(pipeline_config(tmp_path, "plain"))
    assert "resources" not in local_ray_options(plain)
    nodes = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    gpu_nodes = [n for n in nodes.values() if n["resources"].get("GPU")]
    assert gpu_nodes and all(n["resources"].get(dm.GPU_MEMORY_RESOURCE, 0) > 0 for n in gpu_nodes)
