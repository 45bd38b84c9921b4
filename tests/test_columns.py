"""The decision path's columnar batches (edgeray.columns.Columns): what they hold, and that the kernel decides the
same on them as on the DataFrames backtests and the HTTP path give it: every audit record, order and checkpoint."""
from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pandas as pd
import pytest

from edgeray.columns import Columns, column, take
from edgeray.config import PipelineConfig
from edgeray.deadletter import DeadLetterStore
from edgeray.features.market import MarketFeatureState
from edgeray.generator import generate_bars
from edgeray.ingest import IngestCore
from tests.conftest import pipeline_config


def ingested(tmp_path, n_bars: int = 800, symbols=("SYN-A", "SYN-B")) -> list:
    core = IngestCore(DeadLetterStore(tmp_path / "dl.jsonl"), lateness=pd.Timedelta(seconds=0))
    bars = generate_bars(symbols, n_bars=n_bars, seed=11).drop(columns=["source"])
    released = []
    for start in range(0, len(bars), 7):  # odd-sized micro-batches, as a paced replay releases them
        released += core.ingest("bar", bars.iloc[start:start + 7], "test").released
    return released + core.flush()


def test_columns_from_an_arrow_batch_equal_its_dataframe(tmp_path):
    batch = ingested(tmp_path, n_bars=20)[0]
    cols = Columns.from_arrow(batch)
    assert len(cols) == batch.num_rows and cols.columns == batch.schema.names
    assert cols["event_ts"].dtype == np.dtype("datetime64[ns]") and cols["close"].dtype == np.float64
    pd.testing.assert_frame_equal(cols.to_frame(), batch.to_pandas())
    back = Columns.from_frame(batch.to_pandas())
    for name in cols.columns:
        assert np.array_equal(back[name], cols[name]), name
    again = pickle.loads(pickle.dumps(cols, protocol=5))  # between actors
    assert isinstance(again, Columns) and len(again) == len(cols)
    pd.testing.assert_frame_equal(again.to_frame(), cols.to_frame())


def test_take_concat_and_assign_keep_rows_and_columns_together():
    cols = Columns({"symbol": np.array(["A", "B", "A"], dtype=object), "close": np.array([1.0, 2.0, 3.0]),
                    "event_ts": np.array([1, 2, 3], dtype="datetime64[ns]")})
    mask = np.array([True, False, True])
    kept = cols.take(mask)
    assert len(kept) == 2 and kept["close"].tolist() == [1.0, 3.0]
    assert len(cols.take(np.array([2]))) == 1 and take(cols, np.array([1, 0]))["symbol"].tolist() == ["B", "A"]
    joined = Columns.concat([kept, cols])
    assert len(joined) == 5 and joined["close"].tolist() == [1.0, 3.0, 1.0, 2.0, 3.0]
    assert cols.assign(flag=1)["flag"].tolist() == [1, 1, 1]
    assert column(cols, "close", np.float32).dtype == np.float32
    assert str(cols.to_frame()["event_ts"].dtype) == "datetime64[ns, UTC]"
    with pytest.raises(ValueError, match="every column must hold"):
        Columns({"a": np.zeros(2), "b": np.zeros(3)})


def _records_json(records: list[dict]) -> list[str]:
    return [json.dumps({**r, "event_ts": pd.Timestamp(r["event_ts"]).isoformat()}, sort_keys=True, default=str)
            for r in records]


def test_the_kernel_decides_the_same_on_columns_as_on_dataframes(tmp_path):
    """Two kernels, one fed the streamer's Columns and one the same rows as DataFrames: the same audit records
    (decisions, fills, outcomes, risk and veto verdicts, shadows) and the same checkpoint, batch by batch."""
    from actors.feature_streamer import decision_frame
    from actors.meta_controller import policy_window
    from policies.kernel import DecisionKernel

    def kernel(name: str) -> DecisionKernel:
        cfg = PipelineConfig.model_validate(pipeline_config(
            tmp_path / name, "columns", decisions={"enabled": True, "min_order_notional": 0.0, "edge_model_warmup_rows": 400,
                                                   "edge_model_activation_lag_rows": 200,
                                                   "shadows": [{"name": "momentum-only", "strategy": "momentum"}]}))
        return DecisionKernel(cfg, policy_window(None))

    market = MarketFeatureState()
    on_columns, on_frames = kernel("columns"), kernel("frames")
    orders, explained, shadows_seen = 0, 0, []
    for batch in ingested(tmp_path):
        events = Columns.from_arrow(batch)
        rows = decision_frame(events, market.update_columns(events, "bar"), arrived_ns=1, sent_ns=2)
        a, b = on_columns.step(rows), on_frames.step(rows.to_frame())
        shadows_a = on_columns.engine.shadow_step(a.batch) if a.batch is not None else []
        shadows_b = on_frames.engine.shadow_step(b.batch) if b.batch is not None else []
        assert _records_json(a.records + shadows_a) == _records_json(b.records + shadows_b)
        if a.batch is not None:
            pd.testing.assert_frame_equal(a.batch.orders, b.batch.orders)
        orders += a.orders
        explained += sum(bool(r["payload"].get("explanation")) for r in a.records if r["stage"] == "decision")
        shadows_seen += shadows_a
    assert orders > 0  # risk and veto saw orders on both paths
    assert explained > 0  # the edge model's confidence and SHAP explanations ran on Columns too
    assert any(r["stage"].startswith("shadow:") for r in shadows_seen)
    assert _state_json(on_columns) == _state_json(on_frames)


def _state_json(kernel) -> str:
    """The checkpoint as JSON, without the veto gate's wall-clock times (holds, deadlines, reviews) and the edge model's file (each kernel
    has its own run folder)."""
    state = kernel.state_dict()
    assert state["engine"].pop("edge_model").endswith("edge_model.joblib")
    return re.sub(r'"(decided_at|held_at|deadline)": "[^"]*"', r'"\1": ""', json.dumps(state, sort_keys=True, default=str))
