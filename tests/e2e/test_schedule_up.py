"""A one-minute schedule through `contextmesh up`, as a user runs it (issue #15): it fires,
survives a restart of `up`, and starts nothing while a job of the user runs.

Each user's runs keep a phase of their own within the interval, taken from a hash of the name
(gateway/schedules.py), and a fresh schedule's first run is the first of them after it is
set. So the test names its user for a first run a few seconds after setting, and the three
runs it watches (fired, fired after the restart, skipped) span the two minutes a one-minute
interval cannot shorten. `up` syncs from the GitHub stand-in, which holds the last job open
across the third run by answering its repository listing late.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2
from contextmesh.schedule.v1 import schedule_pb2

from gateway.schedules import next_run
from meshkit.bearer import bearer_channel
from tests.e2e.up_support import cli, processes_using, start_up
from tests.support.fake_github import FakeGithub, populate
from tests.support.polling import wait_until
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

JobState = job_pb2.JobState
Stub = bundle_service_pb2_grpc.BundleServiceStub
TOKEN = "ghp_" + "S" * 36
EVERY_S = 60
"""The shortest interval a schedule may have."""
LEAD_S = 8
"""The first run comes at least this long after the test picks its user: time enough for
the CLI to set the schedule before it is due."""
HELD_PAST_DUE_S = 10
"""How long the held job goes on after the run that must skip it."""
FIRING_S = 30
"""How late a run may be seen after its due time on a busy machine."""


def user_due_soon(now: float) -> tuple[str, int]:
    """A user whose one-minute schedule, set now, first runs LEAD_S to 2 * LEAD_S from now,
    and that run's time."""
    names = (f"sched-{i}" for i in itertools.count())
    user = next(u for u in names if LEAD_S <= next_run(u, EVERY_S, now) - now <= 2 * LEAD_S)
    return user, next_run(user, EVERY_S, now)


def utc(seconds: int) -> str:
    """A time as the CLI prints it."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@contextlib.contextmanager
def up_running(
    data_dir: Path, ports: dict[str, int], log: Path, env: dict[str, str]
) -> Iterator[None]:
    """`contextmesh up --github` until the block ends, then stopped with SIGTERM as a user's
    Ctrl-C or service manager would: it exits 0 and leaves no process behind."""
    proc = start_up(data_dir, ports, log, env, options=["--github"])
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()
    assert processes_using(str(data_dir)) == []


@contextlib.contextmanager
def stub_as(target: str, token: str) -> Iterator[Stub]:
    with bearer_channel(target, token) as channel:
        yield Stub(channel)


def schedule_of(stub: Stub, user: str) -> schedule_pb2.Schedule:
    return stub.GetSchedule(pb.GetScheduleRequest(user=user), timeout=10).schedule


def job_ids(stub: Stub, user: str) -> list[str]:
    """The user's jobs, newest first."""
    return [j.id for j in stub.ListJobs(pb.ListJobsRequest(user=user), timeout=10).jobs]


def came_due(
    stub: Stub, user: str, due: int, *, with_job: bool
) -> Callable[[], schedule_pb2.Schedule | None]:
    """The schedule once its run at `due` is recorded and, `with_job`, the job that run
    started (a run that starts one is written twice: its time, then its job). No call is
    made before `due`."""

    def check() -> schedule_pb2.Schedule | None:
        if time.time() < due:
            return None
        schedule = schedule_of(stub, user)
        if schedule.last_run_time.seconds < due or (with_job and not schedule.last_job_id):
            return None
        return schedule

    return check


def ended(stub: Stub, job_id: str) -> job_pb2.Job:
    """The job once it has ended, followed with WatchJob."""
    final = list(stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=120))[-1]
    assert final.final
    return final.job


def test_a_one_minute_schedule_fires_survives_a_restart_and_skips_while_a_job_runs(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    ports = {name: free_port() for name in ("grpc", "rest", "nats", "search", "admin")}
    target = f"localhost:{ports['grpc']}"
    with FakeGithub(token=TOKEN) as github:
        env = {
            **{k: v for k, v in os.environ.items() if k != "CONTEXTMESH_TOKEN"},
            "CONTEXTMESH_TARGET": target,
            "CONTEXTMESH_ADMIN_TARGET": f"localhost:{ports['admin']}",
            "CONTEXTMESH_DATA_DIR": str(data_dir),
            "CONTEXTMESH_GITHUB_API_URL": github.url,
            "GITHUB_TOKEN": TOKEN,
            # The stand-in's late answer that holds a job open is waited for, not retried.
            "CONTEXTMESH_GITHUB_TIMEOUT_S": "120",
        }

        with up_running(data_dir, ports, tmp_path / "up.log", env):
            user, first_due = user_due_soon(time.time())
            populate(github, user, 3)
            set_line = cli(env, "schedule", user, "--every", "1m").stdout
            assert f"{user}: every 1m, next {utc(first_due)}" in set_line
            token = cli(env, "token", "--user", user, "--ttl", "1h").stdout.strip()
            with stub_as(target, token) as stub:
                first = wait_until(
                    came_due(stub, user, first_due, with_job=True),
                    timeout_s=first_due - time.time() + FIRING_S,
                    what="the first scheduled run",
                )
                # Nobody else refreshed this user: the one job is the schedule's.
                assert job_ids(stub, user) == [first.last_job_id]
                assert cli(env, "jobs", user).stdout.split()[0] == first.last_job_id
                job = ended(stub, first.last_job_id)
                assert job.state == JobState.JOB_STATE_DONE and job.synced == 3
                assert job.create_time.seconds >= first_due
                assert first.next_run_time.seconds == first_due + EVERY_S

        # Same data directory: the schedule, and the token minted before, are still good.
        with (
            up_running(data_dir, ports, tmp_path / "up-again.log", env),
            stub_as(target, token) as stub,
        ):
            kept = schedule_of(stub, user)
            assert (kept.interval, kept.create_time) == (first.interval, first.create_time)
            assert "every 1m" in cli(env, "schedule", user).stdout
            second_due = first_due + EVERY_S
            second = wait_until(
                came_due(stub, user, second_due, with_job=True),
                timeout_s=second_due - time.time() + FIRING_S,
                what="the first scheduled run after the restart",
            )
            assert job_ids(stub, user) == [second.last_job_id, first.last_job_id]
            assert ended(stub, second.last_job_id).state == JobState.JOB_STATE_DONE

            # A refresh of the user's own, held open across the next run by a slow listing.
            third_due = second_due + EVERY_S
            github.slow(
                third_due + HELD_PAST_DUE_S - time.time(), path=f"^/users/{user}/repos", times=1
            )
            held = cli(env, "refresh", user).stdout.split()[1]
            skipped = wait_until(
                came_due(stub, user, third_due, with_job=False),
                timeout_s=third_due - time.time() + FIRING_S,
                what="the scheduled run while a job runs",
            )
            assert skipped.last_job_id == "", "a job was running: the run started none"
            job = ended(stub, held)
            assert job.state == JobState.JOB_STATE_DONE
            assert job.create_time.seconds < third_due < job.end_time.seconds, "held across"
            # The run started nothing, then or later; the next one is an interval on.
            assert job_ids(stub, user) == [held, second.last_job_id, first.last_job_id]
            after = schedule_of(stub, user)
            assert after == skipped
            assert after.next_run_time.seconds == third_due + EVERY_S
            assert "last job none (a job was running)" in cli(env, "schedule", user).stdout
