"""A value strategy on live odds across books, and its scoring on closing line value (CLV).

Strategy (`ValueStrategy.decide`, on `MultiBookOddsState` feature rows): at each quote time and for each side,
the reference probability p_ref (the margin-free consensus across books, or a model's probability when given)
is compared with the best price any book offers for that side: edge = p_ref * best_decimal - 1, the expected
return of a unit stake there. A side with edge >= min_edge (and a consensus of at least min_books books) is
bet at that book, sized by fractional Kelly (edgeray.odds.kelly_fraction x kelly_multiplier, capped at
max_stake). One bet per (game, side), or one per cooldown, so a lasting edge is not bet again on every quote.

Scoring (`score_bets`) against the stream's closing lines: each book's last usable pre-game price (the state of
MultiBookOddsState after every pre-game quote) and the closing consensus (the mean of those books' fair
probabilities). Margin method: multiplicative throughout.
- clv_points: (the bet book's closing fair probability of the side - that book's fair probability of the side
  when the bet was placed) x 100; clv_points_consensus: the same against the closing consensus;
- clv_price_pct: (decimal odds taken / that book's closing decimal odds for the side - 1) x 100.
Means come with a 95% bootstrap CI that resamples whole games (bets on one game share its line moves).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from edgeray.backtest.metrics import cluster_bootstrap_ratio
from edgeray.features.books import METHOD, MultiBookOddsState, event_ns
from edgeray.odds import kelly_fraction

BET_COLUMNS = ["symbol", "event_ts", "side", "bookmaker", "decimal_odds", "p_ref", "book_prob_fair", "edge",
               "kelly_full", "stake_fraction", "n_books", "reference"]
_TEXT = {"symbol", "side", "bookmaker", "reference"}


def _no_bets() -> pd.DataFrame:
    """An empty bets frame with the real dtypes (so concatenating batches' bets keeps them)."""
    return pd.DataFrame({c: pd.Series([], dtype=object if c in _TEXT else
                                      "datetime64[ns, UTC]" if c == "event_ts" else float) for c in BET_COLUMNS})


@dataclass(frozen=True)
class ValueConfig:
    min_edge: float = 0.02           # expected return at the best price needed to bet
    kelly_multiplier: float = 0.25   # fractional Kelly
    max_stake: float = 0.02          # cap on the stake, as a share of bankroll
    min_books: int = 3               # a consensus of fewer books is one book's opinion (and its own margin)
    cooldown: pd.Timedelta | None = None  # None: at most one bet per (game, side); else one per cooldown
    max_edge: float | None = None    # optional: skip edges above this (a palpable-error price a book would void)


class ValueStrategy:
    """Streaming: remembers when each (game, side) was last bet, across calls."""

    def __init__(self, config: ValueConfig | None = None) -> None:
        self.config = config or ValueConfig()
        self._last_bet: dict[tuple[str, str], int] = {}  # (symbol, side) -> event ns of the last bet

    def state_dict(self) -> dict:
        """When each (game, side) was last bet, for a checkpoint (JSON: "game|side" keys)."""
        return {f"{symbol}|{side}": t for (symbol, side), t in self._last_bet.items()}

    def load_state(self, state: dict) -> None:
        self._last_bet = {tuple(key.rsplit("|", 1)): int(t) for key, t in state.items()}

    def decide(self, features: pd.DataFrame, p_ref_a=None) -> pd.DataFrame:
        """Bets from feature rows (MultiBookOddsState.update output, event-time order). `p_ref_a`: a model's
        probability of side a per row (aligned with `features`; NaN = no opinion, no bet); default the consensus."""
        cfg = self.config
        n = len(features)
        if n == 0:
            return _no_bets()
        reference = "consensus" if p_ref_a is None else "model"
        pa = features["consensus_prob_a"].to_numpy(float) if p_ref_a is None else np.asarray(p_ref_a, float)
        if pa.shape != (n,):
            raise ValueError(f"p_ref_a: expected {n} values (one per feature row), got shape {pa.shape}")
        n_books = features["n_books"].to_numpy(float)
        ts = event_ns(features["event_ts"])
        sym = features["symbol"].to_numpy(object)
        parts = []
        for side, p in (("a", pa), ("b", 1.0 - pa)):
            dec = features[f"best_decimal_{side}"].to_numpy(float)
            with np.errstate(invalid="ignore"):
                edge = p * dec - 1.0
                cand = np.isfinite(edge) & (n_books >= cfg.min_books) & (edge >= cfg.min_edge)
                if cfg.max_edge is not None:
                    cand &= edge <= cfg.max_edge
            rows = np.flatnonzero(cand)
            parts.append((side, rows, p, dec, edge))
        # Gate in event-time order across both sides (a loop over candidates only: few, and each may block the next).
        events = sorted((int(ts[i]), i, side) for side, rows, *_ in parts for i in rows)
        cooldown = None if cfg.cooldown is None else pd.Timedelta(cfg.cooldown).value
        take: dict[str, list[int]] = {"a": [], "b": []}
        for t, i, side in events:
            key = (sym[i], side)
            last = self._last_bet.get(key)
            if last is None or (cooldown is not None and t - last >= cooldown):
                self._last_bet[key] = t
                take[side].append(i)
        frames = []
        for side, _, p, dec, edge in parts:
            i = np.array(take[side], dtype=np.int64)
            if not len(i):
                continue
            full = kelly_fraction(p[i], dec[i])
            frames.append(pd.DataFrame({
                "symbol": sym[i], "event_ts": features["event_ts"].to_numpy()[i], "side": side,
                "bookmaker": features[f"best_book_{side}"].to_numpy(object)[i], "decimal_odds": dec[i],
                "p_ref": p[i], "book_prob_fair": features[f"best_fair_{side}"].to_numpy(float)[i], "edge": edge[i],
                "kelly_full": full, "stake_fraction": np.minimum(full * cfg.kelly_multiplier, cfg.max_stake),
                "n_books": n_books[i], "reference": reference}))
        if not frames:
            return _no_bets()
        bets = pd.concat(frames, ignore_index=True)
        return bets.iloc[np.lexsort((bets["side"].to_numpy(), event_ns(bets["event_ts"])))].reset_index(drop=True)


def closing_lines(quotes: pd.DataFrame, max_overround: float = 0.15) -> pd.DataFrame:
    """Each (game, book)'s closing line: its latest usable price after every pre-game quote (a book whose last
    quote took the game off the board has none). Columns: symbol, bookmaker, close_decimal_a, close_decimal_b,
    close_fair_a. Quotes at/after a `commence_ts` column, when present, are not pre-game and are left out."""
    if "commence_ts" in quotes:
        pre = event_ns(quotes["event_ts"]) < event_ns(quotes["commence_ts"])
        quotes = quotes[pre]
    state = MultiBookOddsState(max_overround=max_overround)
    state.update(quotes)
    return state.snapshot().rename(columns={"decimal_a": "close_decimal_a", "decimal_b": "close_decimal_b",
                                            "fair_a": "close_fair_a"})[
        ["symbol", "bookmaker", "close_decimal_a", "close_decimal_b", "close_fair_a"]]


def cluster_bootstrap_mean(values, clusters, n_boot: int = 2000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Mean of `values` and its 95% CI from resampling whole clusters with replacement (NaNs dropped)."""
    values = np.asarray(values, dtype=float)
    return cluster_bootstrap_ratio(values, np.ones(len(values)), clusters, n_boot, seed)


def score_bets(bets: pd.DataFrame, quotes: pd.DataFrame, *, max_overround: float = 0.15, n_boot: int = 2000,
               seed: int = 0) -> dict:
    """CLV of `bets` (ValueStrategy output) against the closing lines of `quotes` (the pre-game stream).

    Returns: bets, games, clv_points_mean/_ci (vs the bet book's close), clv_points_consensus_mean/_ci,
    clv_price_pct_mean/_ci, positive_clv_share, no_close (bets whose book has no usable close: left out of the
    book-close figures), method, and `scored` (the bets with their closing prices and CLVs)."""
    closes = closing_lines(quotes, max_overround)
    consensus = closes.groupby("symbol", sort=False)["close_fair_a"].mean().rename("close_consensus_a")
    scored = bets.merge(closes, on=["symbol", "bookmaker"], how="left").merge(
        consensus, left_on="symbol", right_index=True, how="left")
    is_a = scored["side"].to_numpy() == "a"
    close_fair = np.where(is_a, scored["close_fair_a"], 1.0 - scored["close_fair_a"])
    close_cons = np.where(is_a, scored["close_consensus_a"], 1.0 - scored["close_consensus_a"])
    close_dec = np.where(is_a, scored["close_decimal_a"], scored["close_decimal_b"])
    at_bet = scored["book_prob_fair"].to_numpy(float)
    scored["close_fair"] = close_fair
    scored["close_consensus"] = close_cons
    scored["close_decimal"] = close_dec
    scored["clv_points"] = (close_fair - at_bet) * 100.0
    scored["clv_points_consensus"] = (close_cons - at_bet) * 100.0
    scored["clv_price_pct"] = (scored["decimal_odds"].to_numpy(float) / close_dec - 1.0) * 100.0
    games = scored["symbol"].to_numpy(object)
    out: dict = {"bets": len(scored), "games": int(pd.Series(games).nunique()), "method": METHOD,
                 "no_close": int(np.isnan(close_fair).sum())}
    for name in ("clv_points", "clv_points_consensus", "clv_price_pct"):
        mean, ci = cluster_bootstrap_mean(scored[name], games, n_boot=n_boot, seed=seed)
        out[f"{name}_mean"], out[f"{name}_ci"] = mean, ci
    with np.errstate(invalid="ignore"):
        clv = scored["clv_points"].to_numpy(float)
        out["positive_clv_share"] = float(np.mean(clv[np.isfinite(clv)] > 0)) if np.isfinite(clv).any() else float("nan")
    out["scored"] = scored
    return out


def validated_quotes(path: str | Path, sport: str = "mlb") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(quotes ingestion would accept, with the loader's `commence_ts` put back: scoring needs it and validation
    drops it; the rows it rejected; the loaded frame) of a stream file."""
    from edgeray.events import EventKind
    from edgeray.loaders.odds_stream import load_odds_stream
    from edgeray.validation import validate

    frame = load_odds_stream(path, sport=sport)
    result = validate(EventKind.ODDS, frame)
    quotes = pd.DataFrame(result.accepted)
    quotes["commence_ts"] = frame["commence_ts"].to_numpy()[result.accepted_rows]
    return quotes, result.rejected, frame


def stream_value_report(path: str | Path, min_edge: float = 0.02, kelly_multiplier: float = 0.25, *,
                        max_stake: float = 0.02, min_books: int = 3, cooldown: pd.Timedelta | None = None,
                        max_overround: float = 0.15, sport: str = "mlb", n_boot: int = 2000, seed: int = 0) -> dict:
    """Load a stream file, validate it as ingestion would (bad rows dead-lettered, here counted), compute the
    multi-book features, run the value strategy and score its bets; plus rows, rejected, in-play dropped and the
    features' rows/s."""
    quotes, rejected, frame = validated_quotes(path, sport)
    state = MultiBookOddsState(max_overround=max_overround)
    t0 = time.perf_counter()
    features = state.update(quotes)
    feature_s = time.perf_counter() - t0
    strategy = ValueStrategy(ValueConfig(min_edge=min_edge, kelly_multiplier=kelly_multiplier, max_stake=max_stake,
                                         min_books=min_books, cooldown=cooldown))
    bets = strategy.decide(features)
    report = score_bets(bets, quotes, max_overround=max_overround, n_boot=n_boot, seed=seed)
    report.update(rows=len(frame), rejected=len(rejected), in_play_dropped=frame.attrs["in_play_dropped"],
                  off_board_quotes=state.off_board, feature_rows_per_s=len(features) / feature_s,
                  min_edge=min_edge, kelly_multiplier=kelly_multiplier,
                  mean_stake_fraction=float(bets["stake_fraction"].mean()) if len(bets) else 0.0)
    return report
