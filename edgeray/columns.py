"""A micro-batch on the decision path as plain columns: name -> 1-D numpy array, every array the same length.

Why not a DataFrame: at 1,000 bars/s a micro-batch holds a handful of rows, and pandas' fixed costs were most of
its work: an Arrow batch -> DataFrame conversion ~0.34 ms, building the decision frame ~0.3 ms, each column read
~1-14 us (tens a batch), a pickle between actors twice a dict's. From Arrow these columns cost ~0.02 ms.

The stages read columns through `column` (and `edgeray.regime.column_array`), which take a DataFrame too, so the
same strategies, regimes and ledger run on backtests' DataFrames and on the live loop's Columns. Timestamps are
datetime64[ns] arrays in UTC (Arrow's timestamp[ns, tz=UTC] without the tz, which numpy lacks); `to_frame`
gives them their UTC dtype back.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd


class Columns:
    __slots__ = ("_data", "_n")

    def __init__(self, data: Mapping[str, np.ndarray], n: int | None = None):
        self._data = dict(data)
        lengths = {len(v) for v in self._data.values()}
        if n is None:
            n = next(iter(lengths)) if lengths else 0
        if lengths - {n}:
            raise ValueError(f"columns: every column must hold {n} rows, got lengths {sorted(lengths)}")
        self._n = n

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_arrow(cls, batch) -> Columns:
        """An Arrow record batch's columns (numbers without a copy; strings as object arrays)."""
        return cls({name: col.to_numpy(zero_copy_only=False) for name, col in zip(batch.schema.names, batch.columns)},
                   batch.num_rows)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Columns:
        return cls({name: plain(frame[name]) for name in frame.columns}, len(frame))

    @classmethod
    def concat(cls, parts: list[Columns]) -> Columns:
        """Row-wise, in order; every part holds the same columns."""
        if len(parts) == 1:
            return parts[0]
        names = parts[0].columns
        return cls({name: np.concatenate([p[name] for p in parts]) for name in names}, sum(len(p) for p in parts))

    # -- reading ---------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        return self._data[name]

    def __contains__(self, name: object) -> bool:  # a column name, as `name in frame` for a DataFrame
        return name in self._data

    def __len__(self) -> int:
        return self._n

    @property
    def columns(self) -> list[str]:
        return list(self._data)

    @property
    def empty(self) -> bool:
        return self._n == 0

    def get(self, name: str, default=None):
        return self._data.get(name, default)

    def take(self, rows: np.ndarray) -> Columns:
        """The rows at `rows` (positions or a boolean mask), as a new batch."""
        taken = {name: values[rows] for name, values in self._data.items()}
        n = int(np.count_nonzero(rows)) if np.asarray(rows).dtype == bool else len(rows)
        return Columns(taken, n)

    def assign(self, **columns) -> Columns:
        """A new batch with these columns added or replaced (scalars are broadcast)."""
        added = {k: (np.asarray(v) if np.ndim(v) else np.full(self._n, v)) for k, v in columns.items()}
        return Columns({**self._data, **added}, self._n)

    def select(self, names: Iterable[str]) -> Columns:
        return Columns({name: self._data[name] for name in names}, self._n)

    def to_frame(self) -> pd.DataFrame:
        data = {name: (pd.DatetimeIndex(values, tz="UTC") if values.dtype.kind == "M" else values)
                for name, values in self._data.items()}
        return pd.DataFrame(data, index=pd.RangeIndex(self._n))

    def __reduce__(self):  # between actors: the dict of arrays, which pickles at half a DataFrame's cost
        return (Columns, (self._data, self._n))

    def __repr__(self) -> str:
        return f"Columns({self._n} rows: {', '.join(self._data)})"


def plain(values: pd.Series | pd.api.extensions.ExtensionArray) -> np.ndarray:
    """A DataFrame column (or its array) as a numpy array; tz-aware timestamps as datetime64[ns] in UTC."""
    array = values.array if isinstance(values, pd.Series) else values
    if isinstance(array, pd.arrays.DatetimeArray):
        return array.tz_convert("UTC").tz_localize(None).as_unit("ns").to_numpy() if array.tz is not None \
            else array.as_unit("ns").to_numpy()
    return values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)


def column(frame: pd.DataFrame | Columns, name: str, dtype=None) -> np.ndarray:
    """Column `name` of a DataFrame or Columns as a numpy array (of `dtype` when given)."""
    values = frame[name]
    if isinstance(values, np.ndarray):
        return values if dtype is None or values.dtype == dtype else values.astype(dtype)
    return values.to_numpy(dtype) if dtype is not None else values.to_numpy()


def take(frame: pd.DataFrame | Columns, rows: np.ndarray) -> pd.DataFrame | Columns:
    """Rows of either kind of batch, renumbered from 0 for a DataFrame."""
    if isinstance(frame, Columns):
        return frame.take(rows)
    return frame[rows].reset_index(drop=True) if np.asarray(rows).dtype == bool else frame.iloc[rows].reset_index(drop=True)


def utc_stamps(values: np.ndarray | pd.Series, rows: np.ndarray) -> pd.DatetimeIndex | np.ndarray:
    """The timestamps at `rows` as a tz-aware UTC column for an order frame, from either kind of column."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        return pd.DatetimeIndex(values[rows], tz="UTC")
    return values.to_numpy()[rows] if isinstance(values, pd.Series) else values[rows]


def utc_datetimes(values: np.ndarray | pd.Series) -> list:
    """Timestamps as timezone-aware UTC datetimes (what the audit log stores), from either kind of column."""
    if isinstance(values, np.ndarray):
        return pd.DatetimeIndex(values, tz="UTC").to_pydatetime().tolist() if values.dtype.kind == "M" else list(values)
    return list(values.array.to_pydatetime())
