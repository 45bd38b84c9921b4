"""GPU statistics from NVML (package nvidia-ml-py). Never raises: a machine without NVML or NVIDIA
GPUs gets {"available": False, "reason": ...} so dashboards can say so."""
from __future__ import annotations

_MIB = 1024 ** 2


def _field(fn, *args):
    """One NVML query; None where the device does not support it (e.g. utilisation under MIG)."""
    try:
        return fn(*args)
    except Exception:  # pynvml.NVMLError and its many per-code subclasses
        return None


def _text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def gpu_stats() -> dict:
    """Per device: index, name, uuid, memory used/total/free (MiB), utilisation % (GPU and memory), temperature C."""
    try:
        import pynvml
    except ImportError as exc:
        return {"available": False, "reason": f"pynvml (nvidia-ml-py) is not installed: {exc}"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver / no libnvidia-ml: the normal case on CPU-only machines
        return {"available": False, "reason": f"NVML could not start (no NVIDIA driver or GPU?): {exc}"}
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            return {"available": False, "reason": "NVML found no NVIDIA GPUs"}
        driver = _text(_field(pynvml.nvmlSystemGetDriverVersion))
        devices = []
        for index in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = _field(pynvml.nvmlDeviceGetMemoryInfo, handle)
            util = _field(pynvml.nvmlDeviceGetUtilizationRates, handle)
            devices.append({
                "index": index,
                "name": _text(_field(pynvml.nvmlDeviceGetName, handle)),
                "uuid": _text(_field(pynvml.nvmlDeviceGetUUID, handle)),
                "memory_used_mib": memory.used / _MIB if memory is not None else None,
                "memory_total_mib": memory.total / _MIB if memory is not None else None,
                "memory_free_mib": (memory.total - memory.used) / _MIB if memory is not None else None,
                "memory_used_pct": 100.0 * memory.used / memory.total if memory is not None and memory.total else None,
                "utilization_gpu_pct": float(util.gpu) if util is not None else None,
                "utilization_memory_pct": float(util.memory) if util is not None else None,
                "temperature_c": _field(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU),
            })
        return {"available": True, "driver_version": driver, "count": count, "devices": devices}
    except Exception as exc:
        return {"available": False, "reason": f"NVML query failed: {exc}"}
    finally:
        _field(pynvml.nvmlShutdown)
