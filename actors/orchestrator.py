"""The Python API's orchestrator: the decision loop's actors driven from a script or a notebook.

    from edgeray import Config, Orchestrator

    async with Orchestrator(Config.from_yaml("configs/pipeline.yaml")) as system:
        decisions = await system.process_market_data(rows)
        print(system.get_system_status())

`Orchestrator(config)` starts the loop's actors (on a local Ray, or the cluster RAY_ADDRESS names) and
stops them on exit; `Orchestrator.connect(config, api_key=...)` attaches to a loop that is already
running (`edgeray run --keep`, another notebook) and leaves it running. `SyncOrchestrator` is the same
with plain methods. A shell like the CLI and the Serve app: every call goes to the same actors as HTTP.

Roles: a system you start is yours (every permission). A system you connect to takes an API key
from the operator's key configuration (EDGERAY_API_KEYS_FILE / EDGERAY_API_KEYS, as the Serve app
reads it) and allows what that key's role allows over HTTP: reads need `read`, pushes `feed`,
reviews and the kill switch `trade`, resume `admin`. Whoever can reach the Ray cluster could call
the actors directly, so the boundary for untrusted callers stays the HTTP API; these checks keep a
script to its user's role and put the user's name in the audit log.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from actors.pipeline import AUDIT, META_CONTROLLER, Pipeline
from edgeray.auth import Identity, KeyRing
from edgeray.config import Config, PipelineConfig
from edgeray.decision import Decision
from edgeray.events import EventKind
from policies.engine import decision_ids

MAX_ROWS_PER_CALL = 100_000  # a bigger frame is split into calls of this size (bounded actor messages)
OWNER = Identity("python-api", "admin")


class MarketDataError(ValueError):
    """Some rows were refused (each with its row, field, reason and value); the accepted rows were decided
    and are in `decisions`: nothing accepted is lost."""

    def __init__(self, errors: list[dict], decisions: list[Decision]):
        self.errors, self.decisions = errors, decisions
        first = errors[0]
        super().__init__(f"{len(errors)} row(s) refused; first: row {first['row']}, field {first['field']!r}: "
                         f"{first['reason']} (value {first['value']!r}); {len(decisions)} accepted row(s) decided")


def _as_config(config: Config | PipelineConfig | str | Path | Mapping | None) -> PipelineConfig:
    if config is None:
        return Config.default()
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, (str, Path)):
        return Config.from_yaml(config)
    if isinstance(config, Mapping):
        return Config(**config)
    raise TypeError(f"config: expected a Config, a YAML path or a mapping, got {type(config).__name__}")


class SyncOrchestrator:
    def __init__(self, config: Config | PipelineConfig | str | Path | Mapping | None = None, *, fresh: bool = True):
        """Start the loop described by `config` (None: the packaged default). `fresh` discards the checkpoints
        and audit log an earlier run left in the same run_dir; False resumes from them."""
        self.cfg = _as_config(config)
        if not self.cfg.decisions.enabled:
            raise ValueError("decisions.enabled: the Python API drives the decision loop; set it to true")
        self._fresh = fresh
        self._attach = False
        self.identity = OWNER
        self.pipeline: Pipeline | None = None
        self._started_ray = False

    @classmethod
    def connect(cls, config: Config | PipelineConfig | str | Path | Mapping | None = None, *, api_key: str,
                address: str | None = None, namespace: str | None = None) -> "SyncOrchestrator":
        """Attach to a running loop: Ray `address` (default: config's, else RAY_ADDRESS, else this machine's
        running cluster) and `namespace` (default: the config's). The key decides what this handle may do."""
        cfg = _as_config(config)
        updates: dict[str, Any] = {}
        if namespace is not None:
            updates["namespace"] = namespace
        if address is not None:
            updates["ray"] = {**cfg.ray.model_dump(), "address": address}
        if updates:
            cfg = Config(**{**cfg.model_dump(exclude={"results_uri"}), **updates})
        identity = KeyRing.from_environment().require_configured().identify(api_key)
        if identity is None:
            raise PermissionError("api_key: not a configured key (EDGERAY_API_KEYS_FILE / EDGERAY_API_KEYS)")
        self = cls(cfg)
        self._attach, self.identity = True, identity
        return self

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "SyncOrchestrator":
        if self.pipeline is not None:
            return self
        self._started_ray = not ray.is_initialized()
        if self._attach:
            if self._started_ray and not (self.cfg.ray.address or _env_address()):
                # Connecting means joining the cluster the loop runs on, never starting an empty one.
                self.cfg = Config(**{**self.cfg.model_dump(exclude={"results_uri"}),
                                     "ray": {**self.cfg.ray.model_dump(), "address": "auto"}})
            try:
                self.pipeline = Pipeline.attach(self.cfg)
            except ValueError:
                self.close()
                raise LookupError(f"namespace {self.cfg.namespace!r}: no running decision loop "
                                  f"(start one with `edgeray run --keep` or Orchestrator(config))") from None
        else:
            self.pipeline = Pipeline.start(self.cfg, fresh=self._fresh)
        return self

    def close(self) -> None:
        """Stop the actors this handle started (a connected loop runs on) and the Ray it started."""
        if self.pipeline is not None and not self._attach:
            ray.get(self.pipeline.ingestion.flush.remote())
            ray.get(self.pipeline.streamer.flush.remote())  # the offline history is written before the actors go
            self.pipeline.shutdown()
        self.pipeline = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    def __enter__(self) -> "SyncOrchestrator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the loop -----------------------------------------------------------------------------
    def process_market_data(self, rows: Mapping | list[Mapping] | pd.DataFrame, kind: str = "bar"):
        """Push rows (bars by default, or "quote" ticks) through ingestion -> features -> decide -> risk -> veto
        -> audit, and return the decisions they produced once audited: one Decision (or None) for a mapping, a
        list for several rows. Rows are released at once (this call does not wait for the reorder window),
        so a later call's rows must not be stamped before this call's. Raises MarketDataError after deciding
        the accepted rows when some were refused."""
        self._need("feed")
        single = isinstance(rows, Mapping)
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame([dict(rows)] if single else [dict(r) for r in rows])
        if kind not in (EventKind.BAR.value, EventKind.QUOTE.value):
            raise ValueError(f"kind: the decision loop decides on 'bar' or 'quote' rows, got {kind!r}")
        p = self._pipeline()
        errors: list[dict] = []
        for start in range(0, len(frame), MAX_ROWS_PER_CALL):
            part = frame.iloc[start:start + MAX_ROWS_PER_CALL]
            report = ray.get(p.ingestion.ingest.remote(kind, part, f"python:{self.identity.name}"))
            errors += [{**e, "row": int(e["row"]) + start} for e in report["errors"]]
        ray.get(p.ingestion.flush.remote())  # releases the reorder buffer and waits until the streamer has it all
        ray.get(p.streamer.settle_decisions.remote())  # ... and until the loop has decided and audited it
        decided = self._decisions_for(frame)
        if errors:
            raise MarketDataError(errors, decided)
        if single:
            return decided[0] if decided else None
        return decided

    def _decisions_for(self, frame: pd.DataFrame) -> list[Decision]:
        if frame.empty or not {"symbol", "event_ts"} <= set(frame.columns):
            return []
        stamps = pd.to_datetime(frame["event_ts"], utc=True, errors="coerce", format="mixed")
        ok = stamps.notna().to_numpy()
        ids = list(dict.fromkeys(decision_ids(self.cfg.namespace, frame["symbol"].astype(str).to_numpy()[ok], stamps[ok])))
        trails = ray.get(self._loop(AUDIT).trails.remote(ids))
        return [d for d in (Decision.from_trail(trails[i]) for i in ids) if d is not None]

    def decision(self, decision_id: str) -> Decision | None:
        """A decision by id, as the audit log has it now (a held order shows its review and fill once they happen)."""
        self._need("read")
        return Decision.from_trail(ray.get(self._loop(AUDIT).get.remote(decision_id)))

    def audit_trail(self, decision_id: str) -> list[dict]:
        self._need("read")
        return ray.get(self._loop(AUDIT).get.remote(decision_id))

    def get_system_status(self) -> dict:
        """status (running or halted), active models, decisions generated, daily PnL, and the loop's counters."""
        self._need("read")
        p = self._pipeline()
        status = p.status()
        d, risk = status["decisions"], status["risk"]
        arms = ray.get(self._loop(META_CONTROLLER).arms.remote())
        sizer = self.cfg.decisions.sizer
        models = [f"strategy:{a['arm']}" for a in arms if a["enabled"]]
        models.append(f"sizer:{sizer.name}" + (f"@{status['policy']['version']}" if "policy" in status else ""))
        if d.get("edge_model"):
            models.append(f"edge_model:{d['edge_model']}")
        return {"status": "halted" if risk["killed"] else "running", "kill_reason": risk["kill_reason"],
                "active_models": models, "decisions_generated": d["decisions"], "orders": d["orders"],
                "daily_pnl": risk["daily_pnl"], "equity": d["equity"], "drawdown": risk["drawdown"],
                "positions": risk["positions"], "verdicts": d["verdicts"], "held_for_review": len(self.pending()),
                "latency_ms_p50": d["latency_ms_p50"], "latency_ms_p99": d["latency_ms_p99"],
                "events_processed": status["features"]["events_processed"],
                "dead_letters": status["ingestion"]["dead_letters"], "namespace": self.cfg.namespace,
                "identity": {"name": self.identity.name, "role": self.identity.role}}

    def equity_curve(self) -> pd.DataFrame:
        self._need("read")
        return ray.get(self._loop(META_CONTROLLER).equity_curve.remote())

    # -- the human in the loop ----------------------------------------------------------------
    def pending(self) -> list[dict]:
        """Decisions held at the veto gate for a human, with their deadlines."""
        self._need("read")
        return ray.get(self._loop(META_CONTROLLER).pending.remote())

    def approve(self, decision_id: str) -> dict:
        """Release a held decision (KeyError: unknown, already decided or expired); it fills on the next bar."""
        self._need("trade")
        return self._public(ray.get(self._loop(META_CONTROLLER).approve.remote(decision_id, self.identity.name)))

    def reject(self, decision_id: str) -> dict:
        self._need("trade")
        return self._public(ray.get(self._loop(META_CONTROLLER).reject.remote(decision_id, self.identity.name)))

    def kill_switch(self, reason: str = "kill switch from the Python API") -> dict:
        """Halt: new orders are rejected, unfilled ones cancelled; audited before this returns."""
        self._need("trade")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 1_000:
            raise ValueError(f"reason: a non-empty text of at most 1,000 characters, got {reason!r}")
        return ray.get(self._loop(META_CONTROLLER).kill.remote(reason, self.identity.name))

    def resume(self) -> dict:
        self._need("admin")
        return ray.get(self._loop(META_CONTROLLER).resume.remote(self.identity.name))

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _public(record: dict) -> dict:
        return {k: v for k, v in record.items() if k != "order"}

    def _need(self, permission: str) -> None:
        if not self.identity.may(permission):
            raise PermissionError(f"role {self.identity.role!r} ({self.identity.name}) may not do this; "
                                  f"it needs {permission!r}")

    def _pipeline(self) -> Pipeline:
        if self.pipeline is None:
            raise RuntimeError("the orchestrator is not started: use `with SyncOrchestrator(config) as system:` "
                               "(or `async with Orchestrator(config)`), or call start()")
        return self.pipeline

    def _loop(self, name: str):
        loop = self._pipeline().decision
        if not loop or name not in loop:
            raise RuntimeError(f"the decision loop has no {name!r} actor (decisions.enabled is false?)")
        return loop[name]


def _env_address() -> str | None:
    import os

    return os.environ.get("RAY_ADDRESS")


class Orchestrator:
    """`async with Orchestrator(config) as system:` — the SyncOrchestrator's methods as coroutines (each runs
    in a worker thread, so the event loop of a notebook or a web app keeps serving while Ray answers);
    `get_system_status()` stays a plain call, as in the specification's Quick Start."""

    def __init__(self, config: Config | PipelineConfig | str | Path | Mapping | None = None, *, fresh: bool = True):
        self._sync = SyncOrchestrator(config, fresh=fresh)

    @classmethod
    def connect(cls, config=None, *, api_key: str, address: str | None = None, namespace: str | None = None) -> "Orchestrator":
        self = cls.__new__(cls)
        self._sync = SyncOrchestrator.connect(config, api_key=api_key, address=address, namespace=namespace)
        return self

    @property
    def cfg(self) -> PipelineConfig:
        return self._sync.cfg

    @property
    def identity(self) -> Identity:
        return self._sync.identity

    async def __aenter__(self) -> "Orchestrator":
        await asyncio.to_thread(self._sync.start)
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self._sync.close)

    async def process_market_data(self, rows, kind: str = "bar"):
        return await asyncio.to_thread(self._sync.process_market_data, rows, kind)

    def get_system_status(self) -> dict:
        return self._sync.get_system_status()

    async def decision(self, decision_id: str) -> Decision | None:
        return await asyncio.to_thread(self._sync.decision, decision_id)

    async def audit_trail(self, decision_id: str) -> list[dict]:
        return await asyncio.to_thread(self._sync.audit_trail, decision_id)

    async def equity_curve(self) -> pd.DataFrame:
        return await asyncio.to_thread(self._sync.equity_curve)

    async def pending(self) -> list[dict]:
        return await asyncio.to_thread(self._sync.pending)

    async def approve(self, decision_id: str) -> dict:
        return await asyncio.to_thread(self._sync.approve, decision_id)

    async def reject(self, decision_id: str) -> dict:
        return await asyncio.to_thread(self._sync.reject, decision_id)

    async def kill_switch(self, reason: str = "kill switch from the Python API") -> dict:
        return await asyncio.to_thread(self._sync.kill_switch, reason)

    async def resume(self) -> dict:
        return await asyncio.to_thread(self._sync.resume)
