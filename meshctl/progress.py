"""How a job reads on a terminal: one progress line, then a closing summary."""

from __future__ import annotations

from contextmesh.job.v1 import job_pb2
from contextmesh.notify.v1 import callback_pb2
from contextmesh.schedule.v1 import schedule_pb2

from meshkit.job_errors import error_reason

__all__ = [
    "bundle_line",
    "callback_line",
    "history_line",
    "progress_line",
    "schedule_line",
    "summary",
]

JobState = job_pb2.JobState


def _state(job: job_pb2.Job) -> str:
    return JobState.Name(job.state).removeprefix("JOB_STATE_").replace("_", " ").capitalize()


def bundle_line(job: job_pb2.Job) -> str:
    """e.g. 'Bundle ready: 0123456789abcdef… (14 repositories: 2 synced, 12 unchanged,
    0 failed)'."""
    return (
        f"Bundle ready: {job.bundle.content_hash[:16]}… ({job.bundle.repositories} "
        f"repositories: {job.synced} synced, {job.unchanged} unchanged, {job.failed} failed)"
    )


def progress_line(job: job_pb2.Job, width: int = 24) -> str:
    """e.g. 'Syncing [#########.......] 7/10 · 2 unchanged · 1 failed'; once the bundle is
    ready, only training's progress ('Training queued…', 'Training [####....] step 3/8')."""
    done = job.synced + job.unchanged + job.failed
    if job.state == JobState.JOB_STATE_TRAINING and job.training.total_steps:
        filled = width * job.training.step // job.training.total_steps
        return (
            f"Training [{'#' * filled}{'.' * (width - filled)}] "
            f"step {job.training.step}/{job.training.total_steps}"
        )
    if job.state == JobState.JOB_STATE_BUNDLE_READY:
        return "Training queued…"
    if job.state == JobState.JOB_STATE_TRAINING:
        return "Training…"
    if job.total:
        filled = width * done // job.total
        bar = f"[{'#' * filled}{'.' * (width - filled)}] "
        return (
            f"{_state(job)} {bar}{done}/{job.total} · {job.unchanged} unchanged · "
            f"{job.failed} failed"
        )
    return f"{_state(job)}…"


def summary(job: job_pb2.Job) -> str:
    lines = [f"Job {job.id}: {_state(job)}"]
    if job.total or job.state == JobState.JOB_STATE_DONE:
        lines.append(
            f"  repositories {job.total}: {job.synced} synced, {job.unchanged} "
            f"unchanged, {job.failed} failed"
        )
    for failure in job.failures:
        lines.append(f"  ✗ {failure.repository}: {failure.reason}")
    if job.bundle.content_hash:
        lines.append(
            f"  bundle {job.bundle.content_hash[:16]}… "
            f"({job.bundle.repositories} repositories, {job.bundle.size_bytes} bytes)"
        )
    training = job.training
    if training.state:
        name = job_pb2.TrainingState.Name(training.state).removeprefix("TRAINING_STATE_").lower()
        line = f"  training {name.replace('_', ' ')}"
        if training.base.queries:
            line += (
                f": MRR@10 base {training.base.mrr_at_10:.3f} → tuned "
                f"{training.tuned.mrr_at_10:.3f}"
            )
        if training.reason:
            line += f" ({training.reason})"
        lines.append(line)
    if job.HasField("error_status"):
        lines.append(f"  error: {job.error_status.message} [{error_reason(job)}]")
    elif job.error:  # a record written before error_status existed
        lines.append(f"  error: {job.error}")
    return "\n".join(lines)


def history_line(job: job_pb2.Job) -> str:
    """One job of a user's history: when, how it ended, and its counts."""
    created = job.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    counts = f"{job.total} repositories ({job.synced} synced, {job.failed} failed)"
    return f"{job.id}  {created}  {_state(job):<12} {counts}"


_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def schedule_line(schedule: schedule_pb2.Schedule) -> str:
    """e.g. 'demo: every 6h, next 2026-12-01 03:17:42 UTC, last job 01K…'."""
    seconds = schedule.interval.seconds
    unit = next((u for u, size in _UNITS if seconds % size == 0), "s")
    every = f"{seconds // dict(_UNITS)[unit]}{unit}"
    nxt = schedule.next_run_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")
    line = f"{schedule.user}: every {every}, next {nxt}"
    if schedule.HasField("last_run_time"):
        last = schedule.last_job_id or "none (a job was running)"
        line += f", last job {last}"
    return line


def callback_line(callback: callback_pb2.Callback) -> str:
    """e.g. 'demo: notifies https://example.com/hook, set 2026-12-01 03:17:42 UTC'."""
    since = callback.update_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{callback.user}: notifies {callback.url}, set {since}"
