"""A trained RLlib policy without its Algorithm: load the RLModule from a checkpoint and act on numpy batches.

Works for edgeray's DDPG (the module returns [-1, 1] actions) and RLlib PPO (the module returns Gaussian
distribution inputs: the deterministic action is the mean, clipped to [-1, 1]). Both are then unsquashed to the
env's Box bounds exactly as RLlib's `normalize_actions` connector does while training, so a served action equals
the deterministic action RLlib's own EnvRunner would send.

Loading never unpickles. RLlib's checkpoint files (class_and_ctor_args.pkl, module_state.pkl) are cloudpickle,
and unpickling a crafted one runs arbitrary code, so serving reads none of them: `tune.rl` also writes the
module's weights as plain numpy arrays (`policy_weights.npz`, read with allow_pickle=False) and the module's
construction spec (model_config, spaces) into policy.json; `load` builds the module from a fixed class per
algo (edgeray's DDPG module, RLlib's default PPO torch module) and copies the arrays in. A crafted checkpoint
can then at worst fail to load or give bad actions, never run code. The pickles stay in the checkpoint for
RLlib itself (Algorithm.from_checkpoint, continued training), which only the operator does.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

from edgeray.paths import member, resolve_checkpoint

POLICY_META = "policy.json"
DRIFT_REFERENCE = "drift_reference.json"  # the training distributions the policy server's drift detector uses
WEIGHTS_FILE = "policy_weights.npz"  # the module's state_dict as numpy arrays: what serving loads (no pickle)
MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module" / DEFAULT_MODULE_ID  # RLlib's (pickled) module
MAX_LAYER_WIDTH = 65_536  # a crafted model_config must not make module construction allocate without bound


@dataclass
class PolicyMeta:
    algo: str
    env: str
    env_config: dict
    action_low: list[float]
    action_high: list[float]
    obs_dim: int
    env_steps: int = 0
    eval_return_mean: float | None = None
    extra: dict = field(default_factory=dict)
    # how to rebuild the RLModule without RLlib's pickles: {"model_config", "observation_low",
    # "observation_high", "weights"}; written by tune.rl.export_weights
    module: dict = field(default_factory=dict)


def write_meta(checkpoint_dir: str | Path, meta: PolicyMeta) -> None:
    (Path(checkpoint_dir) / POLICY_META).write_text(json.dumps(meta.__dict__, indent=2, default=float))


def load_meta(checkpoint_dir: str | Path) -> PolicyMeta:
    root = Path(checkpoint_dir).resolve()
    path = member(root, POLICY_META)
    if not path.is_file():
        raise ValueError(f"checkpoint_dir {str(checkpoint_dir)!r} has no {POLICY_META}; is it an edgeray RL checkpoint?")
    try:
        raw = json.loads(path.read_text())
        return PolicyMeta(**raw)
    except (ValueError, TypeError) as exc:  # bad JSON, unknown or missing fields
        raise ValueError(f"checkpoint {str(checkpoint_dir)!r}: {POLICY_META} is not valid policy metadata: {exc}") from None


def _module_class(algo: str):
    """The only classes a served module can be: fixed here, never read from the checkpoint."""
    if algo == "ddpg":
        from policies.ddpg.module import DDPGTorchRLModule

        return DDPGTorchRLModule, None
    if algo == "ppo":
        from ray.rllib.algorithms.ppo.ppo_catalog import PPOCatalog
        from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule

        return DefaultPPOTorchRLModule, PPOCatalog
    raise ValueError(f"policy.json algo must be 'ddpg' or 'ppo', got {algo!r}")


def _check_widths(value, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _check_widths(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_widths(v, f"{where}[{i}]")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_LAYER_WIDTH:
        raise ValueError(f"policy.json {where} must be at most {MAX_LAYER_WIDTH}, got {value!r}")


def build_module(checkpoint_dir: Path, meta: PolicyMeta) -> RLModule:
    """Construct the module from policy.json and load its numpy weights: no pickle is read."""
    spec = meta.module
    if not spec:
        raise ValueError(f"checkpoint {str(checkpoint_dir)!r} has no pickle-free weights ({WEIGHTS_FILE} and "
                         f"policy.json 'module'); it predates safe loading: re-export it where it was written with "
                         f"`python -c 'from tune.rl import export_weights; export_weights(\"<dir>\")'`")
    cls, catalog = _module_class(meta.algo)
    model_config = spec.get("model_config") or {}
    if not isinstance(model_config, dict):
        raise ValueError(f"policy.json module.model_config must be an object, got {model_config!r}")
    _check_widths(model_config, "module.model_config")
    if not isinstance(meta.obs_dim, int) or not 1 <= meta.obs_dim <= MAX_LAYER_WIDTH:
        raise ValueError(f"policy.json obs_dim must be an integer in [1, {MAX_LAYER_WIDTH}], got {meta.obs_dim!r}")
    try:
        obs_space = gym.spaces.Box(np.asarray(spec["observation_low"], np.float32),
                                   np.asarray(spec["observation_high"], np.float32), (meta.obs_dim,), np.float32)
        act_space = gym.spaces.Box(np.asarray(meta.action_low, np.float32), np.asarray(meta.action_high, np.float32),
                                   dtype=np.float32)
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"checkpoint {str(checkpoint_dir)!r}: policy.json spaces are invalid: {exc}") from None
    module = cls(observation_space=obs_space, action_space=act_space, inference_only=False,
                 model_config=model_config, catalog_class=catalog)
    path = member(checkpoint_dir, spec.get("weights", WEIGHTS_FILE))
    try:
        with np.load(path, allow_pickle=False) as arrays:  # allow_pickle=False: an object array raises, never loads
            state = {name: torch.from_numpy(np.array(arrays[name])) for name in arrays.files}
        module.load_state_dict(state, strict=True)  # every weight present, shapes equal: no silent partial load
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ValueError(f"checkpoint {str(checkpoint_dir)!r}: weights {path.name} do not load into the "
                         f"{meta.algo} module: {exc}") from None
    return module


def unsquash(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return low + (np.clip(actions, -1.0, 1.0) + 1.0) * (high - low) / 2.0


class RLPolicy:
    def __init__(self, module: RLModule, meta: PolicyMeta, version: str, checkpoint_dir: Path | None = None):
        self.module = module
        self.checkpoint_dir = checkpoint_dir
        self.meta = meta
        self.version = version
        self.low = np.asarray(meta.action_low, dtype=np.float64)
        self.high = np.asarray(meta.action_high, dtype=np.float64)
        self.module.eval()

    @classmethod
    def load(cls, checkpoint_dir: str | Path, roots=None) -> RLPolicy:
        """Load a policy without unpickling anything. With `roots`, the directory must also resolve inside
        one of them (`edgeray.paths.resolve_checkpoint`): the policy server passes its configured roots."""
        root = resolve_checkpoint(checkpoint_dir, roots) if roots is not None else Path(checkpoint_dir).resolve()
        meta = load_meta(root)
        module = build_module(root, meta)
        # The version is the checkpoint's directory name plus a digest of its weights: two runs written to the
        # same path are still told apart.
        digest = hashlib.blake2b(digest_size=4)
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
        return cls(module, meta, version=f"{root.parent.name}-{digest.hexdigest()}", checkpoint_dir=root)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic env-scaled actions (rows, action_dim) for observations (rows, obs_dim)."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.meta.obs_dim:
            raise ValueError(f"obs must have shape (rows, {self.meta.obs_dim}), got {obs.shape}")
        if not np.isfinite(obs).all():
            bad = np.argwhere(~np.isfinite(obs))[0].tolist()
            raise ValueError(f"obs must be finite; row {bad[0]} column {bad[1]} is {obs[bad[0], bad[1]]}")
        with torch.no_grad():
            out = self.module.forward_inference({Columns.OBS: torch.from_numpy(obs)})
        if Columns.ACTIONS in out:
            raw = out[Columns.ACTIONS].numpy()
        else:  # Gaussian head (PPO): [mean, log_std]; the deterministic action is the mean
            raw = out[Columns.ACTION_DIST_INPUTS].numpy()[:, : len(self.low)]
        return unsquash(raw.astype(np.float64), self.low, self.high)


def rollout(act, env: gym.Env, episodes: int, seed: int) -> dict:
    """Run `act(obs[None]) -> action[None]` deterministically over seeded episodes (seed, seed+1, ...).

    Returns per-episode returns and lengths plus every observation seen and every reward paid, row by row."""
    returns, lengths, observations, rewards = [], [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, n, done = 0.0, 0, False
        while not done:
            observations.append(obs)
            action = np.asarray(act(obs[None, :]))[0]
            obs, reward, terminated, truncated, _ = env.step(action.astype(env.action_space.dtype))
            rewards.append(float(reward))
            total += float(reward)
            n += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(n)
    return {"returns": returns, "lengths": lengths, "observations": np.asarray(observations),
            "rewards": np.asarray(rewards)}


def evaluate(act, env: gym.Env, episodes: int, seed: int) -> dict:
    """Mean/std return of `act` over seeded episodes (see `rollout`)."""
    run = rollout(act, env, episodes, seed)
    returns = run["returns"]
    return {"episodes": episodes, "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "length_mean": float(np.mean(run["lengths"])), "returns": [float(r) for r in returns]}
