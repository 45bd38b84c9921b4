"""Torch families: an MLP on the feature frame, and an LSTM over each team's recent games plus weather.

Weights train on `device` and are moved to the CPU afterwards, so predictions and saved artefacts
are the same whichever device trained them. Saved weights are numpy arrays (no torch pickles).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from torch import nn

from edgeray.device import autocast_context, cpu_autocast_runs_lstm, grad_scaler, resolve_precision
from edgeray.sports.models import Progress, SportModel, _report

WEATHER_COLUMNS = ("temperature_f", "wind_mph", "humidity_pct", "dome")
HISTORY_COLUMNS = ("date", "home", "away", "home_score", "away_score", "market_prob_home")
SEQUENCE_FEATURES = ("points_for", "points_against", "won", "is_home", "rest_days", "market_prob", "present")
MAX_REST_DAYS = 14.0  # longer breaks (off-season, first game) all read as "fully rested"


def _train(net: nn.Module, inputs: list[torch.Tensor], y: np.ndarray, params: dict, progress: Progress | None,
           device: str) -> tuple[nn.Module, str]:
    """Mini-batch Adam on binary cross-entropy, forward passes under torch.autocast at params["precision"];
    reports the mean training loss each epoch. Returns (the net on the CPU, the precision used)."""
    precision = resolve_precision(device, params.get("precision", "fp32"), field_name="params.model_params.precision")
    scaler = grad_scaler(device, precision)
    net = net.to(device)
    inputs = [t.to(device) for t in inputs]
    target = torch.as_tensor(y, dtype=torch.float32, device=device)
    optimiser = torch.optim.Adam(net.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(params["seed"])
    n, batch = len(y), params["batch_size"]
    for epoch in range(1, params["epochs"] + 1):
        net.train()
        order = torch.randperm(n, generator=generator).to(device)
        total, seen = 0.0, 0
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            if len(idx) < 2:  # batch norm cannot normalise a single row
                continue
            optimiser.zero_grad()
            with autocast_context(device, precision):
                loss = loss_fn(net(*[t[idx] for t in inputs]), target[idx])
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        _report(progress, epoch, params["epochs"], {"loss": total / max(seen, 1)})
    return net.cpu().float().eval(), precision  # fp32 weights: predictions do not depend on the training precision


def _predict(net: nn.Module, inputs: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        logits = net(*[torch.as_tensor(a, dtype=torch.float32) for a in inputs])
    return torch.sigmoid(logits).numpy().astype(float)


def _weights(net: nn.Module) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def _load_weights(net: nn.Module, weights: dict) -> nn.Module:
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    return net.eval()


# ----------------------------------------------------------------------------------------------
# MLP

class MLPNet(nn.Module):
    def __init__(self, n_inputs: int, hidden_layers: list[int], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for units in hidden_layers:
            layers += [nn.Linear(width, units), nn.BatchNorm1d(units), nn.ReLU(), nn.Dropout(dropout)]
            width = units
        layers.append(nn.Linear(width, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(1)


class MLPModel(SportModel):
    family = "neural"
    uses_torch = True

    def _build(self, n_inputs: int) -> MLPNet:
        torch.manual_seed(self.params["seed"])
        return MLPNet(n_inputs, self.params["hidden_layers"], self.params["dropout"])

    def _fit_base(self, rows, X, y, progress, device):
        self._n_inputs = X.shape[1]
        self._net, self.diagnostics["precision"] = _train(
            self._build(X.shape[1]), [torch.as_tensor(X, dtype=torch.float32)], y, self.params, progress, device)

    def _predict_base(self, rows, X):
        return _predict(self._net, [X])

    def _model_state(self):
        return {"n_inputs": self._n_inputs, "weights": _weights(self._net)}

    def _restore_model_state(self, state):
        self._n_inputs = state["n_inputs"]
        self._net = _load_weights(self._build(self._n_inputs), state["weights"])


# ----------------------------------------------------------------------------------------------
# Team sequences (point-in-time)

def _day_number(dates) -> np.ndarray:
    return ((pd.to_datetime(pd.Series(dates), utc=True) - pd.Timestamp("1970-01-01", tz="UTC"))
            // pd.Timedelta(days=1)).to_numpy(dtype=np.int64)


def team_game_log(history: pd.DataFrame) -> pd.DataFrame:
    """One row per (team, played game) from that team's side, sorted by team then date.

    Only games with both scores are results; rest days count from the team's previous played game.
    """
    scores = history[["home_score", "away_score"]].apply(pd.to_numeric, errors="coerce")
    played = history.loc[np.isfinite(scores.to_numpy(dtype=float)).all(axis=1)]
    market = pd.to_numeric(played["market_prob_home"], errors="coerce") if "market_prob_home" in played else \
        pd.Series(np.nan, index=played.index)
    day = _day_number(played["date"])
    home_pts, away_pts = played["home_score"].astype(float).to_numpy(), played["away_score"].astype(float).to_numpy()
    sides = [
        pd.DataFrame({"team": played["home"].astype(str).to_numpy(), "day": day, "points_for": home_pts,
                      "points_against": away_pts, "is_home": 1.0, "market_prob": market.to_numpy()}),
        pd.DataFrame({"team": played["away"].astype(str).to_numpy(), "day": day, "points_for": away_pts,
                      "points_against": home_pts, "is_home": 0.0, "market_prob": 1.0 - market.to_numpy()}),
    ]
    log = pd.concat(sides, ignore_index=True).sort_values(["team", "day"], kind="mergesort").reset_index(drop=True)
    log["won"] = (log["points_for"] > log["points_against"]) + 0.5 * (log["points_for"] == log["points_against"])
    rest = log.groupby("team", sort=False)["day"].diff().fillna(MAX_REST_DAYS).clip(0, MAX_REST_DAYS)
    log["rest_days"] = rest / 7.0
    log["market_prob"] = log["market_prob"].fillna(0.5)
    return log


def team_sequences(history: pd.DataFrame, games: pd.DataFrame, seq_len: int, points_mean: float,
                   points_std: float) -> tuple[np.ndarray, np.ndarray]:
    """(home_seq, away_seq), each (len(games), seq_len, len(SEQUENCE_FEATURES)).

    Row i holds the team's last `seq_len` played games with a date strictly before games.date[i],
    oldest first, left-padded with zeros (the `present` flag marks real games).
    """
    log = team_game_log(history)
    stats = np.column_stack([
        (log["points_for"].to_numpy() - points_mean) / points_std,
        (log["points_against"].to_numpy() - points_mean) / points_std,
        log["won"].to_numpy(dtype=float), log["is_home"].to_numpy(), log["rest_days"].to_numpy(),
        log["market_prob"].to_numpy(), np.ones(len(log)),
    ]).astype(np.float32)
    teams = pd.Index(pd.unique(pd.concat([log["team"], games["home"].astype(str), games["away"].astype(str)])))
    # Searchsorted on a (team, day) key finds each team's games before a day in one vectorised pass.
    game_day = _day_number(games["date"])
    origin = min(int(log["day"].min()) if len(log) else 0, int(game_day.min()) if len(game_day) else 0)
    stride = np.int64(10_000_000)  # > any span of days, so one team's keys never reach the next team's
    keys = teams.get_indexer(log["team"]).astype(np.int64) * stride + (log["day"].to_numpy() - origin)
    out = []
    for side in ("home", "away"):
        code = teams.get_indexer(games[side].astype(str)).astype(np.int64)
        end = np.searchsorted(keys, code * stride + (game_day - origin), side="left")  # strictly earlier days
        first = np.searchsorted(keys, code * stride, side="left")
        idx = end[:, None] - seq_len + np.arange(seq_len)[None, :]
        valid = idx >= first[:, None]
        seq = stats[np.clip(idx, 0, max(len(stats) - 1, 0))] if len(stats) else np.zeros((*idx.shape, stats.shape[1]),
                                                                                         np.float32)
        out.append(np.where(valid[..., None], seq, 0.0).astype(np.float32))
    return out[0], out[1]


# ----------------------------------------------------------------------------------------------
# LSTM + weather

class LSTMWeatherNet(nn.Module):
    def __init__(self, n_seq: int, n_static: int, units: int, layers: int, dropout: float, head_units: int):
        super().__init__()
        # One encoder for both teams: form means the same thing whichever side a team is on.
        self.encoder = nn.LSTM(n_seq, units, num_layers=layers, dropout=dropout if layers > 1 else 0.0,
                               batch_first=True)
        self.head = nn.Sequential(nn.Linear(2 * units + n_static, head_units), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(head_units, 1))

    def forward(self, home_seq, away_seq, static):
        h_home, h_away = self._encode(home_seq), self._encode(away_seq)
        return self.head(torch.cat([h_home, h_away, static], dim=1)).squeeze(1)

    def _encode(self, seq):
        if seq.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}[torch.get_autocast_dtype("cpu")]
            if not cpu_autocast_runs_lstm(precision):  # the LSTM alone in fp32; the head stays autocast
                with torch.autocast(device_type="cpu", enabled=False):
                    return self.encoder(seq.float())[1][0][-1]
        return self.encoder(seq)[1][0][-1]


class LSTMWeatherModel(SportModel):
    """LSTM over both teams' last N games, plus weather (with missing flags) and the f_ features."""

    family = "lstm"
    uses_torch = True
    required_columns = ("home", "away", "home_score", "away_score")

    def fit(self, frame, progress=None, device="cpu"):
        if isinstance(frame, pd.DataFrame) and set(HISTORY_COLUMNS) - {"market_prob_home"} <= set(frame.columns):
            self._history = self._history_rows(frame)  # ties and the calibration slice are history too
        return super().fit(frame, progress, device)

    @staticmethod
    def _history_rows(frame: pd.DataFrame) -> pd.DataFrame:
        cols = [c for c in HISTORY_COLUMNS if c in frame.columns]
        rows = frame[cols].copy()
        rows["date"] = pd.to_datetime(rows["date"], utc=True)
        for col in ("home_score", "away_score", "market_prob_home"):
            rows[col] = pd.to_numeric(rows[col], errors="coerce") if col in rows else np.nan
        return rows.reset_index(drop=True)

    def _combined_history(self, rows: pd.DataFrame) -> pd.DataFrame:
        combined = pd.concat([self._history, self._history_rows(rows)], ignore_index=True)
        # The frame's own copy of a game wins over the one stored at fit time.
        return combined.drop_duplicates(["date", "home", "away"], keep="last")

    def _weather(self, rows: pd.DataFrame) -> np.ndarray:
        raw = np.column_stack([pd.to_numeric(rows[c], errors="coerce").to_numpy(dtype=float) if c in rows
                               else np.full(len(rows), np.nan) for c in WEATHER_COLUMNS])
        missing = np.isnan(raw)
        scaled = np.where(missing, 0.0, (raw - self._weather_mean) / self._weather_std)
        return np.column_stack([scaled, missing.astype(float)])

    def _inputs(self, rows: pd.DataFrame, X: np.ndarray) -> list[np.ndarray]:
        home_seq, away_seq = team_sequences(self._combined_history(rows), rows, self.params["seq_len"],
                                            self._points_mean, self._points_std)
        return [home_seq, away_seq, np.column_stack([self._weather(rows), X]).astype(np.float32)]

    def _build(self, n_static: int) -> LSTMWeatherNet:
        torch.manual_seed(self.params["seed"])
        p = self.params
        return LSTMWeatherNet(len(SEQUENCE_FEATURES), n_static, p["units"], p["layers"], p["dropout"], p["head_units"])

    def _fit_base(self, rows, X, y, progress, device):
        points = np.r_[rows["home_score"].to_numpy(dtype=float), rows["away_score"].to_numpy(dtype=float)]
        points = points[np.isfinite(points)]
        self._points_mean = float(points.mean()) if len(points) else 0.0
        self._points_std = float(points.std()) if len(points) and points.std() > 0 else 1.0
        raw = np.column_stack([pd.to_numeric(rows[c], errors="coerce").to_numpy(dtype=float) if c in rows
                               else np.full(len(rows), np.nan) for c in WEATHER_COLUMNS])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)  # an all-NaN weather column (non-NFL) is expected
            mean, std = np.nanmean(raw, 0), np.nanstd(raw, 0)
        self._weather_mean = np.nan_to_num(mean, nan=0.0)
        self._weather_std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        inputs = self._inputs(rows, X)
        self._n_static = inputs[2].shape[1]
        self._net, self.diagnostics["precision"] = _train(
            self._build(self._n_static), [torch.as_tensor(a) for a in inputs], y, self.params, progress, device)
        precision = self.diagnostics["precision"]
        # What the LSTM itself ran in: fp32 where this CPU has no lower-precision LSTM kernel (see _encode).
        self.diagnostics["lstm_precision"] = (
            "fp32" if str(device).startswith("cpu") and not cpu_autocast_runs_lstm(precision) else precision)

    def _predict_base(self, rows, X):
        return _predict(self._net, self._inputs(rows, X))

    def _model_state(self):
        return {"weights": _weights(self._net), "n_static": self._n_static, "history": self._history,
                "points": [self._points_mean, self._points_std],
                "weather": [self._weather_mean.tolist(), self._weather_std.tolist()]}

    def _restore_model_state(self, state):
        self._n_static, self._history = state["n_static"], state["history"]
        self._points_mean, self._points_std = state["points"]
        self._weather_mean, self._weather_std = (np.asarray(v, dtype=float) for v in state["weather"])
        self._net = _load_weights(self._build(self._n_static), state["weights"])
