"""Fault injection for the device-failover tests (no GPU here): a Ray worker setup hook that registers
`fake_oom_demo`, the real torch_mlp_demo behind one injected failure, a CUDA out-of-memory error for batches
over FAKE_DEVICE_ROWS rows. Kept free of heavy imports: every Ray worker of the test cluster runs it at start."""
from __future__ import annotations

FAKE_DEVICE_ROWS = 16  # the fake device "holds" this many rows a batch; bigger batches fail as CUDA OOM would


def fake_oom_demo(params, progress, device="cpu"):
    import torch

    from edgeray.training.tasks import torch_mlp_demo

    if params["batch_size"] > FAKE_DEVICE_ROWS:
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fake): batch {params['batch_size']}")
    return torch_mlp_demo(params, progress, device)


def install_fake_oom_task() -> None:
    from edgeray.training import tasks
    from edgeray.training.jobs import register_task

    register_task("fake_oom_demo", fake_oom_demo, tasks._validate_demo)
    tasks._DEVICE_SETTINGS_ALIASES["fake_oom_demo"] = "torch_mlp_demo"
