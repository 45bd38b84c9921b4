"""Backtest metrics: returns, risk, closing line value, calibration and results by odds range, with bootstrap CIs.

Definitions (all over placed bets unless the name says otherwise):
- roi = profit / total staked (return per unit turned over); yield = mean of pnl/stake per bet (the flat-stake view);
  return_on_bankroll = final / initial - 1.
- Per-bet return = pnl / bankroll_before. Sharpe = mean / std(ddof=1), Sortino = mean / sqrt(mean(min(r, 0)^2)), both
  times sqrt(bets_per_year), bets_per_year = bets / years, years = max(last - first date, 1 day) / 365.25 days.
  Calmar = CAGR / max_drawdown, CAGR = (final / initial) ** (1 / years) - 1.
- Max drawdown on the end-of-date equity curve preceded by the initial bankroll; its duration is the longest time
  spent below a previous peak (calendar days and dates), still counting when the run ends underwater.
- CLV (edgeray.clv): clv_mean_points is margin-free, in probability points: 100 * (the close's margin-free
  probability of the side bet - the bet price's), margin removed by `clv_method` (default multiplicative); it needs
  both sides' prices at bet time and at the close (other_decimal_odds, closing_other_decimal_odds) and is NaN
  without them. clv_price_pct_mean = mean of 100 * (decimal_odds / closing_decimal_odds - 1). The old raw-price
  figure 100 * (1/closing - 1/odds), which includes the margin, is kept only as clv_raw_points_mean.
  roi_by_clv_sign: ROI of the bets with margin-free CLV > 0 and of those with CLV <= 0, each with its count and CI.
- forecast_comparison (when the bets carry open_market_prob / closing_market_prob): log loss and Brier of the model,
  the opening market and the closing market on every opportunity, with CIs over dates.
- ECE: 10 equal-width bins of model_prob, sum over bins of (bin share) * |mean prob - win rate|. Brier: mean (p - won)^2.
- Confidence intervals: seeded numpy bootstrap that resamples whole dates (bets on one date share a bankroll and a
  slate, so they are not independent); 95% percentile intervals.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from edgeray.odds import decimal_to_american

# (label, low, high) on American odds, low inclusive; favourites run from -100 toward minus infinity.
ODDS_BUCKETS = (("+100 to +149", 100.0, 150.0), ("+150 to +199", 150.0, 200.0), ("+200 to +249", 200.0, 250.0),
                ("+250 to +299", 250.0, 300.0), ("+300 and up", 300.0, np.inf),
                ("-100 to -149", -150.0, -100.0), ("-150 to -199", -200.0, -150.0), ("-200 and shorter", -np.inf, -200.0))
MAX_CLUSTERS = 20_000  # beyond this many dates, neighbouring dates are merged into blocks to bound bootstrap cost


def odds_bucket_codes(decimal_odds) -> np.ndarray:
    """Index into ODDS_BUCKETS for each decimal price."""
    american = np.asarray(decimal_to_american(np.asarray(decimal_odds, dtype=float)), dtype=float)
    american = np.atleast_1d(american)
    codes = np.full(len(american), -1, dtype=np.int64)
    for i, (_, lo, hi) in enumerate(ODDS_BUCKETS):
        # Dogs: [lo, hi). Favourites: (lo, hi] so -150 falls in "-150 to -199" and -100 in "-100 to -149".
        inside = (american >= lo) & (american < hi) if lo >= 100 else (american > lo) & (american <= hi)
        codes[inside] = i
    return codes


def expected_calibration_error(prob, won, n_bins: int = 10) -> float:
    p = np.asarray(prob, dtype=float)
    y = np.asarray(won, dtype=float)
    if len(p) == 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)  # p = 1.0 goes to the top bin
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, p, n_bins) - np.bincount(bins, y, n_bins))  # = count * |mean p - win rate|
    return float(gap.sum() / count.sum())


def reliability_table(prob, won, n_bins: int = 10) -> pd.DataFrame:
    p = np.asarray(prob, dtype=float)
    y = np.asarray(won, dtype=float)
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({"bin_low": np.arange(n_bins) / n_bins, "bin_high": np.arange(1, n_bins + 1) / n_bins,
                             "n": count, "mean_prob": np.bincount(bins, p, n_bins) / count,
                             "win_rate": np.bincount(bins, y, n_bins) / count})


def max_drawdown(curve: np.ndarray, dates: np.ndarray) -> tuple[float, float, int]:
    """(max drawdown as a share of the peak, longest underwater time in days, ... in dates). dates: datetime64[ns]."""
    if len(curve) == 0:
        return 0.0, 0.0, 0
    peak = np.maximum.accumulate(curve)
    with np.errstate(invalid="ignore", divide="ignore"):
        dd = np.where(peak > 0, 1.0 - curve / peak, 0.0)
    at_peak = curve >= peak
    last_peak_idx = np.maximum.accumulate(np.where(at_peak, np.arange(len(curve)), 0))
    under_periods = np.arange(len(curve)) - last_peak_idx
    under_days = (dates - dates[last_peak_idx]).astype("timedelta64[s]").astype(np.int64) / 86400.0
    return float(dd.max()), float(under_days.max()), int(under_periods.max())


def _bootstrap_counts(cluster: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_clusters) multiplicities of a resample of whole clusters with replacement."""
    n = int(cluster.max()) + 1 if len(cluster) else 0
    if n == 0 or n_boot <= 0:
        return np.zeros((max(n_boot, 0), n))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def cluster_bootstrap_ratio(num, den, clusters, n_boot: int = 1000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """sum(num) / sum(den) and its 95% percentile CI from resampling whole clusters (dates, games) with replacement:
    bets that share a cluster share its news and line moves, so they are not independent draws. A mean is the
    ratio with den = 1; rows with a non-finite num or den are left out. The one cluster bootstrap of edgeray."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    keep = np.isfinite(num) & np.isfinite(den)
    num, den = num[keep], den[keep]
    if not len(num) or den.sum() <= 0:
        return float("nan"), (float("nan"), float("nan"))
    codes, _ = pd.factorize(np.asarray(clusters, dtype=object)[keep])
    n = int(codes.max()) + 1
    counts = _bootstrap_counts(codes, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = (counts @ np.bincount(codes, num, n)) / (counts @ np.bincount(codes, den, n))
    return float(num.sum() / den.sum()), _ci(boot)


def _ci(samples: np.ndarray) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return float(lo), float(hi)


def compute_metrics(bets: pd.DataFrame, equity: pd.DataFrame, initial_bankroll: float, *, n_boot: int = 1000,
                    seed: int = 0, n_bins: int = 10, clv_method: str = "multiplicative") -> dict:
    """All metrics from run_bets' `bets` (every opportunity, `placed` marks bets) and `equity` (end-of-date bankroll)."""
    placed_mask = bets["placed"].to_numpy(dtype=bool)
    n_opps = len(bets)
    p_all = bets["model_prob"].to_numpy(dtype=float)
    won_all = bets["won"].to_numpy(dtype=float)
    won = won_all[placed_mask]
    p = p_all[placed_mask]
    stake = bets["stake"].to_numpy(dtype=float)[placed_mask]
    pnl = bets["pnl"].to_numpy(dtype=float)[placed_mask]
    odds = bets["decimal_odds"].to_numpy(dtype=float)[placed_mask]
    edge = bets["edge"].to_numpy(dtype=float)[placed_mask]
    before = bets["bankroll_before"].to_numpy(dtype=float)[placed_mask]
    date_ns = bets["date"].values.astype("datetime64[ns]")[placed_mask]
    implied = 1.0 / odds
    if "market_prob" in bets.columns:
        market = bets["market_prob"].to_numpy(dtype=float)[placed_mask]
        implied = np.where(np.isnan(market), implied, market)
    n = int(placed_mask.sum())
    wins = int(won.sum())
    staked = float(stake.sum())
    profit = float(pnl.sum())
    curve_vals = np.concatenate(([initial_bankroll], equity["bankroll"].to_numpy(dtype=float)))
    eq_dates = equity["date"].values.astype("datetime64[ns]")
    curve_dates = np.concatenate((eq_dates[:1], eq_dates)) if len(eq_dates) else np.array([], dtype="datetime64[ns]")
    final = float(curve_vals[-1])
    mdd, dd_days, dd_periods = max_drawdown(curve_vals, curve_dates) if len(eq_dates) else (0.0, 0.0, 0)

    nan = float("nan")
    out: dict = {"opportunities": n_opps, "total_bets": n, "wins": wins, "losses": n - wins,
                 "win_rate": wins / n if n else nan, "total_staked": staked, "profit": profit,
                 "roi": profit / staked if staked > 0 else nan,
                 "yield": float(np.mean(pnl / stake)) if n else nan,
                 "initial_bankroll": float(initial_bankroll), "final_bankroll": final,
                 "return_on_bankroll": final / initial_bankroll - 1.0,
                 "max_drawdown": mdd, "max_drawdown_duration_days": dd_days, "max_drawdown_duration_dates": dd_periods,
                 "avg_decimal_odds": float(odds.mean()) if n else nan, "avg_edge": float(edge.mean()) if n else nan,
                 "avg_stake": staked / n if n else nan,
                 "market_implied_win_rate": float(implied.mean()) if n else nan}
    out["win_rate_minus_implied"] = out["win_rate"] - out["market_implied_win_rate"]
    if "market_prob" in bets.columns:  # every opportunity, bet or not: is the model better than the market?
        from edgeray.sports.performance import significance_vs_market

        market_all = bets["market_prob"].to_numpy(dtype=float)
        ok = np.isfinite(market_all) & np.isfinite(won_all) & np.isfinite(p_all)
        out["significance_vs_market"] = significance_vs_market(won_all[ok], p_all[ok], market_all[ok],
                                                               bets["date"].to_numpy()[ok], seed=seed)

    # Risk-adjusted returns per bet, annualised by how many bets a year this record places.
    years = max((date_ns[-1] - date_ns[0]) / np.timedelta64(1, "D"), 1.0) / 365.25 if n else nan
    if n >= 2:
        r = pnl / np.where(before > 0, before, np.nan)
        r = r[np.isfinite(r)]
        per_year = len(r) / years
        sd = r.std(ddof=1) if len(r) > 1 else nan
        downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)) if len(r) else nan
        out["bets_per_year"] = per_year
        out["sharpe"] = float(r.mean() / sd * np.sqrt(per_year)) if sd > 0 else nan
        out["sortino"] = float(r.mean() / downside * np.sqrt(per_year)) if downside > 0 else nan
    else:
        out.update(bets_per_year=nan, sharpe=nan, sortino=nan)
    cagr = (final / initial_bankroll) ** (1.0 / years) - 1.0 if n else nan
    out["cagr"] = float(cagr)
    out["calmar"] = float(cagr / mdd) if n and mdd > 0 else nan

    # Closing line value where the closing prices are known (edgeray.clv): margin-free, price and the raw extra.
    from edgeray.clv import CLV_COLUMNS, bet_clv_columns

    # run_bets has put them on every bet already (by the same clv_method); computed here only for other frames.
    per_bet = ({c: bets[c].to_numpy(dtype=float) for c in CLV_COLUMNS} if set(CLV_COLUMNS) <= set(bets.columns)
               else bet_clv_columns(bets, clv_method))
    clv = per_bet["clv_points"][placed_mask]
    price_clv = per_bet["clv_price_pct"][placed_mask]
    raw_clv = per_bet["clv_raw_points"][placed_mask]
    known, known_price = np.isfinite(clv), np.isfinite(price_clv)
    clv_k = clv[known]
    out["clv_method"] = clv_method
    out["clv_bets"] = int(known.sum())
    out["clv_price_bets"] = int(known_price.sum())

    def _quantiles(v: np.ndarray) -> dict:
        if not len(v):
            return {}
        q = np.percentile(v, [5, 25, 50, 75, 95])
        return {"p05": float(q[0]), "p25": float(q[1]), "p50": float(q[2]), "p75": float(q[3]), "p95": float(q[4])}

    if len(clv_k):
        out.update(clv_mean_points=float(clv_k.mean()), clv_median_points=float(np.median(clv_k)),
                   clv_std_points=float(clv_k.std(ddof=1)) if len(clv_k) > 1 else nan,
                   clv_positive_share=float((clv_k > 0).mean()), clv_quantiles_points=_quantiles(clv_k))
    else:
        out.update(clv_mean_points=nan, clv_median_points=nan, clv_std_points=nan, clv_positive_share=nan,
                   clv_quantiles_points={})
        if n and known_price.any():
            out["clv_note"] = ("margin-free CLV needs both sides' prices at bet time and at the close "
                               "(other_decimal_odds, closing_other_decimal_odds); only price CLV is given")
    price_k = price_clv[known_price]
    out["clv_price_pct_mean"] = float(price_k.mean()) if len(price_k) else nan
    out["clv_price_pct_quantiles"] = _quantiles(price_k)
    out["clv_raw_points_mean"] = float(raw_clv[known_price].mean()) if len(price_k) else nan
    out["clv_raw_points_note"] = ("raw-price CLV 100*(1/closing - 1/odds): includes the bookmaker's margin, so a "
                                  "margin that shrinks towards the close reads as negative CLV; see clv_mean_points")

    out["ece"] = expected_calibration_error(p, won, n_bins) if n else nan
    out["brier"] = float(np.mean((p - won) ** 2)) if n else nan
    out["ece_all_opportunities"] = expected_calibration_error(p_all, won_all, n_bins) if n_opps else nan
    out["brier_all_opportunities"] = float(np.mean((p_all - won_all) ** 2)) if n_opps else nan

    # Per-date sums (one matrix) feed both the odds-range table and the date-cluster bootstrap.
    buckets = odds_bucket_codes(odds) if n else np.zeros(0, dtype=np.int64)
    if n:
        # Bets arrive date-sorted, so a date's code is the running count of date changes.
        new_date = np.empty(n, dtype=bool)
        new_date[:1] = True
        new_date[1:] = date_ns[1:] != date_ns[:-1]
        date_code = np.cumsum(new_date, dtype=np.int64) - 1
        n_dates = int(date_code[-1]) + 1
        cluster = date_code * min(n_dates, MAX_CLUSTERS) // n_dates
    else:
        cluster = np.zeros(0, dtype=np.int64)
    n_cl = int(cluster[-1]) + 1 if n else 0
    nb = len(ODDS_BUCKETS)
    pos, nonpos = known & (clv > 0), known & (clv <= 0)
    # Per-date sums, one column each: stake, pnl, clv, clv known, price clv, price known, the stake and pnl of bets
    # with CLV > 0 and with CLV <= 0; then stake and pnl per odds bucket (bucket b: NT + 2b, NT + 2b + 1).
    per_bet_cols = (stake, pnl, np.where(known, clv, 0.0), known, np.where(known_price, price_clv, 0.0), known_price,
                    np.where(pos, stake, 0.0), np.where(pos, pnl, 0.0), np.where(nonpos, stake, 0.0),
                    np.where(nonpos, pnl, 0.0))
    nt = len(per_bet_cols)
    if n:
        totals = np.stack([np.bincount(cluster, c, n_cl) for c in per_bet_cols], axis=1)
        key = cluster * nb + buckets
        by_bucket = np.stack([np.bincount(key, c, n_cl * nb).reshape(n_cl, nb) for c in (stake, pnl)], axis=2)
        sums = np.concatenate([totals, by_bucket.reshape(n_cl, 2 * nb)], axis=1)
    else:
        sums = np.zeros((0, nt + 2 * nb))
    counts = _bootstrap_counts(cluster, n_boot, seed)
    boot = counts @ sums if n else np.zeros((max(n_boot, 0), sums.shape[1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        roi_boot = boot[:, 1] / boot[:, 0]
        clv_boot = boot[:, 2] / boot[:, 3]
        out["roi_ci95"] = list(_ci(roi_boot))
        out["roi_boot_share_le_zero"] = float(np.mean(roi_boot[np.isfinite(roi_boot)] <= 0)) if n else nan
        out["clv_ci95_points"] = list(_ci(clv_boot)) if len(clv_k) else [nan, nan]
        out["clv_price_pct_ci95"] = list(_ci(boot[:, 4] / boot[:, 5])) if len(price_k) else [nan, nan]
        split = {}
        for label, mask, s_col in (("clv_positive", pos, 6), ("clv_non_positive", nonpos, 8)):
            m_stake, m_pnl = float(stake[mask].sum()), float(pnl[mask].sum())
            split[label] = {"bets": int(mask.sum()), "staked": m_stake, "profit": m_pnl,
                            "roi": m_pnl / m_stake if m_stake > 0 else nan,
                            "roi_ci95": list(_ci(boot[:, s_col + 1] / boot[:, s_col])) if mask.any() else [nan, nan]}
        out["roi_by_clv_sign"] = split
        table = {}
        for b, (label, _, _) in enumerate(ODDS_BUCKETS):
            m = buckets == b
            nb_bets = int(m.sum())
            b_stake, b_pnl = float(stake[m].sum()), float(pnl[m].sum())
            b_wins = int(won[m].sum())
            lo, hi = _ci(boot[:, nt + 2 * b + 1] / boot[:, nt + 2 * b]) if nb_bets else (nan, nan)
            table[label] = {"bets": nb_bets, "wins": b_wins, "win_rate": b_wins / nb_bets if nb_bets else nan,
                            "implied_win_rate": float(implied[m].mean()) if nb_bets else nan,
                            "staked": b_stake, "profit": b_pnl, "roi": b_pnl / b_stake if b_stake > 0 else nan,
                            "roi_ci95": [lo, hi]}
    out["by_odds_range"] = table
    if {"open_market_prob", "closing_market_prob"} <= set(bets.columns) and n_opps:
        from edgeray.clv import forecast_comparison

        # Model vs opening vs closing market on every opportunity (bet or not); each game's two rows score alike.
        out["forecast_comparison"] = forecast_comparison(
            won_all, {"model": p_all, "open_market": bets["open_market_prob"].to_numpy(dtype=float),
                      "close_market": bets["closing_market_prob"].to_numpy(dtype=float)},
            bets["date"].to_numpy(), n_boot=n_boot, seed=seed)
    out["bootstrap"] = {"n_boot": int(n_boot), "seed": int(seed), "resampled_unit": "date",
                        "clusters": n_cl, "interval": "95% percentile"}
    return out


def by_odds_range_frame(metrics: dict) -> pd.DataFrame:
    """The odds-range table as a DataFrame (one row per range) for printing and plotting."""
    rows = {label: {**{k: v for k, v in row.items() if k != "roi_ci95"},
                    "roi_ci_low": row["roi_ci95"][0], "roi_ci_high": row["roi_ci95"][1]}
            for label, row in metrics["by_odds_range"].items()}
    return pd.DataFrame.from_dict(rows, orient="index")
