"""RL sizing benchmark on the trading env, printed as JSON: edgeray DDPG and RLlib PPO (both through
`tune.rl.train`) against stable-baselines3 DDPG and PPO with matched hyper-parameters, plus buy-and-hold and
flat baselines, all scored by the same `policies.rl_policy.evaluate` on the same unseen episode seeds.

    python bench/rl.py                                    # real BTC 1-minute file, 20,000 env steps, seed 0
    python bench/rl.py --data btc --steps 20000 --seeds 0 --eval-episodes 20 --out runs/bench/rl
    python bench/rl.py --data generator --steps 1500 --eval-episodes 2   # smoke run, a couple of minutes

Needs stable-baselines3 (`pip install -e ".[bench]"`). The RLlib learners train until `--steps` env steps are
sampled, rounded up to whole training iterations (RLlib PPO: 2,000-step batches; edgeray DDPG: iterations of 1,008
steps, so 20,000 becomes 20,160); each SB3 learner then trains for exactly the env steps its RLlib counterpart took
on the same seed. Every policy is evaluated deterministically on `--eval-episodes` episodes with seeds
seed+10_000, seed+10_001, ... (as `tune.rl.train` does). `train_wall_s` is the training loop
only (no algorithm build, no evaluation). Writes `rl.json` and `rl_returns.png` (mean evaluation return, error
bars = std over evaluation episodes pooled over seeds) to `--out`, with the RLlib checkpoints and SB3 models.

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
from policies.rl_policy import evaluate, unsquash  # noqa: E402

BTC = ROOT.parent / "shared" / "data" / "markets" / "btc_perp_1m_2022-01.csv"
EVAL_SEED_OFFSET = 10_000  # as tune.rl.train: evaluation episodes never reuse the training seed's episode seeds
HIDDENS = [64, 64]

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
        "updates": ("16-step fragments, then 16 updates (1 per env step)", "train_freq=16, gradient_steps=16"),
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
        "train batch": ("2000", "n_steps=2000 (1 env)"),
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
    "ddpg: edgeray computes the actor loss on the critic before that step's critic update (one forward pass, two "
    "optimizers); SB3 steps the critic first and the actor against the updated critic",
    "ddpg/ppo: different random streams (warm-up actions, noise, minibatch order, weight init) for the same seed",
]

BASELINES = {
    # Target +1 every step. The entry factor 1 is the aggressive limit one bar-range through the close, so the
    # opening buy fills at the next bar's open like a market order (bars gap more than a range very rarely);
    # afterwards the env re-targets 1x equity each step, so the only trades are tiny rebalances.
    "buy_and_hold": [1.0, 1.0, 0.5],
    "flat": [0.0, 0.5, 0.5],  # target 0: never trades, return 0 by construction (a sanity line)
}


def env_config_for(data: str) -> dict:
    if data == "btc":
        return {"source": "csv", "csv_path": str(BTC), "symbol": "BTCUSDT-PERP"}
    return {}  # the seeded generator (TradingEnvConfig defaults)


def require_sb3() -> str:
    if importlib.util.find_spec("stable_baselines3") is None:
        raise SystemExit('bench/rl.py needs stable-baselines3: pip install -e ".[bench]"')
    import stable_baselines3

    return stable_baselines3.__version__


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # stdout carries only the final JSON document


def run_rllib(algo: str, steps: int, seed: int, env_config: dict, eval_episodes: int, out: Path) -> dict:
    from tune.rl import train

    def show(row: dict) -> None:
        log(f"  {algo} seed {seed}: {row['env_steps']} steps, train return {row['episode_return_mean']:.4f}")

    summary = train(algo, "trading", steps, out / f"{algo}-seed{seed}", seed=seed, env_config=env_config,
                    eval_episodes=eval_episodes, on_progress=show)
    # tune.rl.train already scores with evaluate(policy.act, env, eval_episodes, seed + 10_000): the same call below.
    return {"seed": seed, "train_wall_s": summary["train_wall_s"], "env_steps": summary["env_steps"],
            "eval": summary["eval"], "checkpoint": summary["checkpoint"]}


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


def sb3_ppo(env, seed: int):
    from gymnasium.wrappers import RescaleAction
    from stable_baselines3 import PPO
    from torch import nn

    # RLlib's Gaussian lives in [-1, 1] and is unsquashed to the Box; RescaleAction gives SB3 the same units.
    unit = np.ones(env.action_space.shape, dtype=np.float32)
    return PPO("MlpPolicy", RescaleAction(env, -unit, unit), learning_rate=3e-4, n_steps=2000, batch_size=128,
               n_epochs=10, gamma=0.99, gae_lambda=1.0, clip_range=0.3, clip_range_vf=None, normalize_advantage=True,
               ent_coef=0.0, vf_coef=1.0, max_grad_norm=float("inf"), target_kl=None,
               policy_kwargs={"net_arch": {"pi": list(HIDDENS), "vf": list(HIDDENS)}, "activation_fn": nn.Tanh,
                              "ortho_init": False, "log_std_init": 0.0, "optimizer_kwargs": {"eps": 1e-8}},
               seed=seed, device="cpu", verbose=0)


def run_sb3(algo: str, steps: int, seed: int, env_config: dict, eval_episodes: int, out: Path) -> dict:
    env = make_trading_env(env_config)
    model = (sb3_ddpg if algo == "ddpg" else sb3_ppo)(env, seed)
    log(f"  sb3 {algo} seed {seed}: training {steps} steps")
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall_s = time.perf_counter() - started
    path = out / f"sb3-{algo}-seed{seed}"
    model.save(str(path))
    eval_env = make_trading_env(env_config)
    low, high = eval_env.action_space.low.astype(np.float64), eval_env.action_space.high.astype(np.float64)
    if algo == "ddpg":
        def act(obs):  # SB3 DDPG's predict already returns env-scaled actions
            return model.predict(obs, deterministic=True)[0]
    else:
        def act(obs):  # PPO acts in [-1, 1] (RescaleAction): unsquash exactly as RLPolicy does for RLlib PPO
            return unsquash(np.asarray(model.predict(obs, deterministic=True)[0], dtype=np.float64), low, high)
    scores = evaluate(act, eval_env, eval_episodes, seed=seed + EVAL_SEED_OFFSET)
    return {"seed": seed, "train_wall_s": round(wall_s, 2), "env_steps": int(model.num_timesteps), "eval": scores,
            "model": f"{path}.zip"}


def run_baseline(name: str, seed: int, env_config: dict, eval_episodes: int) -> dict:
    action = np.asarray(BASELINES[name], dtype=np.float64)
    scores = evaluate(lambda obs: np.tile(action, (len(obs), 1)), make_trading_env(env_config), eval_episodes,
                      seed=seed + EVAL_SEED_OFFSET)
    return {"seed": seed, "train_wall_s": 0.0, "env_steps": 0, "eval": scores}


def aggregate(runs: list[dict], **extra) -> dict:
    returns = np.concatenate([r["eval"]["returns"] for r in runs])
    return {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "train_wall_s": round(float(np.mean([r["train_wall_s"] for r in runs])), 2),
            "env_steps": int(np.mean([r["env_steps"] for r in runs])), **extra,
            "per_seed": [{"seed": r["seed"], "return_mean": r["eval"]["return_mean"],
                          "return_std": r["eval"]["return_std"], "train_wall_s": r["train_wall_s"],
                          "env_steps": r["env_steps"], "returns": r["eval"]["returns"]} for r in runs]}


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    colors = {"edgeray": "tab:blue", "rllib": "tab:orange", "sb3": "tab:green"}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.bar(names, [results[n]["return_mean"] for n in names], yerr=[results[n]["return_std"] for n in names],
           capsize=4, color=[colors.get(n.split("_")[0], "tab:gray") for n in names])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set(ylabel="evaluation return per episode (units of initial equity)", title=title)
    ax.tick_params(axis="x", labelrotation=20)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("generator", "btc"), default="btc" if BTC.exists() else "generator",
                        help="real BTC 1-minute file (default when present) or the seeded generator")
    parser.add_argument("--steps", type=int, default=20_000,
                        help="env steps to train for, per seed (RLlib rounds up to whole iterations; SB3 matches it)")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds, e.g. 0,1,2")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--out", default="runs/bench/rl", help="dir for rl.json, rl_returns.png and the models")
    args = parser.parse_args(argv)
    if args.data == "btc" and not BTC.exists():
        parser.error(f"--data btc needs {BTC}, which is absent; use --data generator")
    if args.steps < 1 or args.eval_episodes < 1:
        parser.error("--steps and --eval-episodes must be >= 1")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not seeds:
        parser.error("--seeds needs at least one seed")
    sb3_version = require_sb3()  # fail before any training, not after the RLlib runs

    import gymnasium
    import ray
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env_config = env_config_for(args.data)
    runs: dict[str, list[dict]] = {name: [] for name in ("edgeray_ddpg", "rllib_ppo", "sb3_ddpg", "sb3_ppo", *BASELINES)}
    ray.init(num_cpus=2, object_store_memory=256 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        for seed in seeds:
            log(f"seed {seed}")
            runs["edgeray_ddpg"].append(run_rllib("ddpg", args.steps, seed, env_config, args.eval_episodes, out))
            runs["rllib_ppo"].append(run_rllib("ppo", args.steps, seed, env_config, args.eval_episodes, out))
            # Same env steps as the RLlib counterpart actually sampled on this seed.
            for algo, twin in (("ddpg", "edgeray_ddpg"), ("ppo", "rllib_ppo")):
                runs[f"sb3_{algo}"].append(run_sb3(algo, runs[twin][-1]["env_steps"], seed, env_config,
                                                   args.eval_episodes, out))
            for name in BASELINES:
                runs[name].append(run_baseline(name, seed, env_config, args.eval_episodes))
    finally:
        ray.shutdown()
    libraries = {"edgeray_ddpg": f"edgeray DDPG on ray[rllib]=={ray.__version__}",
                 "rllib_ppo": f"ray[rllib]=={ray.__version__} PPO", "sb3_ddpg": f"stable-baselines3=={sb3_version} DDPG",
                 "sb3_ppo": f"stable-baselines3=={sb3_version} PPO"}
    results = {name: aggregate(r, library=libraries.get(name, "baseline"),
                               **({"action": BASELINES[name]} if name in BASELINES else {}))
               for name, r in runs.items()}
    data = BTC.name if args.data == "btc" else "generator (TradingEnvConfig defaults)"
    doc = {"bench": "rl", "machine": f"{platform.machine()} {os.cpu_count()} cpus",
           "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
           "versions": {"torch": torch.__version__, "ray": ray.__version__, "stable_baselines3": sb3_version,
                        "gymnasium": gymnasium.__version__},
           "steps": args.steps, "seeds": seeds, "eval_episodes": args.eval_episodes,
           "eval_seeds": f"seed + {EVAL_SEED_OFFSET} .. seed + {EVAL_SEED_OFFSET + args.eval_episodes - 1}",
           "data": data, "env_config": env_config,
           "results": results, "winner_by_return": max(results, key=lambda n: results[n]["return_mean"]),
           "hyperparameters": {algo: {k: {"rllib": a, "sb3": b} for k, (a, b) in table.items()}
                               for algo, table in HYPERPARAMETERS.items()},
           "unmatched": UNMATCHED}
    (out / "rl.json").write_text(json.dumps(doc, indent=2, default=str))
    plot(results, out / "rl_returns.png", f"Trading env ({data}), {args.steps} steps, seeds {args.seeds}")
    print(json.dumps(doc, indent=2, default=str))
    return doc


if __name__ == "__main__":
    main()
