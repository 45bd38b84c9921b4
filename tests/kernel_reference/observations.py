"""Frozen from envs/trading.py LiveObservations.build (2026-12-07), before compact observations."""
from __future__ import annotations

import numpy as np
import pandas as pd

from envs.trading import FEATURE_NAMES, N_ACCOUNT, N_REGIMES, OBS_CLIP, normalise_features


class LiveObservations:
    def __init__(self, window: int):
        self.window = int(window)
        self.obs_dim = self.window * len(FEATURE_NAMES) + N_ACCOUNT + N_REGIMES
        self._history: dict[str, np.ndarray] = {}

    def build(self, frame: pd.DataFrame, regimes: np.ndarray, snapshot: dict) -> np.ndarray:
        missing = [c for c in FEATURE_NAMES if c not in frame.columns]
        if missing:
            raise ValueError(f"frame lacks the policy's feature columns {missing}")
        feats = normalise_features(frame[FEATURE_NAMES].to_numpy(float))
        symbols = frame["symbol"].to_numpy()
        n, k = feats.shape
        out = np.zeros((n, self.obs_dim), dtype=np.float32)
        for symbol in pd.unique(symbols):
            rows = np.flatnonzero(symbols == symbol)
            past = self._history.get(symbol, np.zeros((self.window - 1, k), dtype=np.float32))
            stacked = np.concatenate([past, feats[rows]])
            windows = np.lib.stride_tricks.sliding_window_view(stacked, (self.window, k))[:, 0]
            out[rows, : self.window * k] = windows.reshape(len(rows), -1)
            self._history[symbol] = stacked[len(stacked) - (self.window - 1):]
        equity = float(snapshot.get("equity", 0.0))
        if equity > 0:
            positions, prices = snapshot.get("positions", {}), snapshot.get("prices", {})
            price = frame["close"].to_numpy(float)
            held = np.array([positions.get(s, 0.0) * prices.get(s, p) for s, p in zip(symbols, price)])
            out[:, self.window * k] = held / equity
            out[:, self.window * k + 1] = float(snapshot.get("cash", equity)) / equity
            out[:, self.window * k + 2] = float(snapshot.get("unrealised_pnl", 0.0)) / equity
        out[np.arange(n), self.window * k + N_ACCOUNT + np.asarray(regimes, dtype=np.int64)] = 1.0
        return np.clip(out, -OBS_CLIP, OBS_CLIP)
