"""Pipeline configuration (configs/pipeline.yaml), validated with pydantic so a typo names its field."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeray.features.market import MarketFeatureSpec


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def database_url(field: str | None = None) -> AfterValidator:
    """A setting holding a SQLAlchemy URL every node reaches alike (edgeray.storage.state.check_database_url)."""
    def check(value: str) -> str:
        from edgeray.storage.state import check_database_url
        return check_database_url(value, *([field] if field else []))
    return AfterValidator(check)


def storage_uri(field: str | None = None) -> AfterValidator:
    """A setting holding a pyarrow.fs storage URI (edgeray.sports.registry.check_artifact_uri)."""
    def check(value: str) -> str:
        from edgeray.sports.registry import check_artifact_uri
        return check_artifact_uri(value, *([field] if field else []))
    return AfterValidator(check)


class PlacementConfig(Strict):
    """Where the long-lived actors may run on a cluster: each role names a custom resource that only the nodes
    meant for it declare (cluster.yaml: `resources`), asked for in a tiny amount so any number of actors fit.
    None: any node (one machine, a laptop). When its node dies, Ray restarts the actor on another node that
    declares the resource (see README, "When a node dies")."""
    loop_resource: str | None = None  # the meta-controller, the audit actor and the policy server
    ingest_resource: str | None = None  # the ingestion actor
    # The feature streamer holds the rolling feature state and the decision batches not yet checkpointed, in
    # memory only: put it on the head node (it is lost with the cluster, never with a worker).
    stream_resource: str | None = None
    amount: float = Field(0.001, gt=0, le=1)

    def options(self, resource: str | None) -> dict:
        """Ray actor options that confine an actor to the nodes declaring `resource` (none when it is None)."""
        return {"resources": {resource: self.amount}} if resource else {}


class RayConfig(Strict):
    address: str | None = None  # None: join a running cluster if RAY_ADDRESS is set, else start locally
    num_cpus: int = 2
    object_store_memory_mb: int = 512
    placement: PlacementConfig = PlacementConfig()


class IngestionConfig(Strict):
    symbols: list[str]  # the instrument universe for bars and quotes
    sports: list[str] = ["ncaam", "nba", "nfl", "mlb", "ncaaf"]  # odds and results must name one of these
    lateness_seconds: float = Field(120.0, ge=0)
    batch_size: int = Field(1000, gt=0)
    # Paced replays: a micro-batch leaves when full or when its oldest row has waited this long and the streamer is
    # free. Every batch costs the decision loop ~3-4 ms of fixed work on 2 cores, so shorter waits make more batches
    # and queueing in the meta-controller: 15 ms gave the lowest paced p99 (README, "Decision loop").
    max_batch_wait_ms: float = Field(15.0, ge=0, le=10_000)
    max_in_flight: int = Field(4, gt=0)
    dedup_capacity: int = Field(5_000_000, gt=0)
    # Rows stamped further than this ahead of the wall clock are rejected (`future`).
    max_future_skew_seconds: float = Field(300.0, ge=0)
    deadletter_max_bytes: int = Field(50 * 1024**2, gt=0)  # the live deadletters.jsonl rotates at this size
    deadletter_keep_files: int = Field(3, gt=0)  # deadletters.jsonl, .1, .2: the oldest is dropped
    deadletter_max_rows: int = Field(200_000, gt=0)  # with storage.state_url: the newest rows kept per store
    # A batch the feature streamer fails on is retried this many times, then its rows are dead-lettered.
    downstream_retries: int = Field(2, ge=0)
    # A replay drains the streamer and checkpoints its offset at most this often (resume after a restart).
    commit_interval_s: float = Field(1.0, gt=0)


class FeatureConfig(Strict):
    return_horizons: tuple[int, ...] = (1, 5, 15, 60)
    vol_window: int = Field(30, gt=1)
    momentum_window: int = Field(30, gt=0)
    volume_window: int = Field(30, gt=0)
    spread_window: int = Field(60, gt=1)
    vwap_window: int = Field(30, gt=0)

    def spec(self) -> MarketFeatureSpec:
        return MarketFeatureSpec(**self.model_dump())


class FeastConfig(Strict):
    directory: str = "runs/feast"
    project: str = Field("edgeray", pattern=r"^[A-Za-z0-9_]+$")  # Feast uses it in SQLite table names
    online_store: Literal["sqlite", "redis"] | None = None  # None: redis when REDIS_URL is set
    offline_flush_rows: int = Field(200_000, gt=0)
    # On a cluster: the offline history under a pyarrow.fs URI every node reaches (s3://BUCKET/PREFIX, gs://...,
    # file:///ABS/PATH; S3 credentials from the AWS_* variables) instead of `directory`/offline, and Feast's
    # registry in a database (a SQLAlchemy URL, e.g. storage.state_url's PostgreSQL) instead of `directory`.
    offline_uri: Annotated[str, storage_uri("feast.offline_uri")] | None = None
    registry_url: Annotated[str, database_url("feast.registry_url")] | None = None


class SourceConfig(Strict):
    type: Literal["bars", "bid_ask_bars", "quotes", "sports", "odds_stream", "generator"]
    path: str | None = None
    ask_path: str | None = None  # bid_ask_bars: `path` is the bid file
    symbol: str | None = None
    # bars: the file's layout. auto: event_ts, else open_time (exchange kline, epoch ms), else
    # timestamp/time/ts/datetime/date; `columns` renames file columns first ({open_time: event_ts}).
    # sports: a layout of edgeray.sports.formats (auto: detected from the header); `sport` checks it.
    # odds_stream: per-book price changes (edgeray.loaders.odds_stream); `sport` names the games' sport.
    format: str = "auto"
    sport: str | None = None
    columns: dict[str, str] = {}
    ts_unit: Literal["auto", "iso", "s", "ms", "us", "ns"] = "auto"  # auto: ISO text, or epoch by magnitude
    # generator
    symbols: list[str] = ["SYN-A", "SYN-B"]
    n_bars: int = 20_000
    seed: int = 7

    @field_validator("sport")
    @classmethod
    def _canonical_sport(cls, value: str | None) -> str | None:
        from edgeray.sports.formats import canonical_sport  # the model is frozen: normalised here, not after
        return None if value is None else canonical_sport(value)

    @model_validator(mode="after")
    def _format_fits_type(self) -> "SourceConfig":
        from edgeray.sports.formats import FORMATS

        if self.type == "odds_stream":
            if self.sport is None:
                raise ValueError("sport: required for type 'odds_stream' (the file's games have no sport column)")
            if self.format != "auto":
                raise ValueError(f"format: {self.format!r}: an odds stream has one layout; leave format as auto")
        elif self.type == "sports":
            if self.format != "auto" and self.format not in FORMATS:
                raise ValueError(f"format: unknown sports format {self.format!r}; known: auto, {', '.join(FORMATS)}")
        elif self.format not in ("auto", "ohlcv", "kline"):
            raise ValueError(f"format: {self.format!r} is not a bars layout; expected auto, ohlcv or kline")
        return self


class RetrainConfig(Strict):
    """What the policy server trains when the drift detector alerts (python -m tune.rl arguments)."""
    algo: Literal["ppo", "ddpg"] = "ddpg"
    env: Literal["trading", "betting"] = "trading"
    steps: int = Field(20_000, gt=0)
    env_config: dict = {}
    out_dir: str = "runs/rl/retrain"


class SizerConfig(Strict):
    name: Literal["kelly", "fixed_fraction", "vol_target", "rl_policy"] = "kelly"
    params: dict[str, float] = {}
    # rl_policy: a `python -m tune.rl` checkpoint served by the policy-server actor; optional shadow candidate.
    checkpoint: str | None = None
    shadow_checkpoint: str | None = None
    # Every policy checkpoint (configured, shadow, swapped in over HTTP, retrained) must resolve inside one of
    # these directories (edgeray.paths.resolve_checkpoint); relative ones are read from the working directory.
    checkpoint_roots: list[Annotated[str, Field(min_length=1)]] = Field(["runs/rl"], min_length=1)
    retrain_on_drift: RetrainConfig | None = None

    @model_validator(mode="after")
    def _policy_needs_checkpoint(self):
        if self.name == "rl_policy" and not self.checkpoint:
            raise ValueError("sizer.checkpoint: required when sizer.name is 'rl_policy', got None")
        return self


class LedgerConfig(Strict):
    initial_cash: float = Field(1_000_000.0, gt=0)
    fee_bps: float = Field(1.0, ge=0)
    slippage_bps: float = Field(0.5, ge=0)
    default_spread_bps: float = Field(2.0, ge=0)  # used when a bar carries no bid/ask
    reward_horizon_bars: int = Field(15, gt=0)


class ValueBetConfig(Strict):
    """The value strategy on live odds (edgeray.value): bet the best book when the margin-free consensus
    across books says its price pays, through the same risk and veto gates as every decision."""
    enabled: bool = True
    min_edge: float = Field(0.02, ge=0, le=1)  # expected return at the best price needed to bet
    kelly_multiplier: float = Field(0.25, gt=0, le=1)  # fractional Kelly
    max_stake: float = Field(0.02, gt=0, le=1)  # cap on one stake, as a share of the bet book's equity
    min_books: int = Field(3, ge=1)  # a consensus of fewer books is one book's opinion
    cooldown_minutes: float | None = Field(None, gt=0)  # None: one bet per (game, side); else one per cooldown
    max_edge: float | None = Field(None, gt=0)  # skip edges above this (a mispriced line a book would void)
    bankroll: float = Field(100_000.0, gt=0)  # the paper bet book's starting equity


class ShadowConfig(Strict):
    """A strategy run beside the live meta-controller on the same stream: logged, never executed."""
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    strategy: str
    sizer: SizerConfig = SizerConfig()


class DecisionConfig(Strict):
    enabled: bool = True
    strategies: list[str] | None = None  # None: every default market strategy
    alpha: float = Field(1.0, ge=0)  # LinUCB exploration width
    epsilon: float = Field(0.05, ge=0, le=1)  # guarded epsilon-greedy exploration rate
    seed: int = 0
    sizer: SizerConfig = SizerConfig()
    min_order_notional: float = Field(1_000.0, ge=0)  # smaller target changes are not worth the fees
    edge_model_warmup_rows: int = Field(3_000, gt=100)  # rows seen before the confidence model is fitted
    # It is fitted on a thread and used from the first batch this many rows later (0: at once, blocking the loop).
    edge_model_activation_lag_rows: int = Field(1_000, ge=0, le=1_000_000)
    edge_model_horizon_bars: int = Field(15, gt=0)
    explain_top_k: int = Field(5, gt=0)
    risk_config: str = "configs/risk.yaml"
    veto_config: str = "configs/veto.yaml"
    audit_url: str | None = None  # None: sqlite:///<run_dir>/audit.db; postgresql+psycopg://... for PostgreSQL
    ledger: LedgerConfig = LedgerConfig()
    shadows: list[ShadowConfig] = []
    value: ValueBetConfig = ValueBetConfig()
    # The feature streamer queues decision rows and sends them one batch at a time: whatever is queued when
    # the meta-controller is free (batches grow under load, stay small when it keeps up), at most this many rows.
    max_batch_rows: int = Field(1_000, gt=0, le=100_000)
    # Rows queued for the loop beyond this block the streamer (and so ingestion): bounded, never dropped.
    max_queue_rows: int = Field(20_000, gt=0, le=10_000_000)
    # The meta-controller checkpoints streamed batches at most this often (a checkpoint cost ~2.6 ms p50 and
    # ~20 ms p99 a batch when taken every batch); the streamer keeps every batch sent since the last checkpoint
    # and resends them to a restarted meta-controller, so a restart still loses and duplicates nothing.
    # 0: after every batch. Control events (kill, reviews, arm changes) and bets always checkpoint at once.
    checkpoint_interval_ms: float = Field(250.0, ge=0, le=60_000)

    @field_validator("audit_url")
    @classmethod
    def _audit_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from edgeray.storage.state import check_database_url
        return check_database_url(value, "decisions.audit_url")


class SportsSourceConfig(Strict):
    """One sports archive file: its sport, path and layout (edgeray.sports.formats; auto: detected from the header)."""
    sport: str
    path: str
    format: str = "auto"
    columns: dict[str, str] = {}  # FILE_COLUMN: COLUMN, applied before the format is matched

    @field_validator("sport")
    @classmethod
    def _known_sport(cls, value: str) -> str:
        from edgeray.sports.formats import canonical_sport
        return canonical_sport(value)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from edgeray.sports.formats import FORMATS
        if value not in ("auto", "box_scores") and value not in FORMATS:
            raise ValueError(f"unknown sports format {value!r}; known: auto, {', '.join(FORMATS)}, box_scores")
        return value


class SportsConfig(Strict):
    # Sports archives: the files declared in `sources`, else every CSV in data_dir that fits a sport's format.
    data_dir: str = "../shared/data/sports"
    sources: list[SportsSourceConfig] = []
    registry_dir: str = "runs/registry"
    queue_db: str = "runs/training/queue.sqlite"
    max_concurrent_jobs: int = Field(2, gt=0)
    retention_days: float = Field(7.0, gt=0)
    # Training GPU memory budgets per GPU index, e.g. {0: "8GB", 1: "6GB"} (the specification's example): a job
    # declaring more (params.gpu_memory_gb) than the largest is refused. Placement by budget needs each GPU node
    # to declare the Ray resource gpu_memory_gb: cluster.yaml's GPU workers do, and so does a Ray edgeray starts itself.
    gpu_memory_budgets: dict[int, str | float] = {}
    # True where GPU workers scale up from zero (cluster.yaml): training jobs ask for their GPUs even while no GPU
    # node is up, so the autoscaler launches one; false runs them on a CPU when the cluster has no GPU.
    gpu_autoscaling: bool = False

    @field_validator("gpu_memory_budgets")
    @classmethod
    def _budgets(cls, value: dict) -> dict:
        from edgeray.device import parse_memory_budgets
        parse_memory_budgets(value, "sports.gpu_memory_budgets")  # ValueError names the GPU and the value
        return value

    def file_sources(self) -> list[dict]:
        """The declared sources as plain dicts (edgeray.sports.games.read_sport's `sources`)."""
        return [src.model_dump() for src in self.sources]

    def data(self):
        """What every sports reader takes as its data (edgeray.sports.games.SportsData)."""
        from edgeray.sports.games import SportsData
        return SportsData(self.data_dir, tuple(self.file_sources()))


class ApiConfig(Strict):
    """The HTTP API's limits (the Serve app reads them; keys come from the environment, see edgeray.auth)."""
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)  # larger requests get 413 before they are parsed
    max_events_per_batch: int = Field(10_000, gt=0)
    max_deadletters_page: int = Field(1_000, gt=0)
    # Model inference (POST /api/models/{model_id}/predict; serve/inference.py): replicas of the ModelServer
    # deployment (0: not deployed, the route answers 409), sport models each keeps loaded (serve.multiplexed; the
    # least recently used is unloaded beyond it), an optional hard limit of replicas per node (unset: Serve's
    # soft SPREAD over nodes), the CPUs each replica reserves, and how long a request may wait for a replica's
    # answer before it gets 503 with Retry-After.
    model_replicas: int = Field(2, ge=0, le=64)
    models_per_replica: int = Field(8, ge=1, le=256)
    model_max_replicas_per_node: int | None = Field(None, ge=1, le=100)
    model_replica_cpus: float = Field(0.0, ge=0, le=64)
    model_request_timeout_s: float = Field(30.0, gt=0, le=600)


class StorageConfig(Strict):
    """Where durable state lives (see edgeray.storage.state)."""
    # None: actor checkpoints are files under run_dir/state (one machine). A SQLAlchemy URL (sqlite:///ABS/PATH
    # or postgresql+psycopg://...): rows of a table there, keyed by namespace, so an actor that Ray restarts on
    # another node finds its checkpoint.
    # The same database also holds the dead letters, the training-job queue and the model registry's index.
    state_url: Annotated[str, database_url()] | None = None
    # Model artefacts: None keeps them in sports.registry_dir; a pyarrow.fs URI (s3://BUCKET/PREFIX, gs://...,
    # file:///ABS/PATH) puts them where every node reads them. S3 credentials: the usual AWS_* variables.
    artifact_uri: Annotated[str, storage_uri()] | None = None


class PipelineConfig(Strict):
    # A database URL or storage URI may hold a password: str(ValidationError) must not echo inputs (the top
    # model's setting rules). describe_validation shows them, passwords masked.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    namespace: str = "edgeray"
    run_dir: str = "runs/latest"
    max_restarts: int = 3
    replay_rate: float = Field(0.0, ge=0)  # 0: full speed; else event-seconds per wall-second
    ray: RayConfig = RayConfig()
    ingestion: IngestionConfig
    features: FeatureConfig = FeatureConfig()
    feast: FeastConfig = FeastConfig()
    sources: list[SourceConfig]
    fallback: SourceConfig = SourceConfig(type="generator")
    decisions: DecisionConfig = DecisionConfig(enabled=False)
    sports: SportsConfig = SportsConfig()
    api: ApiConfig = ApiConfig()
    storage: StorageConfig = StorageConfig()

    # Set from run_dir when run_dir is a storage URI: results are published there, run_dir becomes a staging folder.
    results_uri: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _stage_uri_run_dir(cls, data):
        from edgeray.storage import is_uri, staging_dir

        if isinstance(data, dict) and is_uri(data.get("run_dir")):
            data = {**data, "results_uri": data["run_dir"], "run_dir": str(staging_dir(data["run_dir"]))}
        return data

    @property
    def audit_url(self) -> str:
        """The decision audit log's database: `decisions.audit_url`, else SQLite under run_dir."""
        return self.decisions.audit_url or f"sqlite:///{Path(self.run_dir).resolve() / 'audit.db'}"

    @classmethod
    def load(cls, path: str | Path, outputs_base: str | Path | None = None) -> "PipelineConfig":
        """Read and validate a pipeline YAML. Paths written in the file resolve against the file's
        folder (so the config works from any working directory); paths left at their defaults, and
        the output folders when `outputs_base` is given, resolve against the working directory
        (or `outputs_base`). Every path in the result is absolute."""
        path = Path(path)
        try:
            with open(path, encoding="utf-8") as fh:
                raw = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigFileError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
        except UnicodeDecodeError as exc:
            raise ConfigFileError(f"{path}: not a text file (byte offset {exc.start} is not UTF-8)") from None
        if not isinstance(raw, dict):
            raise ConfigFileError(f"{path}: expected a YAML mapping of settings (namespace, ingestion, sources, ...), "
                                  f"got {type(raw).__name__}; `edgeray init DIR` writes a commented one")
        base = path.resolve().parent
        outputs = Path(outputs_base).resolve() if outputs_base is not None else None
        resolve_paths(raw, base, outputs)
        cfg = cls.model_validate(raw)
        data = cfg.model_dump()
        resolve_paths(data, Path.cwd() if outputs is None else outputs, outputs)  # the defaults not written in the file
        d = data["decisions"]
        for key in ("risk_config", "veto_config"):
            if "decisions" not in raw or key not in raw["decisions"]:
                d[key] = _default_or_packaged(d[key], DEFAULTS_DIR / Path(d[key]).name)
        return cls.model_validate(data)


class ConfigFileError(ValueError):
    """A config file that cannot be read (not there, not YAML, not a mapping)."""


DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"
DEFAULT_PIPELINE = DEFAULTS_DIR / "pipeline.yaml"
# Output folders: for the packaged default they resolve against the working directory.
OUTPUT_PATHS = (("run_dir",), ("feast", "directory"), ("sports", "registry_dir"), ("sports", "queue_db"))
INPUT_PATHS = (("decisions", "risk_config"), ("decisions", "veto_config"), ("sports", "data_dir"))


def _absolute(value, base: Path):
    if not isinstance(value, str) or not value or "://" in value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _default_or_packaged(path: str, packaged: Path) -> str:
    """An unwritten risk/veto config: ./configs/<name> when it exists (the repository), else the packaged one."""
    return path if Path(path).exists() or not packaged.exists() else str(packaged)


def resolve_paths(data: dict, base: Path, outputs: Path | None = None) -> None:
    """Make the config's file and folder paths absolute in place (see PipelineConfig.load)."""
    for keys in OUTPUT_PATHS + INPUT_PATHS:
        node = data
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            node[keys[-1]] = _absolute(node[keys[-1]], outputs if outputs is not None and keys in OUTPUT_PATHS else base)
    specs = list(data.get("sources") or []) + ([data["fallback"]] if isinstance(data.get("fallback"), dict) else [])
    sports = data.get("sports")
    specs += list(sports.get("sources") or []) if isinstance(sports, dict) else []
    for spec in specs:
        if isinstance(spec, dict):
            for key in ("path", "ask_path"):
                if key in spec:
                    spec[key] = _absolute(spec[key], base)


class ConfigError(ValueError):
    """A config value that is not allowed: one message naming each bad field, its value and the rule."""


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def describe_validation(exc: ValidationError) -> str:
    # A database URL's password never reaches an error message (or the logs it is printed to).
    return _URL_PASSWORD.sub(r"\1***@", "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()))


class Config(PipelineConfig):
    """The public config of the Python API (`from edgeray import Config`): the same settings as
    configs/pipeline.yaml, built in Python or read from / written to YAML. A bad value raises one
    ConfigError naming the field. Relative paths resolve against the working directory, as in a
    config file read from there; unset risk and veto configs are the packaged ones."""

    def __init__(self, **data):
        data.setdefault("sources", [])  # the API feeds its own rows; replay sources are optional here
        try:
            checked = PipelineConfig.model_validate(data).model_dump()
        except ValidationError as exc:
            raise ConfigError(describe_validation(exc)) from None
        resolve_paths(checked, Path.cwd())
        given = data.get("decisions")
        given = given.model_dump(exclude_unset=True) if isinstance(given, BaseModel) else (given or {})
        for key in ("risk_config", "veto_config"):
            if key not in given:
                checked["decisions"][key] = _default_or_packaged(checked["decisions"][key],
                                                                 DEFAULTS_DIR / Path(checked["decisions"][key]).name)
        super().__init__(**checked)

    @classmethod
    def model_validate(cls, obj, *args, **kwargs):
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise ConfigError(describe_validation(exc)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Config":
        """Read a pipeline YAML (paths in it resolve against its folder, as `edgeray run --config` reads it)."""
        return cls.load(path)

    @classmethod
    def default(cls) -> "Config":
        """The packaged default: the seeded generator, the decision loop on, outputs under ./runs."""
        return cls.load(DEFAULT_PIPELINE, outputs_base=Path.cwd())

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The settings as YAML (every path absolute); written to `path` when given. from_yaml reads it back equal."""
        text = yaml.safe_dump(self.model_dump(mode="json", exclude={"results_uri"}), sort_keys=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text
