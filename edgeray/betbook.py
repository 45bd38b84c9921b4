"""The paper bet book: fixed-odds bets placed by the decision loop, held until their game's result settles them.

The market ledger (`edgeray/ledger.py`) marks positions to the next bar; a bet has no bar: its price is fixed
when it is placed and its value is known only when the game ends. So bets live here, and the risk engine sees
them through the same snapshot shape the ledger gives it: one "position" per (game, side) whose notional is the
open stake (price 1.0), and equity = bankroll + settled PnL (open stakes at cost: a bet is not marked to the
moving line, since a paper book cannot trade out of it).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

BET_COLUMNS = ("decision_id", "event_ts", "symbol", "side", "bookmaker", "decimal_odds", "stake")


def bet_key(game: str, side: str) -> str:
    """The risk engine's symbol for one side of one game."""
    return f"{game}:{side}"


class BetBook:
    def __init__(self, bankroll: float):
        if not np.isfinite(bankroll) or bankroll <= 0:
            raise ValueError(f"bankroll: must be a finite number > 0, got {bankroll!r}")
        self.initial_bankroll = float(bankroll)
        self.realised_pnl = 0.0
        self.open: dict[str, dict[str, Any]] = {}  # decision_id -> the bet, until its game settles
        self.settled = 0
        self.placed = 0
        self.last_ts: pd.Timestamp | None = None
        self.strategy = "value_bet"

    @property
    def equity(self) -> float:
        return self.initial_bankroll + self.realised_pnl

    @property
    def available(self) -> float:
        """Equity not staked on open bets: what new stakes are sized from, so open stakes never exceed equity
        (a stream without results settles nothing, and Kelly fractions of equity would overcommit the book)."""
        return max(0.0, self.equity - sum(bet["stake"] for bet in self.open.values()))

    def place(self, bets: pd.DataFrame) -> list[dict]:
        """Book approved bets; returns one audit record ("bet") per bet."""
        missing = [c for c in BET_COLUMNS if c not in bets]
        if missing:
            raise ValueError(f"bets: missing column(s) {missing}")
        records = []
        for bet in bets[list(BET_COLUMNS)].to_dict("records"):
            stake, odds = float(bet["stake"]), float(bet["decimal_odds"])
            if not (stake > 0 and odds > 1):
                raise ValueError(f"bet {bet['decision_id']!r}: stake must be > 0 and decimal_odds > 1, "
                                 f"got stake={stake!r}, decimal_odds={odds!r}")
            ts = pd.Timestamp(bet["event_ts"])
            self.open[bet["decision_id"]] = {"symbol": str(bet["symbol"]), "side": str(bet["side"]),
                                            "bookmaker": str(bet["bookmaker"]), "decimal_odds": odds, "stake": stake,
                                            "placed_ts": ts.isoformat()}
            self.placed += 1
            self._advance(ts)
            records.append({"decision_id": bet["decision_id"], "stage": "bet", "event_ts": ts,
                            "payload": {"symbol": str(bet["symbol"]), "side": str(bet["side"]),
                                        "bookmaker": str(bet["bookmaker"]), "decimal_odds": odds, "stake": stake}})
        return records

    def settle(self, results: pd.DataFrame) -> list[dict]:
        """Settle the open bets of games with a result (symbol, event_ts, score_a, score_b): a win pays
        stake x (odds - 1), a loss costs the stake, a tie returns it. Returns one "settlement" record per bet."""
        if results.empty or not self.open:
            return []
        by_game = {str(r["symbol"]): r for r in results[["symbol", "event_ts", "score_a", "score_b"]].to_dict("records")}
        records = []
        for decision_id, bet in list(self.open.items()):
            result = by_game.get(bet["symbol"])
            if result is None:
                continue
            a, b = float(result["score_a"]), float(result["score_b"])
            if not (np.isfinite(a) and np.isfinite(b)):
                continue
            won = a > b if bet["side"] == "a" else b > a
            pnl = 0.0 if a == b else (bet["stake"] * (bet["decimal_odds"] - 1.0) if won else -bet["stake"])
            self.realised_pnl += pnl
            self.settled += 1
            del self.open[decision_id]
            ts = pd.Timestamp(result["event_ts"])
            self._advance(ts)
            records.append({"decision_id": decision_id, "stage": "settlement", "event_ts": ts,
                            "payload": {"symbol": bet["symbol"], "side": bet["side"], "pnl": pnl,
                                        "result": "push" if a == b else ("won" if won else "lost")}})
        return records

    def _advance(self, ts: pd.Timestamp) -> None:
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts

    def open_stakes(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for bet in self.open.values():
            key = bet_key(bet["symbol"], bet["side"])
            out[key] = out.get(key, 0.0) + bet["stake"]
        return out

    def snapshot(self) -> dict[str, Any]:
        """The shape RiskEngine.on_ledger reads: open stakes as positions priced 1.0."""
        stakes = self.open_stakes()
        return {"ts": self.last_ts, "equity": self.equity, "positions": stakes, "prices": {k: 1.0 for k in stakes},
                "position_strategy": {k: self.strategy for k in stakes}, "realised_pnl": self.realised_pnl,
                "open_bets": len(self.open), "placed": self.placed, "settled": self.settled}

    def state_dict(self) -> dict[str, Any]:
        return {"initial_bankroll": self.initial_bankroll, "realised_pnl": self.realised_pnl, "open": self.open,
                "settled": self.settled, "placed": self.placed,
                "last_ts": None if self.last_ts is None else self.last_ts.isoformat()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "BetBook":
        book = cls(state["initial_bankroll"])
        book.realised_pnl = float(state["realised_pnl"])
        book.open = {k: dict(v) for k, v in state["open"].items()}
        book.settled, book.placed = int(state["settled"]), int(state["placed"])
        book.last_ts = pd.Timestamp(state["last_ts"]) if state.get("last_ts") else None
        return book
