"""Device manager: which device a training job runs on, in which precision, within which memory budget, and
what happens when the device fails. Core code: no Ray import; torch is imported lazily (the job store and
the HTTP layer import this module without paying torch's start-up).

Order: CUDA, then MPS (Apple Silicon), then CPU. A TPU is detected and reported (torch_xla importable or a
TPU runtime in the environment) but not used: nothing here trains through XLA yet.

Probing goes through a `probe` object (default `TorchProbe`, which asks torch), so tests can fake CUDA or MPS on
a machine that has neither and the selection logic is the same code either way.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
DEVICE_ORDER = ("cuda", "mps", "cpu")
_GIB = 1024 ** 3


# ---------------------------------------------------------------------------------------------- selection

@dataclass
class DeviceInfo:
    """The chosen device. `skipped` says why each device earlier in the order was not taken; `tpu` reports a
    detected TPU (None when there is none)."""
    name: str  # what torch.device() takes: "cuda:0", "mps", "cpu"
    kind: str  # "cuda" | "mps" | "cpu"
    index: int | None = None
    description: str | None = None  # e.g. the GPU's model name
    total_memory_bytes: int | None = None
    free_memory_bytes: int | None = None
    capability: tuple[int, int] | None = None  # CUDA compute capability
    autocast_dtypes: tuple[str, ...] = ()  # the lower precisions torch.autocast supports here
    skipped: list[dict] = field(default_factory=list)  # [{"device": "cuda", "reason": "..."}]
    tpu: str | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["capability"] = list(self.capability) if self.capability else None
        out["autocast_dtypes"] = list(self.autocast_dtypes)
        return out


class TorchProbe:
    """What torch reports about this machine. Each method is one question, so a fake can answer differently."""

    def cuda_count(self) -> int:
        import torch
        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    def cuda_unavailable_reason(self) -> str:
        import torch
        if torch.version.cuda is None:
            return f"torch {torch.__version__} is a CPU/non-CUDA build"
        return "torch.cuda.is_available() is False (no CUDA-capable device or driver)"

    def cuda_properties(self, index: int) -> dict:
        import torch
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        return {"name": props.name, "capability": (props.major, props.minor), "total_memory_bytes": int(total),
                "free_memory_bytes": int(free)}

    def mps_available(self) -> bool:
        import torch
        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())

    def mps_unavailable_reason(self) -> str:
        import torch
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_built():
            return "torch was built without MPS (not an Apple Silicon build)"
        return "torch.backends.mps.is_available() is False (no Apple GPU / macOS too old)"

    def tpu(self) -> str | None:
        if importlib.util.find_spec("torch_xla") is not None:
            return "torch_xla is installed"
        for var in ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR", "XRT_TPU_CONFIG"):
            if os.environ.get(var):
                return f"{var}={os.environ[var]}"
        return None


def autocast_dtypes(kind: str, capability: tuple[int, int] | None = None) -> tuple[str, ...]:
    """Lower precisions worth autocasting to on a device kind. bf16 needs Ampere (compute capability 8.0) or
    later on CUDA (earlier GPUs emulate it slowly); CPU autocast supports bf16; MPS and CUDA support fp16."""
    if kind == "cuda":
        return ("bf16", "fp16") if capability and capability >= (8, 0) else ("fp16",)
    if kind == "mps":
        return ("fp16",)
    if kind == "cpu":
        return ("bf16",)
    return ()


def _parse_preferred(preferred: str | None) -> tuple[str | None, int | None]:
    if preferred in (None, "auto"):
        return None, None
    m = re.fullmatch(r"(cuda|mps|cpu)(?::(\d+))?", preferred) if isinstance(preferred, str) else None
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise ValueError(f"device: must be 'auto', 'cuda', 'cuda:N', 'mps' or 'cpu', got {preferred!r}")
    return m.group(1), int(m.group(2)) if m.group(2) is not None else None


def select_device(preferred: str | None = None, *, probe: Any = None, allow_cuda: bool = True,
                  cuda_index: int = 0) -> DeviceInfo:
    """Pick CUDA, else MPS, else CPU; `preferred` ("cuda", "cuda:1", "mps", "cpu") asks for one and raises
    ValueError when it is not here (a job that asked for a GPU silently running on the CPU would hide a
    mis-scheduled job). `allow_cuda=False` skips CUDA, e.g. for a Ray task given no GPU (using one anyway
    would take memory Ray has promised to other tasks)."""
    probe = probe or TorchProbe()
    kind, index = _parse_preferred(preferred)
    skipped: list[dict] = []
    tpu = probe.tpu()
    if tpu is not None:
        skipped.append({"device": "tpu", "reason": f"TPU detected ({tpu}) but training through torch_xla is not "
                                                   "supported here yet"})

    def cuda_info() -> DeviceInfo | str:
        if not allow_cuda:
            return "this job was given no GPU (num_gpus=0)"
        count = probe.cuda_count()
        if count == 0:
            return probe.cuda_unavailable_reason()
        i = cuda_index if index is None else index
        if i >= count:
            return f"cuda:{i} requested but only {count} CUDA device(s) are visible"
        props = probe.cuda_properties(i)
        return DeviceInfo(name=f"cuda:{i}", kind="cuda", index=i, description=props.get("name"),
                          total_memory_bytes=props.get("total_memory_bytes"),
                          free_memory_bytes=props.get("free_memory_bytes"), capability=tuple(props["capability"]),
                          autocast_dtypes=autocast_dtypes("cuda", tuple(props["capability"])))

    def mps_info() -> DeviceInfo | str:
        if not probe.mps_available():
            return probe.mps_unavailable_reason()
        return DeviceInfo(name="mps", kind="mps", description="Apple Metal (MPS)", autocast_dtypes=("fp16",))

    def cpu_info() -> DeviceInfo:
        return DeviceInfo(name="cpu", kind="cpu", description=f"CPU ({os.cpu_count()} logical cores)",
                          autocast_dtypes=autocast_dtypes("cpu"))

    candidates = {"cuda": cuda_info, "mps": mps_info, "cpu": cpu_info}
    for k in ([kind] if kind else DEVICE_ORDER):
        found = candidates[k]()
        if isinstance(found, DeviceInfo):
            found.skipped, found.tpu = skipped, tpu
            return found
        if kind:
            raise ValueError(f"device: {preferred!r} requested but not available here: {found}")
        skipped.append({"device": k, "reason": found})
    raise AssertionError("unreachable: the CPU is always available")


def fallback_device(current: str, *, probe: Any = None) -> str | None:
    """The next device after `current` in the order CUDA -> MPS -> CPU that is present; None after the CPU."""
    probe = probe or TorchProbe()
    kind, _ = _parse_preferred(current)
    for k in DEVICE_ORDER[DEVICE_ORDER.index(kind or "cpu") + 1:]:
        if k == "mps" and not probe.mps_available():
            continue
        return k
    return None


# ---------------------------------------------------------------------------------------------- precision

def _kind(device) -> str:
    return str(getattr(device, "type", device)).split(":")[0]


def resolve_precision(device, precision: str, *, field_name: str = "params.precision",
                      capability: tuple[int, int] | None = None) -> str:
    """"auto" -> the best the device supports ("fp32" on the CPU: bf16 autocast there is supported but only
    pays off on CPUs with AMX/AVX512-BF16, and it costs accuracy, so it must be asked for). Raises ValueError
    naming the field for an unknown value or a precision the device cannot autocast to."""
    if precision not in PRECISIONS:
        raise ValueError(f"{field_name}: must be one of {list(PRECISIONS)}, got {precision!r}")
    kind = _kind(device)
    if kind == "cuda" and capability is None:
        import torch
        index = getattr(device, "index", None)
        if index is None and ":" in str(device):
            index = int(str(device).split(":")[1])
        capability = torch.cuda.get_device_capability(index or 0)
    supported = autocast_dtypes(kind, capability)
    if precision == "auto":
        return "fp32" if kind == "cpu" else (supported[0] if supported else "fp32")
    if precision != "fp32" and precision not in supported:
        raise ValueError(f"{field_name}: {precision!r} is not supported on device {str(device)!r} "
                         f"(supported there: {['fp32', *supported]})")
    return precision


def torch_dtype(precision: str):
    import torch
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def autocast_context(device, precision: str, *, field_name: str = "params.precision"):
    """torch.autocast for the device and (resolved) precision; a nullcontext for fp32."""
    resolved = resolve_precision(device, precision, field_name=field_name)
    if resolved == "fp32":
        return contextlib.nullcontext()
    import torch
    return torch.autocast(device_type=_kind(device), dtype=torch_dtype(resolved))


@functools.cache
def cpu_autocast_runs_lstm(precision: str) -> bool:
    """Whether an LSTM runs under CPU autocast at `precision` on this CPU. oneDNN has no bf16 LSTM kernel
    without AVX-512 (an AVX2-only EPYC raises "could not create a primitive descriptor"), and torch exposes no
    flag for it, so a 1x1 LSTM is tried once per process."""
    import torch
    if precision == "fp32":
        return True
    try:
        with torch.autocast(device_type="cpu", dtype=torch_dtype(precision)):
            torch.nn.LSTM(1, 1)(torch.zeros(1, 1, 1))
    except RuntimeError:
        return False
    return True


def grad_scaler(device, precision: str):
    """fp16 gradients underflow without loss scaling, so fp16 on CUDA gets an enabled GradScaler; everywhere
    else a disabled one, whose scale/step/update pass straight through, so a training loop has one shape."""
    import torch
    resolved = resolve_precision(device, precision)
    kind = _kind(device)
    return torch.amp.GradScaler(kind if kind == "cuda" else "cpu", enabled=(resolved == "fp16" and kind == "cuda"))


def validate_precision(value, field_name: str = "params.precision") -> str:
    if value not in PRECISIONS:
        raise ValueError(f"{field_name}: must be one of {list(PRECISIONS)}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------- memory budgets

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(GB|GIB|G|MB|MIB|M|TB|TIB|T)?\s*", re.IGNORECASE)
_UNIT_GIB = {"G": 1.0, "GB": 1.0, "GIB": 1.0, "M": 1 / 1024, "MB": 1 / 1024, "MIB": 1 / 1024, "T": 1024.0,
             "TB": 1024.0, "TIB": 1024.0}


def parse_memory_gb(value, field_name: str) -> float:
    """A memory size in GiB: a number (GiB) or a string like "8GB", "6 GiB", "512MB". "GB" is read as GiB, as
    GPU makers use it (an "8 GB" card has 8 GiB)."""
    if isinstance(value, bool):
        raise ValueError(f"{field_name}: must be a size like '8GB' or a number of GiB, got {value!r}")
    if isinstance(value, (int, float)):
        gib = float(value)
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value)):
        gib = float(m.group(1)) * _UNIT_GIB[(m.group(2) or "G").upper()]
    else:
        raise ValueError(f"{field_name}: must be a size like '8GB' or a number of GiB, got {value!r}")
    if not math.isfinite(gib) or gib <= 0:
        raise ValueError(f"{field_name}: must be a positive size, got {value!r}")
    return gib


# The Ray custom resource a GPU node declares: its GPU memory budget in GiB (cluster.yaml; a local Ray started by
# edgeray declares the configured budgets' sum). Training jobs ask for their params.gpu_memory_gb of it.
GPU_MEMORY_RESOURCE = "gpu_memory_gb"


def parse_memory_budgets(config, field_name: str = "gpu_memory_budgets") -> dict[int, float]:
    """{GPU index: GiB} from config such as {0: "8GB", 1: "6GB"} (keys may be strings, as in JSON/YAML)."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(f"{field_name}: must be a mapping of GPU index to size, e.g. {{0: '8GB'}}, got {config!r}")
    out = {}
    for key, value in config.items():
        if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
            raise ValueError(f"{field_name}: keys must be GPU indices (0, 1, ...), got {key!r}")
        out[int(key)] = parse_memory_gb(value, f"{field_name}[{key}]")
    return dict(sorted(out.items()))


def place(job_gb: float, budgets: dict[int, float], in_use: dict[int, float] | None = None) -> int | None:
    """The GPU whose remaining budget fits `job_gb` with the most room left (spreads load), else None."""
    in_use = in_use or {}
    room = {i: b - in_use.get(i, 0.0) for i, b in budgets.items()}
    fitting = [i for i, r in room.items() if r >= job_gb - 1e-9]
    return max(fitting, key=lambda i: (room[i], -i)) if fitting else None


def fits(job_gb: float, budgets: dict[int, float], in_use: dict[int, float] | None = None) -> bool:
    return place(job_gb, budgets, in_use) is not None


# ---------------------------------------------------------------------------------------------- failure + retry

_OOM = ("out of memory", "outofmemoryerror", "cuda_error_out_of_memory", "mps backend out of memory")
_LOST = ("cuda error: device-side", "no cuda-capable device", "cuda error: unspecified launch failure",
         "gpu is lost", "nvmlerror_gpuislost", "cuda error: an illegal memory access", "device not ready",
         "cuda driver error", "cudaerrordevicesunavailable", "busy or unavailable", "ecc error")


def is_device_failure(exc: BaseException) -> str | None:
    """'out_of_memory: ...' / 'device_lost: ...' when `exc` is the device failing, not the job's own error;
    None otherwise. A job's bug (a ValueError, a shape error) must not be retried on another device."""
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    try:
        import torch
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return f"out_of_memory: {text}"[:500]
    except ImportError:
        pass
    if isinstance(exc, MemoryError) or any(s in low for s in _OOM):
        return f"out_of_memory: {text}"[:500]
    if any(s in low for s in _LOST):
        return f"device_lost: {text}"[:500]
    return None


def run_with_failover(train: Callable[[str, int | None, str], Any], device: str, batch_size: int | None,
                      precision: str = "fp32", *, next_device: Callable[[str], str | None] = fallback_device,
                      on_attempt: Callable[[list[dict]], None] | None = None, min_batch_size: int = 2,
                      max_attempts: int = 4) -> tuple[Any, list[dict]]:
    """Call `train(device, batch_size, precision)`; on a device failure retry per the plan and return
    (result, attempts). Plan: out of memory -> the same device with half the batch (once); then, or at once for
    a lost device, the next device in the order (CUDA -> MPS -> CPU) with the batch size asked for (the other
    device has its own memory) and the precision moved to what it supports. Each attempt is recorded as
    {device, batch_size, precision, reason} (reason None for the one that succeeded). A non-device error, or a
    device failure with nothing left to try, propagates with `exc.device_attempts` set."""
    attempts: list[dict] = []
    current, size, prec, halved = device, batch_size, precision, False
    while True:
        attempts.append({"device": current, "batch_size": size, "precision": prec, "reason": None})
        if on_attempt is not None:
            on_attempt(attempts)
        try:
            return train(current, size, prec), attempts
        except Exception as exc:
            reason = is_device_failure(exc)
            attempts[-1]["reason"] = reason or f"{type(exc).__name__}: {exc}"[:500]
            if reason is None or len(attempts) >= max_attempts:
                exc.device_attempts = attempts
                raise
            if (reason.startswith("out_of_memory") and not halved and size is not None
                    and size // 2 >= min_batch_size):
                size, halved = size // 2, True
                continue
            nxt = next_device(current)
            if nxt is None:
                exc.device_attempts = attempts
                raise
            # the precision asked for may not exist on the next device (fp16 on the CPU): its best instead
            try:
                prec = resolve_precision(nxt, precision, capability=(0, 0))
            except ValueError:
                prec = resolve_precision(nxt, "auto", capability=(0, 0))
            current, size, halved = nxt, batch_size, False
