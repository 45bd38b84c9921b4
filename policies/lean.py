"""What RLlib's defaults cost the learners here and they do not need; RLlib's algorithms are kept as they are.

Used by PPO (policies/ppo.py) and DDPG (policies/ddpg/), both single-agent with Box observations and Box actions
(no recurrent state, no multi-agent mapping). None of it changes what is computed: tests/test_rl.py trains the stock
and the lean config of each from one seed and compares their losses and weights.
- `lean_connectors(config)` (tune.rl.build_config applies it to both): one EnvRunner connector piece each way instead of RLlib's default pipelines, five
  pieces from env to module (observations from the episodes, zero-padding and state pieces that do nothing without
  an RNN, batching, numpy -> torch) and six back (sample, torch -> numpy, unbatch, drop the time rank, unsquash,
  listify), each timed into the metrics logger. A cProfile of `algo.train()` (2026-12-07) put 1.27 s of 4 PPO
  iterations in them against 0.62 s for the trading env's own steps, and 16% of DDPG's; one piece each way: 0.50 s.
- `NoModeSwitch`: RLlib switches torch's train/eval mode around every forward pass, walking the whole module tree
  (~0.09 s of a 1.1 s PPO iteration). The mode changes only dropout and batch norm, which these MLPs do not have
  (a module with them is refused).
"""
from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.env import INPUT_ENV_SINGLE_SPACES

MODE_DEPENDENT_LAYERS = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)


class LastObservationsToTensor(ConnectorV2):
    """Each ongoing episode's latest observation, stacked into one float32 tensor under `obs`."""

    def __call__(self, *, rl_module, batch: dict, episodes: list, explore: bool | None = None,
                 shared_data: dict | None = None, **kwargs) -> Any:
        observations = np.stack([episode.get_observations(-1) for episode in episodes]).astype(np.float32, copy=False)
        batch[Columns.OBS] = torch.from_numpy(observations)
        return batch


class UnsquashedActions(ConnectorV2):
    """The module's actions (DDPG acts itself) or a sample of its action distribution (its mode when not
    exploring, with the log-probability when exploring), unsquashed from [-1, 1] into the env's Box bounds for the
    env, with every output as a numpy array of one row per env copy (what GetActions ... ListifyDataForVectorEnv
    hand over)."""

    def __init__(self, action_space: gym.spaces.Box, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(action_space, gym.spaces.Box) or not action_space.is_bounded("both"):
            raise ValueError(f"UnsquashedActions needs a bounded Box action space, got {action_space!r}")
        self.low = action_space.low.astype(np.float32)
        self.high = action_space.high.astype(np.float32)

    def __call__(self, *, rl_module, batch: dict, episodes: list, explore: bool | None = None,
                 shared_data: dict | None = None, **kwargs) -> Any:
        out = {}
        inputs = batch.get(Columns.ACTION_DIST_INPUTS)
        if Columns.ACTIONS in batch:
            actions = batch.pop(Columns.ACTIONS)
        elif not explore:
            actions = rl_module.get_inference_action_dist_cls().from_logits(inputs).to_deterministic().sample()
        elif rl_module.get_exploration_action_dist_cls() is TorchDiagGaussian:
            actions, logp = _diag_gaussian_sample_and_logp(inputs)
            out[Columns.ACTION_LOGP] = logp.numpy()
        else:
            dist = rl_module.get_exploration_action_dist_cls().from_logits(inputs)
            actions = dist.sample()
            out[Columns.ACTION_LOGP] = dist.logp(actions).numpy()
        out.update({column: value.numpy() for column, value in batch.items()})  # distribution inputs and the like
        actions = actions.numpy()
        out[Columns.ACTIONS] = actions
        # RLlib's unsquash_action: [-1, 1] -> [low, high], then clipped to the bounds.
        out[Columns.ACTIONS_FOR_ENV] = np.clip(self.low + (actions + 1.0) * (self.high - self.low) / 2.0,
                                               self.low, self.high)
        return out


def _diag_gaussian_sample_and_logp(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TorchDiagGaussian.from_logits(inputs).sample() and its logp, the same operations in the same order (so the same
    draws and bits) without building the distribution objects, a fifth of this connector's time per step."""
    loc, log_std = inputs.chunk(2, dim=-1)
    scale = log_std.exp()
    actions = torch.normal(loc, scale)
    logp = -((actions - loc) ** 2) / (2 * scale**2) - scale.log() - math.log(math.sqrt(2 * math.pi))
    return actions, logp.sum(-1)


def last_observations_to_tensor(env=None, spaces=None, device=None) -> ConnectorV2:
    """`config.env_runners(env_to_module_connector=...)` (module-level, so a pickled config carries it)."""
    return LastObservationsToTensor()


def unsquashed_actions(env=None, spaces=None) -> ConnectorV2:
    """`config.env_runners(module_to_env_connector=...)`; the env's single action space, as RLlib resolves it."""
    space = getattr(env, "single_action_space", env.action_space) if env is not None else spaces[INPUT_ENV_SINGLE_SPACES][1]
    return UnsquashedActions(space)


def lean_connectors(config):
    """`config` (an AlgorithmConfig) with the two pieces above in place of RLlib's default connector pipelines."""
    return config.env_runners(env_to_module_connector=last_observations_to_tensor,
                              module_to_env_connector=unsquashed_actions,
                              add_default_connectors_to_env_to_module_pipeline=False,
                              add_default_connectors_to_module_to_env_pipeline=False)


class NoModeSwitch:
    """Mixin for a TorchRLModule: forward passes without torch's train/eval switch (see the module docs)."""

    def setup(self):
        super().setup()
        moded = [name for name, layer in self.named_modules() if isinstance(layer, MODE_DEPENDENT_LAYERS)]
        if moded:
            raise ValueError(f"{type(self).__name__} skips torch's train/eval switch, but layers {moded} behave "
                             "differently in it")

    # Acting never backpropagates; no_grad also spares a module whose _forward_* does not say so (DDPG's) the graph.
    @torch.no_grad()
    def forward_inference(self, batch: dict, **kwargs) -> dict:
        return self._forward_inference(batch, **kwargs)

    @torch.no_grad()
    def forward_exploration(self, batch: dict, **kwargs) -> dict:
        return self._forward_exploration(batch, **kwargs)

    def forward_train(self, batch: dict, **kwargs) -> dict:
        return RLModule.forward_train(self, batch, **kwargs)
