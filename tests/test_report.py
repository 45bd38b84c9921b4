from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgeray.report import performance, plot_equity


def test_performance_figures_match_hand_worked_values():
    curve = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=4, freq="min", tz="UTC"),
                          "equity": [100.0, 110.0, 99.0, 121.0]})
    perf = performance(curve, periods_per_year=4)
    returns = np.array([0.10, -0.10, 22 / 99])
    assert perf["pnl"] == pytest.approx(21.0)
    assert perf["return"] == pytest.approx(0.21)
    assert perf["max_drawdown"] == pytest.approx(0.10)  # 110 -> 99
    assert perf["sharpe"] == pytest.approx(returns.mean() / returns.std(ddof=1) * 2.0)


def test_flat_curve_has_no_sharpe_and_plot_writes_a_png(tmp_path):
    curve = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=3, freq="min", tz="UTC"), "equity": [5.0, 5.0, 5.0]})
    assert performance(curve)["sharpe"] is None
    path = plot_equity(curve, tmp_path / "eq.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
