"""The Python API in a script (or a notebook cell by cell): replay the shared BTC file through the
decision loop, print one decision the way the specification's Quick Start does, approve what the
veto gate held, and draw the equity curve and that decision's SHAP explanation.

    .venv/bin/python docs/examples/python_api.py [--bars 5000] [--out runs/python_api]

Runs from any folder; needs ../shared/data beside the project for the real file.
"""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from edgeray import Config, DecisionConfig, FeatureStoreConfig, Orchestrator, StreamingConfig
from edgeray.config import SourceConfig
from edgeray.report import plot_equity, plot_explanation
from edgeray.sources import load_source

BTC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "markets" / "btc_perp_1m_2022-01.csv"
CHUNK = 1_000  # rows per process_market_data call: each call returns its rows' decisions once audited


async def main(bars: int, out: Path, namespace: str = "python-api-example") -> dict:
    config = Config(
        namespace=namespace, run_dir=str(out / "run"),
        ingestion=StreamingConfig(symbols=["BTCUSDT-PERP"], batch_size=250),
        feast=FeatureStoreConfig(directory=str(out / "feast"), project=namespace.replace("-", "_"), online_store="sqlite"),
        # A short replay: the confidence model is fitted and used at once (a live loop fits it on a thread and uses it
        # edge_model_activation_lag_rows later, so its fit never stalls the rows queued behind).
        decisions=DecisionConfig(enabled=True, edge_model_warmup_rows=min(3_000, max(200, bars // 3)),
                                 edge_model_activation_lag_rows=0, shadows=[]),
    )
    (_, frame), = load_source(SourceConfig(type="bars", path=str(BTC), symbol="BTCUSDT-PERP"))
    frame = frame.iloc[:bars]
    async with Orchestrator(config) as system:
        decisions = []
        for start in range(0, len(frame), CHUNK):
            decisions += await system.process_market_data(frame.iloc[start:start + CHUNK])
            print(f"decided {len(decisions):,} / {len(frame):,} bars", flush=True)
        for held in await system.pending():  # a human would look at each; the example approves them all
            await system.approve(held["decision_id"])

        explained = [d for d in decisions if d.explanation.method == "shap" and not d.vetoed]
        if explained:
            decision = explained[-1]
            print("Trading Decision:")
            print(f"  Symbol: {decision.symbol}")
            print(f"  Action: {decision.action}")
            print(f"  Position Size: {decision.position_size:.4f}")
            print(f"  Confidence: {decision.confidence:.4f}")
            print(f"  Expected Return: {decision.expected_return:.4f}")
            print(f"  Risk Score: {decision.risk_score:.4f}")
            print(f"  Strategy: {decision.strategy}")
            print(f"  Explanation: {decision.explanation.method}")
            print(f"  Top Features: {[(f.feature, round(f.shap, 4)) for f in decision.explanation.top_features]}")

        status = system.get_system_status()
        print(f"\nSystem Status: {status['status']}")
        print(f"Active Models: {status['active_models']}")
        print(f"Decisions Generated: {status['decisions_generated']}")
        print(f"Daily PnL: {status['daily_pnl']:.4f}")

        charts = {"equity": str(plot_equity(await system.equity_curve(), out / "equity_curve.png"))}
        if explained:
            charts["explanation"] = str(plot_explanation(decision, out / "explanation.png"))
        print(f"charts: {charts}")
        return {"decisions": len(decisions), "charts": charts, "status": status}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=5_000, help="how many bars of the BTC file to replay")
    parser.add_argument("--out", type=Path, default=Path("runs/python_api"), help="where the run and the charts go")
    args = parser.parse_args()
    if not BTC.exists():
        raise SystemExit(f"{BTC} is absent: the example replays the real BTC file in ../shared/data")
    asyncio.run(main(args.bars, args.out.resolve()))
