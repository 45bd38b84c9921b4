"""DDPG torch Learner: critic regression to the one-step Bellman target, actor ascent on Q(s, mu(s)).

Two ways in:
- `update_from_replay` (what the DDPG Algorithm calls): one call runs a whole iteration's gradient steps (16 by
  default) in a plain torch loop, SB3's order per step: critic step, actor step against the updated critic, then a
  soft (tau) update of both target networks. RLlib's generic `Learner.update` spent ~8 ms per call on batch
  conversion, metrics and hook bookkeeping (issue 18's profile), more than the torch work of a 64x64 step; here
  that is paid once per iteration, and the actor's backward pass skips the frozen critic's weight gradients.
- RLlib's `Learner.update` still works (compute_loss_for_module / compute_gradients below; target soft updates
  from DQNLearner.after_gradient_based_update), e.g. for a caller that hands it a batch directly. There the actor
  loss is taken against the critic before that step's critic update.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ray.rllib.algorithms.dqn.dqn_learner import DQNLearner
from ray.rllib.core import DEFAULT_MODULE_ID
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
        # foreach: Adam's multi-tensor update (torch picks it only on CUDA by default); the same arithmetic.
        module = self._module[module_id]
        self.register_optimizer(module_id=module_id, optimizer_name="qf",
                                optimizer=torch.optim.Adam(module.qf.parameters(), foreach=True),
                                params=self.get_parameters(module.qf), lr_or_lr_schedule=config.critic_lr)
        self.register_optimizer(module_id=module_id, optimizer_name="policy",
                                optimizer=torch.optim.Adam(module.pi.parameters(), foreach=True),
                                params=self.get_parameters(module.pi), lr_or_lr_schedule=config.actor_lr)

    def update_from_replay(self, batches: dict[str, np.ndarray], module_id: str = DEFAULT_MODULE_ID) -> dict[str, float]:
        """One gradient step per leading-axis slice of `batches` (obs, actions, rewards, next_obs, terminateds,
        each shaped (n_steps, batch, ...)); returns the mean losses and Q values over the steps."""
        module = self.module[module_id].unwrapped()
        config = self.config.get_config_for_module(module_id)
        optimizers = dict(self.get_optimizers_for_module(module_id))
        qf_opt, pi_opt = optimizers["qf"], optimizers["policy"]
        data = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self._device) for k, v in batches.items()}
        pairs = module.get_target_network_pairs()
        main = [p for net, _ in pairs for p in net.parameters()]
        target = [p for _, net in pairs for p in net.parameters()]
        critic_params = list(module.qf.parameters())
        gamma, tau = float(config.gamma), float(config.tau)
        sums = torch.zeros(4)
        n_steps = int(data["rewards"].shape[0])
        for i in range(n_steps):
            obs, actions, next_obs = data["obs"][i], data["actions"][i], data["next_obs"][i]
            with torch.no_grad():
                q_target = data["rewards"][i] + gamma * (1.0 - data["terminateds"][i]) * module.forward_target(
                    {Columns.OBS: next_obs})
            q = module._q(module.qf, obs, actions)
            critic_loss = (q - q_target).pow(2).mean()
            qf_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            qf_opt.step()
            # Freeze the critic for the actor's pass: its gradient must reach the action, not the critic weights.
            for p in critic_params:
                p.requires_grad_(False)
            actor_loss = -module._q(module.qf, obs, module._actor(obs)).mean()
            pi_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            pi_opt.step()
            for p in critic_params:
                p.requires_grad_(True)
            with torch.no_grad():
                torch._foreach_lerp_(target, main, tau)  # target <- target + tau * (main - target)
                sums += torch.stack([actor_loss, critic_loss, q.mean(), q_target.mean()]).detach().cpu()
        means = (sums / max(n_steps, 1)).tolist()
        return dict(zip((POLICY_LOSS_KEY, QF_LOSS_KEY, "q_mean", "q_target_mean"), means)) | {"gradient_steps": n_steps}

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
