"""RL bet sizing on real sports seasons, walk-forward, against fractional Kelly, printed as JSON.

    python bench/rl_betting.py                                  # MLB 2010-2012 -> 2013, opening-line model, 5 seeds x 20,000 steps
    python bench/rl_betting.py --model close_noise              # the env's uninformed stand-in model instead
    python bench/rl_betting.py --steps 2000 --seeds 0 --eval-episodes 5   # smoke run, a minute or two

The task is `envs/betting.py` with source="sport": one game per step, the action is the fraction of the bankroll
staked on the home side at its real closing moneyline, the reward log(bankroll after / before), so an episode's
return is log(final / initial bankroll). Walk-forward: edgeray DDPG and RLlib PPO (both through `tune.rl.train`)
train on the `--train-seasons` games and every policy is scored on the same `--eval-episodes` episodes of
`--episode-len` consecutive games drawn from the later `--eval-seasons` (episode seeds 10,000 .. 10,000 + n - 1,
deterministic actions, `policies.rl_policy.evaluate`). Every evaluation season must be later than every training
season.

The model probability a step sees is point-in-time, known before the bet is placed at the close:
- `--model open` (default): the margin-free *opening* moneyline probability, a real forecast posted before the
  closing price (MLB is the only archive here with opening moneylines). Its edge over the closing price is the
  line's move, which the close has already priced: no edge is expected, only measured.
- `--model close_noise`: the margin-free closing probability plus N(0, 0.03) noise, seeded (train seed 0,
  evaluation seed 1, so the two sets draw different noise). An uninformed model: the best stake is none.
The learners see the env's 7 observations (model_prob, implied_prob, log_odds, edge, kelly_fraction,
log_bankroll_ratio, remaining) and nothing of the game's result.

Baselines, on the same episodes: `flat` (never bets: return 0 by construction), `fixed_1pct` (1% of the bankroll on
every game), and `quarter_kelly` / `half_kelly` / `full_kelly`: that multiple of the Kelly fraction
max((p * d - 1) / (d - 1), 0) for the model probability p and decimal odds d, capped at the env's max_fraction
(0.25); read from the observation's kelly_fraction, which the env computes from exactly p and d.

Confidence intervals and the verdict reuse bench/rl.py's functions (two-level percentile bootstrap over training
seeds then evaluation episodes, 10,000 replicates, the same episode draw for every policy in a replicate; a
`winner` only when its CI lies wholly above every other policy's). `train_wall_s` is the training loop alone, mean
over seeds. Writes rl_betting.json and rl_betting_returns.png (mean return, error bars = 95% CI) to `--out`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rl import (  # noqa: E402
    BOOTSTRAP_REPLICATES, bootstrap_weights, judge, log, mean_ci, parse_seeds_and_learners, plot, train_rllib)
from envs import make_betting_env  # noqa: E402
from envs.betting import OBS_NAMES, SPORT_MODELS  # noqa: E402
from policies.rl_policy import evaluate  # noqa: E402

SPORTS_DIR = ROOT.parent / "shared" / "data" / "sports"
EVAL_SEED = 10_000  # episode seeds of the evaluation set: 10_000, 10_001, ... (the same for every policy)
LEARNERS = ("edgeray_ddpg", "rllib_ppo")
KELLY = OBS_NAMES.index("kelly_fraction")
MAX_FRACTION = 0.25  # BettingEnvConfig's default cap, kept so the baselines and learners share one action space
STAKE_EPS = 1e-4  # a fraction below this counts as no bet in `bet_rate` (a tanh-squashed actor rarely hits 0 exactly)


def kelly_policy(multiplier: float, max_fraction: float = MAX_FRACTION):
    """Stake multiplier x the Kelly fraction of the observed model probability and odds, capped at max_fraction."""
    def act(obs: np.ndarray) -> np.ndarray:
        kelly = np.asarray(obs, dtype=np.float64)[:, KELLY]
        return np.minimum(multiplier * np.maximum(kelly, 0.0), max_fraction)[:, None]
    return act


def fixed_policy(fraction: float):
    def act(obs: np.ndarray) -> np.ndarray:
        return np.full((len(obs), 1), fraction, dtype=np.float64)
    return act


BASELINES = {"flat": fixed_policy(0.0), "fixed_1pct": fixed_policy(0.01), "quarter_kelly": kelly_policy(0.25),
             "half_kelly": kelly_policy(0.5), "full_kelly": kelly_policy(1.0)}


def env_configs(sport: str, model: str, train_seasons: list[int], eval_seasons: list[int], episode_len: int,
                data_dir: Path) -> dict[str, dict]:
    base = {"source": "sport", "sport": sport, "data_dir": str(data_dir), "sport_model": model,
            "episode_len": episode_len, "max_fraction": MAX_FRACTION}
    # Different noise seeds for the two sets (used by close_noise only): game i of each would otherwise share a draw.
    return {"train": {**base, "seasons": train_seasons, "seed": 0},
            "eval": {**base, "seasons": eval_seasons, "seed": 1}}


def score(act, env_config: dict, episodes: int) -> dict:
    """Returns per episode plus how the policy staked (mean fraction, share of games bet) on the evaluation set."""
    fractions: list[np.ndarray] = []

    def recording(obs):
        action = np.asarray(act(obs), dtype=np.float64)
        fractions.append(np.clip(action[:, 0], 0.0, MAX_FRACTION))
        return action

    returns = evaluate(recording, make_betting_env(env_config), episodes, seed=EVAL_SEED)["returns"]
    staked = np.concatenate(fractions)
    return {"returns": returns, "mean_fraction": float(staked.mean()), "bet_rate": float((staked > STAKE_EPS).mean())}


def run_rllib(algo: str, steps: int, seed: int, sets: dict, episodes: int, ppo_envs: int, out: Path) -> dict:
    policy, run = train_rllib(algo, "betting", steps, seed, sets["train"], ppo_envs, out)
    return {**run, **score(policy.act, sets["eval"], episodes)}


def run_baseline(name: str, sets: dict, episodes: int) -> dict:
    return {"seed": None, "train_wall_s": 0.0, "train_cpu_s": 0.0, "env_steps": 0,
            **score(BASELINES[name], sets["eval"], episodes)}


def summarise(runs: dict[str, list[dict]], episodes: int, n_seeds: int) -> dict:
    seed_w, ep_w = bootstrap_weights(n_seeds, episodes)  # one draw shared by every policy
    policies = {}
    for name, rs in runs.items():
        matrix = np.asarray([r["returns"] for r in rs], dtype=np.float64)  # (seeds, episodes)
        mean, ci = mean_ci(matrix, seed_w, ep_w)
        policies[name] = {"return_mean": mean, "return_ci": ci, "return_sd_episodes": float(matrix.std()),
                          "seed_means": [float(m) for m in matrix.mean(axis=1)],
                          "final_bankroll_geomean": float(np.exp(mean)),
                          "mean_fraction": float(np.mean([r["mean_fraction"] for r in rs])),
                          "bet_rate": float(np.mean([r["bet_rate"] for r in rs])),
                          "train_wall_s": round(float(np.mean([r["train_wall_s"] for r in rs])), 2),
                          "train_wall_s_per_seed": [r["train_wall_s"] for r in rs],
                          "train_cpu_s": round(float(np.mean([r["train_cpu_s"] for r in rs])), 2),
                          "env_steps": int(np.mean([r["env_steps"] for r in rs]))}
    return {"policies": policies, **judge(policies)}


def split_facts(sets: dict) -> dict:
    """Games and date span of each set, read from the envs themselves: the walk-forward split, checkable."""
    facts = {}
    for name in ("train", "eval"):
        env = make_betting_env(sets[name])
        dates = env.game_dates
        facts[name] = {"games": len(env.table), "first_date": str(dates.min())[:10], "last_date": str(dates.max())[:10]}
    facts["eval_after_train"] = facts["eval"]["first_date"] > facts["train"]["last_date"]
    return facts


def parse_seasons(parser, text: str, flag: str) -> list[int]:
    try:
        seasons = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        parser.error(f"{flag} must be comma-separated integer seasons, got {text!r}")
    if not seasons or len(set(seasons)) != len(seasons):
        parser.error(f"{flag} needs at least one season, each once")
    return seasons


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sport", default="mlb", help="a sport of edgeray.sports (mlb has opening moneylines)")
    parser.add_argument("--train-seasons", default="2010,2011,2012", help="comma-separated seasons to train on")
    parser.add_argument("--eval-seasons", default="2013", help="comma-separated later seasons to evaluate on")
    parser.add_argument("--model", choices=SPORT_MODELS, default="open", help="the point-in-time model probability")
    parser.add_argument("--steps", type=int, default=20_000, help="env steps to train for, per seed and learner")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated training seeds")
    parser.add_argument("--eval-episodes", type=int, default=40, help="evaluation episodes")
    parser.add_argument("--episode-len", type=int, default=100, help="games per episode")
    parser.add_argument("--learners", default=",".join(LEARNERS), help=f"comma-separated subset of {LEARNERS}")
    parser.add_argument("--ppo-envs", type=int, default=8, help="vectorised env copies for RLlib PPO")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads (learners run in this process)")
    parser.add_argument("--data-dir", default=str(SPORTS_DIR), help="folder with the sports archives")
    parser.add_argument("--out", default="runs/bench/rl_betting", help="dir for rl_betting.json, the png and models")
    args = parser.parse_args(argv)
    if not Path(args.data_dir).is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder (the real sports archives are needed)")
    if args.steps < 1 or args.eval_episodes < 1 or args.episode_len < 1 or args.torch_threads < 1:
        parser.error("--steps, --eval-episodes, --episode-len and --torch-threads must be >= 1")
    if args.ppo_envs < 1 or 2000 % args.ppo_envs:
        parser.error("--ppo-envs must divide the 2,000-step PPO batch")
    train_seasons = parse_seasons(parser, args.train_seasons, "--train-seasons")
    eval_seasons = parse_seasons(parser, args.eval_seasons, "--eval-seasons")
    if min(eval_seasons) <= max(train_seasons):
        parser.error(f"--eval-seasons must all be later than every --train-seasons (walk-forward), got "
                     f"{eval_seasons} after {train_seasons}")
    seeds, learners = parse_seeds_and_learners(parser, args.seeds, args.learners, LEARNERS)
    sets = env_configs(args.sport, args.model, train_seasons, eval_seasons, args.episode_len, Path(args.data_dir))
    try:
        split = split_facts(sets)  # also fails fast, before training, on an unknown sport or absent season
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))

    import ray
    import torch

    torch.set_num_threads(args.torch_threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {name: [] for name in learners}
    load_before = os.getloadavg()
    started = time.perf_counter()
    if learners:
        # address="local": a private Ray instance, never a cluster someone else started on this machine.
        ray.init(address="local", num_cpus=2, object_store_memory=256 * 1024**2, include_dashboard=False,
                 log_to_driver=False)
    try:
        for i, seed in enumerate(seeds if learners else []):
            log(f"seed {seed}")
            for algo, name in (("ddpg", "edgeray_ddpg"), ("ppo", "rllib_ppo")):
                if name in runs:
                    runs[name].append(run_rllib(algo, args.steps, seed, sets, args.eval_episodes, args.ppo_envs, out))
            done = {k: v for k, v in runs.items()}
            (out / "rl_betting.partial.json").write_text(json.dumps(
                {"seeds_done": seeds[: i + 1], **summarise(done, args.eval_episodes, i + 1)}, indent=2, default=str))
    finally:
        if learners:
            ray.shutdown()
    for name in BASELINES:  # deterministic and untrained: one run, scored on the same episodes
        runs[name] = [run_baseline(name, sets, args.eval_episodes)]
    verdict = summarise(runs, args.eval_episodes, len(seeds) if learners else 1)
    doc = {"bench": "rl_betting",
           "command": "python bench/rl_betting.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": f"{platform.machine()} {os.cpu_count()} cpus",
           "load_average_1_5_15": {"before": [round(x, 2) for x in load_before],
                                   "after": [round(x, 2) for x in os.getloadavg()]},
           "wall_s": round(time.perf_counter() - started, 1), "torch_threads": torch.get_num_threads(),
           "versions": {"torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version()},
           "sport": args.sport, "model": args.model, "train_seasons": train_seasons, "eval_seasons": eval_seasons,
           "split": split, "steps": args.steps, "seeds": seeds, "eval_episodes": args.eval_episodes,
           "episode_len": args.episode_len,
           "eval_episode_seeds": f"{EVAL_SEED} .. {EVAL_SEED + args.eval_episodes - 1}",
           "return": "sum of log(bankroll after / before) per episode = log(final / initial bankroll)",
           "ci": "95% percentile bootstrap, two levels (training seeds, then evaluation episodes), "
                 f"{BOOTSTRAP_REPLICATES} replicates, numpy default_rng(0) (bench/rl.py's functions)",
           "env_configs": sets, "results": verdict["policies"],
           **{k: v for k, v in verdict.items() if k != "policies"}}
    (out / "rl_betting.json").write_text(json.dumps(doc, indent=2, default=str))
    set_name = f"{args.sport} {','.join(map(str, eval_seasons))}"
    plot({set_name: verdict}, out / "rl_betting_returns.png",
         f"{args.sport} trained on {','.join(map(str, train_seasons))}, model '{args.model}'; {args.steps} steps; "
         f"seeds {args.seeds}",
         ylabel="mean evaluation return per episode\n(log final / initial bankroll; bars = 95% bootstrap CI)")
    print(json.dumps(doc, indent=2, default=str))
    return doc


if __name__ == "__main__":
    main()
