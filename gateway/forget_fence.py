"""The gateway's half of the forgetting fence: a write that names a user, then a look for a
deletion of that user under way.

DeleteUser marks the user in cm_forgetting before it lists anything of theirs. A refresh
(or a new schedule, or a new callback) writes first and looks for the mark after: either it
sees the mark and takes its write back, or its write came before the mark and so before
DeleteUser's listing, which finds and erases it (docs/architecture.md, "Forgetting a user").
The look is a leader read: a lagging replica could miss a mark already written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext

from meshkit.erasure import exists_now
from meshkit.rpc import FailedPrecondition
from meshkit.topology import Buckets

__all__ = ["ForgetFence"]


class ForgetFence:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def check(self, user: str, take_back: Callable[[], Awaitable[object]]) -> None:
        """After a write about user: if user is being forgotten, undo it and refuse."""
        if await exists_now(self.js, Buckets.FORGETTING, user):
            await take_back()
            raise FailedPrecondition(
                f"user {user!r} is being forgotten (DeleteUser); try again once that has "
                "finished (an interrupted deletion finishes when DeleteUser is called again)"
            )
