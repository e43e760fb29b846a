"""Configuration: the environment, read once at start-up into one frozen, typed object.

Every service calls `Settings.from_env()` in its entry point and passes the parts it needs
down. A missing or malformed variable raises ConfigError naming the variable and saying how
to fix it. Every variable, its default and meaning is listed in docs/configuration.md.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from meshkit.errors import ConfigError

__all__ = [
    "WORK_STREAMS",
    "AuthSettings",
    "GithubSettings",
    "JobSettings",
    "LimitSettings",
    "NatsSettings",
    "RetentionSettings",
    "Settings",
    "StreamTiming",
    "SyncSettings",
    "TrainSettings",
    "WebhookSettings",
]

DEFAULT_EXTRA_FILES = ("ARCHITECTURE.md", "SKILLS-INDEX.md")
# GitHub allows 100 concurrent requests per token; all sync replicas together stay below it.
GITHUB_CONCURRENCY_BUDGET = 80


class _Env:
    """Typed reads of one environment mapping; every error names its variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name, "").strip()
        return value or default

    def optional(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(name, f"must be {bound}, got {value}")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"expected a number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(name, f"must be >= {minimum}, got {value}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"expected true or false, got {raw!r}")

    def items(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if name not in self.env:
            return default
        return tuple(item.strip() for item in self.env[name].split(",") if item.strip())

    def numbers(
        self, name: str, default: tuple[float, ...], *, minimum: float = 0.0, most: int = 10
    ) -> tuple[float, ...]:
        items = self.items(name, default=())
        if not items:
            return default
        if len(items) > most:
            raise ConfigError(name, f"at most {most} values, got {len(items)}")
        values = []
        for item in items:
            try:
                value = float(item)
            except ValueError:
                raise ConfigError(name, f"expected comma-separated numbers, got {item!r}") from None
            if value < minimum:
                raise ConfigError(name, f"every value must be >= {minimum}, got {value}")
            values.append(value)
        return tuple(values)

    def sizes(self, name: str) -> dict[str, int]:
        """NAME=BYTES pairs, comma-separated; BYTES may end in KiB, MiB or GiB."""
        sizes = {}
        for item in self.items(name, default=()):
            key, _, raw = item.partition("=")
            number, unit = raw.strip(), 1
            for suffix, factor in (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)):
                if number.endswith(suffix):
                    number, unit = number[: -len(suffix)].strip(), factor
            if not key.strip() or not number.isdigit() or int(number) == 0:
                raise ConfigError(
                    name, f"expected NAME=BYTES pairs such as SYNC=2GiB, got {item!r}"
                )
            sizes[key.strip()] = int(number) * unit
        return sizes

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value


@dataclass(frozen=True, kw_only=True)
class NatsSettings:
    """How to reach NATS and how to size JetStream assets."""

    url: str = "nats://127.0.0.1:4222"
    """CONTEXTMESH_NATS_URL: comma-separated server URLs."""
    creds_file: str | None = None
    """CONTEXTMESH_NATS_CREDS: a .creds file (JWT + NKey) for NATS auth."""
    nkey_seed_file: str | None = None
    """CONTEXTMESH_NATS_NKEY_SEED_FILE: the file holding this service's NKey seed (SU...);
    `contextmesh up` generates one per service, Kubernetes mounts it from a Secret."""
    user: str | None = None
    """CONTEXTMESH_NATS_USER: the NATS identity (gateway, syncsvc, ...); replies then come on
    _INBOX_<user>, the only inbox its permissions let it read."""
    ops_nkey_seed_file: str | None = None
    """CONTEXTMESH_NATS_OPS_NKEY_SEED_FILE: the gateway's second identity, for OpsService
    (dead-letter redrive); unset, OpsService uses the gateway's own connection."""
    declare: bool = True
    """CONTEXTMESH_NATS_DECLARE: create or update streams, consumers and buckets at start; off
    when a privileged step declared them (up, the k8s Job) and services may only bind."""
    tls_ca_file: str | None = None
    """CONTEXTMESH_NATS_TLS_CA: CA bundle to verify the servers; enables TLS."""
    tls_cert_file: str | None = None
    """CONTEXTMESH_NATS_TLS_CERT: client certificate for mutual TLS."""
    tls_key_file: str | None = None
    """CONTEXTMESH_NATS_TLS_KEY: client key for mutual TLS."""
    replicas: int = 1
    """CONTEXTMESH_JS_REPLICAS: replicas of every stream and bucket (3 on a cluster)."""
    max_bytes: Mapping[str, int] = field(default_factory=dict)
    """CONTEXTMESH_JS_MAX_BYTES: byte bounds overriding meshkit/topology.py's, as
    comma-separated NAME=BYTES pairs of streams or buckets (SYNC=2GiB,cm_outcomes=4GiB)."""
    capacity_warn: float = 0.8
    """CONTEXTMESH_CAPACITY_WARN: a service logs an error for each stream or bucket it uses
    that holds more than this share of its byte bound (meshkit/capacity.py)."""
    capacity_check_s: float = 60.0
    """CONTEXTMESH_CAPACITY_CHECK_S: how often each service looks (and refreshes the stream
    gauges of its metrics)."""


@dataclass(frozen=True, kw_only=True)
class GithubSettings:
    """The GitHub source."""

    api_url: str = "https://api.github.com"
    """CONTEXTMESH_GITHUB_API_URL: API base, for GitHub Enterprise or a stand-in."""
    token: str | None = field(default=None, repr=False)
    """GITHUB_TOKEN: (or CONTEXTMESH_GITHUB_TOKEN) sent only to the API host, never logged.
    The shared token: it syncs every user without a token of their own."""
    credentials_dir: pathlib.Path | None = None
    """CONTEXTMESH_GITHUB_USERS_DIR: users' own tokens, one file per user named by
    their login in lower case (a mounted Kubernetes Secret). Default <data dir>/credentials;
    a folder that does not exist means nobody has one. A file holding
    `installation:<id>` instead of a token syncs that user with the GitHub App's
    installation <id> (docs/security.md, "GitHub App installations")."""
    app_id: int | None = None
    """CONTEXTMESH_GITHUB_APP_ID: the GitHub App whose installations the credential store may
    name; unset: no App, and a user whose entry names an installation fails to sync."""
    app_key_file: pathlib.Path | None = None
    """CONTEXTMESH_GITHUB_APP_KEY_FILE: the App's private key (PEM), e.g. a mounted Secret.
    Read at every mint (about hourly per installation), so a rotated key is picked up."""
    timeout_s: float = 10.0
    """CONTEXTMESH_GITHUB_TIMEOUT_S: per-request timeout."""
    max_retries: int = 4
    """CONTEXTMESH_GITHUB_MAX_RETRIES: retries of 5xx, timeouts and rate limits per request."""
    rate_limit_reserve: int = 50
    """CONTEXTMESH_GITHUB_RATE_RESERVE: slow down when fewer requests than this remain."""


@dataclass(frozen=True, kw_only=True)
class SyncSettings:
    """Discovery and per-repository sync."""

    source: str = "local"
    """CONTEXTMESH_SOURCE: 'github' or 'local'."""
    local_dir: pathlib.Path | None = None
    """CONTEXTMESH_LOCAL_SOURCE_DIR: for the local source, one folder per user of repo folders."""
    concurrency: int = GITHUB_CONCURRENCY_BUDGET
    """CONTEXTMESH_SYNC_CONCURRENCY: the most repositories one worker syncs at once. Each
    worker syncs 80 divided by the sync replicas alive now (cm_sync_replicas), at most this,
    and keeps as many GitHub requests in flight per credential, so all replicas together stay
    under GitHub's concurrency limit however many run."""
    window: int = GITHUB_CONCURRENCY_BUDGET
    """CONTEXTMESH_SYNC_WINDOW: sync tasks of one job queued or in flight at once; the rest
    wait for them, so a small job's tasks queue behind at most this many of a big one's. Keep
    it at least the sync concurrency of all replicas together, or one job cannot use them all."""
    max_file_bytes: int = 1024 * 1024
    """CONTEXTMESH_MAX_FILE_BYTES: larger files are skipped with a warning."""
    extra_files: tuple[str, ...] = DEFAULT_EXTRA_FILES
    """CONTEXTMESH_EXTRA_FILES: comma-separated extra files fetched from each repository."""


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Fine-tuning and search."""

    enabled: bool = True
    """CONTEXTMESH_TRAINING: 'off' ends jobs DONE when the bundle is ready."""
    epochs: int = 1
    """CONTEXTMESH_TRAIN_EPOCHS: passes over the training pairs."""
    batch_size: int = 16
    """CONTEXTMESH_TRAIN_BATCH_SIZE: pairs per step; in-batch negatives grow with it."""
    learning_rate: float = 5e-5
    """CONTEXTMESH_TRAIN_LR: learning rate of a full fine-tune."""
    kind: str = "full"
    """CONTEXTMESH_TRAIN_KIND: 'adapter' trains a LoRA adapter per user on the shared base
    model (about a megabyte a user); 'full' tunes a whole copy of it (about 90 MB a user).
    'full' stays the default until adapters match it at more than one seed
    (docs/benchmarks.md, "Per-user LoRA adapters")."""
    adapter_rank: int = 4
    """CONTEXTMESH_TRAIN_ADAPTER_RANK: rank of the LoRA updates when the kind is 'adapter'."""
    adapter_learning_rate: float = 1e-3
    """CONTEXTMESH_TRAIN_ADAPTER_LR: learning rate when the kind is 'adapter' (a low-rank update
    from zero needs a larger step than moving every weight)."""
    seed: int = 42
    """CONTEXTMESH_TRAIN_SEED: same seed and thread count give the same model."""
    max_pairs: int = 4000
    """CONTEXTMESH_TRAIN_MAX_PAIRS: caps training pairs so big bundles train in bounded time."""
    model_path: str | None = None
    """CONTEXTMESH_BASE_MODEL: base model folder; defaults to the packaged all-MiniLM-L6-v2."""
    device: str = "auto"
    """CONTEXTMESH_TRAIN_DEVICE: 'auto' (CUDA when present), 'cuda' or 'cpu'."""
    model_cache_bytes: int = 1024 * 1024 * 1024
    """CONTEXTMESH_SEARCH_CACHE_BYTES: memory bound of the search service's model cache."""


WORK_STREAMS = ("DISCOVER", "SYNC", "MERGE", "TRAIN", "NOTIFY")
"""The work streams whose timing CONTEXTMESH_<STREAM>_* variables override."""


@dataclass(frozen=True, kw_only=True)
class StreamTiming:
    """Overrides of one work stream's timing (meshkit/topology.py); None keeps its default.

    Read from CONTEXTMESH_<STREAM>_ACK_WAIT_S, _DEADLINE_S and _RETRY_BACKOFF_S for each
    stream in WORK_STREAMS. Every process declares the consumers, so all must agree.
    """

    ack_wait_s: float | None = None
    deadline_s: float | None = None
    retry_backoff_s: tuple[float, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class JobSettings:
    """How the gateway ends jobs that can no longer finish."""

    stall_s: float = 7200.0
    """CONTEXTMESH_JOB_STALL_S: a job still discovering, syncing or merging whose record has
    not changed for this long is ended FAILED, so refreshes stop coalescing onto it."""
    training_stall_s: float = 172800.0
    """CONTEXTMESH_TRAINING_STALL_S: a job whose training has not moved for this long ends
    DONE with training FAILED (the default is the TRAIN stream's age limit)."""
    sweep_interval_s: float = 300.0
    """CONTEXTMESH_SWEEP_INTERVAL_S: how often each gateway looks for such jobs."""


@dataclass(frozen=True, kw_only=True)
class RetentionSettings:
    """What the retention sweep (`contextmesh gc`, OpsService.CollectGarbage) keeps."""

    keep_bundles: int = 3
    """CONTEXTMESH_KEEP_BUNDLES: the bundles kept per user, newest first (with their indexes,
    models and repository results); the bundle a pointer names and those of running jobs are
    kept besides."""
    lease_s: float = 3600.0
    """CONTEXTMESH_GC_LEASE_S: how long a sweep may run. A sweep stops deleting when it has run
    this long, and a new sweep takes over the mark of one older than this (it died)."""


@dataclass(frozen=True, kw_only=True)
class LimitSettings:
    """What one caller (a token's `sub`) may take from one gateway replica
    (docs/security.md, "Limits"): each replica counts on its own."""

    refresh_rate: float = 5.0
    """CONTEXTMESH_REFRESH_RATE: refreshes a second one caller may start, sustained; more
    are refused with RESOURCE_EXHAUSTED (HTTP 429) saying when to retry."""
    refresh_burst: int = 50
    """CONTEXTMESH_REFRESH_BURST: refreshes one caller may start at once before that rate
    applies."""
    force_rate: float = 0.1
    """CONTEXTMESH_FORCE_RATE: forced refreshes (every repository fetched again) a second one
    caller may start; each also counts as a refresh."""
    force_burst: int = 5
    """CONTEXTMESH_FORCE_BURST: forced refreshes one caller may start at once."""
    watches_per_job: int = 16
    """CONTEXTMESH_MAX_WATCHES_PER_JOB: concurrent WatchJob streams of one job."""
    watches_per_caller: int = 100
    """CONTEXTMESH_MAX_WATCHES_PER_CALLER: concurrent WatchJob streams of one caller."""


@dataclass(frozen=True, kw_only=True)
class WebhookSettings:
    """GitHub webhooks: a push refreshes its owner's bundle (docs/rest.md, "Webhooks")."""

    github_secret: str | None = field(default=None, repr=False)
    """CONTEXTMESH_GITHUB_WEBHOOK_SECRET: the secret of the GitHub webhook, which signs every
    delivery (X-Hub-Signature-256). Unset: POST /v1/webhooks/github answers 404. Never
    logged."""
    debounce_s: float = 10.0
    """CONTEXTMESH_WEBHOOK_DEBOUNCE_S: pushes to one owner within this long collapse into one
    job that re-syncs every repository they named."""


@dataclass(frozen=True, kw_only=True)
class AuthSettings:
    """How the gateway and searchsvc verify callers' bearer tokens (docs/security.md)."""

    enabled: bool = True
    """CONTEXTMESH_AUTH: 'off' lets every caller act for every user (logged loudly; never
    what `contextmesh up` does). On by default: then an issuer, an audience and keys are
    required."""
    jwks_url: str | None = None
    """CONTEXTMESH_AUTH_JWKS_URL: the identity provider's JWKS, refetched on an unknown key id."""
    keys_file: str | None = None
    """CONTEXTMESH_AUTH_KEYS_FILE: a JWKS file, one JWK or a PEM public key (used instead of
    the URL when both are set); `contextmesh up` points it at <data dir>/auth/jwks.json."""
    issuer: str | None = None
    """CONTEXTMESH_AUTH_ISSUER: the `iss` every token must carry."""
    audience: str | None = None
    """CONTEXTMESH_AUTH_AUDIENCE: a value the `aud` of every token must include."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a contextmesh process is configured with."""

    data_dir: pathlib.Path = pathlib.Path(".contextmesh")
    """CONTEXTMESH_DATA_DIR: where the embedded default keeps NATS and blob data."""
    blob_url: str = ""
    """CONTEXTMESH_BLOB_URL: file:///path, azure://container, gs://bucket or s3://bucket.
    Defaults to file://<data_dir>/blobs."""
    nats: NatsSettings = field(default_factory=NatsSettings)
    github: GithubSettings = field(default_factory=GithubSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    timing: Mapping[str, StreamTiming] = field(default_factory=dict)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    gateway_addr: str = "[::]:50051"
    """CONTEXTMESH_GATEWAY_ADDR: where the gateway listens."""
    admin_addr: str = "127.0.0.1:50053"
    """CONTEXTMESH_ADMIN_ADDR: the gateway's admin listener (OpsService, admin tokens only);
    loopback unless an operator exposes it on purpose."""
    max_concurrent_rpcs: int = 1000
    """CONTEXTMESH_MAX_CONCURRENT_RPCS: calls (open watches included) one gRPC server runs at
    once; more are refused with RESOURCE_EXHAUSTED."""
    search_addr: str = "127.0.0.1:50052"
    """CONTEXTMESH_SEARCH_ADDR: where the search service listens; the gateway dials it."""
    health_addr: str | None = None
    """CONTEXTMESH_HEALTH_ADDR: a worker's gRPC health endpoint (probes); off when unset."""
    metrics_port: int = 0
    """CONTEXTMESH_METRICS_PORT: port of the Prometheus /metrics endpoint (meshkit/metrics.py);
    unset or 0: nothing is served."""
    metrics_host: str = "0.0.0.0"
    """CONTEXTMESH_METRICS_HOST: address the /metrics endpoint binds (`contextmesh up` sets
    127.0.0.1)."""
    drain_s: float = 1.0
    """CONTEXTMESH_DRAIN_S: after SIGTERM a server answers NOT_SERVING for this long before
    it stops taking calls, so load balancers and probes move away first."""
    log_level: str = "info"
    """CONTEXTMESH_LOG_LEVEL: debug, info, warning or error."""
    log_format: str = "json"
    """CONTEXTMESH_LOG_FORMAT: json (one object a line) or text."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the environment (or `env`); raise ConfigError naming a bad variable."""
        e = _Env(os.environ if env is None else env)
        data_dir = pathlib.Path(e.text("CONTEXTMESH_DATA_DIR", ".contextmesh")).resolve()
        source = e.choice("CONTEXTMESH_SOURCE", "local", ("local", "github"))
        local_dir = e.optional("CONTEXTMESH_LOCAL_SOURCE_DIR")
        app_key = e.optional("CONTEXTMESH_GITHUB_APP_KEY_FILE")
        return cls(
            data_dir=data_dir,
            blob_url=e.text("CONTEXTMESH_BLOB_URL", (data_dir / "blobs").as_uri()),
            nats=NatsSettings(
                url=e.text("CONTEXTMESH_NATS_URL", NatsSettings.url),
                creds_file=e.optional("CONTEXTMESH_NATS_CREDS"),
                nkey_seed_file=e.optional("CONTEXTMESH_NATS_NKEY_SEED_FILE"),
                user=e.optional("CONTEXTMESH_NATS_USER"),
                ops_nkey_seed_file=e.optional("CONTEXTMESH_NATS_OPS_NKEY_SEED_FILE"),
                declare=e.flag("CONTEXTMESH_NATS_DECLARE", True),
                tls_ca_file=e.optional("CONTEXTMESH_NATS_TLS_CA"),
                tls_cert_file=e.optional("CONTEXTMESH_NATS_TLS_CERT"),
                tls_key_file=e.optional("CONTEXTMESH_NATS_TLS_KEY"),
                replicas=e.integer("CONTEXTMESH_JS_REPLICAS", 1, minimum=1, maximum=5),
                max_bytes=e.sizes("CONTEXTMESH_JS_MAX_BYTES"),
                capacity_warn=e.number("CONTEXTMESH_CAPACITY_WARN", 0.8, minimum=0.01),
                capacity_check_s=e.number("CONTEXTMESH_CAPACITY_CHECK_S", 60.0, minimum=0.1),
            ),
            github=GithubSettings(
                api_url=e.text("CONTEXTMESH_GITHUB_API_URL", GithubSettings.api_url).rstrip("/"),
                token=e.optional("CONTEXTMESH_GITHUB_TOKEN") or e.optional("GITHUB_TOKEN"),
                credentials_dir=pathlib.Path(
                    e.text("CONTEXTMESH_GITHUB_USERS_DIR", str(data_dir / "credentials"))
                ).resolve(),
                app_id=e.integer("CONTEXTMESH_GITHUB_APP_ID", 0, minimum=0) or None,
                app_key_file=pathlib.Path(app_key).resolve() if app_key else None,
                timeout_s=e.number("CONTEXTMESH_GITHUB_TIMEOUT_S", 10.0, minimum=0.1),
                max_retries=e.integer("CONTEXTMESH_GITHUB_MAX_RETRIES", 4, maximum=20),
                rate_limit_reserve=e.integer("CONTEXTMESH_GITHUB_RATE_RESERVE", 50),
            ),
            sync=SyncSettings(
                source=source,
                local_dir=pathlib.Path(local_dir).resolve() if local_dir else None,
                concurrency=e.integer(
                    "CONTEXTMESH_SYNC_CONCURRENCY",
                    GITHUB_CONCURRENCY_BUDGET,
                    minimum=1,
                    maximum=100,
                ),
                window=e.integer(
                    "CONTEXTMESH_SYNC_WINDOW", GITHUB_CONCURRENCY_BUDGET, minimum=1, maximum=10_000
                ),
                max_file_bytes=e.integer("CONTEXTMESH_MAX_FILE_BYTES", 1024 * 1024, minimum=1024),
                extra_files=e.items("CONTEXTMESH_EXTRA_FILES", DEFAULT_EXTRA_FILES),
            ),
            train=TrainSettings(
                enabled=e.flag("CONTEXTMESH_TRAINING", True),
                epochs=e.integer("CONTEXTMESH_TRAIN_EPOCHS", 1, minimum=1, maximum=50),
                batch_size=e.integer("CONTEXTMESH_TRAIN_BATCH_SIZE", 16, minimum=2, maximum=1024),
                learning_rate=e.number("CONTEXTMESH_TRAIN_LR", 5e-5, minimum=1e-8),
                kind=e.choice("CONTEXTMESH_TRAIN_KIND", TrainSettings.kind, ("adapter", "full")),
                adapter_rank=e.integer(
                    "CONTEXTMESH_TRAIN_ADAPTER_RANK",
                    TrainSettings.adapter_rank,
                    minimum=1,
                    maximum=256,
                ),
                adapter_learning_rate=e.number(
                    "CONTEXTMESH_TRAIN_ADAPTER_LR",
                    TrainSettings.adapter_learning_rate,
                    minimum=1e-8,
                ),
                seed=e.integer("CONTEXTMESH_TRAIN_SEED", 42),
                max_pairs=e.integer("CONTEXTMESH_TRAIN_MAX_PAIRS", 4000, minimum=10),
                model_path=e.optional("CONTEXTMESH_BASE_MODEL"),
                device=e.choice("CONTEXTMESH_TRAIN_DEVICE", "auto", ("auto", "cuda", "cpu")),
                model_cache_bytes=e.integer(
                    "CONTEXTMESH_SEARCH_CACHE_BYTES", 1024 * 1024 * 1024, minimum=1024 * 1024
                ),
            ),
            jobs=JobSettings(
                stall_s=e.number("CONTEXTMESH_JOB_STALL_S", JobSettings.stall_s, minimum=1.0),
                training_stall_s=e.number(
                    "CONTEXTMESH_TRAINING_STALL_S", JobSettings.training_stall_s, minimum=1.0
                ),
                sweep_interval_s=e.number(
                    "CONTEXTMESH_SWEEP_INTERVAL_S", JobSettings.sweep_interval_s, minimum=0.1
                ),
            ),
            retention=RetentionSettings(
                keep_bundles=e.integer(
                    "CONTEXTMESH_KEEP_BUNDLES", RetentionSettings.keep_bundles, minimum=1
                ),
                lease_s=e.number("CONTEXTMESH_GC_LEASE_S", RetentionSettings.lease_s, minimum=1.0),
            ),
            timing={name: _stream_timing(e, name) for name in WORK_STREAMS},
            auth=AuthSettings(
                enabled=e.flag("CONTEXTMESH_AUTH", True),
                jwks_url=e.optional("CONTEXTMESH_AUTH_JWKS_URL"),
                keys_file=e.optional("CONTEXTMESH_AUTH_KEYS_FILE"),
                issuer=e.optional("CONTEXTMESH_AUTH_ISSUER"),
                audience=e.optional("CONTEXTMESH_AUTH_AUDIENCE"),
            ),
            limits=LimitSettings(
                refresh_rate=e.number(
                    "CONTEXTMESH_REFRESH_RATE", LimitSettings.refresh_rate, minimum=0.001
                ),
                refresh_burst=e.integer(
                    "CONTEXTMESH_REFRESH_BURST", LimitSettings.refresh_burst, minimum=1
                ),
                force_rate=e.number(
                    "CONTEXTMESH_FORCE_RATE", LimitSettings.force_rate, minimum=0.001
                ),
                force_burst=e.integer(
                    "CONTEXTMESH_FORCE_BURST", LimitSettings.force_burst, minimum=1
                ),
                watches_per_job=e.integer(
                    "CONTEXTMESH_MAX_WATCHES_PER_JOB", LimitSettings.watches_per_job, minimum=1
                ),
                watches_per_caller=e.integer(
                    "CONTEXTMESH_MAX_WATCHES_PER_CALLER",
                    LimitSettings.watches_per_caller,
                    minimum=1,
                ),
            ),
            webhooks=WebhookSettings(
                github_secret=e.optional("CONTEXTMESH_GITHUB_WEBHOOK_SECRET"),
                debounce_s=e.number(
                    "CONTEXTMESH_WEBHOOK_DEBOUNCE_S", WebhookSettings.debounce_s, minimum=0.1
                ),
            ),
            gateway_addr=e.text("CONTEXTMESH_GATEWAY_ADDR", "[::]:50051"),
            admin_addr=e.text("CONTEXTMESH_ADMIN_ADDR", "127.0.0.1:50053"),
            max_concurrent_rpcs=e.integer(
                "CONTEXTMESH_MAX_CONCURRENT_RPCS", 1000, minimum=1, maximum=100_000
            ),
            search_addr=e.text("CONTEXTMESH_SEARCH_ADDR", "127.0.0.1:50052"),
            health_addr=e.optional("CONTEXTMESH_HEALTH_ADDR"),
            metrics_port=e.integer("CONTEXTMESH_METRICS_PORT", 0, maximum=65535),
            metrics_host=e.text("CONTEXTMESH_METRICS_HOST", "0.0.0.0"),
            drain_s=e.number("CONTEXTMESH_DRAIN_S", 1.0),
            log_level=e.choice(
                "CONTEXTMESH_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
            ),
            log_format=e.choice("CONTEXTMESH_LOG_FORMAT", "json", ("json", "text")),
        )


def _stream_timing(e: _Env, stream: str) -> StreamTiming:
    prefix = f"CONTEXTMESH_{stream}_"
    return StreamTiming(
        ack_wait_s=e.number(prefix + "ACK_WAIT_S", 0.0, minimum=0.5) or None,
        deadline_s=e.number(prefix + "DEADLINE_S", 0.0, minimum=0.1) or None,
        retry_backoff_s=e.numbers(prefix + "RETRY_BACKOFF_S", (), minimum=0.1) or None,
    )
