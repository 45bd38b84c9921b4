"""DDPG torch Learner: critic regression to the one-step Bellman target, actor ascent on Q(s, mu(s)).

Target-network soft updates (tau) come from RLlib's DQNLearner, which syncs every pair the module lists in
`get_target_network_pairs` after each gradient update.
"""
from __future__ import annotations

from typing import Any

import torch

from ray.rllib.algorithms.dqn.dqn_learner import DQNLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.metrics import ALL_MODULES

from policies.ddpg.module import Q_POLICY, Q_PREDS, Q_TARGET_NEXT

QF_LOSS_KEY = "qf_loss"


class DDPGTorchLearner(DQNLearner, TorchLearner):
    def build(self) -> None:
        super().build()
        # Actor and critic are stepped by their own optimizers from their own losses (see compute_gradients).
        self._losses: dict[tuple[str, str], torch.Tensor] = {}

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self._module[module_id]
        self.register_optimizer(module_id=module_id, optimizer_name="qf",
                                optimizer=torch.optim.Adam(module.qf.parameters()),
                                params=self.get_parameters(module.qf), lr_or_lr_schedule=config.critic_lr)
        self.register_optimizer(module_id=module_id, optimizer_name="policy",
                                optimizer=torch.optim.Adam(module.pi.parameters()),
                                params=self.get_parameters(module.pi), lr_or_lr_schedule=config.actor_lr)

    def compute_loss_for_module(self, *, module_id, config, batch: dict[str, Any], fwd_out: dict[str, Any]):
        not_done = 1.0 - batch[Columns.TERMINATEDS].float()
        target = (batch[Columns.REWARDS] + config.gamma * not_done * fwd_out[Q_TARGET_NEXT]).detach()
        td_error = fwd_out[Q_PREDS] - target
        critic_loss = torch.mean(td_error.pow(2))
        actor_loss = -torch.mean(fwd_out[Q_POLICY])

        self.metrics.log_dict({POLICY_LOSS_KEY: actor_loss, QF_LOSS_KEY: critic_loss,
                               "q_mean": fwd_out[Q_PREDS].mean(), "q_target_mean": target.mean()},
                              key=module_id, window=1)
        self._losses[(module_id, "policy")] = actor_loss
        self._losses[(module_id, "qf")] = critic_loss
        return actor_loss + critic_loss

    def compute_gradients(self, loss_per_module, **kwargs):
        grads = {}
        for module_id in set(loss_per_module) - {ALL_MODULES}:
            for optim_name, optim in self.get_optimizers_for_module(module_id):
                optim.zero_grad(set_to_none=True)
                self._losses.pop((module_id, optim_name)).backward(retain_graph=True)
                grads.update({pid: p.grad for pid, p in self.filter_param_dict_for_optimizer(self._params, optim).items()})
        return grads
