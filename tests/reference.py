"""Independent pandas re-statement of the market feature definitions, the reference for tests."""
from __future__ import annotations

import numpy as np
import pandas as pd

from edgeray.features.market import MarketFeatureSpec


def reference_features(bars: pd.DataFrame, spec: MarketFeatureSpec = MarketFeatureSpec()) -> pd.DataFrame:
    """`bars`: one symbol, ordered, columns close, high, low, volume, bid, ask."""
    close = bars["close"].astype(float)
    logc = np.log(close)
    out = pd.DataFrame(index=bars.index)
    for h in spec.return_horizons:
        out[f"ret_{h}"] = logc.diff(h)
    out[f"rv_{spec.vol_window}"] = logc.diff().rolling(spec.vol_window).std()
    out[f"mom_{spec.momentum_window}"] = close / close.rolling(spec.momentum_window).mean() - 1
    vol = bars["volume"].astype(float)
    out[f"volume_ratio_{spec.volume_window}"] = vol / vol.rolling(spec.volume_window).mean()
    mid = (bars["bid"] + bars["ask"]) / 2
    spread = (bars["ask"] - bars["bid"]) / mid * 1e4
    out["spread_bps"] = spread
    sd = spread.rolling(spec.spread_window).std()
    out[f"spread_z_{spec.spread_window}"] = ((spread - spread.rolling(spec.spread_window).mean()) / sd).where(sd > 0)
    tp = (bars["high"] + bars["low"] + close) / 3
    vwap = (tp * vol).rolling(spec.vwap_window).sum() / vol.rolling(spec.vwap_window).sum()
    out[f"vwap_dist_{spec.vwap_window}"] = close / vwap - 1
    return out[spec.names]
