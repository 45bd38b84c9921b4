"""RLlib's PPO with the overhead it does not need here (see policies/lean.py); the algorithm is RLlib's own.

`lean(config)` sets a module with policies/lean.py's mixin and a Learner with Adam's multi-tensor (`foreach`) update,
which torch picks only on CUDA by default (the same arithmetic), and one nan/inf check over all gradients per
minibatch where RLlib makes two per tensor (the connectors come from tune.rl.build_config, as for DDPG). tests/test_rl.py trains the stock and the lean config from one seed and
compares their losses and weights.
"""
from __future__ import annotations

import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from policies.lean import NoModeSwitch


class PPOModule(NoModeSwitch, DefaultPPOTorchRLModule):
    """RLlib's default PPO module without the train/eval switch around every forward pass."""


class PPOLearner(PPOTorchLearner):
    """RLlib's PPO Learner with Adam `foreach` and one finiteness check of all gradients per minibatch."""

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
    return (config.rl_module(rl_module_spec=RLModuleSpec(module_class=PPOModule, model_config=model_config))
            .learners(learner_class=PPOLearner))
