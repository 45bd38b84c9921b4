"""Latency of one micro-batch through a static chain of 4 stage actors: in-process vs plain actor
calls vs a Ray Compiled Graph (`ray.dag` + `experimental_compile`).

The decision loop pushes each micro-batch through executor.step -> risk.check -> veto.review ->
audit.append, one blocking actor round trip each. This bench isolates that shape: 4 stage actors,
each doing the same small fixed amount of numpy work (~0.2 ms, calibrated at start-up) on its input
and returning an array of the same shape, for payloads of 1, 10 and 100 rows x 25 float64 columns:

  in_process                the 4 stage functions as plain calls in the driver (the floor)
  actor_calls_blocking      ray.get after every stage call (what the loop does today)
  actor_calls_chained_refs  d.f.remote(c.f.remote(b.f.remote(a.f.remote(x)))), one ray.get
  compiled_graph            the same chain bound under an InputNode, experimental_compile(),
                            ray.get(cdag.execute(x)) per batch, cdag.teardown() at the end

Each mode runs --iterations batches (after a warm-up) or until its time budget runs out
(--mode-budget-s quiet, --busy-mode-budget-s busy), whichever comes first; p50/p99/mean/min/max in
ms and batches/s are reported. "quiet" runs on an otherwise idle Ray; "busy" repeats everything
while 2 CPU-burning subprocesses keep both cores busy. The 4 actors are created once, before any
load, and pre-warmed: a compiled graph's worker loop probes `import torch` on each actor the first
time it runs (torch is installed in this venv; 1 s+ per cold process, ~40-60 s for 4 actors
against 2 burners, which is past Ray's 10 s default get timeout); --no-prewarm leaves that in the
first execute(). The first execute() is timed apart from the measured ones. While the compiled
graph is live the bench also sends plain method calls (`ping`) to one of its actors, to show
whether a compiled actor can still serve a kill switch / veto approval call, and it measures the
CPU the 4 actors use while idle, plain vs with the compiled graph live (its loops keep polling).

Prints ONE JSON object on stdout (progress goes to stderr); failures and timeouts, e.g. the compiled
graph under load on a 2-core box, land in "errors" and the run carries on.
Usage: python bench/stage_chain.py [--iterations N] [--warmup N] [--mode-budget-s S]
           [--busy-mode-budget-s S] [--call-timeout-s S] [--first-execute-timeout-s S]
           [--no-prewarm] [--burners N] [--quiet-only | --busy-only | --busy]
  (--busy is the same as --busy-only; the default run does quiet then busy, ~4 min on 2 cores)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
import traceback

import numpy as np
import ray

COLS = 25
ROWS = (1, 10, 100)
STAGES = ("executor", "risk", "veto", "audit")
TARGET_STAGE_MS = 0.2
MODES = ("in_process", "actor_calls_blocking", "actor_calls_chained_refs", "compiled_graph")


# --------------------------------------------------------------------------- the stage work
def stage_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((COLS, COLS)) / COLS, rng.standard_normal(512)


def stage_fn(x: np.ndarray, w: np.ndarray, scratch: np.ndarray, reps: int) -> np.ndarray:
    """A fixed amount of numpy work (independent of the payload) plus a transform of the payload;
    returns a fresh array of the input's shape."""
    acc = 0.0
    for _ in range(reps):
        acc += float(np.sin(scratch).sum())
    y = np.tanh(np.asarray(x) @ w)
    y += acc * 1e-12
    return y


def calibrate_reps(target_ms: float = TARGET_STAGE_MS) -> tuple[int, float]:
    w, scratch = stage_weights()
    x = np.ones((1, COLS))
    for _ in range(200):
        stage_fn(x, w, scratch, 1)
    reps = 1
    while True:
        trials = []  # best of 5 x 30 calls: robust to a box that is partly busy
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(30):
                stage_fn(x, w, scratch, reps)
            trials.append((time.perf_counter() - t0) * 1e3 / 30)
        ms = min(trials)
        if ms >= target_ms or reps > 100_000:
            return reps, ms
        reps = max(reps + 1, int(reps * target_ms / max(ms, 1e-6) * 0.98))


@ray.remote(num_cpus=0)
class Stage:
    def __init__(self, name: str, reps: int):
        self.name = name
        self.reps = reps
        self.w, self.scratch = stage_weights()

    def f(self, x):
        return stage_fn(x, self.w, self.scratch, self.reps)

    def ping(self):
        return self.name

    def pid(self) -> int:
        return os.getpid()

    def prewarm(self) -> float:
        """What a compiled graph's worker loop does first on each actor: ChannelContext probes
        `import torch` (1 s+ per cold process when torch is installed, as in this venv) and, if it
        is there, resolves the torch device. Done here, before compile, it stays out of the first
        execute(); returns the seconds it took."""
        t = time.perf_counter()
        from ray.experimental.channel.common import ChannelContext

        ctx = ChannelContext.get_current()
        if ctx.torch_available:
            ctx.torch_device  # noqa: B018
        return time.perf_counter() - t


# --------------------------------------------------------------------------- background load
def _burn() -> None:  # runs in a spawned subprocess
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def start_burners(n: int) -> list:
    ctx = mp.get_context("spawn")  # never fork a process that has Ray threads in it
    procs = [ctx.Process(target=_burn, daemon=True, name=f"stage-chain-burn-{i}") for i in range(n)]
    for p in procs:
        p.start()
    return procs


def stop_burners(procs: list) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


# --------------------------------------------------------------------------- measurement
def log(msg: str) -> None:
    print(f"[stage_chain {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summarize(lat_s: list[float], wall_s: float, target: int) -> dict:
    a = np.asarray(lat_s) * 1e3
    return {
        "n": int(a.size),
        "p50_ms": round(float(np.percentile(a, 50)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "mean_ms": round(float(a.mean()), 4),
        "min_ms": round(float(a.min()), 4),
        "max_ms": round(float(a.max()), 4),
        "throughput_batches_per_s": round(a.size / wall_s, 1),
        "stopped_by_budget": bool(a.size < target),
    }


class MeasureError(RuntimeError):
    """A mode failed part-way; says how far it got."""


def measure(one_batch, payload: np.ndarray, iterations: int, warmup: int, budget_s: float) -> dict:
    done_warm, lat = 0, []
    try:
        w_deadline = time.perf_counter() + max(1.0, budget_s / 4)  # warm-up: N calls or budget/4
        for _ in range(warmup):
            one_batch(payload)
            done_warm += 1
            if time.perf_counter() > w_deadline:
                break
        t_start = time.perf_counter()
        deadline = t_start + budget_s
        for _ in range(iterations):
            t0 = time.perf_counter()
            one_batch(payload)
            t1 = time.perf_counter()
            lat.append(t1 - t0)
            if t1 > deadline:
                break
    except Exception as e:  # noqa: BLE001
        ok = np.asarray(lat) * 1e3
        got = (f"; p50 {np.median(ok):.2f} ms, max {ok.max():.2f} ms over those" if ok.size else "")
        raise MeasureError(f"{type(e).__name__}: {e} [failed after {done_warm} warm-up and "
                           f"{len(lat)} measured batches{got}]") from e
    return summarize(lat, time.perf_counter() - t_start, iterations)


def start_actors(reps: int, prewarm: bool) -> tuple[list, dict]:
    info: dict = {}
    t0 = time.perf_counter()
    actors = [Stage.remote(s, reps) for s in STAGES]
    ray.get([a.ping.remote() for a in actors], timeout=120)
    info["actors_ready_s"] = round(time.perf_counter() - t0, 3)
    if prewarm:
        t0 = time.perf_counter()
        per = ray.get([a.prewarm.remote() for a in actors], timeout=300)
        info["prewarm_s"] = round(time.perf_counter() - t0, 3)
        info["prewarm_per_actor_s"] = [round(v, 3) for v in per]
    return actors, info


def idle_cpu_cores(pids: list[int], window_s: float) -> float | None:
    """CPU-seconds per second the given (local) processes use over window_s while the driver
    sends nothing: 1.0 = one core kept busy."""
    def total() -> float:
        t = 0
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += int(fields[11]) + int(fields[12])  # utime + stime, clock ticks
        return t / os.sysconf("SC_CLK_TCK")
    try:
        c0, t0 = total(), time.perf_counter()
        time.sleep(window_s)
        return round((total() - c0) / (time.perf_counter() - t0), 3)
    except (OSError, ValueError, IndexError):
        return None


def run_condition(cond: str, actors: list, reps: int, args, errors: dict) -> tuple[dict, bool]:
    """All four modes on all payloads; returns (results, whether the actors are still usable)."""
    from ray.dag import InputNode

    res: dict = {f"rows_{r}": {} for r in ROWS}
    payloads = {r: np.random.default_rng(r).standard_normal((r, COLS)) for r in ROWS}
    w, scratch = stage_weights()

    def in_process(x):
        for _ in STAGES:
            x = stage_fn(x, w, scratch, reps)
        return x

    budget = args.busy_mode_budget_s if cond == "busy" else args.mode_budget_s

    def blocking(x):
        for a in actors:
            x = ray.get(a.f.remote(x), timeout=args.call_timeout_s)
        return x

    def chained(x):
        ref = x
        for a in actors:
            ref = a.f.remote(ref)
        return ray.get(ref, timeout=args.call_timeout_s)

    plain = {"in_process": in_process, "actor_calls_blocking": blocking,
             "actor_calls_chained_refs": chained}
    for r in ROWS:
        for mode, fn in plain.items():
            key = f"{cond}.rows_{r}.{mode}"
            try:
                res[f"rows_{r}"][mode] = measure(fn, payloads[r], args.iterations, args.warmup, budget)
                log(f"{key}: p50 {res[f'rows_{r}'][mode]['p50_ms']} ms, "
                    f"n {res[f'rows_{r}'][mode]['n']}")
            except Exception as e:  # noqa: BLE001
                errors[key] = str(e) if isinstance(e, MeasureError) else f"{type(e).__name__}: {e}"
                log(f"{key}: FAILED {errors[key]}")

    # ---- compiled graph, on the same 4 actors (no other calls are in flight on them now)
    cdag = None
    broken = False
    probe: dict = {}
    pids = ray.get([a.pid.remote() for a in actors], timeout=60)
    probe["idle_actor_cpu_cores_plain"] = idle_cpu_cores(pids, args.idle_window_s)
    try:
        t0 = time.perf_counter()
        with InputNode() as inp:
            node = inp
            for a in actors:
                node = a.f.bind(node)
        dag = node
        cdag = dag.experimental_compile(_submit_timeout=args.call_timeout_s)
        probe["compile_s"] = round(time.perf_counter() - t0, 3)
        log(f"{cond}: compiled in {probe['compile_s']} s")
        # The first execute() is a one-off: each actor's compiled-graph loop starts (and, unless
        # pre-warmed, imports torch). Time it apart, with a generous timeout.
        t0 = time.perf_counter()
        out = ray.get(cdag.execute(payloads[1]), timeout=args.first_execute_timeout_s)
        del out
        probe["first_execute_s"] = round(time.perf_counter() - t0, 3)
        log(f"{cond}: first execute {probe['first_execute_s']} s")
        # what the 4 actors burn while the graph is live but nothing is executed
        probe["idle_actor_cpu_cores_compiled"] = idle_cpu_cores(pids, args.idle_window_s)
        log(f"{cond}: idle actor CPU, cores: plain {probe['idle_actor_cpu_cores_plain']}, "
            f"compiled {probe['idle_actor_cpu_cores_compiled']}")
    except Exception as e:  # noqa: BLE001
        stage = "compile" if "compile_s" not in probe else "first_execute"
        errors[f"{cond}.compiled_graph.{stage}"] = f"{type(e).__name__}: {e}"
        log(f"{cond}.compiled_graph.{stage}: FAILED {type(e).__name__}: {e}")
        broken = True
        for r in ROWS:
            errors[f"{cond}.rows_{r}.compiled_graph"] = f"skipped: {stage} failed"

    if cdag is not None:
        def compiled(x):
            out = ray.get(cdag.execute(x), timeout=args.call_timeout_s)
            v = float(out[0, 0])  # outputs may be zero-copy views of the channel buffer:
            del out               # drop them before the next execute
            return v

        for r in ROWS:
            key = f"{cond}.rows_{r}.compiled_graph"
            if broken:
                errors[key] = "skipped: the compiled graph failed on an earlier payload"
                continue
            try:
                res[f"rows_{r}"]["compiled_graph"] = measure(compiled, payloads[r], args.iterations,
                                                             args.warmup, budget)
                log(f"{key}: p50 {res[f'rows_{r}']['compiled_graph']['p50_ms']} ms, "
                    f"n {res[f'rows_{r}']['compiled_graph']['n']}")
            except Exception as e:  # noqa: BLE001
                errors[key] = str(e) if isinstance(e, MeasureError) else f"{type(e).__name__}: {e}"
                log(f"{key}: FAILED {errors[key]}")
                broken = True

        # Can a compiled-graph actor still serve a plain method call (a kill switch, a human veto
        # approval) while the graph is live? Idle graph first, then between executions.
        if not broken:
            try:
                lat = []
                for i in range(40):
                    if i >= 20:
                        ref = cdag.execute(payloads[10])
                    t = time.perf_counter()
                    ray.get(actors[2].ping.remote(), timeout=args.call_timeout_s)
                    lat.append(time.perf_counter() - t)
                    if i >= 20:
                        out = ray.get(ref, timeout=args.call_timeout_s)
                        del out
                a = np.asarray(lat) * 1e3
                probe["plain_call_on_compiled_actor"] = {
                    "ok": True, "n": int(a.size), "p50_ms": round(float(np.median(a)), 4),
                    "max_ms": round(float(a.max()), 4),
                    "note": "actors[2] (veto).ping.remote() while the compiled graph is live; "
                            "half idle, half with an execute() in flight",
                }
            except Exception as e:  # noqa: BLE001
                probe["plain_call_on_compiled_actor"] = {"ok": False,
                                                         "error": f"{type(e).__name__}: {e}"}
        try:
            t0 = time.perf_counter()
            # a graph that timed out can hang in teardown (workers still blocked on channels):
            # force-kill its actors then, they are discarded anyway
            cdag.teardown(kill_actors=broken)
            probe["teardown_s"] = round(time.perf_counter() - t0, 3)
        except Exception as e:  # noqa: BLE001
            errors[f"{cond}.teardown"] = f"{type(e).__name__}: {e}"
    res["compiled_graph_info"] = probe
    return res, not broken


def machine_info() -> dict:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"host": platform.node(), "cpus": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version(), "ray": ray.__version__, "numpy": np.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--mode-budget-s", type=float, default=10.0,
                    help="quiet: cap on the measured wall time of one mode x payload (default 10)")
    ap.add_argument("--busy-mode-budget-s", type=float, default=6.0,
                    help="busy: the same cap (default 6)")
    ap.add_argument("--call-timeout-s", type=float, default=10.0,
                    help="timeout of one ray.get / execute submit (default 10, Ray's default)")
    ap.add_argument("--first-execute-timeout-s", type=float, default=60.0,
                    help="timeout of the compiled graph's first execute (default 60)")
    ap.add_argument("--no-prewarm", action="store_true",
                    help="do not pre-import what the compiled-graph loop imports on each actor "
                         "(torch) before compiling: shows the cold first execute()")
    ap.add_argument("--burners", type=int, default=2)
    ap.add_argument("--idle-window-s", type=float, default=2.0,
                    help="window for the idle actor CPU measurement, plain vs compiled (default 2)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quiet-only", action="store_true")
    g.add_argument("--busy-only", "--busy", dest="busy_only", action="store_true")
    args = ap.parse_args()

    conds = ["quiet", "busy"]
    if args.quiet_only:
        conds = ["quiet"]
    elif args.busy_only:
        conds = ["busy"]

    t_run = time.perf_counter()
    out: dict = {"bench": "stage_chain", "machine": machine_info(), "iterations": args.iterations,
                 "warmup": args.warmup, "mode_budget_s": {"quiet": args.mode_budget_s,
                                                    "busy": args.busy_mode_budget_s},
                 "prewarm": not args.no_prewarm, "call_timeout_s": args.call_timeout_s,
                 "loadavg_start": [round(v, 2) for v in os.getloadavg()]}
    reps, stage_ms = calibrate_reps()
    out["stage_work"] = {"numpy_reps": reps, "calibrated_ms_per_stage_1row": round(stage_ms, 4),
                         "stages": list(STAGES), "cols": COLS, "dtype": "float64"}
    log(f"stage work: {reps} reps ~ {stage_ms:.3f} ms/stage")
    errors: dict = {}
    burners: list = []
    ray.init(address="local", num_cpus=2, object_store_memory=256 * 1024**2,
             include_dashboard=False, log_to_driver=False)
    actors: list = []
    try:
        for cond in conds:
            if not actors:  # created (and pre-warmed) before any background load starts
                actors, info = start_actors(reps, not args.no_prewarm)
                out.setdefault("actor_start", {})[cond] = info
                log(f"actors up: {info}")
            if cond == "busy":
                burners = start_burners(args.burners)
                time.sleep(1.0)
                log(f"busy: {len(burners)} burner processes up")
            try:
                out[cond], usable = run_condition(cond, actors, reps, args, errors)
                if not usable:
                    for a in actors:
                        ray.kill(a)
                    actors = []
            except Exception as e:  # noqa: BLE001
                errors[cond] = f"{type(e).__name__}: {e}"
                log(traceback.format_exc())
            finally:
                if burners:
                    out[f"loadavg_end_{cond}"] = [round(v, 2) for v in os.getloadavg()]
                    stop_burners(burners)
                    burners = []
        for cond in conds:  # overhead vs the in-process floor, p50
            summary = {}
            for r in ROWS:
                row = out.get(cond, {}).get(f"rows_{r}", {})
                floor = row.get("in_process", {}).get("p50_ms")
                if floor is None:
                    continue
                summary[f"rows_{r}"] = {
                    m: {"p50_ms": row[m]["p50_ms"],
                        "p50_over_floor_ms": round(row[m]["p50_ms"] - floor, 4),
                        "p50_x_floor": round(row[m]["p50_ms"] / floor, 2)}
                    for m in MODES if m in row}
            out.setdefault("summary_p50", {})[cond] = summary
    finally:
        stop_burners(burners)
        ray.shutdown()
    out["errors"] = errors
    out["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    out["wall_s"] = round(time.perf_counter() - t_run, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
