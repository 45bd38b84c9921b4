"""PNG charts for a backtest. Uses matplotlib's object API (Figure + Agg canvas): no pyplot global state, no display."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from edgeray.backtest.metrics import reliability_table


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


def plot_equity(curves: dict[str, pd.DataFrame], path: str | Path, title: str = "Equity") -> Path:
    """curves: strategy name -> equity frame (date, bankroll)."""
    if not curves:
        raise ValueError("curves must hold at least one equity curve, got none")
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    for name, eq in curves.items():
        ax.plot(eq["date"], eq["bankroll"], label=name, lw=1.2)
    ax.set(title=title, ylabel="bankroll")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_drawdown(equity: pd.DataFrame, path: str | Path, initial_bankroll: float | None = None) -> Path:
    values = equity["bankroll"].to_numpy(dtype=float)
    if initial_bankroll is not None:
        values = np.concatenate(([initial_bankroll], values))
    peak = np.maximum.accumulate(values)
    dd = np.where(peak > 0, values / peak - 1.0, 0.0)[-len(equity):]
    fig = Figure(figsize=(9, 3.5))
    ax = fig.add_subplot()
    ax.fill_between(equity["date"], dd * 100.0, 0.0, color="tab:red", alpha=0.4)
    ax.set(title="Drawdown", ylabel="% below peak")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_roi_by_odds(metrics: dict, path: str | Path) -> Path:
    """Bars of ROI per odds range from compute_metrics' `by_odds_range`, with the bootstrap 95% CI as error bars."""
    rows = [(label, r) for label, r in metrics["by_odds_range"].items() if r["bets"] > 0]
    if not rows:
        raise ValueError("metrics['by_odds_range'] has no odds range with bets")
    labels = [label for label, _ in rows]
    roi = np.array([r["roi"] for _, r in rows]) * 100.0
    lo = np.array([r["roi_ci95"][0] for _, r in rows]) * 100.0
    hi = np.array([r["roi_ci95"][1] for _, r in rows]) * 100.0
    err = np.nan_to_num(np.vstack([roi - lo, hi - roi]), nan=0.0).clip(min=0.0)
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot()
    ax.bar(labels, roi, yerr=err, capsize=4, color=np.where(roi >= 0, "tab:green", "tab:red"))
    ax.axhline(0.0, color="black", lw=0.8)
    for i, (_, r) in enumerate(rows):
        ax.annotate(f"n={r['bets']}", (i, 0), ha="center", va="bottom", fontsize=8)
    ax.set(title="ROI by odds range (95% bootstrap CI)", ylabel="ROI %")
    ax.tick_params(axis="x", rotation=30)
    return _save(fig, path)


def plot_reliability(prob, won, path: str | Path, n_bins: int = 10) -> Path:
    table = reliability_table(prob, won, n_bins)
    table = table[table["n"] > 0]
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.plot(table["mean_prob"], table["win_rate"], marker="o")
    ax.set(title="Reliability", xlabel="mean predicted probability", ylabel="observed win rate", xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    return _save(fig, path)
