"""Paper execution actor: owns the ledger (positions, cash, PnL); fills orders on the next bar."""
from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import ray

from edgeray.config import LedgerConfig
from edgeray.ledger import PaperLedger
from edgeray.statefile import load_state, save_state
from edgeray.watermark import SymbolWatermark

CURVE_EVERY = 50  # steps between equity-curve saves


@ray.remote(num_cpus=0, max_concurrency=4)  # threads: the kill switch's halt must not queue behind a batch
class ExecutorActor:
    def __init__(self, cfg: dict, state_path: str):
        c = LedgerConfig.model_validate(cfg)
        self.state_path = Path(state_path)
        self.curve_path = self.state_path.with_suffix(".curve.parquet")
        self.state_path.parent.mkdir(parents=True, exist_ok=True)  # a run whose every row is rejected still saves a curve
        state = load_state(self.state_path)
        if state:  # a restart resumes the ledger from its last checkpoint
            if self.curve_path.exists():
                curve = pd.read_parquet(self.curve_path)
                state["ledger"]["curve_ts"] = pd.to_datetime(curve["ts"], utc=True).astype("int64").tolist()
                state["ledger"]["curve_equity"] = curve["equity"].tolist()
            self.ledger = PaperLedger.from_state(state["ledger"])
        else:
            self.ledger = PaperLedger(c.initial_cash, c.fee_bps, c.slippage_bps, c.default_spread_bps, c.reward_horizon_bars)
        self._done = SymbolWatermark((state or {}).get("done_until"))
        self._lock = threading.Lock()
        self._steps = 0

    def _checkpoint(self) -> None:
        # The equity curve (up to 100k points) would make every per-batch checkpoint megabytes, so
        # it is saved every CURVE_EVERY steps beside the state; a restart loses at most that many
        # chart points, never a position, fill or cash figure.
        save_state(self.state_path, {"ledger": self.ledger.state_dict(include_curve=False),
                                     "done_until": self._done.state_dict()})
        self._steps += 1
        if self._steps % CURVE_EVERY == 0:
            self._save_curve()

    def _save_curve(self) -> None:
        self.curve_path.parent.mkdir(parents=True, exist_ok=True)
        self.ledger.equity_curve().to_parquet(self.curve_path, index=False)

    def step(self, orders: pd.DataFrame | None, market: pd.DataFrame) -> dict:
        """Submit the previous batch's approved orders, then fill them against this batch's bars
        (strictly later than each order) and mark to market. Rows already processed before a
        restart are skipped, so a retried call neither refills nor double-counts."""
        with self._lock:
            submitted = self.ledger.submit(orders) if orders is not None and len(orders) else 0
            fresh = self._done.fresh(market)
            result = self.ledger.on_market(fresh) if len(fresh) else {"fills": pd.DataFrame(), "outcomes": pd.DataFrame()}
            self._done.advance(fresh)
            self._checkpoint()
            return {**result, "submitted": submitted, "snapshot": self.ledger.snapshot()}

    def submit(self, orders: pd.DataFrame) -> int:
        """Orders released outside the stream (a human approval of a held decision)."""
        with self._lock:
            n = self.ledger.submit(orders)
            self._checkpoint()
            return n

    def halt(self, reason: str) -> list[str]:
        with self._lock:
            self.ledger.halt()
            cancelled = self.ledger.cancel_all(reason)
            self._checkpoint()
            return cancelled

    def resume(self) -> None:
        with self._lock:
            self.ledger.resume()
            self._checkpoint()

    def snapshot(self) -> dict:
        with self._lock:
            return self.ledger.snapshot()

    def equity_curve(self) -> pd.DataFrame:
        with self._lock:
            self._save_curve()
            return self.ledger.equity_curve()
