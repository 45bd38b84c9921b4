"""A trained RLlib policy without its Algorithm: load the RLModule from a checkpoint and act on numpy batches.

Works for edgeray's DDPG (the module returns [-1, 1] actions) and RLlib PPO (the module returns Gaussian
distribution inputs: the deterministic action is the mean, clipped to [-1, 1]). Both are then unsquashed to the
env's Box bounds exactly as RLlib's `normalize_actions` connector does while training, so a served action equals
the deterministic action RLlib's own EnvRunner would send.
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

POLICY_META = "policy.json"
DRIFT_REFERENCE = "drift_reference.json"  # the training distributions the policy server's drift detector uses
MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module" / DEFAULT_MODULE_ID


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


def write_meta(checkpoint_dir: str | Path, meta: PolicyMeta) -> None:
    (Path(checkpoint_dir) / POLICY_META).write_text(json.dumps(meta.__dict__, indent=2, default=float))


def load_meta(checkpoint_dir: str | Path) -> PolicyMeta:
    path = Path(checkpoint_dir) / POLICY_META
    if not path.is_file():
        raise ValueError(f"checkpoint_dir {str(checkpoint_dir)!r} has no {POLICY_META}; is it an edgeray RL checkpoint?")
    return PolicyMeta(**json.loads(path.read_text()))


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
    def load(cls, checkpoint_dir: str | Path) -> RLPolicy:
        root = Path(checkpoint_dir)
        meta = load_meta(root)
        module = RLModule.from_checkpoint(root / MODULE_SUBDIR)
        # The version is the checkpoint's directory name plus a digest of its weights: two runs written to the
        # same path are still told apart.
        digest = hashlib.blake2b(digest_size=4)
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
        return cls(module, meta, version=f"{root.resolve().parent.name}-{digest.hexdigest()}", checkpoint_dir=root.resolve())

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
