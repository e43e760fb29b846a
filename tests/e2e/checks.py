"""What the e2e fault tests read back from NATS: a job's record and its pointer writes, the
SYNC stream's deliveries, and when the work streams have drained."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from contextmesh.job.v1 import job_record_pb2

from meshkit.config import NatsSettings
from meshkit.nats_auth import ADMIN
from meshkit.nats_client import connect
from meshkit.topology import MERGE, SYNC, Buckets
from tests.support.polling import until

__all__ = ["job_record", "sync_deliveries", "wait_until_handled"]


async def job_record(
    url: str, job_id: str, *, seed: Path | None = None
) -> tuple[job_record_pb2.JobRecord, int]:
    """The job's record, and how many times bob's bundle pointer was written (`seed`: the
    admin NKey of a server that requires one, as `up`'s does)."""
    settings = NatsSettings(url=url)
    if seed is not None:
        settings = dataclasses.replace(settings, nkey_seed_file=str(seed), user=ADMIN)
    nc, js = await connect(settings, name="test")
    try:
        entry = await (await js.key_value(Buckets.JOBS.name)).get(job_id)
        record = job_record_pb2.JobRecord()
        record.ParseFromString(entry.value or b"")
        # Counted on the stream, not with KV history(): nats-py's watch behind history() can
        # end its initial values before the first one arrives.
        subject = f"$KV.{Buckets.BUNDLES.name}.bob"
        info = await js.stream_info(f"KV_{Buckets.BUNDLES.name}", subjects_filter=subject)
        return record, (info.state.subjects or {}).get(subject, 0)
    finally:
        await nc.drain()


async def sync_deliveries(url: str) -> tuple[int, int]:
    """How many sync tasks were published, and how many deliveries of them the SYNC consumer
    made: more deliveries than tasks means some task went out again (a redelivery)."""
    nc, js = await connect(NatsSettings(url=url), name="test")
    try:
        published = (await js.stream_info(SYNC.stream)).state.last_seq
        consumer = await js.consumer_info(SYNC.stream, SYNC.consumer)
        return published, consumer.delivered.consumer_seq or 0
    finally:
        await nc.drain()


async def wait_until_handled(url: str, limit_s: float = 30.0) -> None:
    """Until SYNC and MERGE are empty: work-queue streams drop a task once it is acked, so
    the duplicates were handled (not merely not yet seen) when the assertions run."""
    nc, js = await connect(NatsSettings(url=url), name="test")

    async def drained() -> bool:
        return not sum([(await js.stream_info(s.stream)).state.messages for s in (SYNC, MERGE)])

    try:
        await until(drained, limit_s, "SYNC and MERGE to drain")
    finally:
        await nc.drain()
