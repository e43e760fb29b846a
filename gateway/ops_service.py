"""contextmesh.ops.v1.OpsService: list and redrive tasks parked in the DEADLETTER stream."""

from __future__ import annotations

import grpc
from contextmesh.ops.v1 import ops_service_pb2 as pb
from contextmesh.ops.v1 import ops_service_pb2_grpc
from contextmesh.task.v1 import task_pb2
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from meshkit.publish import MSG_ID_HEADER, TYPE_HEADER
from meshkit.rpc import InvalidArgument, NotFound
from meshkit.telemetry import inject_headers
from meshkit.topology import DEADLETTER

__all__ = ["OpsService"]


class OpsService(ops_service_pb2_grpc.OpsServiceServicer):
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def _letter(self, seq: int) -> tuple[task_pb2.DeadLetter, str]:
        stored = await self.js.get_msg(DEADLETTER, seq)
        letter = task_pb2.DeadLetter()
        letter.ParseFromString(stored.data or b"")
        return letter, stored.subject or ""

    @staticmethod
    def _parked(seq: int, letter: task_pb2.DeadLetter) -> pb.ParkedTask:
        return pb.ParkedTask(
            sequence=seq,
            subject=letter.subject,
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
                letter, _ = await self._letter(seq)
            except NotFoundError:
                seq += 1  # redriven (deleted) letters leave gaps
                continue
            tasks.append(self._parked(seq, letter))
            seq += 1
        return pb.ListDeadLettersResponse(
            tasks=tasks, next_page_token=str(seq) if seq <= last else ""
        )

    async def RedriveDeadLetter(
        self, request: pb.RedriveDeadLetterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedriveDeadLetterResponse:
        try:
            letter, _ = await self._letter(request.sequence)
        except NotFoundError:
            raise NotFound(
                f"no dead letter with sequence {request.sequence}; list them with ListDeadLetters"
            ) from None
        # A fresh message id: the original is still inside the duplicate window, maybe.
        headers = inject_headers(
            {
                MSG_ID_HEADER: f"{letter.msg_id}:redrive:{request.sequence}",
                TYPE_HEADER: "redrive",
            }
        )
        await self.js.publish(letter.subject, letter.payload, headers=headers)
        await self.js.delete_msg(DEADLETTER, request.sequence)
        return pb.RedriveDeadLetterResponse(task=self._parked(request.sequence, letter))
