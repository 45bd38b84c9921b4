"""The paper bet book: stakes held until a result settles them, and the snapshot the risk engine reads."""
import pandas as pd
import pytest

from edgeray.betbook import BetBook, bet_key
from edgeray.risk import RiskEngine, RiskLimits

T0 = pd.Timestamp("2026-07-05T12:00:00Z")


def bets(*rows):
    return pd.DataFrame([{"decision_id": d, "event_ts": T0 + pd.Timedelta(minutes=i), "symbol": g, "side": s,
                          "bookmaker": "bookA", "decimal_odds": o, "stake": k} for i, (d, g, s, o, k) in enumerate(rows)])


def test_bets_settle_win_loss_and_push_with_their_own_odds():
    book = BetBook(10_000)
    book.place(bets(("d1", "g1", "a", 2.5, 100.0), ("d2", "g2", "b", 1.8, 200.0), ("d3", "g3", "a", 3.0, 50.0)))
    assert book.snapshot()["positions"] == {"g1:a": 100.0, "g2:b": 200.0, "g3:a": 50.0}
    assert book.available == 10_000 - 350.0
    results = pd.DataFrame({"symbol": ["g1", "g2", "g3"], "event_ts": [T0 + pd.Timedelta(hours=5)] * 3,
                            "score_a": [5, 5, 2], "score_b": [3, 3, 2]})
    records = book.settle(results)
    by_id = {r["decision_id"]: r["payload"] for r in records}
    assert by_id["d1"]["pnl"] == pytest.approx(150.0) and by_id["d1"]["result"] == "won"  # 100 x (2.5 - 1)
    assert by_id["d2"]["pnl"] == pytest.approx(-200.0) and by_id["d2"]["result"] == "lost"  # b lost 3-5
    assert by_id["d3"]["pnl"] == 0.0 and by_id["d3"]["result"] == "push"
    assert book.equity == pytest.approx(10_000 - 50.0)
    assert book.snapshot()["positions"] == {} and book.settled == 3


def test_unsettled_games_stay_open_and_state_round_trips():
    book = BetBook(1_000)
    book.place(bets(("d1", "g1", "a", 2.0, 10.0), ("d2", "g2", "a", 2.0, 20.0)))
    book.settle(pd.DataFrame({"symbol": ["g1"], "event_ts": [T0 + pd.Timedelta(hours=4)], "score_a": [1], "score_b": [0]}))
    again = BetBook.from_state(book.state_dict())
    assert again.snapshot() == book.snapshot()
    assert again.open_stakes() == {bet_key("g2", "a"): 20.0}


def test_risk_engine_reads_open_stakes_as_exposure():
    """The gross limit counts stakes not yet settled: a bet that would take it over is resized to fit."""
    book = BetBook(100_000)
    book.place(bets(("d1", "g1", "a", 2.0, 900.0)))
    risk = RiskEngine(RiskLimits(max_gross_exposure=1_000, max_position_notional=1_000, concentration_min_gross=1_000, max_symbol_concentration=1,
                                 max_strategy_concentration=1, vol_cap_notional=1e9), 100_000)
    risk.on_ledger(book.snapshot())
    verdict = risk.check(pd.DataFrame({"decision_id": ["d2"], "event_ts": [T0 + pd.Timedelta(hours=1)],
                                       "symbol": [bet_key("g2", "b")], "strategy": ["value_bet"], "quantity": [500.0],
                                       "price": [1.0], "volatility": [float("nan")]}))
    assert verdict["verdict"].iloc[0] == "resize" and verdict["quantity"].iloc[0] == pytest.approx(100.0)


def test_bad_bets_are_refused_naming_the_value():
    with pytest.raises(ValueError, match="decimal_odds=1.0"):
        BetBook(100).place(bets(("d1", "g1", "a", 1.0, 10.0)))
    with pytest.raises(ValueError, match="bankroll"):
        BetBook(0)
