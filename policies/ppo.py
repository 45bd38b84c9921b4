"""RLlib's PPO with the per-step and per-minibatch overhead it does not need here; the algorithm is RLlib's own.

`lean(config)` applies three things to a PPOConfig, none of which changes what is computed (tests/test_rl.py trains
the stock and the lean config from one seed and compares):
- Two EnvRunner connector pieces instead of RLlib's default pipelines, for a single-agent module with Box
  observations and Box actions (no recurrent state, no multi-agent mapping). RLlib's default pipelines run five pieces from env to module (observations from the episodes, zero-padding and
state pieces that do nothing without an RNN, batching, numpy -> torch) and six from module to env (sample, torch
-> numpy, unbatch, drop the time rank, unsquash, listify), each timed into the metrics logger: with 8 vectorised
env copies that was ~0.3 ms of connector work per env-copy step in a profile of `algo.train()`, more than the
  trading env's own step; these two pieces do the same work in one pass each.
- A module that does not switch torch's train/eval mode on every forward pass: RLlib walks the whole module tree
  twice per sampling step and once per minibatch for it (~0.09 s of a 1.1 s iteration), and these MLPs have no
  dropout or batch norm, whose behaviour is all the mode changes (the module refuses layers that would care).
- Adam with `foreach=True`: torch picks the per-tensor loop on CPU by default; the update is the same arithmetic.
  And one nan/inf check over all gradients per minibatch where RLlib makes two per tensor.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec
from ray.rllib.env import INPUT_ENV_SINGLE_SPACES

MODE_DEPENDENT_LAYERS = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)


class LastObservationsToTensor(ConnectorV2):
    """Each ongoing episode's latest observation, stacked into one float32 tensor under `obs`."""

    def __call__(self, *, rl_module, batch: dict, episodes: list, explore: bool | None = None,
                 shared_data: dict | None = None, **kwargs) -> Any:
        observations = np.stack([episode.get_observations(-1) for episode in episodes]).astype(np.float32, copy=False)
        batch[Columns.OBS] = torch.from_numpy(observations)
        return batch


class SampleUnsquashedActions(ConnectorV2):
    """Samples the module's action distribution (its mode when not exploring) and unsquashes the sample into the
    env's Box bounds for the env, keeping the sample, its log-probability and the distribution inputs for the
    episodes, as numpy arrays with one row per env copy (what GetActions ... ListifyDataForVectorEnv hand over)."""

    def __init__(self, action_space: gym.spaces.Box, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(action_space, gym.spaces.Box) or not (action_space.is_bounded("both")):
            raise ValueError(f"SampleUnsquashedActions needs a bounded Box action space, got {action_space!r}")
        self.low = action_space.low.astype(np.float32)
        self.high = action_space.high.astype(np.float32)

    def __call__(self, *, rl_module, batch: dict, episodes: list, explore: bool | None = None,
                 shared_data: dict | None = None, **kwargs) -> Any:
        inputs = batch[Columns.ACTION_DIST_INPUTS]
        if explore:
            dist = rl_module.get_exploration_action_dist_cls().from_logits(inputs)
            actions = dist.sample()
            out = {Columns.ACTION_LOGP: dist.logp(actions).numpy()}
        else:
            actions = rl_module.get_inference_action_dist_cls().from_logits(inputs).to_deterministic().sample()
            out = {}
        actions = actions.numpy()
        out[Columns.ACTIONS] = actions
        out[Columns.ACTION_DIST_INPUTS] = inputs.numpy()
        # RLlib's unsquash_action: [-1, 1] -> [low, high], then clipped to the bounds.
        out[Columns.ACTIONS_FOR_ENV] = np.clip(self.low + (actions + 1.0) * (self.high - self.low) / 2.0,
                                               self.low, self.high)
        return out


def last_observations_to_tensor(env=None, spaces=None, device=None) -> ConnectorV2:
    """`config.env_runners(env_to_module_connector=...)` (module-level, so a pickled config carries it)."""
    return LastObservationsToTensor()


def sample_unsquashed_actions(env=None, spaces=None) -> ConnectorV2:
    """`config.env_runners(module_to_env_connector=...)`; the env's single action space, as RLlib resolves it."""
    if env is not None:
        space = getattr(env, "single_action_space", env.action_space)
    else:
        space = spaces[INPUT_ENV_SINGLE_SPACES][1]
    return SampleUnsquashedActions(space)


class PPOModule(DefaultPPOTorchRLModule):
    """RLlib's default PPO module, minus the train/eval switch around every forward pass (see the module docs)."""

    def setup(self):
        super().setup()
        moded = [name for name, layer in self.named_modules() if isinstance(layer, MODE_DEPENDENT_LAYERS)]
        if moded:
            raise ValueError(f"PPOModule skips torch's train/eval switch, but layers {moded} behave differently in it")

    def forward_inference(self, batch: dict, **kwargs) -> dict:
        return self._forward_inference(batch, **kwargs)

    def forward_exploration(self, batch: dict, **kwargs) -> dict:
        return self._forward_exploration(batch, **kwargs)

    def forward_train(self, batch: dict, **kwargs) -> dict:
        return RLModule.forward_train(self, batch, **kwargs)


class PPOLearner(PPOTorchLearner):
    """RLlib's PPO Learner with Adam's multi-tensor (`foreach`) update, as torch already uses on CUDA, and one
    finiteness check of all gradients per minibatch instead of two per tensor."""

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        params = self.get_parameters(self._module[module_id])
        self.register_optimizer(module_id=module_id, optimizer=torch.optim.Adam(params, foreach=True), params=params,
                                lr_or_lr_schedule=config.lr)

    def apply_gradients(self, gradients_dict: dict) -> None:
        # TorchLearner checks every gradient tensor for nan/inf before and again inside the optimizer step (two
        # host syncs per tensor). All finite, with no grad scaler or lr schedule, its work is exactly the steps
        # below; anything else goes to it, which zeroes and reports non-finite gradients tensor by tensor.
        grads = [g.reshape(-1) for g in gradients_dict.values() if g is not None]
        if (self._grad_scalers is not None or self._lr_scheduler_classes is not None or not grads
                or not bool(torch.isfinite(torch.cat(grads)).all())):
            return super().apply_gradients(gradients_dict)
        for pid, grad in gradients_dict.items():
            self._params[pid].grad = grad
        for module_id, optimizer_names in self._module_optimizers.items():
            for optimizer_name in optimizer_names:
                self.get_optimizer(module_id, optimizer_name).step()


def lean(config, model_config: dict):
    """`config` (a PPOConfig) with the pieces above; `model_config`: the module's (fcnet_hiddens, ...)."""
    return (config
            .rl_module(rl_module_spec=RLModuleSpec(module_class=PPOModule, model_config=model_config))
            .learners(learner_class=PPOLearner)
            .env_runners(env_to_module_connector=last_observations_to_tensor,
                         module_to_env_connector=sample_unsquashed_actions,
                         add_default_connectors_to_env_to_module_pipeline=False,
                         add_default_connectors_to_module_to_env_pipeline=False))
