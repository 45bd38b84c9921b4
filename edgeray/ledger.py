"""Paper executor and ledger: fills approved orders against later market rows and keeps the books.

No look-ahead: an order stamped t waits for the first row of its symbol stamped strictly after t
and fills at that row's open (or its mid for quote data), never at the row it was decided on.
Within a row, fills happen first (at the open) and marks second (at the close), so the equity
point of a row already includes that row's fills.

Accounting is average-cost: adding to a position moves the average price, reducing or flipping
realises (price - average) on the closed units. `realised_pnl` is net of fees, so at every point
equity == initial_cash + realised_pnl + unrealised_pnl.

`on_market` runs once per micro-batch of the decision loop (often 1-10 rows), so the books are kept
columnar: pending orders and open outcomes are dicts of numpy arrays, a batch is grouped by symbol
with one dict over its few symbols, and pandas is touched only to read the input columns and to
build the returned frames. tests/ledger_reference.py keeps the earlier pandas implementation
(merge_asof, groupby, DataFrame.ffill); tests/test_ledger_fastpath.py requires identical results.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from edgeray.columns import Columns, column

ORDER_COLUMNS = ("decision_id", "event_ts", "symbol", "strategy", "quantity")
MARKET_COLUMNS = ("symbol", "event_ts", "close", "bid", "ask")  # `open` is optional (feature frames lack it)
FILL_COLUMNS = ("decision_id", "event_ts", "symbol", "strategy", "quantity", "price", "fee")
OUTCOME_COLUMNS = ("decision_id", "event_ts", "pnl", "reward")
_OPEN_OUTCOME_COLUMNS = ("decision_id", "symbol", "quantity", "price", "fee", "bars_remaining")
# Pending orders: event_ts is int64 ns since epoch (UTC); the state file stores the same integers.
_PENDING_DTYPES = {"decision_id": object, "event_ts": np.int64, "symbol": object, "strategy": object,
                   "quantity": float, "seq": np.int64}
_OPEN_OUTCOME_DTYPES = {"decision_id": object, "symbol": object, "quantity": float, "price": float, "fee": float,
                        "bars_remaining": np.int64}
_UTC = pd.DatetimeTZDtype("ns", "UTC")
_NAT = np.iinfo(np.int64).min  # NaT as int64


def _utc_ns(column, field: str) -> np.ndarray:
    """Any timestamp column (tz-aware, naive = UTC, ISO strings) -> int64 ns since epoch, UTC."""
    dtype = getattr(column, "dtype", None)
    ns = None
    if isinstance(dtype, pd.DatetimeTZDtype) and dtype.unit == "ns":
        ns = column.array.asi8  # tz-aware data is stored as UTC instants whatever the display zone
    elif isinstance(dtype, np.dtype) and dtype == np.dtype("datetime64[ns]"):
        ns = np.asarray(column).view(np.int64)  # naive = UTC, the same reading pd.to_datetime(utc=True) gives
    elif dtype == object and len(column):
        # tz-aware Timestamps in an object column (e.g. `frame["event_ts"].to_numpy()[rows]`): .value is the
        # UTC instant in ns whatever the Timestamp's unit. Anything else (strings, naive, NaT) parses below.
        values = column.to_numpy() if isinstance(column, pd.Series) else np.asarray(column, dtype=object)
        if all(type(v) is pd.Timestamp and v.tzinfo is not None for v in values):
            try:
                ns = np.array([v.value for v in values], dtype=np.int64)
            except OverflowError:  # outside the ns range: let pd.to_datetime report it as before
                ns = None
    if ns is not None:
        missing = ns == _NAT
        if missing.any():
            raise ValueError(f"{field}: missing timestamp at row {int(np.flatnonzero(missing)[0])}")
        return ns
    values = column.to_numpy() if isinstance(column, pd.Series) else column
    try:
        ts = pd.to_datetime(pd.Series(values), utc=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{field}: cannot parse as a timestamp ({exc})") from exc
    if ts.isna().any():
        raise ValueError(f"{field}: missing timestamp at row {int(np.flatnonzero(ts.isna())[0])}")
    return _ns(ts)


def _ns(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)


def _utc_index(ns: np.ndarray) -> pd.DatetimeIndex:
    # equals pd.to_datetime(ns, utc=True) (same dtype and tz object) at a quarter of the cost
    return pd.DatetimeIndex(ns, dtype=_UTC)


def _require_columns(frame: pd.DataFrame | Columns, required, what: str) -> None:
    if not isinstance(frame, (pd.DataFrame, Columns)):
        raise ValueError(f"{what}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}")


def _first_bad(mask: np.ndarray, values, field: str, rule: str) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        values = values() if callable(values) else values  # built only for the error message
        raise ValueError(f"{field}: {rule}, got {values[i]!r} at row {i}")


def _check_nonempty_str(values: np.ndarray, field: str) -> None:
    # Check the distinct values (few symbols, 1000s of rows); only a failure pays for the per-row scan
    # that names the first bad row.
    try:
        ok = all(isinstance(v, str) and v for v in set(values.tolist()))
    except TypeError:  # unhashable values: certainly not strings
        ok = False
    if not ok:
        _first_bad(np.array([not (isinstance(v, str) and v) for v in values]), values, field, "must be a non-empty str")


def _empty(columns) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _take(book: dict[str, np.ndarray], idx) -> dict[str, np.ndarray]:
    return {c: v[idx] for c, v in book.items()}


def _empty_book(dtypes: dict) -> dict[str, np.ndarray]:
    return {c: np.empty(0, dtype=d) for c, d in dtypes.items()}


# The empty frames on_market returns, built once the way the pandas implementation built them (their
# dtypes differ by case and callers may compare them) and copied per call: a copy costs ~10 us, a
# DataFrame construction 10x that.
_NO_ROWS_FILLS = _empty(FILL_COLUMNS)  # an empty batch: every column object
_NO_ROWS_OUTCOMES = _empty(OUTCOME_COLUMNS)  # no open outcome and no fill: every column object
_NO_FILLS = pd.DataFrame({c: [] for c in FILL_COLUMNS}).assign(  # rows but no fill: event_ts typed, the rest object
    event_ts=pd.to_datetime(np.array([], dtype=np.int64), utc=True))[list(FILL_COLUMNS)].reset_index(drop=True)
_NO_OUTCOMES = pd.DataFrame({  # open outcomes but none due in this batch
    "decision_id": np.array([], dtype=object), "event_ts": pd.to_datetime(np.array([], dtype=np.int64), utc=True),
    "pnl": np.array([], dtype=float), "reward": np.array([], dtype=float)}).reset_index(drop=True)


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
        # Both books are kept in the order the state file lists them: pending by seq, open outcomes
        # oldest first (that order is also the tie-break of outcomes maturing on the same row).
        self._pending = _empty_book(_PENDING_DTYPES)
        self._open_outcomes = _empty_book(_OPEN_OUTCOME_DTYPES)
        self._last_ts: dict[str, int] = {}  # per symbol, ns since epoch, to refuse out-of-order rows
        self._last_ts_any: int | None = None
        # Equity curve: one point per market row; when it exceeds max_curve_points every other point
        # is dropped and the sampling stride doubles, so it stays bounded and evenly spaced in rows.
        self._curve_ts: list[int] = []
        self._curve_equity: list[float] = []
        self._curve_stride = 1
        self._rows_seen = 0

    # --- orders -----------------------------------------------------------------------------

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
        _check_nonempty_str(symbols, "symbol")
        strategies = orders["strategy"].to_numpy(object)
        _first_bad(np.array([not isinstance(v, str) for v in strategies]), strategies, "strategy", "must be a str")
        raw_qty = orders["quantity"]
        if isinstance(raw_qty.dtype, np.dtype) and raw_qty.dtype.kind in "fiub":
            qty = raw_qty.to_numpy(float)  # what pd.to_numeric would return for a plain numeric column
        else:
            qty = pd.to_numeric(raw_qty, errors="coerce").to_numpy(float)
        _first_bad(~np.isfinite(qty) | (qty == 0), lambda: raw_qty.to_numpy(object), "quantity",
                   "must be a finite non-zero number (drop zero-size decisions before submitting)")
        ts = _utc_ns(orders["event_ts"], "event_ts")
        if self.halted:
            self.rejected_while_halted += len(orders)
            return 0
        # First occurrence of each id not accepted before (the same as ~Series.duplicated() & ~seen).
        fresh = np.zeros(len(ids), dtype=bool)
        batch: set[str] = set()
        for i, d in enumerate(ids.tolist()):
            if d not in self._seen and d not in batch:
                fresh[i] = True
            batch.add(d)
        n_new = int(fresh.sum())
        if n_new == 0:
            return 0
        new = {"decision_id": ids[fresh], "event_ts": ts[fresh], "symbol": symbols[fresh],
               "strategy": strategies[fresh], "quantity": qty[fresh],
               "seq": np.arange(self._submit_seq, self._submit_seq + n_new, dtype=np.int64)}
        self._submit_seq += n_new
        self._seen.update(new["decision_id"].tolist())
        self._pending = {c: np.concatenate([self._pending[c], new[c]]) for c in _PENDING_DTYPES}
        return n_new

    def cancel_all(self, reason: str) -> list[str]:
        """Cancel every pending (unfilled) order; their ids stay remembered, so a retry cannot revive them."""
        if not (isinstance(reason, str) and reason):
            raise ValueError(f"reason: must be a non-empty str, got {reason!r}")
        ids = self._pending["decision_id"].tolist()
        self._pending = _empty_book(_PENDING_DTYPES)
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

    def _market_arrays(self, frame: pd.DataFrame) -> dict[str, Any]:
        _require_columns(frame, MARKET_COLUMNS, "market frame")
        ts_all = _utc_ns(frame["event_ts"], "event_ts")
        order = np.argsort(ts_all, kind="stable")
        symbols = column(frame, "symbol", object)[order]
        _check_nonempty_str(symbols, "symbol")
        ts_ns = ts_all[order]
        close = column(frame, "close", float)[order]
        bid = column(frame, "bid", float)[order]
        ask = column(frame, "ask", float)[order]
        opn = column(frame, "open", float)[order] if "open" in frame.columns else np.full(len(frame), np.nan)
        quoted = np.isfinite(bid) & np.isfinite(ask)
        _first_bad(quoted & ((bid <= 0) | (ask < bid)), ask, "ask", "must be >= bid > 0")
        mid = np.where(quoted, (bid + ask) / 2.0, np.nan)
        ref = np.where(np.isfinite(opn), opn, np.where(quoted, mid, close))
        mark = np.where(np.isfinite(close), close, mid)
        _first_bad(~(mark > 0), close, "close", "must be > 0 (or bid/ask given) to mark to market")
        _first_bad(~(ref > 0), opn, "open", "must be > 0 (or bid/ask/close given) to fill at")
        half_spread = np.where(quoted, (ask - bid) / 2.0, ref * self.default_spread_bps / 2e4)
        n = len(symbols)
        # Group the (ts-sorted) rows by symbol: `uniq` sorted like a pandas groupby's keys, `code` the
        # row's index into it, `grp` the rows grouped by symbol and still in ts order within a symbol,
        # `starts`/`counts` each symbol's slice of `grp`, `sym_idx` a row's position among its symbol's
        # rows (groupby cumcount).
        uniq = sorted(set(symbols.tolist()))
        code_of = {s: j for j, s in enumerate(uniq)}
        code = np.fromiter(map(code_of.__getitem__, symbols.tolist()), dtype=np.int64, count=n)
        counts = np.bincount(code, minlength=len(uniq))
        grp = np.argsort(code, kind="stable")
        starts = np.cumsum(counts) - counts
        sym_idx = np.empty(n, dtype=np.int64)
        sym_idx[grp] = np.arange(n) - np.repeat(starts, counts)
        first = grp[starts]
        last = grp[starts + counts - 1] if n else first
        # Out-of-order rows of a symbol would move marks backwards and break the bar counting of outcomes.
        for sym, i in zip(uniq, first.tolist()):
            prev = self._last_ts.get(sym)
            if prev is not None and ts_ns[i] < prev:
                raise ValueError(f"event_ts: {pd.Timestamp(ts_ns[i], tz='UTC')} for symbol {sym!r} is earlier than "
                                 f"the last processed row {pd.Timestamp(prev, tz='UTC')}")
        return {"symbol": symbols, "ts_ns": ts_ns, "ref": ref, "mark": mark, "half_spread": half_spread,
                "uniq": uniq, "code_of": code_of, "code": code, "counts": counts, "grp": grp, "starts": starts,
                "sym_idx": sym_idx, "last": last}

    def on_market(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Fill due orders, mark to market, and emit outcomes that reached the reward horizon."""
        m = self._market_arrays(frame)
        n = len(m["symbol"])
        if n == 0:
            return {"fills": _NO_ROWS_FILLS.copy(), "outcomes": _NO_ROWS_OUTCOMES.copy()}

        fills = self._match_fills(m) if not self.halted else None
        cash_before = self.cash
        positions_before = dict(self.positions)
        if fills is not None:
            self._book_fills(fills)
        self._append_equity(m, fills, cash_before, positions_before)

        ts_ns, mark = m["ts_ns"], m["mark"]
        for sym, i in zip(m["uniq"], m["last"].tolist()):  # each symbol's last row of the batch
            self.prices[sym] = float(mark[i])
            self._last_ts[sym] = int(ts_ns[i])
        self._last_ts_any = int(ts_ns[-1])
        outcomes = self._mature_outcomes(m, fills)

        if fills is None:
            return {"fills": _NO_FILLS.copy(), "outcomes": outcomes}
        out = pd.DataFrame({"decision_id": fills["decision_id"], "event_ts": _utc_index(ts_ns[fills["row"]]),
                            "symbol": fills["symbol"], "strategy": fills["strategy"], "quantity": fills["quantity"],
                            "price": fills["price"], "fee": fills["fee"]}, copy=False)
        return {"fills": out, "outcomes": outcomes}

    def _match_fills(self, m: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """Take the pending orders due in this batch off the book; None when none is."""
        pending = self._pending
        k = len(pending["seq"])
        if k == 0:
            return None
        # Per symbol, the first row stamped strictly after the order is searchsorted(side="right") on that
        # symbol's ts-sorted stamps: the same row merge_asof(direction="forward", allow_exact_matches=False,
        # by="symbol") picked, including the first of several rows sharing that stamp.
        code = np.fromiter((m["code_of"].get(s, -1) for s in pending["symbol"].tolist()), dtype=np.int64, count=k)
        row = np.full(k, -1, dtype=np.int64)
        ts_ns, grp, starts, counts = m["ts_ns"], m["grp"], m["starts"], m["counts"]
        for j in set(code.tolist()) - {-1}:
            sel = np.flatnonzero(code == j)
            rows_j = grp[starts[j]:starts[j] + counts[j]]
            at = np.searchsorted(ts_ns[rows_j], pending["event_ts"][sel], side="right")
            ok = at < counts[j]
            row[sel[ok]] = rows_j[at[ok]]
        hit = row >= 0
        rest = _take(pending, ~hit)
        self._pending = _take(rest, np.argsort(rest["seq"], kind="stable"))  # seq order, as the state lists it
        if not hit.any():
            return None
        idx = np.flatnonzero(hit)
        idx = idx[np.lexsort((pending["seq"][idx], row[idx]))]  # by row, then submit order
        fills = {c: pending[c][idx] for c in ("decision_id", "symbol", "strategy", "quantity", "seq")}
        r = fills["row"] = row[idx]
        q = fills["quantity"]
        ref = m["ref"][r]
        # Buys pay up and sells receive less: half the spread plus slippage, both against the trader.
        price = ref + np.sign(q) * (m["half_spread"][r] + ref * self.slippage_bps / 1e4)
        fills["price"] = price
        fills["fee"] = np.abs(q * price) * self.fee_bps / 1e4
        return fills

    def _book_fills(self, fills: dict[str, np.ndarray]) -> None:
        # A Python loop over fills only (not market rows): average-cost accounting is path-dependent.
        for sym, strategy, q, price, fee in zip(fills["symbol"].tolist(), fills["strategy"].tolist(),
                                                fills["quantity"].tolist(), fills["price"].tolist(),
                                                fills["fee"].tolist()):
            pos = self.positions.get(sym, 0.0)
            avg = self.avg_cost.get(sym, 0.0)
            self.cash -= q * price + fee
            self.realised_pnl -= fee
            # q != 0 (validated) and pos != 0 here, so comparing signs is comparing `> 0`
            if pos == 0.0 or (pos > 0) == (q > 0):
                new_pos = pos + q
                avg = (pos * avg + q * price) / new_pos
            else:
                closed = min(abs(q), abs(pos))
                self.realised_pnl += closed * (price - avg) * (1.0 if pos > 0 else -1.0)
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

    def _append_equity(self, m: dict[str, Any], fills: dict[str, np.ndarray] | None, cash_before: float,
                       positions_before: dict[str, float]) -> None:
        n = len(m["symbol"])
        uniq = m["uniq"]
        if fills is None and not positions_before:
            # nothing held and nothing traded: every point is the cash (the general formula adds zeros)
            equity = np.full(n, cash_before + 0.0 + 0.0)
        else:
            # Columns are the sorted union of the batch's and the held symbols (the fills' are the batch's).
            held_elsewhere = positions_before.keys() - m["code_of"].keys()
            symbols = sorted(set(uniq) | held_elsewhere) if held_elsewhere else uniq
            if symbols is uniq:
                sym_code = m["code"]
            else:
                col = {s: j for j, s in enumerate(symbols)}
                sym_code = np.array([col[s] for s in uniq], dtype=np.int64)[m["code"]]
            width = len(symbols)
            marks = np.full((n + 1, width), np.nan)
            marks[0] = [self.prices.get(s, np.nan) if s in positions_before else np.nan for s in symbols]
            marks[1 + np.arange(n), sym_code] = m["mark"]
            # Forward fill down each column (DataFrame.ffill): take the latest non-NaN row at or above.
            latest = np.where(np.isnan(marks), 0, np.arange(n + 1)[:, None])
            np.maximum.accumulate(latest, axis=0, out=latest)
            marks = marks[latest, np.arange(width)][1:]
            if fills is None:
                rows, q = np.empty(0, dtype=np.int64), np.empty(0)
                price = fee = q
            else:
                rows, q, price, fee = fills["row"], fills["quantity"], fills["price"], fills["fee"]
            delta = np.zeros((n, width))
            np.add.at(delta, (rows, sym_code[rows]), q)
            pos = np.array([positions_before.get(s, 0.0) for s in symbols]) + np.cumsum(delta, axis=0)
            flows = np.bincount(rows, weights=-(q * price) - fee, minlength=n)
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

    def _mature_outcomes(self, m: dict[str, Any], fills: dict[str, np.ndarray] | None) -> pd.DataFrame:
        carried = self._open_outcomes
        if fills is None and len(carried["decision_id"]) == 0:
            return _NO_ROWS_OUTCOMES.copy()
        # `due`: the outcome's row as an index among its symbol's rows in this batch. A carried outcome
        # needs bars_remaining - 1 more rows; a new one is marked on the horizon-th row after its fill row
        # (bar 0). Carried outcomes come first, then this batch's fills in fill order.
        due = carried["bars_remaining"] - 1
        book = {c: carried[c] for c in ("decision_id", "symbol", "quantity", "price", "fee")}
        if fills is not None:
            due = np.concatenate([due, m["sym_idx"][fills["row"]] + self.reward_horizon_bars])
            book = {c: np.concatenate([book[c], fills[c]]) for c in book}
        size = len(due)
        code = np.fromiter((m["code_of"].get(s, -1) for s in book["symbol"].tolist()), dtype=np.int64, count=size)
        present = code >= 0
        count = np.where(present, m["counts"][code], 0)  # rows of the outcome's symbol in this batch
        done = present & (due >= 0) & (due < count)
        still = ~done
        self._open_outcomes = {**_take(book, still), "bars_remaining": due[still] - count[still] + 1}
        if not done.any():
            return _NO_OUTCOMES.copy()
        r = m["grp"][m["starts"][code[done]] + due[done]]
        q = book["quantity"][done]
        price = book["price"][done]
        pnl = q * (m["mark"][r] - price) - book["fee"][done]
        reward = pnl / (np.abs(q) * price)
        ts = m["ts_ns"][r]
        order = np.argsort(ts, kind="stable")  # by row stamp; ties keep the book order
        return pd.DataFrame({"decision_id": book["decision_id"][done][order], "event_ts": _utc_index(ts[order]),
                             "pnl": pnl[order], "reward": reward[order]}, copy=False)

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
        pending, opened = self._pending, self._open_outcomes
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
            # .tolist() gives plain str / int / float, as the DataFrame-based books wrote them
            "pending": {c: pending[c].tolist() for c in _PENDING_DTYPES},
            "open_outcomes": {c: opened[c].tolist() for c in _OPEN_OUTCOME_COLUMNS},
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
            ledger._pending = {c: np.array(p[c], dtype=d) for c, d in _PENDING_DTYPES.items()}
        o = state["open_outcomes"]
        if o["decision_id"]:
            ledger._open_outcomes = {c: np.array(o[c], dtype=d) for c, d in _OPEN_OUTCOME_DTYPES.items()}
        ledger._last_ts = {k: int(v) for k, v in state["last_ts"].items()}
        ledger._last_ts_any = None if state["last_ts_any"] is None else int(state["last_ts_any"])
        ledger._curve_ts = [int(v) for v in state["curve_ts"]]
        ledger._curve_equity = [float(v) for v in state["curve_equity"]]
        ledger._curve_stride = int(state["curve_stride"])
        ledger._rows_seen = int(state["rows_seen"])
        return ledger
