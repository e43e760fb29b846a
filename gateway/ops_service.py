"""contextmesh.ops.v1.OpsService: list tasks parked in the DEADLETTER stream, and redrive
them (gateway/redrive.py: a new job re-runs the work); forget a user (gateway/forget.py); sweep
blobs nothing needs any more (gateway/retention.py)."""

from __future__ import annotations

import grpc
from contextmesh.ops.v1 import ops_service_pb2 as pb
from contextmesh.ops.v1 import ops_service_pb2_grpc
from contextmesh.task.v1 import task_pb2
from nats.js import JetStreamContext

from gateway.forget import Forgetter
from gateway.redrive import SUBJECT_OF, Redriver, read_letter
from gateway.retention import RetentionSweep
from meshkit.rpc import FailedPrecondition, InvalidArgument, NotFound
from meshkit.topology import DEADLETTER

__all__ = ["OpsService"]

_MAX_KEYS = 1000


class OpsService(ops_service_pb2_grpc.OpsServiceServicer):
    def __init__(
        self,
        js: JetStreamContext,
        redriver: Redriver,
        forgetter: Forgetter,
        sweep: RetentionSweep | None = None,
    ) -> None:
        self.js = js
        self.redriver = redriver
        self.forgetter = forgetter
        self.sweep = sweep

    @staticmethod
    def _parked(seq: int, stream: str, letter: task_pb2.DeadLetter) -> pb.ParkedTask:
        # The subject is the one the letter's stream names, not what its payload claims.
        return pb.ParkedTask(
            sequence=seq,
            subject=SUBJECT_OF.get(stream, ""),
            job_id=letter.job_id,
            msg_id=letter.msg_id,
            reason=letter.reason,
            deliveries=letter.deliveries,
        )

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeadLettersResponse:
        size = request.page_size or 100
        info = await self.js.stream_info(DEADLETTER)
        token = request.page_token or "0"
        if not token.isdigit():
            raise InvalidArgument("page_token: pass the next_page_token of the previous page")
        # Sequences start at 1; an empty stream reports first_seq 0.
        start = max(int(token), info.state.first_seq, 1)
        last = info.state.last_seq
        tasks: list[pb.ParkedTask] = []
        seq = start
        while seq <= last and len(tasks) < size:
            try:
                found = await read_letter(self.js, seq)
            except NotFound:
                seq += 1  # redriven (deleted) letters leave gaps
                continue
            tasks.append(self._parked(seq, found.stream, found.letter))
            seq += 1
        return pb.ListDeadLettersResponse(
            tasks=tasks, next_page_token=str(seq) if seq <= last else ""
        )

    async def RedriveDeadLetter(
        self, request: pb.RedriveDeadLetterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedriveDeadLetterResponse:
        redriven = await self.redriver.redrive(request.sequence)
        return pb.RedriveDeadLetterResponse(
            task=self._parked(redriven.sequence, redriven.stream, redriven.letter),
            job=redriven.job,
        )

    async def DeleteUser(
        self, request: pb.DeleteUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteUserResponse:
        forgotten = await self.forgetter.forget(request.user)
        return pb.DeleteUserResponse(
            jobs=forgotten.jobs, blobs=forgotten.blobs, dead_letters=forgotten.dead_letters
        )

    async def CollectGarbage(
        self, request: pb.CollectGarbageRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectGarbageResponse:
        if self.sweep is None:
            raise FailedPrecondition("this gateway runs no retention sweep")
        report = await self.sweep.run(dry_run=request.dry_run)
        return pb.CollectGarbageResponse(
            kinds=[
                pb.Garbage(
                    kind=kind,
                    count=garbage.count,
                    bytes=garbage.bytes,
                    keys=garbage.keys[:_MAX_KEYS] if request.list_keys else [],
                )
                for kind, garbage in report.kinds.items()
            ],
            spared=report.spared,
            dry_run=report.dry_run,
        )
