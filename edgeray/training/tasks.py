"""The training tasks the queue can run: a tiny torch demo and the sport models. Each registers itself with
its parameter validator, so submissions are checked before they are stored."""
from __future__ import annotations

from numbers import Real

from edgeray.device import autocast_context, grad_scaler, parse_memory_gb, resolve_precision, validate_precision
from edgeray.training.jobs import MAX_EPOCHS, MAX_SEED, ProgressFn, _is_int, check_bounds, register_task

MAX_GPU_MEMORY_GB = 4096.0  # bounds what a job may declare; the queue checks it against the GPU budgets


def validate_device_params(params: dict) -> dict:
    """The device options every task takes: `precision` ("fp32" default, "bf16", "fp16", "auto") and
    `gpu_memory_gb`, the GPU memory the job expects to use (the queue places it by the GPUs' budgets)."""
    out = dict(params)
    out["precision"] = validate_precision(out.get("precision", "fp32"), "params.precision")
    if out.get("gpu_memory_gb") is not None:
        gb = parse_memory_gb(out["gpu_memory_gb"], "params.gpu_memory_gb")
        if gb > MAX_GPU_MEMORY_GB:
            raise ValueError(f"params.gpu_memory_gb must be at most {MAX_GPU_MEMORY_GB:g}, got {out['gpu_memory_gb']!r}")
        out["gpu_memory_gb"] = gb
    return out


_DEMO_DEFAULTS = {"epochs": 5, "n_samples": 256, "n_features": 8, "hidden": 16, "batch_size": 64, "lr": 0.05,
                  "seed": 0, "precision": "fp32", "gpu_memory_gb": None}
DEMO_BOUNDS = {"epochs": (1, MAX_EPOCHS, None), "n_samples": (1, 1_000_000, None), "n_features": (1, 4_096, None),
               "hidden": (1, 4_096, None), "batch_size": (1, 65_536, None), "lr": (0, 10.0, None),
               "seed": (0, MAX_SEED, None)}


def _validate_demo(params: dict) -> dict:
    unknown = sorted(set(params) - set(_DEMO_DEFAULTS))
    if unknown:
        raise ValueError(f"params.{unknown[0]}: unknown parameter for torch_mlp_demo; known: {sorted(_DEMO_DEFAULTS)}")
    merged = {**_DEMO_DEFAULTS, **params}
    for key in ("epochs", "n_samples", "n_features", "hidden", "batch_size"):
        if not _is_int(merged[key]) or merged[key] < 1:
            raise ValueError(f"params.{key} must be an integer >= 1, got {merged[key]!r}")
    if not _is_int(merged["seed"]):
        raise ValueError(f"params.seed must be an integer, got {merged['seed']!r}")
    if not isinstance(merged["lr"], Real) or isinstance(merged["lr"], bool) or not merged["lr"] > 0:
        raise ValueError(f"params.lr must be a number > 0, got {merged['lr']!r}")
    check_bounds(merged, DEMO_BOUNDS, "params")
    return validate_device_params(merged)


def torch_mlp_demo(params: dict, progress: ProgressFn, device: str = "cpu") -> dict:
    """Tiny real torch job: an MLP learns a noisy linear boundary on synthetic data; one progress
    call per epoch with the mean training loss."""
    import torch  # lazy: the queue core must import without torch's start-up cost

    p = _validate_demo(params)
    dev = torch.device(device)
    precision = resolve_precision(dev, p["precision"])  # "auto" -> what this device supports; ValueError if not
    scaler = grad_scaler(dev, precision)
    gen = torch.Generator().manual_seed(p["seed"])
    x = torch.randn(p["n_samples"], p["n_features"], generator=gen)
    w = torch.randn(p["n_features"], generator=gen)
    y = ((x @ w + 0.3 * torch.randn(p["n_samples"], generator=gen)) > 0).float()
    x, y = x.to(dev), y.to(dev)
    torch.manual_seed(p["seed"])
    model = torch.nn.Sequential(torch.nn.Linear(p["n_features"], p["hidden"]), torch.nn.ReLU(),
                                torch.nn.Linear(p["hidden"], 1)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=p["lr"])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses = []
    for epoch in range(1, p["epochs"] + 1):
        order = torch.randperm(p["n_samples"], generator=gen).to(dev)
        total = 0.0
        for start in range(0, p["n_samples"], p["batch_size"]):
            idx = order[start:start + p["batch_size"]]
            opt.zero_grad()
            with autocast_context(dev, precision):
                loss = loss_fn(model(x[idx]).squeeze(-1), y[idx])
            scaler.scale(loss).backward()  # backward outside autocast, as torch recommends
            scaler.step(opt)
            scaler.update()
            total += loss.item() * len(idx)
        losses.append(total / p["n_samples"])
        progress(epoch, p["epochs"], {"loss": losses[-1]})
    with torch.no_grad():
        accuracy = float(((model(x).squeeze(-1) > 0).float() == y).float().mean())
    return {"epochs": p["epochs"], "first_loss": losses[0], "final_loss": losses[-1], "train_accuracy": accuracy,
            "device": str(dev), "precision": precision, "batch_size": p["batch_size"]}


register_task("torch_mlp_demo", torch_mlp_demo, _validate_demo)


def _sport_model(params: dict, progress: ProgressFn, device: str = "cpu") -> dict:
    from edgeray.sports.train import train_sport_model  # heavy imports only where a job runs

    return train_sport_model(params, progress, device)


# Upper bounds over the sport-model hyper-parameters (edgeray.sports.models.PARAM_SCHEMAS checks types and
# lower bounds, not size): a job must not be able to ask for a week of GPU time or a model that cannot fit.
SPORT_MODEL_PARAM_BOUNDS = {
    "epochs": (1, 1_000, None), "batch_size": (2, 65_536, None), "lr": (0, 10.0, None),
    "learning_rate": (0, 10.0, None), "weight_decay": (0, 1.0, None), "seed": (0, MAX_SEED, None),
    "n_estimators": (1, 5_000, None), "max_depth": (1, 64, None), "gb_max_iter": (1, 10_000, None),
    "nn_max_iter": (1, 10_000, None), "nn_hidden": (1, 4_096, 8), "hidden_layers": (1, 4_096, 8),
    "units": (1, 4_096, None), "layers": (1, 8, None), "seq_len": (1, 365, None), "head_units": (1, 4_096, None),
    "lr_C": (0, 1e6, None), "Cs": (0, 1e6, 20), "alphas": (0, 1e6, 20), "prior_vars": (0, 1e6, 20),
    "k_features": (1, 10_000, 20), "cv_splits": (2, 20, None), "features": (None, None, 500),
}
SPORT_PARAM_BOUNDS = {"train_seasons": (1900, 2100, 50), "test_seasons": (1900, 2100, 50), "tags": (None, None, 32)}


def _validate_sport_model(params: dict) -> dict:
    from edgeray.sports.train import validate_params

    check_bounds(params, SPORT_PARAM_BOUNDS, "params")
    model_params = params.get("model_params")
    if isinstance(model_params, dict):
        check_bounds(model_params, SPORT_MODEL_PARAM_BOUNDS, "params.model_params")
    out = validate_params(params)
    if (out.get("gpu_memory_gb") or 0) > MAX_GPU_MEMORY_GB:
        raise ValueError(f"params.gpu_memory_gb must be at most {MAX_GPU_MEMORY_GB:g}, got {params['gpu_memory_gb']!r}")
    return out


register_task("sport_model", _sport_model, _validate_sport_model)


# ---------------------------------------------------------------------------------------------- device failover
# What a device failover (edgeray.device.run_with_failover) may change in a job: its batch size and precision.
# Tasks not listed here keep their params; only their device changes.

_DEVICE_SETTINGS_ALIASES: dict[str, str] = {}  # a task whose params are another's (tests' fault-injection wrappers)


def device_settings(task: str, params: dict) -> tuple[int | None, str]:
    """(batch size, precision) the job asks for; batch size None where the task has none to shrink."""
    task = _DEVICE_SETTINGS_ALIASES.get(task, task)
    if task == "torch_mlp_demo":
        p = _validate_demo(params)
        return p["batch_size"], p["precision"]
    if task == "sport_model":
        from edgeray.sports.models import make_model

        model = make_model(params["family"], params["sport"], params.get("name"), params.get("model_params") or {})
        if not model.uses_torch:
            return None, "fp32"
        return model.params["batch_size"], model.params["precision"]
    return None, "fp32"


def with_device_settings(task: str, params: dict, batch_size: int | None, precision: str) -> dict:
    """`params` with the batch size and precision of one failover attempt."""
    task = _DEVICE_SETTINGS_ALIASES.get(task, task)
    if task == "torch_mlp_demo":
        return {**params, "batch_size": batch_size, "precision": precision}
    if task == "sport_model" and batch_size is not None:
        model_params = {**(params.get("model_params") or {}), "batch_size": batch_size, "precision": precision}
        return {**params, "precision": precision, "model_params": model_params}
    return params
