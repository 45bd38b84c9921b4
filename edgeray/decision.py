"""One decision as users read it: the same schema for the Python API and the HTTP responses.

A decision's facts live in its audit trail (the records the loop wrote for it: decision, risk, veto,
veto_review, fill); `Decision.from_trail` reads them into one flat object, so what a script sees is
exactly what the audit log says, never a second bookkeeping that could disagree with it.
"""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Action = Literal["buy", "sell", "hold"]
# Where the decision's order stands, in the order it can move through the loop.
Status = Literal["no_order", "rejected_by_risk", "vetoed", "held", "approved", "filled"]


class FeatureContribution(BaseModel):
    model_config = ConfigDict(frozen=True)
    feature: str
    shap: float  # SHAP value in log-odds of the price going up over the edge model's horizon


class Explanation(BaseModel):
    model_config = ConfigDict(frozen=True)
    # "shap" once the confidence model is fitted and the decision carried an order; None otherwise
    # (only orders are explained: explaining every bar would cost more than deciding it).
    method: Literal["shap"] | None = None
    top_features: list[FeatureContribution] = []


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)
    decision_id: str
    symbol: str
    event_ts: datetime
    action: Action  # the order the decision wanted: buy, sell, or hold (no order)
    # The sizer's target position as a signed share of equity, before the strategy's risk-budget scale
    # and the risk engine's resize; `quantity` is the order in units after both.
    position_size: float
    quantity: float
    confidence: float = Field(ge=0, le=1)  # the edge model's probability that the chosen direction pays (0.5: none yet)
    expected_return: float  # the strategy's expected return over its own horizon, as a fraction of price
    # The share of its tightest risk limit the order would use (see edgeray.risk); 0 with no order.
    risk_score: float = Field(ge=0, le=1)
    strategy: str
    regime: str
    vetoed: bool  # stopped by the risk engine, the veto rules or a reviewer: it will never execute
    status: Status
    risk_verdict: str | None = None  # approve, resize or reject (None: no order to check)
    veto_verdict: str | None = None  # approve, hold or reject by rule; a reviewer's approve or reject after a hold
    veto_rule: str | None = None
    explanation: Explanation

    @classmethod
    def from_trail(cls, trail: list[dict]) -> "Decision | None":
        """The decision a trail of audit records describes; None when it has no "decision" record
        (a row rejected before deciding, or an id the log does not know)."""
        by_stage: dict[str, dict] = {}
        for record in trail:  # the latest record of each stage wins (a review follows its hold)
            by_stage[record["stage"]] = record
        decided = by_stage.get("decision")
        if decided is None:
            return None
        p = decided["payload"]
        quantity = float(p["sizing"]["quantity"])
        risk = by_stage.get("risk", {}).get("payload")
        veto = by_stage.get("veto", {}).get("payload")
        review = by_stage.get("veto_review", {}).get("payload")
        status: str = "no_order"
        vetoed = False
        if risk is not None:
            quantity = float(risk["quantity"]) or quantity  # a rejected order keeps the size it asked for
            status, vetoed = ("rejected_by_risk", True) if risk["verdict"] == "reject" else ("approved", False)
        veto_verdict = veto["verdict"] if veto else None
        if veto_verdict == "hold":
            status = "held"
        if review is not None:
            veto_verdict = review["verdict"]
        if veto_verdict == "reject":
            status, vetoed = "vetoed", True
        elif veto_verdict == "approve":
            status = "filled" if "fill" in by_stage else "approved"
        explained = p.get("explanation") or []
        return cls(
            decision_id=decided["decision_id"], symbol=p["symbol"], event_ts=decided["event_ts"],
            action="hold" if quantity == 0 else ("buy" if quantity > 0 else "sell"),
            position_size=float(p["sizing"]["fraction"]), quantity=quantity, confidence=float(p["confidence"]),
            expected_return=float(p["signal"]["expected_return"]),
            risk_score=float(risk.get("risk_score", 1.0 if vetoed else 0.0)) if risk else 0.0,
            strategy=p["strategy"], regime=p["regime"], vetoed=vetoed, status=status,
            risk_verdict=risk["verdict"] if risk else None, veto_verdict=veto_verdict,
            veto_rule=(review or veto or {}).get("rule"),
            explanation=Explanation(method="shap" if explained else None,
                                    top_features=[FeatureContribution(**e) for e in explained]))
