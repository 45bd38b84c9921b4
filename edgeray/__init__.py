"""edgeray: find and size an edge in betting and trading markets, on Ray.

The public Python API (docs/python_api.md); everything else is internal and may change:

    from edgeray import Config, Orchestrator

Config and its sections are the pydantic models behind configs/pipeline.yaml, under the names the
specification uses where they map. The orchestrators live with the actors they drive
(actors/orchestrator.py) and are imported only when asked for, so importing the core never imports
Ray actors: the one arrow from core to shell, like the CLI's, kept at this door.
"""
from edgeray.config import (  # noqa: F401
    Config,
    ConfigError,
    DecisionConfig,
    FeastConfig as FeatureStoreConfig,
    FeatureConfig,
    IngestionConfig as StreamingConfig,
    LedgerConfig,
    RetrainConfig,
    SizerConfig,
)
from edgeray.decision import Decision, Explanation  # noqa: F401

_SHELL = {"Orchestrator", "SyncOrchestrator", "MarketDataError"}

__all__ = ["Config", "ConfigError", "Decision", "DecisionConfig", "Explanation", "FeatureConfig",
           "FeatureStoreConfig", "LedgerConfig", "MarketDataError", "Orchestrator", "RetrainConfig",
           "SizerConfig", "StreamingConfig", "SyncOrchestrator"]


def __getattr__(name: str):
    if name in _SHELL:
        from actors import orchestrator

        return getattr(orchestrator, name)
    raise AttributeError(f"module 'edgeray' has no attribute {name!r}")
