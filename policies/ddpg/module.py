"""Deterministic actor + Q critic RLModule for DDPG (torch, RLlib new API stack).

The actor works in RLlib's normalised action space [-1, 1] (tanh head); RLlib's module-to-env connector
unsquashes to the env's Box bounds (`normalize_actions=True`, the default), so replayed actions and the
critic's inputs stay in [-1, 1] whatever the env's bounds. Serving code calls `forward_inference` and
unsquashes with `policies.rl_policy`.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, QNetAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from policies.lean import NoModeSwitch

Q_PREDS = "q_preds"            # Q(s, a) for the replayed action
Q_TARGET_NEXT = "q_target_next"  # Q'(s', mu'(s')) from the target nets
Q_POLICY = "q_policy"          # Q(s, mu(s)) with critic weights frozen: the actor's objective

DEFAULT_MODEL_CONFIG = {
    "actor_hiddens": [256, 256],
    "critic_hiddens": [256, 256],
    "exploration_noise": 0.1,     # std of Gaussian noise added to the actor's [-1, 1] output while sampling
    "random_warmup_steps": 1000,  # uniform random actions for the first rows this module samples
}


def mlp(sizes: list[int], out_activation: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if out_activation is not None:
        layers.append(out_activation)
    return nn.Sequential(*layers)


# NoModeSwitch: forward passes without torch's train/eval switch (these MLPs have no dropout or batch norm).
class DDPGTorchRLModule(NoModeSwitch, TorchRLModule, TargetNetworkAPI, QNetAPI, InferenceOnlyAPI):
    framework = "torch"

    def setup(self) -> None:
        if not isinstance(self.action_space, gym.spaces.Box):
            raise ValueError(f"DDPG needs a continuous Box action space, got {self.action_space}")
        if not isinstance(self.observation_space, gym.spaces.Box):
            raise ValueError(f"DDPG needs a Box observation space, got {self.observation_space}")
        cfg = {**DEFAULT_MODEL_CONFIG, **(self.model_config or {})}
        self.obs_dim = int(np.prod(self.observation_space.shape))
        self.act_dim = int(np.prod(self.action_space.shape))
        self.exploration_noise = float(cfg["exploration_noise"])
        self.random_warmup_steps = int(cfg["random_warmup_steps"])
        self._explored_rows = 0  # per-process count (each EnvRunner keeps its own warm-up)
        self.pi = mlp([self.obs_dim, *cfg["actor_hiddens"], self.act_dim], nn.Tanh())
        if not self.inference_only:
            self.qf = mlp([self.obs_dim + self.act_dim, *cfg["critic_hiddens"], 1])

    # --- acting -------------------------------------------------------------------------------------------
    def _actor(self, obs: torch.Tensor) -> torch.Tensor:
        return self.pi(obs.reshape(obs.shape[0], -1).float())

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTIONS: self._actor(batch[Columns.OBS])}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        actions = self._actor(batch[Columns.OBS])
        n = actions.shape[0]
        if self._explored_rows < self.random_warmup_steps:
            actions = torch.rand_like(actions) * 2.0 - 1.0
        else:
            actions = (actions + self.exploration_noise * torch.randn_like(actions)).clamp(-1.0, 1.0)
        self._explored_rows += n
        return {Columns.ACTIONS: actions}

    # --- learning -----------------------------------------------------------------------------------------
    def _q(self, net: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs.reshape(obs.shape[0], -1).float(), actions.reshape(actions.shape[0], -1).float()], dim=-1)
        return net(x).squeeze(-1)

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs, next_obs = batch[Columns.OBS], batch[Columns.NEXT_OBS]
        out = {Q_PREDS: self._q(self.qf, obs, batch[Columns.ACTIONS])}
        with torch.no_grad():
            out[Q_TARGET_NEXT] = self.forward_target({Columns.OBS: next_obs})
        # Actor objective: gradients flow into pi only; the critic's weights are frozen for this pass
        # (requires_grad off, not detach, so the path through the critic to the action stays differentiable).
        for p in self.qf.parameters():
            p.requires_grad_(False)
        out[Q_POLICY] = self._q(self.qf, obs, self._actor(obs))
        for p in self.qf.parameters():
            p.requires_grad_(True)
        return out

    # --- TargetNetworkAPI / QNetAPI / InferenceOnlyAPI ------------------------------------------------------
    def make_target_networks(self) -> None:
        self.target_pi = make_target_network(self.pi)
        self.target_qf = make_target_network(self.qf)

    def get_target_network_pairs(self):
        return [(self.pi, self.target_pi), (self.qf, self.target_qf)]

    def forward_target(self, batch: dict[str, Any], **kwargs) -> torch.Tensor:
        obs = batch[Columns.OBS]
        return self._q(self.target_qf, obs, self.target_pi(obs.reshape(obs.shape[0], -1).float()))

    def compute_q_values(self, batch: dict[str, Any]) -> torch.Tensor:
        return self._q(self.qf, batch[Columns.OBS], batch[Columns.ACTIONS])

    def get_non_inference_attributes(self) -> list[str]:
        return ["qf", "target_qf", "target_pi"]
