"""RL learners and serving on real RLlib: edgeray's DDPG learns Pendulum, PPO/DDPG train on the trading and
betting envs through the `tune.rl` entry point, checkpoints serve identical actions without the Algorithm,
and the policy server hot-swaps under a running decision loop without losing a decision."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray

from actors.pipeline import META_CONTROLLER, POLICY_SERVER, Pipeline
from policies.rl_policy import RLPolicy, evaluate
from tests.test_decision_loop import N_BARS, generator, loop_config, poll_until, records
from tune import rl

# Pendulum: random actions score about -1,200 to -1,500. One gradient update per env step, 64x64 nets.
PENDULUM_STEPS = 6_000
PENDULUM_BAR = -400.0


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The learners here run in this process (num_learners=0). On 2 cores shared with Ray's actors, torch's second
    OpenMP thread spin-waits for a busy core: a 128 x 64 linear layer measured 0.8 ms with 2 threads against 0.04 ms
    with 1 under load, and the Pendulum fixture went past the 600 s test timeout; with 1 thread it trains in ~30 s."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pendulum_ddpg(ray_session, tmp_path_factory):
    return rl.train("ddpg", "pendulum", PENDULUM_STEPS, tmp_path_factory.mktemp("ddpg-pendulum"), seed=0,
                    eval_episodes=10)


def test_ddpg_learns_pendulum(pendulum_ddpg):
    curve = pendulum_ddpg["curve"]
    assert curve[-1]["env_steps"] >= PENDULUM_STEPS
    # Evaluated with the served (bare RLModule) deterministic policy on 10 unseen seeds.
    assert pendulum_ddpg["eval"]["return_mean"] > PENDULUM_BAR, pendulum_ddpg["eval"]
    assert curve[0]["episode_return_mean"] < -900  # it started as bad as random (warm-up actions are uniform)


def test_checkpoint_round_trip_gives_identical_actions(pendulum_ddpg):
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.rllib.core.columns import Columns
    import torch

    checkpoint = pendulum_ddpg["checkpoint"]
    served_a, served_b = RLPolicy.load(checkpoint), RLPolicy.load(checkpoint)
    obs = np.random.default_rng(0).uniform(-1, 1, size=(64, 3)).astype(np.float32)
    assert np.array_equal(served_a.act(obs), served_b.act(obs))
    assert served_a.version == served_b.version
    restored = Algorithm.from_checkpoint(checkpoint)
    try:
        with torch.no_grad():
            raw = restored.get_module().forward_inference({Columns.OBS: torch.from_numpy(obs)})[Columns.ACTIONS].numpy()
        np.testing.assert_array_equal(served_a.act(obs), 2.0 * np.clip(raw, -1, 1).astype(np.float64))  # Box [-2, 2]
        # The restored algorithm keeps training from where it stopped.
        assert restored.train()["env_runners"]["num_env_steps_sampled_lifetime"] > pendulum_ddpg["env_steps"]
    finally:
        restored.stop()


def test_ppo_entry_point_trains_on_the_trading_env_and_writes_a_servable_checkpoint(ray_session, tmp_path, capsys):
    out = tmp_path / "ppo-trading"
    result = rl.main(["--algo", "ppo", "--env", "trading", "--steps", "2000", "--out", str(out), "--eval-episodes", "2",
                      "--env-config", json.dumps({"generator_bars": 1500, "episode_len": 200})])
    assert result["env_steps"] >= 2000
    checkpoint = out / "checkpoint"
    meta = json.loads((checkpoint / "policy.json").read_text())
    assert meta["algo"] == "ppo" and meta["env"] == "trading" and meta["obs_dim"] == 90
    assert (out / "learning_curve.png").stat().st_size > 0
    assert json.loads((checkpoint / "drift_reference.json").read_text())["feature_names"][0].endswith("_lag7")
    # Progress was printed as one JSON line per iteration (what `ray job logs` shows).
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"iteration"')]
    assert lines and lines[-1]["env_steps"] == result["env_steps"]
    # PPO's module returns Gaussian inputs: the served action is the clipped, unsquashed mean, within bounds,
    # and the evaluation recorded in policy.json is reproduced by the served policy on the same seeds.
    policy = RLPolicy.load(checkpoint)
    env = rl.ENVS["trading"]({"generator_bars": 1500, "episode_len": 200})
    scores = evaluate(policy.act, env, 2, seed=10_000)
    assert scores["return_mean"] == pytest.approx(meta["eval_return_mean"], rel=1e-9)
    actions = policy.act(np.zeros((4, 90), np.float32))
    assert ((actions >= env.action_space.low) & (actions <= env.action_space.high)).all()


def test_ddpg_trains_on_the_betting_env(ray_session, tmp_path):
    # A relative output dir, as the CLI default runs/rl/<algo>-<env> is. (No chdir: Ray workers started
    # afterwards would inherit the changed directory and lose the relative configs/ paths.)
    relative = os.path.relpath(tmp_path / "runs" / "ddpg-betting")
    result = rl.train("ddpg", "betting", 1500, relative, eval_episodes=3, num_steps_sampled_before_learning_starts=500)
    assert result["checkpoint"] == str(tmp_path / "runs" / "ddpg-betting" / "checkpoint")
    actions = RLPolicy.load(result["checkpoint"]).act(np.zeros((5, 7), np.float32))
    assert actions.shape == (5, 1) and ((actions >= 0) & (actions <= 0.25 + 1e-9)).all()
    assert np.isfinite(result["eval"]["return_mean"])


def test_bad_entry_point_arguments_are_named(ray_session, tmp_path):
    with pytest.raises(SystemExit):
        rl.main(["--algo", "ppo", "--env", "trading", "--env-config", "[1, 2]"])
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        rl.train("ddpg", "trading", 0, tmp_path)
    with pytest.raises(ValueError, match="env must be one of"):
        rl.build_config("ddpg", "chess")
    with pytest.raises(ValueError, match="has no policy.json"):
        RLPolicy.load(tmp_path)


@pytest.fixture(scope="module")
def trading_checkpoints(ray_session, tmp_path_factory):
    """Two different (barely trained) DDPG trading policies: enough to prove serving, not to trade. Both lie
    under one directory, which the servers below are given as their checkpoint root."""
    root = tmp_path_factory.mktemp("trading-policies")
    return [rl.train("ddpg", "trading", 1, root / f"v{seed}", seed=seed, eval_episodes=1,
                     env_config={"generator_bars": 1200, "episode_len": 100})["checkpoint"] for seed in (1, 2)]


def checkpoint_root(checkpoint: str) -> str:
    return str(Path(checkpoint).parents[1])  # <root>/v<seed>/checkpoint


def test_policy_hot_swap_under_a_running_loop_loses_no_decision(ray_session, tmp_path, unique_name, trading_checkpoints):
    first, second = trading_checkpoints
    cfg = loop_config(tmp_path, unique_name, sizer={"name": "rl_policy", "checkpoint": first,
                                                    "shadow_checkpoint": second,
                                                    "checkpoint_roots": [checkpoint_root(first)]})
    pipeline = Pipeline.start(cfg, fresh=True)
    try:
        policy = pipeline.decision[POLICY_SERVER]
        version_a = ray.get(policy.status.remote())["version"]
        ref = pipeline.replay_async(generator(cfg), rate=60 * 500)
        poll_until(ref, lambda: ray.get(policy.status.remote())["rows_served"], 800)
        assert not ray.wait([ref], timeout=0)[0], "the replay finished before the swap"
        swap = ray.get(policy.swap.remote(second))
        ray.get(ref)
        status = pipeline.finish()
        decisions = records(cfg, "decision")
        assert len(decisions) == 2 * N_BARS == decisions["decision_id"].nunique()
        served = ray.get(policy.status.remote())
        assert served["rows_served"] == 2 * N_BARS  # every row sized by exactly one policy call
        versions = decisions["payload"].map(lambda p: p["sizing"]["policy_version"])
        assert swap["from"] == version_a and set(versions) == {version_a, swap["to"]} and version_a != swap["to"]
        # Rows served before the swap carry the old version, all later ones the new one (ordered by event time
        # per symbol, since batches are served in order).
        ordered = decisions.assign(ts=pd.to_datetime(decisions["event_ts"], utc=True), v=versions).sort_values("ts")
        assert (ordered["v"] == version_a).sum() == swap["at_rows_served"]
        assert served["latency_ms_p99"] is not None and served["drift"] is not None
        # The shadow candidate sized the same signals on its own ledger; its delta PnL is reported.
        shadows = {s["name"]: s for s in status["decisions"]["shadows"]}
        assert "policy_shadow" in shadows and shadows["policy_shadow"]["policy_version"] == swap["to"]
        assert set(records(cfg, "shadow:policy")["decision_id"]) <= set(decisions["decision_id"])
        assert status["policy"]["swaps"][0]["to"] == swap["to"]
        # A bad checkpoint is refused before anything changes.
        with pytest.raises(ray.exceptions.RayTaskError, match="outside the allowed roots"):
            ray.get(policy.swap.remote(str(tmp_path)))
        with pytest.raises(ray.exceptions.RayTaskError, match="has no policy.json"):
            ray.get(policy.swap.remote(checkpoint_root(first)))
        assert ray.get(policy.status.remote())["version"] == swap["to"]
        assert ray.get(pipeline.decision[META_CONTROLLER].status.remote())["decisions"] == 2 * N_BARS
    finally:
        pipeline.shutdown()


def drift_caught_up(server, deadline_s: float = 60.0) -> dict:
    """Poll the server's status until its drift detector has folded every served row (or fail at the deadline)."""
    deadline = time.monotonic() + deadline_s
    while True:
        status = ray.get(server.status.remote())
        if status["drift_lag_rows"] == 0:
            return status
        assert time.monotonic() < deadline, f"drift detector still {status['drift_lag_rows']} rows behind"


def test_drift_alert_triggers_retraining_into_the_shadow_slot(ray_session, tmp_path, trading_checkpoints):
    from actors.policy_server import PolicyServerActor

    first, _ = trading_checkpoints
    retrain = {"algo": "ddpg", "env": "trading", "steps": 1, "out_dir": str(tmp_path / "retrain"),
               "env_config": {"generator_bars": 1200, "episode_len": 100}}
    server = PolicyServerActor.remote(first, None, retrain, None, [checkpoint_root(first), str(tmp_path)])
    try:
        obs_dim = 90  # window 8 x 10 features + 3 account + 7 regimes
        in_range = np.zeros((300, obs_dim), np.float32)
        shifted = np.full((300, obs_dim), 9.0, np.float32)  # every feature far outside training
        reply = ray.get(server.act.remote(in_range[:10]))
        assert reply["actions"].shape == (10, 3) and "shadow_actions" not in reply
        np.testing.assert_array_equal(reply["actions"], RLPolicy.load(first).act(in_range[:10]))  # same answer
        ray.get(server.act.remote(shifted))
        # The detector folds served batches off the request path: wait for it to catch up, then look.
        status = drift_caught_up(server)
        assert status["alerts_total"] > 0 and status["retraining"] is True
        assert {a["kind"] for a in status["alerts"]} == {"feature"}
        assert status["drift"]["n_live_rows"] == 310 and status["drift_errors"] == []
        # Persistent drift raises no second alert for the same feature (hysteresis).
        ray.get(server.act.remote(shifted))
        again = drift_caught_up(server)
        assert again["alerts_total"] == status["alerts_total"] and again["drift"]["n_live_rows"] == 610
        # Rewards far from the training rewards raise a reward alert.
        reward_alerts = ray.get(server.observe_rewards.remote(np.full(400, 5.0)))
        assert [a["kind"] for a in reward_alerts] == ["reward"] and reward_alerts[0]["p_value"] < 1e-3
        retrained = ray.get(server.wait_retrained.remote(300))
        assert retrained is not None, ray.get(server.status.remote())["retrain_errors"]
        after = ray.get(server.status.remote())
        assert after["retraining"] is False and after["shadow_version"] is not None
        assert after["version"] == status["version"]  # a retrained policy is a candidate, never auto-promoted
        promoted = ray.get(server.promote_shadow.remote())
        assert promoted["to"] == after["shadow_version"] and ray.get(server.status.remote())["shadow_version"] is None
    finally:
        ray.kill(server)


def test_policy_routes_over_http(ray_session, tmp_path, unique_name, trading_checkpoints):
    from tests.conftest import ADMIN as admin, TRADER as trader, VIEWER as viewer, pipeline_config, serve_api
    from tests.test_serve_decisions import feature_row

    first, second = trading_checkpoints
    cfg = pipeline_config(tmp_path, unique_name, decisions={"enabled": True, "shadows": [],
                                                            "sizer": {"name": "rl_policy", "checkpoint": first,
                                                                      "checkpoint_roots": [checkpoint_root(first)]}})
    with serve_api(cfg, f"edgeray-{unique_name}") as api:
        status = api.get("/api/policy", headers=viewer)
        assert status.status_code == 200 and status.json()["algo"] == "ddpg"
        assert api.post("/api/policy/swap", json={"checkpoint": second}, headers=trader).status_code == 403
        bad = api.post("/api/policy/swap", json={"checkpoint": str(tmp_path)}, headers=admin)
        assert bad.status_code == 422 and "checkpoint" in bad.json()["detail"][0]["msg"]
        assert api.post("/api/policy/swap", json={}, headers=admin).status_code == 422
        assert api.post("/api/policy/promote", headers=admin).status_code == 422  # no shadow yet
        swapped = api.post("/api/policy/swap", json={"checkpoint": second}, headers=admin)
        assert swapped.status_code == 200 and swapped.json()["from"] == status.json()["version"]
        shadow = api.post("/api/policy/shadow", json={"checkpoint": first}, headers=admin)
        assert shadow.status_code == 200 and shadow.json()["shadow_version"] == status.json()["version"]
        decided = api.post("/api/decisions", json={"rows": [feature_row(0), feature_row(1)]}, headers=trader)
        assert decided.status_code == 200, decided.text
        sizing = [r["payload"]["sizing"] for d in decided.json()["decisions"] for r in d["audit"] if r["stage"] == "decision"]
        assert [s["method"] for s in sizing] == ["rl_policy", "rl_policy"]
        assert {s["policy_version"] for s in sizing} == {swapped.json()["to"]}
        assert api.get("/api/policy", headers=viewer).json()["rows_served"] == 2


def test_ddpg_runs_under_ray_tune_like_a_built_in_algorithm(ray_session, tmp_path):
    result = rl.sweep("ddpg", "pendulum", steps=1, samples=2, storage_path=tmp_path / "tune", seed=0)
    assert len(result["trials"]) == 2
    assert all(1e-4 <= t["actor_lr"] <= 3e-3 and 1e-4 <= t["critic_lr"] <= 3e-3 for t in result["trials"])
    assert result["trials"][0]["actor_lr"] != result["trials"][1]["actor_lr"]  # sampled, not fixed
    assert result["best_checkpoint"] and np.isfinite(result["best_return"])
    # The Tune checkpoint is a normal DDPG checkpoint: it restores into the algorithm.
    from policies.ddpg import DDPG

    restored = DDPG.from_checkpoint(result["best_checkpoint"])
    try:
        assert restored.config.actor_lr == pytest.approx(result["best_config"]["actor_lr"])
    finally:
        restored.stop()


def test_learners_ask_for_a_gpu_only_when_one_is_there():
    assert rl.build_config("ppo", "trading", gpu=True).num_gpus_per_learner == 1
    assert rl.build_config("ddpg", "trading", gpu=False).num_gpus_per_learner == 0
    ppo = rl.build_config("ppo", "trading")
    assert ppo.num_env_runners == 0  # PPO's default of 2 EnvRunners never starts on 2 cores
    with pytest.raises(ValueError, match="algo must be one of"):
        rl.build_config("sac", "trading")


@pytest.mark.parametrize("algo", ["ppo", "ddpg"])
def test_lean_learners_train_exactly_as_with_rllibs_stock_pipelines_and_learner(ray_session, algo):
    """policies/lean.py and policies/ppo.py remove overhead only: from one seed, the stock config (RLlib's default
    connector pipelines; for PPO also its default module and Learner) and the lean one sample the same episodes and
    end with the same losses and weights."""
    import torch
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from policies import ppo
    from policies.lean import LastObservationsToTensor

    if algo == "ppo":
        sizes = dict(num_envs_per_env_runner=4, train_batch_size_per_learner=256, minibatch_size=64, num_epochs=2)
        metrics = ("policy_loss", "vf_loss", "mean_kl_loss")
    else:  # learning starts after 64 steps, so both iterations train from the replay
        sizes = dict(num_steps_sampled_before_learning_starts=64)
        metrics = ("policy_loss", "qf_loss", "q_mean")

    def trained(lean: bool):
        config = rl.build_config(algo, "trading", seed=5, env_config={"generator_bars": 600}, **sizes)
        if algo == "ddpg":
            config = (config.env_runners(rollout_fragment_length=96)
                      .rl_module(model_config={**config.model_config, "random_warmup_steps": 32}))
        if not lean:
            config = config.env_runners(env_to_module_connector=None, module_to_env_connector=None,
                                        add_default_connectors_to_env_to_module_pipeline=True,
                                        add_default_connectors_to_module_to_env_pipeline=True)
            if algo == "ppo":
                config = (config.learners(learner_class=PPOTorchLearner)
                          .rl_module(rl_module_spec=RLModuleSpec(model_config={"fcnet_hiddens": [64, 64],
                                                                               "vf_share_layers": False})))
        algo_ = config.build_algo()
        try:
            runner = algo_.env_runner
            assert isinstance(runner._env_to_module.connectors[0], LastObservationsToTensor) == lean
            if algo == "ppo":
                assert isinstance(runner.module, ppo.PPOModule) == lean
                assert isinstance(algo_.learner_group._learner, ppo.PPOLearner) == lean
            module = algo_.learner_group._learner.module["default_policy"]
            initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
            results = [algo_.train() for _ in range(2)]
            return results, initial, {k: v.detach().clone() for k, v in module.state_dict().items()}
        finally:
            algo_.stop()

    stock_results, initial_weights, stock_weights = trained(lean=False)
    lean_results, lean_initial, lean_weights = trained(lean=True)
    for name, value in initial_weights.items():
        assert torch.equal(lean_initial[name], value)  # the same seed builds the same networks
    for stock, lean in zip(stock_results, lean_results):
        assert lean["env_runners"]["num_env_steps_sampled"] == stock["env_runners"]["num_env_steps_sampled"] > 0
        for metric in metrics:
            assert lean["learners"]["default_policy"][metric] == stock["learners"]["default_policy"][metric], metric
    assert stock_weights.keys() == lean_weights.keys()
    for name, value in stock_weights.items():
        torch.testing.assert_close(lean_weights[name], value, rtol=0, atol=1e-6, msg=name)
    # Trained, so equal weights say something.
    assert sum(not torch.equal(value, initial_weights[name]) for name, value in stock_weights.items()) >= 8


def test_lean_ppo_actions_stay_in_the_env_bounds_and_mode_dependent_layers_are_refused():
    import gymnasium as gym
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from policies import ppo
    from policies.lean import UnsquashedActions

    obs_space, act_space = gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Box(np.array([0, -2], np.float32),
                                                                                    np.array([1, 2], np.float32))
    module = RLModuleSpec(module_class=ppo.PPOModule, observation_space=obs_space, action_space=act_space,
                          model_config={"fcnet_hiddens": [8]}).build()
    to_env = UnsquashedActions(act_space)
    # Wide distribution inputs: samples fall far outside [-1, 1] and must be clipped into the bounds.
    inputs = torch.tensor([[5.0, -5.0, 2.0, 2.0]] * 64)
    out = to_env(rl_module=module, batch={Columns.ACTION_DIST_INPUTS: inputs}, episodes=[], explore=True)
    sent = out[Columns.ACTIONS_FOR_ENV]
    assert sent.shape == (64, 2) and (sent >= act_space.low).all() and (sent <= act_space.high).all()
    assert (sent == act_space.high).any(axis=0).all() or (sent == act_space.low).any(axis=0).all()
    assert out[Columns.ACTION_LOGP].shape == (64,) and out[Columns.ACTIONS].shape == (64, 2)
    greedy = to_env(rl_module=module, batch={Columns.ACTION_DIST_INPUTS: inputs}, episodes=[], explore=False)
    np.testing.assert_allclose(greedy[Columns.ACTIONS_FOR_ENV][0], [1.0, -2.0])  # the mean (5, -5), clipped
    # A module that acts itself (DDPG): its actions are unsquashed as they are, nothing is sampled.
    acted = to_env(rl_module=module, batch={Columns.ACTIONS: torch.tensor([[-1.0, 0.0], [1.0, 0.5], [3.0, -3.0]])},
                   episodes=[], explore=True)
    np.testing.assert_allclose(acted[Columns.ACTIONS_FOR_ENV], [[0.0, 0.0], [1.0, 1.0], [1.0, -2.0]])
    assert Columns.ACTION_LOGP not in acted and acted[Columns.ACTIONS].shape == (3, 2)
    with pytest.raises(ValueError, match="bounded Box"):
        UnsquashedActions(gym.spaces.Box(-np.inf, np.inf, (1,), np.float32))

    class WithDropout(ppo.PPOModule):
        def setup(self):
            self.extra = torch.nn.Dropout(0.1)
            super().setup()

    with pytest.raises(ValueError, match="extra"):
        RLModuleSpec(module_class=WithDropout, observation_space=obs_space, action_space=act_space,
                     model_config={"fcnet_hiddens": [8]}).build()


def test_replay_ring_buffer_wraps_and_samples_only_filled_rows():
    from policies.ddpg.replay import TransitionReplay

    replay = TransitionReplay(capacity=5, obs_dim=2, act_dim=1, seed=0)
    with pytest.raises(ValueError, match="empty"):
        replay.sample(1, 4)

    def rows(first, n):  # row i carries the value i everywhere, so a sample shows which rows it came from
        ids = np.arange(first, first + n, dtype=np.float32)
        return np.stack([ids, ids], 1), ids[:, None], ids, np.stack([ids, ids], 1) + 1, ids % 2

    replay.add(*rows(0, 3))
    batch = replay.sample(200, 8)
    assert batch["obs"].shape == (200, 8, 2) and batch["actions"].shape == (200, 8, 1) and batch["rewards"].shape == (200, 8)
    assert set(np.unique(batch["rewards"])) == {0.0, 1.0, 2.0}  # only the 3 filled rows, each drawn
    np.testing.assert_array_equal(batch["next_obs"][..., 0], batch["rewards"] + 1)  # fields stay row-aligned
    replay.add(*rows(3, 4))  # 7 rows into capacity 5: rows 0 and 1 are overwritten
    assert len(replay) == 5 and replay.added == 7
    assert set(np.unique(replay.sample(400, 8)["rewards"])) == {2.0, 3.0, 4.0, 5.0, 6.0}
    replay.add(*rows(10, 12))  # more than the capacity in one add: the newest 5 survive
    assert sorted(replay.rewards.tolist()) == [17.0, 18.0, 19.0, 20.0, 21.0]


def test_ddpg_learner_runs_an_iterations_updates_in_one_call_with_soft_target_updates(ray_session):
    import torch

    algo = rl.build_config("ddpg", "pendulum", seed=3).build_algo()
    try:
        learner = algo.learner_group._learner
        module = learner.module["default_policy"].unwrapped()
        rng = np.random.default_rng(0)
        n, b = 4, 32
        batches = {"obs": rng.normal(size=(n, b, 3)).astype(np.float32),
                   "actions": rng.uniform(-1, 1, size=(n, b, 1)).astype(np.float32),
                   "rewards": rng.normal(size=(n, b)).astype(np.float32),
                   "next_obs": rng.normal(size=(n, b, 3)).astype(np.float32),
                   "terminateds": (rng.random((n, b)) < 0.1).astype(np.float32)}
        pairs = module.get_target_network_pairs()
        before = [[p.detach().clone() for p in net.parameters()] for pair in pairs for net in pair]
        stats = learner.update_from_replay({k: v[:1] for k, v in batches.items()})
        after = [[p.detach().clone() for p in net.parameters()] for pair in pairs for net in pair]
        tau = algo.config.tau
        for i in (0, 2):  # (pi, target_pi), (qf, target_qf)
            assert any(not torch.equal(x, y) for x, y in zip(before[i], after[i]))  # the online net stepped
            for old_target, new_main, new_target in zip(before[i + 1], after[i], after[i + 1]):
                torch.testing.assert_close(new_target, old_target + tau * (new_main - old_target))
        assert stats["gradient_steps"] == 1 and np.isfinite(stats["qf_loss"])
        # The critic regresses toward its targets: repeated passes over one fixed batch shrink its loss.
        fixed = {k: np.repeat(v[:1], 50, axis=0) for k, v in batches.items()}
        first = learner.update_from_replay({k: v[:1] for k, v in fixed.items()})["qf_loss"]
        last = learner.update_from_replay(fixed)["qf_loss"]
        assert last < first
        assert all(p.requires_grad for p in module.qf.parameters())  # the actor pass unfroze the critic again
        # The EnvRunner acts with the learner's actor after an iteration (weights copied in process).
        algo.train()
        runner_pi = algo.env_runner_group.local_env_runner.module.pi
        for mine, theirs in zip(runner_pi.parameters(), module.pi.parameters()):
            assert torch.equal(mine, theirs)
    finally:
        algo.stop()


def test_bench_names_a_winner_only_when_confidence_intervals_separate():
    from bench.rl import bootstrap_weights, judge, mean_ci

    rng = np.random.default_rng(1)
    seed_w, ep_w = bootstrap_weights(5, 40, replicates=2000)
    good = rng.normal(1.0, 0.1, size=(5, 40))
    close = good + rng.normal(0.0, 0.1, size=(5, 40))
    flat = np.zeros((1, 40))
    policies = {name: dict(zip(("return_mean", "return_ci"), mean_ci(m, seed_w, ep_w)))
                for name, m in (("good", good), ("close", close), ("flat", flat))}
    assert policies["good"]["return_ci"][0] < policies["good"]["return_mean"] < policies["good"]["return_ci"][1]
    assert policies["flat"]["return_ci"] == [0.0, 0.0]
    verdict = judge(policies)
    assert verdict["winner"] is None and verdict["separated"] is False  # good and close overlap
    assert policies["good"]["beats"] == ["flat"] and policies["close"]["beats"] == ["flat"]
    del policies["close"]
    assert judge(policies) == {"winner": "good", "separated": True, "best_mean": "good"}
    # A seed that trained badly widens the CI: the seed level of the bootstrap sees it.
    spread = good.copy()
    spread[0] -= 2.0
    assert np.diff(mean_ci(spread, seed_w, ep_w)[1]) > 5 * np.diff(policies["good"]["return_ci"])


def test_bench_ablations_merge_by_name_and_an_unknown_one_exits_2():
    from bench.rl import ablation_overrides, main

    assert ablation_overrides([]) == {}
    assert ablation_overrides(["costs_off", "discrete"]) == {"cost_scale": 0.0, "position_step": 1.0}
    with pytest.raises(SystemExit) as exc:
        main(["--ablation", "costs_off,nope"])
    assert exc.value.code == 2
