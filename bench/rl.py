"""RL sizing benchmark on the trading env, printed as JSON: edgeray DDPG and RLlib PPO (both through
`tune.rl.train`) against stable-baselines3 DDPG and PPO with matched hyper-parameters, plus buy-and-hold and
flat baselines, judged over training seeds and out of sample.

    python bench/rl.py                                   # BTC walk-forward, 20,000 env steps, seeds 0-4, 20 episodes
    python bench/rl.py --steps 20000 --seeds 0          # one seed: the speed ratios
    python bench/rl.py --data generator --steps 1500 --seeds 0 --eval-episodes 2   # smoke run, a few minutes
    python bench/rl.py --ablation pnl_reward --learners edgeray_ddpg,rllib_ppo --steps 10000 --seeds 0,1,2

Walk-forward: every learner trains on the first `--train-fraction` (0.7) of the BTC 1-minute file's bars and is
scored on (a) episodes lying wholly in the later 30% ("btc_later") and (b) the GBP/USD 1-minute bid/ask bars of
Feb 2012 ("gbpusd", a market never trained on; OHLC = bid/ask mid, costs use the quoted spread). Every policy,
every training seed, is scored on the same `--eval-episodes` episodes of each set (episode seeds 10,000 .. 10,000 +
n - 1, deterministic actions) by `policies.rl_policy.evaluate`.

Confidence intervals: `return_ci` is a 95% percentile bootstrap of the mean return, resampling at two levels,
training seeds and then evaluation episodes (the same episode draw for every policy in a replicate), 10,000
replicates, numpy RNG seeded 0. It carries both the seed-to-seed spread of training and the luck of which episodes
were drawn; a baseline, having no training seed, gets the episode part only. (scipy.stats.bootstrap resamples one
level only, hence numpy.) A set's `winner` is named only when the best policy's CI lies wholly above every other
policy's; otherwise `winner` is null and `separated` false. `beats` lists, per policy, the others whose CI lies
wholly below its own.

Speed: the RLlib learners train until `--steps` env steps are sampled, rounded up to whole training iterations
(edgeray DDPG: iterations of 1,008 steps; RLlib PPO: 2,000-step batches); each SB3 learner then trains, in the same
process right after, for exactly the env steps its RLlib counterpart took on the same seed. `train_wall_s` is the
training loop only (no algorithm build, no evaluation), `train_cpu_s` the CPU time this process spent in it (less
sensitive than wall time to other work on a shared machine); both libraries run with `--torch-threads` torch threads (1:
on 2 shared cores a second OpenMP thread made a 128 x 64 linear layer 20x slower under load). `ratios` divide the
mean wall (and CPU) times over the seeds. Writes rl.json and rl_returns.png (mean evaluation return per set, error bars =
the 95% CI) to `--out`, with the RLlib checkpoints and SB3 models.

Ablations (`--ablation NAME[,NAME...]`, merged in order; default none): env_config overrides applied to the training
set and to every evaluation set alike (the task itself changes, so flat and buy-and-hold are re-scored under it):
see `ABLATIONS`. The JSON records the names and the merged overrides. Because the default reward subtracts drawdown
and holding penalties, returns of different reward designs are not comparable; `--net-pnl` adds, per evaluation set,
`<set>_net_pnl`: the same episodes scored as equity change net of costs (the policy's trades are the same there).

Hyper-parameters are matched where SB3 can express them (table in `HYPERPARAMETERS`); what it cannot is listed
in the output's "unmatched".
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envs import make_trading_env  # noqa: E402
from policies.rl_policy import RLPolicy, evaluate, unsquash  # noqa: E402

MARKETS = ROOT.parent / "shared" / "data" / "markets"
BTC = MARKETS / "btc_perp_1m_2022-01.csv"
GBPUSD_BID, GBPUSD_ASK = MARKETS / "gbpusd_1m_bid_2012-02.csv", MARKETS / "gbpusd_1m_ask_2012-02.csv"
EVAL_SEED = 10_000  # episode seeds of every evaluation set: 10_000, 10_001, ... (the same for every policy)
HIDDENS = [64, 64]
LEARNERS = ("edgeray_ddpg", "rllib_ppo", "sb3_ddpg", "sb3_ppo")
BOOTSTRAP_REPLICATES = 10_000

# What tune.rl.build_config sets (plus the DDPGConfig / PPOConfig defaults it leaves alone), and the SB3 argument
# each one maps to. Checked against policies/ddpg/*.py and ray/rllib/algorithms/ppo/ppo.py + ppo_torch_learner.py.
HYPERPARAMETERS = {
    "ddpg": {
        "actor/critic hiddens": ("[64, 64] ReLU, tanh actor head", "net_arch=[64, 64] (TD3Policy: ReLU, tanh head)"),
        "critics": ("1", "n_critics=1 (SB3 DDPG default)"),
        "actor_lr / critic_lr": ("1e-3 / 1e-3 (Adam, eps 1e-8)", "learning_rate=1e-3 for both (Adam, eps 1e-8)"),
        "batch": ("128", "batch_size=128"),
        "tau": ("0.005 after every gradient step", "tau=0.005 after every gradient step (policy_delay=1)"),
        "gamma": ("0.99", "gamma=0.99"),
        "buffer": ("100,000", "buffer_size=100_000"),
        "warm-up": ("1,000 uniform random actions", "learning_starts=1000 (uniform action_space.sample())"),
        "learning starts": ("after 1,000 sampled steps", "learning_starts=1000"),
        "updates": ("16-step fragments, then 16 updates (1 per env step) in one Learner call",
                    "train_freq=16, gradient_steps=16"),
        "update order": ("critic step, then actor step against the updated critic, then tau soft update",
                         "critic step, actor step, polyak_update (policy_delay=1)"),
        "replay sampling": ("uniform with replacement over the filled buffer, per minibatch",
                            "ReplayBuffer.sample: uniform with replacement"),
        "env steps": ("--steps rounded up to whole 1,008-step iterations", "the edgeray run's env steps"),
        "exploration": ("N(0, 0.1) on the [-1, 1] actor output, clipped",
                        "NormalActionNoise(sigma=0.1) in SB3's rescaled [-1, 1] space, clipped; silent in warm-up"),
        "target smoothing": ("none", "target_noise_clip=0 (SB3 DDPG default)"),
        "truncation": ("bootstraps from next obs", "handle_timeout_termination=True (default)"),
        "init": ("PyTorch default Linear init", "PyTorch default Linear init"),
        "grad clip": ("none", "none"),
    },
    "ppo": {
        "networks": ("separate pi / vf MLPs [64, 64] tanh (fcnet_activation default), linear heads",
                     "net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=Tanh"),
        "lr": ("3e-4 (Adam, eps 1e-8)", "learning_rate=3e-4, optimizer_kwargs={'eps': 1e-8} (SB3 default is 1e-5)"),
        "train batch": ("2000 = --ppo-envs vectorised env copies x 2000/copies steps (num_envs_per_env_runner)",
                        "n_envs=--ppo-envs (DummyVecEnv), n_steps=2000/n_envs"),
        "env steps": ("--steps rounded up to whole 2,000-step batches", "the RLlib run's env steps"),
        "minibatch": ("128", "batch_size=128"),
        "epochs": ("10", "n_epochs=10"),
        "gamma": ("0.99", "gamma=0.99"),
        "lambda": ("1.0 (PPOConfig default)", "gae_lambda=1.0"),
        "clip": ("clip_param 0.3", "clip_range=0.3"),
        "vf loss coeff": ("1.0", "vf_coef=1.0"),
        "entropy coeff": ("0.0", "ent_coef=0.0"),
        "grad clip": ("None", "max_grad_norm=inf"),
        "advantages": ("standardised", "normalize_advantage=True"),
        "actions": ("Gaussian in [-1, 1] units, unsquashed to the Box (normalize_actions)",
                    "Gaussian on RescaleAction(env, -1, 1), clipped to [-1, 1]"),
        "init": ("PyTorch default Linear init (no fcnet initializer set)", "ortho_init=False (PyTorch default)"),
        "truncation": ("bootstraps V(s_T) at truncation", "bootstraps V(s_T) on TimeLimit.truncated"),
    },
}

UNMATCHED = [
    "ppo: RLlib adds an adaptive KL penalty (use_kl_loss=True, kl_coeff 0.2 start, kl_target 0.01); SB3 PPO has "
    "none (its target_kl is early stopping, a different mechanism), so SB3 runs without it",
    "ppo: RLlib's policy head outputs a state-dependent log-std (free_log_std=False, clamped to +-20); SB3 learns a "
    "state-independent log-std parameter (log_std_init=0)",
    "ppo: RLlib clamps each squared value error at vf_clip_param=10; SB3's clip_range_vf clips the value change "
    "instead, so it is left off (with returns in units of equity the RLlib clamp does not bind here)",
    "ppo: RLlib standardises advantages once per 2,000-step train batch; SB3 per 128-row minibatch",
    "ppo: RLlib cycles fixed 128-row minibatches through the batch until 10 epochs are covered (about 157 updates); "
    "SB3 takes 15 x 128 + 1 x 80 rows per epoch (160 updates)",
    "ddpg/ppo: different random streams (warm-up actions, noise, minibatch order, weight init) for the same seed",
]

# Task-design ablations (issue 18): env_config overrides, each a single change from the default task.
ABLATIONS = {
    "costs_half": {"cost_scale": 0.5},  # every cost (spread incl. GBP/USD's quoted one, slippage, fee) halved
    "costs_off": {"cost_scale": 0.0},  # frictionless: can a learner find any signal at all in these features?
    "pnl_reward": {"drawdown_weight": 0.0, "variance_weight": 0.0, "hold_decay": 0.0},  # reward = net PnL only
    "window32": {"window": 32},  # 32 bars of features instead of 8 (a longer memory, 4x the inputs)
    "discrete": {"position_step": 1.0},  # target snapped to short / flat / long
}

BASELINES = {
    # Target +1 every step. The entry factor 1 is the aggressive limit one bar-range through the close, so the
    # opening buy fills at the next bar's open like a market order (bars gap more than a range very rarely);
    # afterwards the env re-targets 1x equity each step, so the only trades are tiny rebalances.
    "buy_and_hold": [1.0, 1.0, 0.5],
    "flat": [0.0, 0.5, 0.5],  # target 0: never trades, return 0 by construction (a sanity line)
}


def env_configs(data: str, train_fraction: float) -> dict[str, dict]:
    """{"train": ..., <evaluation set>: ...}: the walk-forward split of one file plus, for BTC, the FX market."""
    if data == "btc":
        base = {"source": "csv", "csv_path": str(BTC), "symbol": "BTCUSDT-PERP"}
        sets = {"train": {**base, "end_fraction": train_fraction}, "btc_later": {**base, "start_fraction": train_fraction}}
        if GBPUSD_BID.exists() and GBPUSD_ASK.exists():
            sets["gbpusd"] = {"source": "bid_ask", "csv_path": str(GBPUSD_BID), "ask_csv_path": str(GBPUSD_ASK),
                              "symbol": "GBPUSD"}
        return sets
    base = {"generator_bars": 3000}  # the seeded generator (TradingEnvConfig defaults)
    return {"train": {**base, "end_fraction": train_fraction}, "generator_later": {**base, "start_fraction": train_fraction}}


def ablation_overrides(names: list[str]) -> dict:
    """The merged env_config overrides of the named ablations (in order); ValueError naming an unknown one."""
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"ablation: unknown {unknown}; known: {sorted(ABLATIONS)}")
    merged: dict = {}
    for name in names:
        merged.update(ABLATIONS[name])
    return merged


def require_sb3() -> str:
    if importlib.util.find_spec("stable_baselines3") is None:
        raise SystemExit('bench/rl.py needs stable-baselines3: pip install -e ".[bench]"')
    import stable_baselines3

    return stable_baselines3.__version__


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # stdout carries only the final JSON document


def score(act, eval_sets: dict[str, dict], episodes: int) -> dict[str, list[float]]:
    return {name: evaluate(act, make_trading_env(cfg), episodes, seed=EVAL_SEED)["returns"]
            for name, cfg in eval_sets.items()}


def parse_seeds_and_learners(parser: argparse.ArgumentParser, seeds_text: str, learners_text: str,
                             known: tuple[str, ...]) -> tuple[list[int], list[str]]:
    """--seeds and --learners of both RL benches; a bad value is parser.error (two lines, exit 2)."""
    try:
        seeds = [int(s) for s in seeds_text.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {seeds_text!r}")
    if not seeds or len(set(seeds)) != len(seeds):
        parser.error("--seeds needs at least one seed, each once")
    learners = [x.strip() for x in learners_text.split(",") if x.strip()]
    if not learners or set(learners) - set(known):
        parser.error(f"--learners must name some of {known}, got {learners_text!r}")
    return seeds, learners


def train_rllib(algo: str, env: str, steps: int, seed: int, env_config: dict, ppo_envs: int, out: Path) -> tuple:
    """(the trained policy, the run's seed / timing / steps / checkpoint) through `tune.rl.train`; both RL benches."""
    from tune.rl import train

    def show(row: dict) -> None:
        log(f"  {algo} seed {seed}: {row['env_steps']} steps, train return {row['episode_return_mean']:.4f}")

    extra = {"num_envs_per_env_runner": ppo_envs} if algo == "ppo" else {}
    # train() also scores 2 in-sample episodes for policy.json and the drift reference; that is not used here.
    summary = train(algo, env, steps, out / f"{algo}-seed{seed}", seed=seed, env_config=env_config,
                    eval_episodes=2, on_progress=show, **extra)
    return RLPolicy.load(summary["checkpoint"]), {
        "seed": seed, "train_wall_s": summary["train_wall_s"], "train_cpu_s": summary["train_cpu_s"],
        "env_steps": summary["env_steps"], "checkpoint": summary["checkpoint"]}


def run_rllib(algo: str, steps: int, seed: int, sets: dict, episodes: int, ppo_envs: int, out: Path) -> dict:
    policy, run = train_rllib(algo, "trading", steps, seed, sets["train"], ppo_envs, out)
    return {**run, "returns": score(policy.act, {k: v for k, v in sets.items() if k != "train"}, episodes)}


def sb3_ddpg(env, seed: int):
    from stable_baselines3 import DDPG
    from stable_baselines3.common.noise import NormalActionNoise

    learning_starts = 1000

    class WarmupQuietNoise(NormalActionNoise):
        """N(0, sigma) in SB3's rescaled [-1, 1] action units, zero during the uniform warm-up (as edgeray's DDPG
        samples plain uniform actions there; SB3 would otherwise add noise to them)."""

        def __init__(self, mean, sigma, quiet: int):
            super().__init__(mean, sigma)
            self.quiet, self.calls = quiet, 0

        def __call__(self) -> np.ndarray:
            self.calls += 1  # SB3 calls it once per env step (one env)
            return super().__call__() if self.calls > self.quiet else np.zeros_like(self._mu)

    dim = env.action_space.shape[0]
    # SB3 adds the noise after rescaling the action to [-1, 1] (OffPolicyAlgorithm._sample_action), i.e. in the
    # same normalised units as edgeray's exploration_noise=0.1; no (high - low) / 2 factor belongs here.
    noise = WarmupQuietNoise(np.zeros(dim), 0.1 * np.ones(dim), quiet=learning_starts)
    return DDPG("MlpPolicy", env, learning_rate=1e-3, buffer_size=100_000, learning_starts=learning_starts,
                batch_size=128, tau=0.005, gamma=0.99, train_freq=(16, "step"), gradient_steps=16,
                action_noise=noise, policy_kwargs={"net_arch": list(HIDDENS)}, seed=seed, device="cpu", verbose=0)


def sb3_ppo(env_config: dict, seed: int, n_envs: int):
    from gymnasium.wrappers import RescaleAction
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from torch import nn

    # RLlib's Gaussian lives in [-1, 1] and is unsquashed to the Box; RescaleAction gives SB3 the same units.
    def make():
        env = make_trading_env(env_config)
        unit = np.ones(env.action_space.shape, dtype=np.float32)
        return RescaleAction(env, -unit, unit)

    return PPO("MlpPolicy", make_vec_env(make, n_envs=n_envs, seed=seed), learning_rate=3e-4, n_steps=2000 // n_envs,
               batch_size=128, n_epochs=10, gamma=0.99, gae_lambda=1.0, clip_range=0.3, clip_range_vf=None,
               normalize_advantage=True, ent_coef=0.0, vf_coef=1.0, max_grad_norm=float("inf"), target_kl=None,
               policy_kwargs={"net_arch": {"pi": list(HIDDENS), "vf": list(HIDDENS)}, "activation_fn": nn.Tanh,
                              "ortho_init": False, "log_std_init": 0.0, "optimizer_kwargs": {"eps": 1e-8}},
               seed=seed, device="cpu", verbose=0)


def run_sb3(algo: str, steps: int, seed: int, sets: dict, episodes: int, ppo_envs: int, out: Path) -> dict:
    model = sb3_ddpg(make_trading_env(sets["train"]), seed) if algo == "ddpg" else sb3_ppo(sets["train"], seed, ppo_envs)
    log(f"  sb3 {algo} seed {seed}: training {steps} steps")
    started, cpu_started = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=steps)
    wall_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    path = out / f"sb3-{algo}-seed{seed}"
    model.save(str(path))
    probe = make_trading_env(sets["train"])
    low, high = probe.action_space.low.astype(np.float64), probe.action_space.high.astype(np.float64)
    if algo == "ddpg":
        def act(obs):  # SB3 DDPG's predict already returns env-scaled actions
            return model.predict(obs, deterministic=True)[0]
    else:
        def act(obs):  # PPO acts in [-1, 1] (RescaleAction): unsquash exactly as RLPolicy does for RLlib PPO
            return unsquash(np.asarray(model.predict(obs, deterministic=True)[0], dtype=np.float64), low, high)
    return {"seed": seed, "train_wall_s": round(wall_s, 2), "train_cpu_s": round(cpu_s, 2),
            "env_steps": int(model.num_timesteps),
            "returns": score(act, {k: v for k, v in sets.items() if k != "train"}, episodes), "model": f"{path}.zip"}


def run_baseline(name: str, sets: dict, episodes: int) -> dict:
    action = np.asarray(BASELINES[name], dtype=np.float64)
    return {"seed": None, "train_wall_s": 0.0, "train_cpu_s": 0.0, "env_steps": 0,
            "returns": score(lambda obs: np.tile(action, (len(obs), 1)),
                             {k: v for k, v in sets.items() if k != "train"}, episodes)}


def bootstrap_weights(n_seeds: int, n_episodes: int, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0):
    """Resampling counts for the two-level bootstrap: (replicates, n_seeds) and (replicates, n_episodes). Drawn
    once per evaluation set and shared by every policy, so each replicate resamples the same episodes for all."""
    rng = np.random.default_rng(seed)
    seeds = np.stack([np.bincount(rng.integers(0, n_seeds, n_seeds), minlength=n_seeds) for _ in range(replicates)])
    eps = np.stack([np.bincount(rng.integers(0, n_episodes, n_episodes), minlength=n_episodes)
                    for _ in range(replicates)])
    return seeds, eps


def mean_ci(returns: np.ndarray, seed_w: np.ndarray, ep_w: np.ndarray) -> tuple[float, list[float]]:
    """Mean of a (training seeds, episodes) return matrix and its 95% two-level percentile bootstrap CI. A matrix
    with one row (a baseline, or a one-seed run) resamples episodes only."""
    n_s, n_e = returns.shape
    w_s = seed_w[:, :n_s] if n_s > 1 else np.ones((len(seed_w), 1))
    if n_s > 1 and seed_w.shape[1] != n_s:
        raise ValueError(f"bootstrap weights are for {seed_w.shape[1]} seeds, returns have {n_s}")
    stats = np.einsum("bs,se,be->b", w_s, returns, ep_w) / (w_s.sum(1) * ep_w.sum(1))
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(returns.mean()), [float(low), float(high)]


def judge(policies: dict[str, dict]) -> dict:
    """Winner only if its CI lies wholly above every other CI; `beats`: CIs wholly below each policy's."""
    for name, p in policies.items():
        p["beats"] = sorted(o for o, q in policies.items() if o != name and q["return_ci"][1] < p["return_ci"][0])
    best = max(policies, key=lambda n: policies[n]["return_mean"])
    separated = len(policies[best]["beats"]) == len(policies) - 1
    return {"winner": best if separated else None, "separated": separated, "best_mean": best}


def summarise(runs: dict[str, list[dict]], eval_names: list[str], episodes: int, n_seeds: int) -> dict:
    out = {"per_policy": {}, "eval_sets": {}}
    for name, rs in runs.items():
        walls, cpus = [r["train_wall_s"] for r in rs], [r["train_cpu_s"] for r in rs]
        out["per_policy"][name] = {"train_wall_s": round(float(np.mean(walls)), 2), "train_wall_s_per_seed": walls,
                                   "train_cpu_s": round(float(np.mean(cpus)), 2),
                                   "env_steps": int(np.mean([r["env_steps"] for r in rs]))}
    for set_name in eval_names:
        seed_w, ep_w = bootstrap_weights(n_seeds, episodes)
        policies = {}
        for name, rs in runs.items():
            matrix = np.asarray([r["returns"][set_name] for r in rs], dtype=np.float64)  # (seeds, episodes)
            mean, ci = mean_ci(matrix, seed_w, ep_w)
            policies[name] = {"return_mean": mean, "return_ci": ci, "return_sd_episodes": float(matrix.std()),
                              "seed_means": [float(m) for m in matrix.mean(axis=1)]}
        out["eval_sets"][set_name] = {"policies": policies, **judge(policies)}
    return out


RETURN_LABEL = "mean evaluation return per episode\n(units of initial equity; bars = 95% bootstrap CI)"


def plot(eval_sets: dict, path: Path, title: str, ylabel: str = RETURN_LABEL) -> None:
    """One panel per evaluation set, each on its own scale (sets differ by 10x and more, e.g. net PnL against a
    penalised reward), one bar per policy with its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(eval_sets)
    names = list(eval_sets[sets[0]]["policies"])
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(names))]
    fig, axes = plt.subplots(1, len(sets), figsize=(max(6.0, 3.2 * len(sets)), 4.8), squeeze=False)
    x = np.arange(len(names))
    for ax, s in zip(axes[0], sets):
        means = np.array([eval_sets[s]["policies"][name]["return_mean"] for name in names])
        cis = np.array([eval_sets[s]["policies"][name]["return_ci"] for name in names])
        ax.bar(x, means, 0.8, yerr=[means - cis[:, 0], cis[:, 1] - means], capsize=3, color=colors)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{s}\nwinner: {eval_sets[s]['winner'] or 'none (CIs overlap)'}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("generator", "btc"), default="btc" if BTC.exists() else "generator",
                        help="real BTC 1-minute file (default when present) or the seeded generator")
    parser.add_argument("--steps", type=int, default=20_000,
                        help="env steps to train for, per seed (RLlib rounds up to whole iterations; SB3 matches it)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated training seeds")
    parser.add_argument("--eval-episodes", type=int, default=20, help="episodes per evaluation set")
    parser.add_argument("--train-fraction", type=float, default=0.7, help="walk-forward split of the training file")
    parser.add_argument("--learners", default=",".join(LEARNERS), help=f"comma-separated subset of {LEARNERS}")
    parser.add_argument("--ppo-envs", type=int, default=8,
                        help="vectorised env copies for both PPOs (RLlib num_envs_per_env_runner, SB3 n_envs)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for every learner (same process)")
    parser.add_argument("--ablation", default="",
                        help=f"comma-separated task ablations applied to training and evaluation: {sorted(ABLATIONS)}")
    parser.add_argument("--net-pnl", action="store_true",
                        help="also score each evaluation set as net PnL ('<set>_net_pnl': the same set with the "
                             "drawdown, variance and holding penalties at 0), a metric shared by every ablation")
    parser.add_argument("--out", default="runs/bench/rl", help="dir for rl.json, rl_returns.png and the models")
    args = parser.parse_args(argv)
    ablations = [a.strip() for a in args.ablation.split(",") if a.strip()]
    try:
        overrides = ablation_overrides(ablations)
    except ValueError as exc:
        parser.error(str(exc))
    if args.data == "btc" and not BTC.exists():
        parser.error(f"--data btc needs {BTC}, which is absent; use --data generator")
    if args.steps < 1 or args.eval_episodes < 1 or args.torch_threads < 1:
        parser.error("--steps, --eval-episodes and --torch-threads must be >= 1")
    if not (0 < args.train_fraction < 1):
        parser.error("--train-fraction must lie in (0, 1)")
    if args.ppo_envs < 1 or 2000 % args.ppo_envs:
        parser.error("--ppo-envs must divide the 2,000-step PPO batch")
    seeds, learners = parse_seeds_and_learners(parser, args.seeds, args.learners, LEARNERS)
    needs_sb3 = any(name.startswith("sb3") for name in learners)
    sb3_version = require_sb3() if needs_sb3 else None  # fail before any training, not after the RLlib runs

    import gymnasium
    import ray
    import torch

    torch.set_num_threads(args.torch_threads)  # RLlib's Learner and EnvRunner live in this process, as SB3 does
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = {name: {**cfg, **overrides} for name, cfg in env_configs(args.data, args.train_fraction).items()}
    if args.net_pnl:
        # Observations (features, position, cash, unrealised PnL, regime) and episode ends do not depend on the reward
        # weights, so a policy makes the same trades here: the return is those trades' equity change net of costs.
        sets.update({f"{name}_net_pnl": {**cfg, **ABLATIONS["pnl_reward"]} for name, cfg in list(sets.items())
                     if name != "train"})
    eval_names = [k for k in sets if k != "train"]
    runs: dict[str, list[dict]] = {name: [] for name in learners}
    load_before = os.getloadavg()
    # address="local": a private Ray instance, never a cluster someone else started on this machine (plain
    # ray.init() joins one it finds, and then refuses num_cpus).
    ray.init(address="local", num_cpus=2, object_store_memory=256 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    try:
        for seed in seeds:
            log(f"seed {seed}")
            for algo, mine, theirs in (("ddpg", "edgeray_ddpg", "sb3_ddpg"), ("ppo", "rllib_ppo", "sb3_ppo")):
                steps = args.steps
                if mine in runs:
                    runs[mine].append(run_rllib(algo, args.steps, seed, sets, args.eval_episodes, args.ppo_envs, out))
                    steps = runs[mine][-1]["env_steps"]  # SB3 gets the env steps its RLlib twin actually sampled
                if theirs in runs:
                    runs[theirs].append(run_sb3(algo, steps, seed, sets, args.eval_episodes, args.ppo_envs, out))
            # Seeds done so far, in case a long run is cut short (same summary as the final document).
            done = dict(runs, **{name: [run_baseline(name, sets, args.eval_episodes)] for name in BASELINES})
            (out / "rl.partial.json").write_text(json.dumps(
                {"seeds_done": seeds[: seeds.index(seed) + 1], "load_average_1_5_15": os.getloadavg(),
                 **summarise(done, eval_names, args.eval_episodes, seeds.index(seed) + 1)}, indent=2, default=str))
    finally:
        ray.shutdown()
    for name in BASELINES:  # deterministic and untrained: one run, scored on the same episodes
        runs[name] = [run_baseline(name, sets, args.eval_episodes)]
    load_after = os.getloadavg()
    summary = summarise(runs, eval_names, args.eval_episodes, len(seeds))
    libraries = {"edgeray_ddpg": f"edgeray DDPG on ray[rllib]=={ray.__version__}",
                 "rllib_ppo": f"ray[rllib]=={ray.__version__} PPO", "sb3_ddpg": f"stable-baselines3=={sb3_version} DDPG",
                 "sb3_ppo": f"stable-baselines3=={sb3_version} PPO"}
    results = {name: {"library": libraries.get(name, "baseline"), **summary["per_policy"][name],
                      **({"action": BASELINES[name]} if name in BASELINES else {}),
                      **{s: summary["eval_sets"][s]["policies"][name] for s in eval_names}}
               for name in runs}
    walls = summary["per_policy"]
    ratios = {f"{mine}_vs_sb3_{kind}": round(walls[mine][f"train_{kind}_s"] / walls[theirs][f"train_{kind}_s"], 3)
              for mine, theirs in (("edgeray_ddpg", "sb3_ddpg"), ("rllib_ppo", "sb3_ppo")) for kind in ("wall", "cpu")
              if mine in walls and theirs in walls and walls[theirs][f"train_{kind}_s"] > 0}
    data = BTC.name if args.data == "btc" else "generator (TradingEnvConfig defaults)"
    doc = {"bench": "rl", "command": "python bench/rl.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": f"{platform.machine()} {os.cpu_count()} cpus",
           "load_average_1_5_15": {"before": [round(x, 2) for x in load_before],
                                   "after": [round(x, 2) for x in load_after]},
           "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
           "versions": {"torch": torch.__version__, "ray": ray.__version__, "stable_baselines3": sb3_version,
                        "gymnasium": gymnasium.__version__},
           "steps": args.steps, "seeds": seeds, "eval_episodes": args.eval_episodes, "ppo_envs": args.ppo_envs,
           "eval_episode_seeds": f"{EVAL_SEED} .. {EVAL_SEED + args.eval_episodes - 1} in every set",
           "data": data, "train_fraction": args.train_fraction, "ablation": ablations, "ablation_overrides": overrides,
           "env_configs": sets,
           "ci": "95% percentile bootstrap, two levels (training seeds, then evaluation episodes), "
                 f"{BOOTSTRAP_REPLICATES} replicates, numpy default_rng(0)",
           "ratios": ratios, "results": results,
           "eval_sets": {s: {k: v for k, v in summary["eval_sets"][s].items() if k != "policies"} for s in eval_names},
           "hyperparameters": {algo: {k: {"rllib": a, "sb3": b} for k, (a, b) in table.items()}
                               for algo, table in HYPERPARAMETERS.items()},
           "unmatched": UNMATCHED}
    (out / "rl.json").write_text(json.dumps(doc, indent=2, default=str))
    plot(summary["eval_sets"], out / "rl_returns.png",
         f"Trained on the first {args.train_fraction:.0%} of {data}; {args.steps} steps; seeds {args.seeds}"
         + (f"; ablation {','.join(ablations)}" if ablations else ""))
    print(json.dumps(doc, indent=2, default=str))
    return doc


if __name__ == "__main__":
    main()
