"""Prometheus metrics: every metric object of the mesh, defined once, and their endpoint.

Each service serves /metrics on CONTEXTMESH_METRICS_PORT (run_service calls
`serve_metrics`); unset or 0 serves nothing. The objects live in prometheus-client's default
registry, so updating one costs a lock and an addition whether or not anything scrapes.

Labels are bounded enumerations only (a gRPC method and code, a stream, an outcome, a
backend): never a user, job id, repository, token, URL or free text, so the number of series
stays fixed however many users and jobs there are. Metrics carry no service label: the scrape
adds one (the file_sd list `contextmesh up` writes, or relabelling in Kubernetes).
"""

from __future__ import annotations

import enum
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "BLOB_BYTES",
    "BLOB_DURATION",
    "CONSUMER_ACK_PENDING",
    "CONSUMER_PENDING",
    "DEAD_LETTERS",
    "GITHUB_RATE_LIMIT_REMAINING",
    "GITHUB_REQUESTS",
    "JOBS_COALESCED",
    "JOBS_FINISHED",
    "JOBS_RUNNING",
    "JOBS_STARTED",
    "JOB_DURATION",
    "JOB_OLDEST_RUNNING_AGE",
    "RPC_DURATION",
    "RPC_REQUESTS",
    "SEARCH_DURATION",
    "STREAM_BYTES",
    "STREAM_MESSAGES",
    "TASKS",
    "TASK_DELIVERIES",
    "TASK_DURATION",
    "TASK_REDELIVERIES",
    "TRAINING_DURATION",
    "TRAINING_MRR",
    "TRAINING_RUNS",
    "TaskOutcome",
    "count_delivery",
    "declare_task_stream",
    "serve_metrics",
]

# Latency buckets from a fast RPC (a millisecond) to a slow task or blob transfer (minutes).
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# A job or a training run takes seconds to hours.
_LONG_SECONDS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)

# -- gRPC servers (meshkit/rpc.py, MetricsInterceptor) ------------------------------------

RPC_REQUESTS = Counter(
    "contextmesh_rpc_requests_total",
    "gRPC calls served, by full method name and final status code.",
    ["method", "code"],
)
RPC_DURATION = Histogram(
    "contextmesh_rpc_duration_seconds",
    "Time to serve a gRPC call, until the handler returned or its stream ended.",
    ["method"],
    buckets=_SECONDS,
)

# -- work streams (meshkit/worker.py) -----------------------------------------------------


class TaskOutcome(enum.StrEnum):
    """What a worker did with one delivery (the `outcome` label)."""

    ACK = "ack"
    RETRY = "retry"  # failed, nak'ed with the stream's backoff
    DEFERRED = "deferred"  # RetryLater: nak'ed without counting as a failure
    PARKED = "parked"  # copied to DEADLETTER and terminated


TASKS = Counter(
    "contextmesh_tasks_total",
    "Deliveries handled, by work stream and what the worker did with each.",
    ["stream", "outcome"],
)
TASK_DURATION = Histogram(
    "contextmesh_task_duration_seconds",
    "Handling time of one delivery, by work stream.",
    ["stream"],
    buckets=_SECONDS,
)
TASK_DELIVERIES = Counter(
    "contextmesh_task_deliveries_total", "Deliveries fetched, by work stream.", ["stream"]
)
TASK_REDELIVERIES = Counter(
    "contextmesh_task_redeliveries_total",
    "Deliveries of a task that had been delivered before, by work stream.",
    ["stream"],
)
DEAD_LETTERS = Counter(
    "contextmesh_dead_letters_total",
    "Tasks written to DEADLETTER, by the work stream they came from.",
    ["stream"],
)
CONSUMER_PENDING = Gauge(
    "contextmesh_consumer_pending_messages",
    "Messages the server holds for a worker's consumer and has not delivered yet.",
    ["stream", "consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "contextmesh_consumer_ack_pending_messages",
    "Messages delivered to a worker's consumer and not acknowledged yet.",
    ["stream", "consumer"],
)

# -- streams and buckets (meshkit/capacity.py) --------------------------------------------

STREAM_MESSAGES = Gauge(
    "contextmesh_stream_messages",
    "Messages stored in a stream (DEADLETTER and the KV_* buckets included).",
    ["stream"],
)
STREAM_BYTES = Gauge("contextmesh_stream_bytes", "Bytes stored in a stream.", ["stream"])

# -- jobs (gateway/refresh.py, meshkit/jobs.py, gateway/sweeper.py) -----------------------

JOBS_STARTED = Counter("contextmesh_jobs_started_total", "Refresh jobs created.")
JOBS_COALESCED = Counter(
    "contextmesh_jobs_coalesced_total", "Refresh requests that joined a job already running."
)
JOBS_FINISHED = Counter(
    "contextmesh_jobs_finished_total",
    "Jobs that reached a final state, by that state (DONE, FAILED, CANCELLED).",
    ["state"],
)
JOB_DURATION = Histogram(
    "contextmesh_job_duration_seconds",
    "Time from a job's creation to its final state, by that state.",
    ["state"],
    buckets=_LONG_SECONDS,
)
JOBS_RUNNING = Gauge("contextmesh_jobs_running", "Jobs not in a final state, at the last sweep.")
JOB_OLDEST_RUNNING_AGE = Gauge(
    "contextmesh_job_oldest_running_age_seconds",
    "Age of the oldest job not in a final state at the last sweep (0 when there is none).",
)

# -- GitHub (syncsvc/sources/github_http.py) ----------------------------------------------

GITHUB_REQUESTS = Counter(
    "contextmesh_github_requests_total",
    'GitHub API requests, by HTTP status code ("error": no response came).',
    ["status"],
)
GITHUB_RATE_LIMIT_REMAINING = Gauge(
    "contextmesh_github_rate_limit_remaining",
    "The last X-RateLimit-Remaining GitHub sent: requests left in the token's window.",
)

# -- blob stores (meshkit/blob/measured.py) -----------------------------------------------

BLOB_BYTES = Counter(
    "contextmesh_blob_bytes_total",
    "Bytes moved to or from a blob store, by backend and direction (read, write).",
    ["backend", "direction"],
)
BLOB_DURATION = Histogram(
    "contextmesh_blob_operation_duration_seconds",
    "Time of one blob store operation (a streamed read: until its last chunk).",
    ["backend", "operation"],
    buckets=_SECONDS,
)

# -- training and search (trainsvc, searchsvc) --------------------------------------------

TRAINING_RUNS = Counter(
    "contextmesh_training_runs_total",
    "Training tasks ended, by outcome (published, not_improved, skipped, failed).",
    ["outcome"],
)
TRAINING_DURATION = Histogram(
    "contextmesh_training_duration_seconds",
    "Time of one fine-tuning run, evaluation included.",
    buckets=_LONG_SECONDS,
)
TRAINING_MRR = Histogram(
    "contextmesh_training_mrr",
    "Held-out MRR@10 of each run, of the base model and of the tuned one.",
    ["model"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
SEARCH_DURATION = Histogram(
    "contextmesh_search_duration_seconds",
    "Time to answer one search, model and index loading included.",
    buckets=_SECONDS,
)


def declare_task_stream(stream: str) -> None:
    """Create a work stream's task series at zero, so that the first retry or dead letter
    shows as an increase (a series born at 1 has no increase to see)."""
    for outcome in TaskOutcome:
        TASKS.labels(stream, outcome)
    for counter in (TASK_DELIVERIES, TASK_REDELIVERIES, DEAD_LETTERS):
        counter.labels(stream)


def count_delivery(stream: str, attempt: int) -> None:
    """One delivery fetched from `stream` (attempt 1 is the first)."""
    TASK_DELIVERIES.labels(stream).inc()
    if attempt > 1:
        TASK_REDELIVERIES.labels(stream).inc()


def serve_metrics(host: str, port: int) -> WSGIServer:
    """Serve /metrics on host:port from a daemon thread; shut the returned server down to
    stop. OSError when the port is taken."""
    server, _ = start_http_server(port, addr=host)
    return server
