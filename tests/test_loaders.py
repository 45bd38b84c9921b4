from __future__ import annotations

import pandas as pd
import pytest

from edgeray.events import EventKind
from edgeray.loaders import load_bid_ask_bars, load_ohlcv_bars, load_quote_ticks, load_sports_events
from edgeray.validation import validate
from tests.conftest import shared_file


def test_btc_bars_load_and_all_validate():
    frame = load_ohlcv_bars(shared_file("markets/btc_perp_1m_2022-01.csv"), "BTCUSDT-PERP")
    assert len(frame) == 45_031
    assert validate(EventKind.BAR, frame, {"BTCUSDT-PERP"}).rejected.empty


def test_fx_bid_ask_bars_join_and_crossed_quotes_are_rejected():
    frame = load_bid_ask_bars(shared_file("markets/gbpusd_1m_bid_2012-02.csv"),
                              shared_file("markets/gbpusd_1m_ask_2012-02.csv"), "GBPUSD")
    assert len(frame) == 30_117
    result = validate(EventKind.BAR, frame, {"GBPUSD"})
    # The archive has minutes whose closing ask is below the closing bid; those are rejected, not fixed.
    bid = pd.read_csv(shared_file("markets/gbpusd_1m_bid_2012-02.csv"))
    ask = pd.read_csv(shared_file("markets/gbpusd_1m_ask_2012-02.csv"))
    crossed = int((ask["close"] < bid["close"]).sum())
    assert crossed > 0 and result.rejected["reason"].value_counts().to_dict() == {"ask_below_bid": crossed}


@pytest.mark.parametrize("name, symbol, rows", [("btcusdt_quotes_2021-01-08.parquet", None, 451), ("usdjpy_ticks.csv", "USDJPY", 1000)])
def test_quote_ticks_load(name, symbol, rows):
    frame = load_quote_ticks(shared_file(f"markets/{name}"), symbol)
    result = validate(EventKind.QUOTE, frame)
    assert result.n_accepted == rows and result.rejected.empty


@pytest.mark.parametrize("name, games, impossible", [
    ("ncaab_sbr_closing_2012_2022.csv", 40_889, 2), ("nba_2007_2023.csv", 19_822, 1), ("nfl_sbr_2011_2021.csv", 2_956, 10)])
def test_sports_files_give_odds_and_results_and_impossible_odds_are_rejected(name, games, impossible):
    odds, results = load_sports_events(shared_file(f"sports/{name}"))
    assert len(odds) == len(results) == games
    checked = validate(EventKind.ODDS, odds)
    assert checked.rejected["reason"].value_counts().get("impossible_odds", 0) == impossible
    # Results are stamped after the odds of the same game: no score before the price it settles.
    assert (pd.to_datetime(results["event_ts"], utc=True) > pd.to_datetime(odds["event_ts"], utc=True)).all()


def test_unknown_sports_format_is_a_clear_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="x.csv: fits no sports format"):
        load_sports_events(path)
