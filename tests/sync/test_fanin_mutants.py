"""Fan-in at its edges, against a real nats-server: outcomes recorded in one call beyond one
batch of stores all count, one counted already does not stop the next, an outcome stored but
never counted counts as stored, the failures listed stop at the maximum, outcomes that change
nothing write nothing, and an index past the counted bitmap reads as not counted.

Written against mutants tools/mutation.py found surviving in syncsvc/fanin.py
(docs/testing.md).
"""

from __future__ import annotations

from contextmesh.job.v1 import job_pb2

from syncsvc.fanin import MAX_LISTED_FAILURES, bit_is_set, outcome_key
from tests.support.inproc import own_connection  # noqa: F401 - fixture: the test's own nats-server
from tests.sync.test_fanin import (  # noqa: F401 - open_job: a fixture
    JobState,
    OpenJob,
    RepoStatus,
    open_job,
    outcome,
)


def test_an_index_past_the_bitmap_reads_as_not_counted() -> None:
    assert bit_is_set(b"\x01\x80", 0) and bit_is_set(b"\x01\x80", 15)
    assert not bit_is_set(b"\x01\x80", 1)
    assert not bit_is_set(b"\x01\x80", 16)


async def test_outcomes_recorded_in_one_call_beyond_one_batch_all_count(
    open_job: OpenJob,  # noqa: F811 - the fixture imported above
) -> None:
    total = 130  # two full batches of 64 stores and two outcomes more
    job = await open_job(total)

    await job.fanin.record(job.id, job.user, [outcome(i) for i in range(total)])

    done = await job.record()
    assert done.state == JobState.JOB_STATE_MERGING and done.synced == total
    assert [m.total for _, m in await job.merges()] == [total]


async def test_an_outcome_stored_but_never_counted_counts_as_first_stored(
    open_job: OpenJob,  # noqa: F811 - the fixture imported above
) -> None:
    # A replica stored the outcome and died before counting it; the redelivery that differs
    # counts what was stored first.
    job = await open_job(2)
    first = outcome(1, RepoStatus.REPO_STATUS_FAILED)
    await job.fanin.outcomes.create(outcome_key(job.id, 1), first.SerializeToString())

    await job.fanin.record(job.id, job.user, [outcome(1)])

    counted = await job.record()
    assert (counted.synced, counted.failed) == (0, 1)
    assert [f.repository for f in counted.failures] == [first.repository]
    assert await job.fanin.stored(job.id, 1) == first
    assert await job.fanin.stored(job.id, 0) is None  # never stored


async def test_an_outcome_counted_already_does_not_stop_the_next_from_counting(
    open_job: OpenJob,  # noqa: F811 - the fixture imported above
) -> None:
    job = await open_job(2)
    await job.fanin.record(job.id, job.user, [outcome(0)])

    await job.fanin.record(job.id, job.user, [outcome(0), outcome(1)])

    done = await job.record()
    assert (done.synced, done.state) == (2, JobState.JOB_STATE_MERGING)


async def test_the_failures_listed_stop_at_the_maximum(
    open_job: OpenJob,  # noqa: F811 - the fixture imported above
) -> None:
    total = MAX_LISTED_FAILURES + 1
    job = await open_job(total)

    failed = RepoStatus.REPO_STATUS_FAILED
    await job.fanin.record(job.id, job.user, [outcome(i, failed) for i in range(total)])

    done = await job.record()
    assert done.failed == total and len(done.failures) == MAX_LISTED_FAILURES


async def test_outcomes_that_change_nothing_leave_the_record_unwritten(
    open_job: OpenJob,  # noqa: F811 - the fixture imported above
) -> None:
    job = await open_job(2)
    await job.fanin.record(job.id, job.user, [outcome(0)])
    _, revision = await job.fanin.jobs.get(job.id)

    await job.fanin.record(job.id, job.user, [outcome(0)])  # a redelivery
    assert (await job.fanin.jobs.get(job.id))[1] == revision

    await job.fanin.record(job.id, job.user, [outcome(1)])
    _, revision = await job.fanin.jobs.get(job.id)
    await job.fanin.record(job.id, job.user, [outcome(1)])  # a redelivery once it is merging
    assert (await job.fanin.jobs.get(job.id))[1] == revision

    await job.fanin.jobs.end(
        job.id, JobState.JOB_STATE_CANCELLED, "cancelled", code=job_pb2.ERROR_CODE_CANCELLED
    )
    _, revision = await job.fanin.jobs.get(job.id)
    await job.fanin.record(job.id, job.user, [outcome(0)])  # too late: the job is final
    assert (await job.fanin.jobs.get(job.id))[1] == revision
