"""contextmesh.gateway.v1.WebhookService: GitHub's webhooks, on the public listener.

Envoy's transcoder passes `POST /v1/webhooks/github` through with the body as it came (a
google.api.HttpBody) and the request headers as metadata, so the signature is checked over
the exact bytes GitHub signed. The method's access rule is SELF_AUTHENTICATED
(gateway.access): no bearer token, the signature authenticates GitHub. In order, each step
before anything is written:

    no CONTEXTMESH_GITHUB_WEBHOOK_SECRET     NOT_FOUND (404): the endpoint is off
    body over MAX_BODY_BYTES                 INVALID_ARGUMENT (400)
    signature missing or wrong               UNAUTHENTICATED (401)
    delivery id or event missing, body not   INVALID_ARGUMENT (400)
      JSON or naming no usable repository
    ping / an event that changes nothing     OK, outcome PONG / IGNORED
    a delivery id received before            OK, outcome DUPLICATE
    push, repository (created, deleted, ...) OK, outcome ACCEPTED: a refresh follows

The transcoder cannot answer 204 (an empty google.protobuf.Empty still gives a 200 with
`{}`), so ignored events get 200 with outcome IGNORED, which GitHub counts as delivered.
"""

from __future__ import annotations

import grpc
from contextmesh.gateway.v1 import webhook_service_pb2 as pb
from contextmesh.gateway.v1 import webhook_service_pb2_grpc

from gateway.github_events import check_delivery_id, check_size, read_event, verify
from gateway.pending import PendingRefreshes
from meshkit.rpc import NotFound

__all__ = ["WebhookService"]

Outcome = pb.WebhookOutcome


def _header(context: grpc.aio.ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str):
            return value
    return None


class WebhookService(webhook_service_pb2_grpc.WebhookServiceServicer):
    def __init__(self, secret: str | None, pending: PendingRefreshes) -> None:
        self._secret = secret
        self.pending = pending

    async def ReceiveGithubWebhook(
        self, request: pb.ReceiveGithubWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceiveGithubWebhookResponse:
        if not self._secret:
            raise NotFound(
                "GitHub webhooks are off on this gateway: set CONTEXTMESH_GITHUB_WEBHOOK_SECRET"
            )
        body = request.body.data
        check_size(body)
        verify(self._secret, body, _header(context, "x-hub-signature-256"))
        delivery = check_delivery_id(_header(context, "x-github-delivery"))
        event = read_event(_header(context, "x-github-event"), body)
        if event.kind == "ping":
            return pb.ReceiveGithubWebhookResponse(
                outcome=Outcome.WEBHOOK_OUTCOME_PONG, message="pong"
            )
        if not event.refreshes:
            return pb.ReceiveGithubWebhookResponse(
                outcome=Outcome.WEBHOOK_OUTCOME_IGNORED,
                message=f"ignored: a {event.kind} event changes nothing contextmesh keeps",
            )
        if not await self.pending.accept(delivery, event.user, event.resync):
            return pb.ReceiveGithubWebhookResponse(
                outcome=Outcome.WEBHOOK_OUTCOME_DUPLICATE,
                user=event.user,
                message=f"delivery {delivery} was received before; nothing started again",
            )
        return pb.ReceiveGithubWebhookResponse(
            outcome=Outcome.WEBHOOK_OUTCOME_ACCEPTED,
            user=event.user,
            message=f"a refresh of {event.user} starts within {self.pending.debounce_s:g} s"
            + (f", re-syncing {', '.join(event.resync)}" if event.resync else ""),
        )
