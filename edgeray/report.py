"""Run report for the decision loop: performance figures from the ledger's equity curve and a PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MINUTES_PER_YEAR = 365 * 24 * 60  # crypto trades around the clock; the bars are one minute apart


def performance(equity: pd.DataFrame, periods_per_year: float = MINUTES_PER_YEAR) -> dict:
    """PnL, Sharpe (annualised from per-bar returns), max drawdown from an equity curve (ts, equity)."""
    if equity.empty:
        return {"pnl": 0.0, "return": 0.0, "sharpe": None, "max_drawdown": 0.0, "points": 0}
    values = equity["equity"].to_numpy(float)
    returns = np.diff(values) / values[:-1] if len(values) > 1 else np.array([])
    sd = returns.std(ddof=1) if len(returns) > 1 else 0.0
    peak = np.maximum.accumulate(values)
    return {"pnl": float(values[-1] - values[0]), "return": float(values[-1] / values[0] - 1.0),
            "sharpe": float(returns.mean() / sd * np.sqrt(periods_per_year)) if sd > 0 else None,
            "max_drawdown": float(np.max(1.0 - values / peak)), "points": int(len(values))}


def plot_equity(equity: pd.DataFrame, path: str | Path, title: str = "edgeray paper equity") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless: CI and cluster nodes have no display
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ts = pd.to_datetime(equity["ts"], utc=True)
    values = equity["equity"].to_numpy(float)
    ax1.plot(ts, values, lw=1)
    ax1.set_ylabel("equity")
    ax1.set_title(title)
    ax2.fill_between(ts, -(1.0 - values / np.maximum.accumulate(values)) * 100, 0, color="tab:red", alpha=0.4)
    ax2.set_ylabel("drawdown %")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_explanation(decision, path: str | Path) -> Path:
    """One decision's SHAP explanation as a bar chart: each top feature's push on the log-odds that the
    price rises over the edge model's horizon (red up, blue down), largest at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = decision.explanation.top_features
    if not top:
        raise ValueError(f"decision {decision.decision_id}: no explanation (method {decision.explanation.method!r}); "
                         f"only orders decided after the confidence model's warm-up are explained")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names, values = [f.feature for f in reversed(top)], [f.shap for f in reversed(top)]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(top) + 1.5))
    ax.barh(names, values, color=["tab:red" if v > 0 else "tab:blue" for v in values])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("SHAP value (log-odds of an up move)")
    ax.set_title(f"{decision.symbol} {decision.event_ts:%Y-%m-%d %H:%M} {decision.action} via {decision.strategy} "
                 f"(confidence {decision.confidence:.2f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
