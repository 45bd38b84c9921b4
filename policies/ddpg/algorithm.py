"""DDPG (Lillicrap et al. 2015) as an RLlib algorithm on the new API stack.

RLlib 2.x dropped DDPG. This brings it back the way RLlib builds SAC: an AlgorithmConfig with the DDPG
hyper-parameters, an Algorithm whose `training_step` runs the off-policy loop (EnvRunners sample episodes ->
transitions into RLlib's replay buffer -> `updates_per_step` learner updates per sampled step -> soft target
sync -> weight sync back to the EnvRunners), a torch Learner with the DDPG losses and a deterministic-actor +
Q-critic RLModule. It trains with `algo.train()`, checkpoints with `save_to_path`, and runs under Ray Tune like
any built-in algorithm.

Why not DQN's training_step (which SAC reuses): it replays through RLlib's EpisodeReplayBuffer, which slices an
episode object per sampled row (measured ~0.5 ms a row here, 60 ms per 128-row batch). RLlib's timestep
`ReplayBuffer` was next (~7 ms a batch, concatenating 128 one-row SampleBatches); now transitions go into a numpy
ring buffer (`policies.ddpg.replay`) and each iteration's minibatches are gathered by index in one go and handed to
the Learner's `update_from_replay`, which runs all of the iteration's gradient steps in one call.
"""
from __future__ import annotations

import numpy as np
import torch

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.policy.sample_batch import SampleBatch
from ray.rllib.utils.metrics import (ENV_RUNNER_RESULTS, LEARNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME,
                                     NUM_ENV_STEPS_TRAINED_LIFETIME)

from policies.ddpg.replay import TransitionReplay


class DDPGConfig(AlgorithmConfig):
    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or DDPG)
        self.actor_lr = 1e-3
        self.critic_lr = 1e-3
        self.tau = 0.005
        self.gamma = 0.99
        self.exploration_noise = 0.1
        self.random_warmup_steps = 1000
        self.actor_hiddens = [256, 256]
        self.critic_hiddens = [256, 256]
        self.buffer_capacity = 100_000
        self.num_steps_sampled_before_learning_starts = 1000
        self.updates_per_step = 1.0  # gradient updates per sampled env step (1 in the paper and CleanRL)
        self.train_batch_size_per_learner = 256
        self.rollout_fragment_length = 16
        self.target_network_update_freq = 0  # soft update (tau) after every gradient step (DQNLearner)
        self.lr = None  # DDPG uses actor_lr / critic_lr
        self.min_sample_timesteps_per_iteration = 1000
        self.min_time_s_per_iteration = None
        self.num_env_runners = 0

    def training(self, *, actor_lr=NotProvided, critic_lr=NotProvided, tau=NotProvided,
                 exploration_noise=NotProvided, random_warmup_steps=NotProvided, actor_hiddens=NotProvided,
                 critic_hiddens=NotProvided, buffer_capacity=NotProvided,
                 num_steps_sampled_before_learning_starts=NotProvided, updates_per_step=NotProvided,
                 **kwargs) -> "DDPGConfig":
        super().training(**kwargs)
        for name, value in locals().items():
            if name not in ("self", "kwargs", "__class__") and value is not NotProvided:
                setattr(self, name, value)
        return self

    def validate(self) -> None:
        super().validate()
        for name in ("actor_lr", "critic_lr", "tau"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise ValueError(f"DDPGConfig.{name} must be in (0, 1], got {value!r}")
        if not (self.exploration_noise >= 0):
            raise ValueError(f"DDPGConfig.exploration_noise must be >= 0, got {self.exploration_noise!r}")
        if self.lr is not None:
            raise ValueError(f"DDPGConfig.lr must stay None (use actor_lr and critic_lr), got {self.lr!r}")
        if not (self.updates_per_step > 0):
            raise ValueError(f"DDPGConfig.updates_per_step must be > 0, got {self.updates_per_step!r}")
        if int(self.num_learners) > 1:
            raise ValueError(f"DDPG trains on one Learner (local or remote); got num_learners={self.num_learners}")
        if int(self.buffer_capacity) < int(self.train_batch_size_per_learner):
            raise ValueError(f"DDPGConfig.buffer_capacity must hold at least one batch "
                             f"({self.train_batch_size_per_learner}), got {self.buffer_capacity!r}")

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        from policies.ddpg.module import DDPGTorchRLModule

        return RLModuleSpec(module_class=DDPGTorchRLModule)

    def get_default_learner_class(self):
        from policies.ddpg.learner import DDPGTorchLearner

        return DDPGTorchLearner

    @property
    def _model_config_auto_includes(self) -> dict:
        return super()._model_config_auto_includes | {
            "actor_hiddens": list(self.actor_hiddens), "critic_hiddens": list(self.critic_hiddens),
            "exploration_noise": float(self.exploration_noise), "random_warmup_steps": int(self.random_warmup_steps)}


def transitions(episodes) -> SampleBatch:
    """(obs, action, reward, next_obs, terminated) rows from EnvRunner episode chunks.

    Actions are the module's normalised [-1, 1] outputs (what the critic sees), not the env-scaled ones.
    Only the final step of a terminated chunk is terminal; a truncated end still bootstraps from next_obs.
    """
    cols = {k: [] for k in (Columns.OBS, Columns.ACTIONS, Columns.REWARDS, Columns.NEXT_OBS, Columns.TERMINATEDS)}
    for ep in episodes:
        n = len(ep)
        if n == 0:
            continue
        obs = np.asarray(ep.get_observations(slice(0, n + 1)), dtype=np.float32)
        done = np.zeros(n, dtype=bool)
        done[-1] = ep.is_terminated
        cols[Columns.OBS].append(obs[:-1])
        cols[Columns.NEXT_OBS].append(obs[1:])
        cols[Columns.ACTIONS].append(np.asarray(ep.get_actions(slice(0, n)), dtype=np.float32))
        cols[Columns.REWARDS].append(np.asarray(ep.get_rewards(slice(0, n)), dtype=np.float32))
        cols[Columns.TERMINATEDS].append(done)
    return SampleBatch({k: np.concatenate(v) for k, v in cols.items()}) if cols[Columns.OBS] else SampleBatch({})


class DDPG(Algorithm):
    @classmethod
    def get_default_config(cls) -> DDPGConfig:
        return DDPGConfig()

    def setup(self, config) -> None:
        super().setup(config)
        dims = self.learner_group.foreach_learner(lambda learner: (learner.module[DEFAULT_MODULE_ID].unwrapped().obs_dim,
                                                                   learner.module[DEFAULT_MODULE_ID].unwrapped().act_dim))
        obs_dim, act_dim = dims.result_or_errors[0].get()
        self.replay = TransitionReplay(int(self.config.buffer_capacity), obs_dim, act_dim, seed=self.config.seed)
        self._owed_updates = 0.0  # fractional updates carried between iterations (updates_per_step < 1)

    def training_step(self) -> None:
        episodes, runner_metrics = synchronous_parallel_sample(
            worker_set=self.env_runner_group, concat=True, sample_timeout_s=self.config.sample_timeout_s,
            _uses_new_env_runners=True, _return_metrics=True)
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)
        batch = transitions(episodes)
        if batch.count == 0:
            return
        self.replay.add(*(batch[k] for k in (Columns.OBS, Columns.ACTIONS, Columns.REWARDS, Columns.NEXT_OBS,
                                             Columns.TERMINATEDS)))
        sampled = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        if sampled < self.config.num_steps_sampled_before_learning_starts or len(self.replay) < self.config.train_batch_size_per_learner:
            return
        self._owed_updates += batch.count * self.config.updates_per_step
        n_updates, self._owed_updates = int(self._owed_updates), self._owed_updates - int(self._owed_updates)
        if n_updates == 0:
            return
        size = self.config.train_batch_size_per_learner
        batches = self.replay.sample(n_updates, size)
        stats = self.learner_group.foreach_learner(lambda learner: learner.update_from_replay(batches))
        self.metrics.log_dict(stats.result_or_errors[0].get(), key=(LEARNER_RESULTS, DEFAULT_MODULE_ID), window=1)
        self.metrics.log_value(NUM_ENV_STEPS_TRAINED_LIFETIME, n_updates * size, reduce="sum")
        self._sync_actor()

    def _sync_actor(self) -> None:
        """Learner weights -> EnvRunners. With the Learner and the only EnvRunner both in this process (the 2-core
        setup), copy the actor's tensors in place: RLlib's sync_weights converts the whole state to numpy and
        ray.put()s it every iteration even when no remote runner exists to receive it."""
        local = self.env_runner_group.local_env_runner
        if self.learner_group.is_local and self.env_runner_group.num_remote_env_runners() == 0 and local is not None:
            source = self.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped().pi
            with torch.no_grad():
                for dst, src in zip(local.module.pi.parameters(), source.parameters()):
                    dst.copy_(src)
            return
        self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group, inference_only=True)
