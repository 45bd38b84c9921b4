"""Pre-optimisation reference implementation of `edgeray.ledger.PaperLedger`, for tests only.

A verbatim copy of edgeray/ledger.py (commit bdfe82c) as it was before the columnar (numpy) hot path replaced the
pandas one (merge_asof, groupby, DataFrame.ffill). tests/test_ledger_fastpath.py drives both through
the same scenarios and requires identical outputs and state. Do not edit or optimise this file.

Original module docstring:

    Paper executor and ledger: fills approved orders against later market rows and keeps the books.

    No look-ahead: an order stamped t waits for the first row of its symbol stamped strictly after t
    and fills at that row's open (or its mid for quote data), never at the row it was decided on.
    Within a row, fills happen first (at the open) and marks second (at the close), so the equity
    point of a row already includes that row's fills.

    Accounting is average-cost: adding to a position moves the average price, reducing or flipping
    realises (price - average) on the closed units. `realised_pnl` is net of fees, so at every point
    equity == initial_cash + realised_pnl + unrealised_pnl.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

ORDER_COLUMNS = ("decision_id", "event_ts", "symbol", "strategy", "quantity")
MARKET_COLUMNS = ("symbol", "event_ts", "close", "bid", "ask")  # `open` is optional (feature frames lack it)
FILL_COLUMNS = ("decision_id", "event_ts", "symbol", "strategy", "quantity", "price", "fee")
OUTCOME_COLUMNS = ("decision_id", "event_ts", "pnl", "reward")
_OPEN_OUTCOME_COLUMNS = ("decision_id", "symbol", "quantity", "price", "fee", "bars_remaining")


def _utc_ns(values, field: str) -> np.ndarray:
    """Any timestamp column (tz-aware, naive = UTC, ISO strings) -> int64 ns since epoch, UTC."""
    try:
        ts = pd.to_datetime(pd.Series(values), utc=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{field}: cannot parse as a timestamp ({exc})") from exc
    if ts.isna().any():
        raise ValueError(f"{field}: missing timestamp at row {int(np.flatnonzero(ts.isna())[0])}")
    return _ns(ts)


def _ns(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)


def _require_columns(frame: pd.DataFrame, required, what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{what}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}")


def _first_bad(mask: np.ndarray, values: np.ndarray, field: str, rule: str) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise ValueError(f"{field}: {rule}, got {values[i]!r} at row {i}")


def _empty(columns) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


class PaperLedger:
    def __init__(self, initial_cash: float, fee_bps: float = 1.0, slippage_bps: float = 0.5,
                 default_spread_bps: float = 2.0, reward_horizon_bars: int = 15,
                 max_curve_points: int = 100_000):
        for name, value in (("initial_cash", initial_cash), ("fee_bps", fee_bps),
                            ("slippage_bps", slippage_bps), ("default_spread_bps", default_spread_bps)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        if not (isinstance(reward_horizon_bars, int) and reward_horizon_bars >= 1):
            raise ValueError(f"reward_horizon_bars: must be an int >= 1, got {reward_horizon_bars!r}")
        if not (isinstance(max_curve_points, int) and max_curve_points >= 2):
            raise ValueError(f"max_curve_points: must be an int >= 2, got {max_curve_points!r}")
        self.initial_cash = float(initial_cash)
        self.fee_bps = float(fee_bps)
        self.slippage_bps = float(slippage_bps)
        self.default_spread_bps = float(default_spread_bps)
        self.reward_horizon_bars = reward_horizon_bars
        self.max_curve_points = max_curve_points

        self.cash = self.initial_cash
        self.realised_pnl = 0.0
        self.positions: dict[str, float] = {}
        self.avg_cost: dict[str, float] = {}
        self.prices: dict[str, float] = {}
        self.position_strategy: dict[str, str] = {}
        self.halted = False
        self.rejected_while_halted = 0
        self.cancelled_count = 0
        self.last_cancel_reason = ""
        # Every id ever accepted (filled, pending or cancelled): the idempotency guarantee. It grows by
        # one short string per decision; prune it in the caller if decisions run into the tens of millions.
        self._seen: set[str] = set()
        self._submit_seq = 0
        self._pending = self._empty_pending()
        self._open_outcomes = _empty(_OPEN_OUTCOME_COLUMNS)
        self._last_ts: dict[str, int] = {}  # per symbol, ns since epoch, to refuse out-of-order rows
        self._last_ts_any: int | None = None
        # Equity curve: one point per market row; when it exceeds max_curve_points every other point
        # is dropped and the sampling stride doubles, so it stays bounded and evenly spaced in rows.
        self._curve_ts: list[int] = []
        self._curve_equity: list[float] = []
        self._curve_stride = 1
        self._rows_seen = 0

    # --- orders -----------------------------------------------------------------------------

    @staticmethod
    def _empty_pending() -> pd.DataFrame:
        return pd.DataFrame({
            "decision_id": pd.Series(dtype=object), "event_ts": pd.Series(dtype="datetime64[ns, UTC]"),
            "symbol": pd.Series(dtype=object), "strategy": pd.Series(dtype=object),
            "quantity": pd.Series(dtype=float), "seq": pd.Series(dtype=np.int64),
        })

    def submit(self, orders: pd.DataFrame) -> int:
        """Queue orders for the next row of their symbol; returns how many were newly accepted.

        Ids already accepted (or repeated within the batch) are ignored, so a retried batch never
        double-fills. While halted nothing is accepted (and the ids are not remembered, so the same
        decision may be resubmitted after `resume`).
        """
        _require_columns(orders, ORDER_COLUMNS, "orders")
        if len(orders) == 0:
            return 0
        ids = orders["decision_id"].to_numpy(object)
        _first_bad(np.array([not (isinstance(v, str) and v) for v in ids]), ids, "decision_id", "must be a non-empty str")
        symbols = orders["symbol"].to_numpy(object)
        _first_bad(np.array([not (isinstance(v, str) and v) for v in symbols]), symbols, "symbol", "must be a non-empty str")
        strategies = orders["strategy"].to_numpy(object)
        _first_bad(np.array([not isinstance(v, str) for v in strategies]), strategies, "strategy", "must be a str")
        qty = pd.to_numeric(orders["quantity"], errors="coerce").to_numpy(float)
        _first_bad(~np.isfinite(qty) | (qty == 0), orders["quantity"].to_numpy(object), "quantity",
                   "must be a finite non-zero number (drop zero-size decisions before submitting)")
        ts = pd.Series(pd.to_datetime(_utc_ns(orders["event_ts"].to_numpy(), "event_ts"), utc=True))
        if self.halted:
            self.rejected_while_halted += len(orders)
            return 0
        # Set membership per id: Series.isin(set) would copy the whole (growing) seen-set every call.
        seen = np.fromiter((i in self._seen for i in ids), dtype=bool, count=len(ids))
        fresh = ~pd.Series(ids).duplicated().to_numpy() & ~seen
        if not fresh.any():
            return 0
        n_new = int(fresh.sum())
        new = pd.DataFrame({
            "decision_id": ids[fresh], "event_ts": ts[fresh].reset_index(drop=True), "symbol": symbols[fresh],
            "strategy": strategies[fresh], "quantity": qty[fresh],
            "seq": np.arange(self._submit_seq, self._submit_seq + n_new, dtype=np.int64),
        })
        self._submit_seq += n_new
        self._seen.update(new["decision_id"].tolist())
        self._pending = new if self._pending.empty else pd.concat([self._pending, new], ignore_index=True)
        return n_new

    def cancel_all(self, reason: str) -> list[str]:
        """Cancel every pending (unfilled) order; their ids stay remembered, so a retry cannot revive them."""
        if not (isinstance(reason, str) and reason):
            raise ValueError(f"reason: must be a non-empty str, got {reason!r}")
        ids = self._pending["decision_id"].tolist()
        self._pending = self._empty_pending()
        self.cancelled_count += len(ids)
        self.last_cancel_reason = reason
        return ids

    def halt(self) -> None:
        """Stop filling and accepting orders. Pending orders stay queued: call cancel_all too if they are stale."""
        self.halted = True

    def resume(self) -> None:
        self.halted = False

    @property
    def pending_ids(self) -> list[str]:
        return self._pending["decision_id"].tolist()

    # --- market ------------------------------------------------------------------------------

    def _market_arrays(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        _require_columns(frame, MARKET_COLUMNS, "market frame")
        ts_all = _utc_ns(frame["event_ts"].to_numpy(), "event_ts")
        order = np.argsort(ts_all, kind="stable")
        symbols = frame["symbol"].to_numpy(object)[order]
        _first_bad(np.array([not (isinstance(v, str) and v) for v in symbols]), symbols, "symbol", "must be a non-empty str")
        ts_ns = ts_all[order]
        close = frame["close"].to_numpy(float)[order]
        bid = frame["bid"].to_numpy(float)[order]
        ask = frame["ask"].to_numpy(float)[order]
        opn = frame["open"].to_numpy(float)[order] if "open" in frame.columns else np.full(len(frame), np.nan)
        quoted = np.isfinite(bid) & np.isfinite(ask)
        _first_bad(quoted & ((bid <= 0) | (ask < bid)), ask, "ask", "must be >= bid > 0")
        mid = np.where(quoted, (bid + ask) / 2.0, np.nan)
        ref = np.where(np.isfinite(opn), opn, np.where(quoted, mid, close))
        mark = np.where(np.isfinite(close), close, mid)
        _first_bad(~(mark > 0), close, "close", "must be > 0 (or bid/ask given) to mark to market")
        _first_bad(~(ref > 0), opn, "open", "must be > 0 (or bid/ask/close given) to fill at")
        half_spread = np.where(quoted, (ask - bid) / 2.0, ref * self.default_spread_bps / 2e4)
        # Out-of-order rows of a symbol would move marks backwards and break the bar counting of outcomes.
        first_idx = pd.Series(np.arange(len(symbols))).groupby(symbols).first()
        for sym, i in first_idx.items():
            last = self._last_ts.get(sym)
            if last is not None and ts_ns[i] < last:
                raise ValueError(f"event_ts: {pd.Timestamp(ts_ns[i], tz='UTC')} for symbol {sym!r} is earlier than "
                                 f"the last processed row {pd.Timestamp(last, tz='UTC')}")
        return {"symbol": symbols, "ts_ns": ts_ns, "ref": ref, "mark": mark, "half_spread": half_spread}

    def on_market(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Fill due orders, mark to market, and emit outcomes that reached the reward horizon."""
        m = self._market_arrays(frame)
        n = len(m["symbol"])
        if n == 0:
            return {"fills": _empty(FILL_COLUMNS), "outcomes": _empty(OUTCOME_COLUMNS)}
        sym_idx = pd.Series(m["symbol"]).groupby(m["symbol"]).cumcount().to_numpy()

        fills = self._match_fills(m) if not self.halted else None
        if fills is None or fills.empty:
            fills = pd.DataFrame({c: [] for c in FILL_COLUMNS} | {"row": np.array([], dtype=np.int64)})
        cash_before = self.cash
        positions_before = dict(self.positions)
        self._book_fills(fills)
        self._append_equity(m, fills, cash_before, positions_before)

        for sym, i in pd.Series(np.arange(n)).groupby(m["symbol"]).last().items():
            self.prices[sym] = float(m["mark"][i])
            self._last_ts[sym] = int(m["ts_ns"][i])
        self._last_ts_any = int(m["ts_ns"][-1])
        outcomes = self._mature_outcomes(m, sym_idx, fills)

        out_fills = fills.assign(event_ts=pd.to_datetime(m["ts_ns"][fills["row"].to_numpy(np.int64)], utc=True))
        return {"fills": out_fills[list(FILL_COLUMNS)].reset_index(drop=True), "outcomes": outcomes}

    def _match_fills(self, m: dict[str, np.ndarray]) -> pd.DataFrame | None:
        if self._pending.empty:
            return None
        rows = pd.DataFrame({"event_ts": pd.to_datetime(m["ts_ns"], utc=True), "symbol": m["symbol"],
                             "row": np.arange(len(m["symbol"]), dtype=np.int64)})
        pending = self._pending.sort_values(["event_ts", "seq"], kind="stable")
        # merge_asof forward with exact matches off = the first row of the same symbol strictly after the order.
        matched = pd.merge_asof(pending, rows, on="event_ts", by="symbol", direction="forward",
                                allow_exact_matches=False)
        hit = matched["row"].notna().to_numpy()
        self._pending = pending.loc[~hit].sort_values("seq").reset_index(drop=True)
        fills = matched.loc[hit].copy()
        if fills.empty:
            return fills
        fills["row"] = fills["row"].astype(np.int64)
        fills = fills.sort_values(["row", "seq"], kind="stable").reset_index(drop=True)
        r = fills["row"].to_numpy()
        q = fills["quantity"].to_numpy(float)
        ref = m["ref"][r]
        # Buys pay up and sells receive less: half the spread plus slippage, both against the trader.
        price = ref + np.sign(q) * (m["half_spread"][r] + ref * self.slippage_bps / 1e4)
        fills["price"] = price
        fills["fee"] = np.abs(q * price) * self.fee_bps / 1e4
        return fills

    def _book_fills(self, fills: pd.DataFrame) -> None:
        # A Python loop over fills only (not market rows): average-cost accounting is path-dependent.
        for sym, strategy, q, price, fee in zip(fills["symbol"], fills["strategy"], fills["quantity"].to_numpy(float),
                                                fills["price"].to_numpy(float), fills["fee"].to_numpy(float)):
            pos = self.positions.get(sym, 0.0)
            avg = self.avg_cost.get(sym, 0.0)
            self.cash -= q * price + fee
            self.realised_pnl -= fee
            if pos == 0.0 or np.sign(pos) == np.sign(q):
                new_pos = pos + q
                avg = (pos * avg + q * price) / new_pos
            else:
                closed = min(abs(q), abs(pos))
                self.realised_pnl += closed * (price - avg) * np.sign(pos)
                new_pos = pos + q
                if abs(q) > abs(pos):
                    avg = price  # flipped: the remainder opened at this fill's price
                elif new_pos == 0.0:
                    avg = 0.0
            if new_pos == 0.0:
                self.positions.pop(sym, None)
                self.avg_cost.pop(sym, None)
            else:
                self.positions[sym] = float(new_pos)
                self.avg_cost[sym] = float(avg)
            self.position_strategy[sym] = strategy

    def _append_equity(self, m: dict[str, np.ndarray], fills: pd.DataFrame, cash_before: float,
                       positions_before: dict[str, float]) -> None:
        n = len(m["symbol"])
        symbols = sorted(set(m["symbol"]) | set(positions_before) | set(fills["symbol"]))
        code = {s: j for j, s in enumerate(symbols)}
        sym_code = np.array([code[s] for s in m["symbol"]], dtype=np.int64)
        marks = np.full((n + 1, len(symbols)), np.nan)
        marks[0] = [self.prices.get(s, np.nan) if s in positions_before else np.nan for s in symbols]
        marks[1 + np.arange(n), sym_code] = m["mark"]
        marks = pd.DataFrame(marks).ffill().to_numpy()[1:]
        delta = np.zeros((n, len(symbols)))
        rows = fills["row"].to_numpy(np.int64)
        q = fills["quantity"].to_numpy(float)
        np.add.at(delta, (rows, np.array([code[s] for s in fills["symbol"]], dtype=np.int64)), q)
        pos = np.array([positions_before.get(s, 0.0) for s in symbols]) + np.cumsum(delta, axis=0)
        flows = np.bincount(rows, weights=-(q * fills["price"].to_numpy(float)) - fills["fee"].to_numpy(float),
                            minlength=n)
        cash = cash_before + np.cumsum(flows)
        with np.errstate(invalid="ignore"):
            equity = cash + np.where(pos != 0.0, pos * marks, 0.0).sum(axis=1)

        keep = (self._rows_seen + np.arange(n)) % self._curve_stride == 0
        self._rows_seen += n
        self._curve_ts.extend(m["ts_ns"][keep].tolist())
        self._curve_equity.extend(equity[keep].tolist())
        while len(self._curve_ts) > self.max_curve_points:
            # Points sit at row numbers that are multiples of the stride, so [::2] keeps multiples of 2*stride.
            self._curve_ts = self._curve_ts[::2]
            self._curve_equity = self._curve_equity[::2]
            self._curve_stride *= 2

    def _mature_outcomes(self, m: dict[str, np.ndarray], sym_idx: np.ndarray, fills: pd.DataFrame) -> pd.DataFrame:
        rows = fills["row"].to_numpy(np.int64)
        new = pd.DataFrame({
            "decision_id": fills["decision_id"].to_numpy(object), "symbol": fills["symbol"].to_numpy(object),
            "quantity": fills["quantity"].to_numpy(float), "price": fills["price"].to_numpy(float),
            "fee": fills["fee"].to_numpy(float),
            # the fill row is bar 0; the outcome is marked on the horizon-th later row of the symbol
            "due": sym_idx[rows] + self.reward_horizon_bars,
        })
        carried = self._open_outcomes.assign(due=self._open_outcomes["bars_remaining"].to_numpy(np.int64) - 1)
        carried = carried.drop(columns="bars_remaining")
        book = new if carried.empty else (carried if new.empty else pd.concat([carried, new], ignore_index=True))
        if book.empty:
            return _empty(OUTCOME_COLUMNS)
        lookup = pd.Series(np.arange(len(sym_idx)), index=pd.MultiIndex.from_arrays([m["symbol"], sym_idx]))
        at = lookup.reindex(pd.MultiIndex.from_arrays([book["symbol"].to_numpy(object),
                                                       book["due"].to_numpy(np.int64)])).to_numpy()
        done = ~np.isnan(at)
        counts = pd.Series(m["symbol"]).value_counts()
        still = book.loc[~done]
        self._open_outcomes = pd.DataFrame({
            **{c: still[c].to_numpy() for c in ("decision_id", "symbol", "quantity", "price", "fee")},
            "bars_remaining": (still["due"].to_numpy(np.int64)
                               - still["symbol"].map(counts).fillna(0).to_numpy(np.int64) + 1),
        })
        hit = book.loc[done]
        r = at[done].astype(np.int64)
        q = hit["quantity"].to_numpy(float)
        price = hit["price"].to_numpy(float)
        pnl = q * (m["mark"][r] - price) - hit["fee"].to_numpy(float)
        return pd.DataFrame({
            "decision_id": hit["decision_id"].to_numpy(object),
            "event_ts": pd.to_datetime(m["ts_ns"][r], utc=True),
            "pnl": pnl,
            "reward": pnl / (np.abs(q) * price),
        }).sort_values("event_ts", kind="stable").reset_index(drop=True)

    # --- views -------------------------------------------------------------------------------

    @property
    def unrealised_pnl(self) -> float:
        return float(sum(q * (self.prices[s] - self.avg_cost[s]) for s, q in self.positions.items()))

    @property
    def equity(self) -> float:
        return float(self.cash + sum(q * self.prices[s] for s, q in self.positions.items()))

    def snapshot(self) -> dict[str, Any]:
        return {
            "ts": None if self._last_ts_any is None else pd.Timestamp(self._last_ts_any, tz="UTC"),
            "equity": self.equity,
            "cash": float(self.cash),
            "realised_pnl": float(self.realised_pnl),
            "unrealised_pnl": self.unrealised_pnl,
            "positions": dict(self.positions),
            "prices": dict(self.prices),
            "position_strategy": dict(self.position_strategy),
        }

    def equity_curve(self) -> pd.DataFrame:
        return pd.DataFrame({"ts": pd.to_datetime(np.asarray(self._curve_ts, dtype=np.int64), utc=True),
                             "equity": np.asarray(self._curve_equity, dtype=float)})

    # --- persistence -------------------------------------------------------------------------

    def state_dict(self, include_curve: bool = True) -> dict[str, Any]:
        pending = self._pending
        return {
            "config": {"initial_cash": self.initial_cash, "fee_bps": self.fee_bps, "slippage_bps": self.slippage_bps,
                       "default_spread_bps": self.default_spread_bps, "reward_horizon_bars": self.reward_horizon_bars,
                       "max_curve_points": self.max_curve_points},
            "cash": float(self.cash), "realised_pnl": float(self.realised_pnl),
            "positions": dict(self.positions), "avg_cost": dict(self.avg_cost), "prices": dict(self.prices),
            "position_strategy": dict(self.position_strategy),
            "halted": self.halted, "rejected_while_halted": self.rejected_while_halted,
            "cancelled_count": self.cancelled_count, "last_cancel_reason": self.last_cancel_reason,
            "seen": sorted(self._seen), "submit_seq": self._submit_seq,
            "pending": {
                "decision_id": pending["decision_id"].tolist(),
                "event_ts": _ns(pending["event_ts"]).tolist(),
                "symbol": pending["symbol"].tolist(), "strategy": pending["strategy"].tolist(),
                "quantity": pending["quantity"].astype(float).tolist(), "seq": pending["seq"].astype(int).tolist(),
            },
            "open_outcomes": {c: (self._open_outcomes[c].astype(float).tolist() if c in ("quantity", "price", "fee")
                                  else self._open_outcomes[c].astype(int).tolist() if c == "bars_remaining"
                                  else self._open_outcomes[c].tolist()) for c in _OPEN_OUTCOME_COLUMNS},
            "last_ts": dict(self._last_ts), "last_ts_any": self._last_ts_any,
            "curve_ts": list(self._curve_ts) if include_curve else [],
            "curve_equity": list(self._curve_equity) if include_curve else [],
            "curve_stride": self._curve_stride, "rows_seen": self._rows_seen,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PaperLedger:
        ledger = cls(**state["config"])
        ledger.cash = float(state["cash"])
        ledger.realised_pnl = float(state["realised_pnl"])
        ledger.positions = {k: float(v) for k, v in state["positions"].items()}
        ledger.avg_cost = {k: float(v) for k, v in state["avg_cost"].items()}
        ledger.prices = {k: float(v) for k, v in state["prices"].items()}
        ledger.position_strategy = dict(state["position_strategy"])
        ledger.halted = bool(state["halted"])
        ledger.rejected_while_halted = int(state["rejected_while_halted"])
        ledger.cancelled_count = int(state["cancelled_count"])
        ledger.last_cancel_reason = state["last_cancel_reason"]
        ledger._seen = set(state["seen"])
        ledger._submit_seq = int(state["submit_seq"])
        p = state["pending"]
        if p["decision_id"]:
            ledger._pending = pd.DataFrame({
                "decision_id": np.array(p["decision_id"], dtype=object),
                "event_ts": pd.to_datetime(np.asarray(p["event_ts"], dtype=np.int64), utc=True),
                "symbol": np.array(p["symbol"], dtype=object), "strategy": np.array(p["strategy"], dtype=object),
                "quantity": np.asarray(p["quantity"], dtype=float), "seq": np.asarray(p["seq"], dtype=np.int64),
            })
        o = state["open_outcomes"]
        if o["decision_id"]:
            ledger._open_outcomes = pd.DataFrame({
                "decision_id": np.array(o["decision_id"], dtype=object), "symbol": np.array(o["symbol"], dtype=object),
                "quantity": np.asarray(o["quantity"], dtype=float), "price": np.asarray(o["price"], dtype=float),
                "fee": np.asarray(o["fee"], dtype=float), "bars_remaining": np.asarray(o["bars_remaining"], dtype=np.int64),
            })
        ledger._last_ts = {k: int(v) for k, v in state["last_ts"].items()}
        ledger._last_ts_any = None if state["last_ts_any"] is None else int(state["last_ts_any"])
        ledger._curve_ts = [int(v) for v in state["curve_ts"]]
        ledger._curve_equity = [float(v) for v in state["curve_equity"]]
        ledger._curve_stride = int(state["curve_stride"])
        ledger._rows_seen = int(state["rows_seen"])
        return ledger
