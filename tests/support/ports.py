"""Free loopback ports for servers that cannot bind port 0 and report back: the one helper
`contextmesh up` uses too, and a run of consecutive ones (`up --cluster` takes --nats-port and
the next two)."""

from __future__ import annotations

import socket

from meshctl.metrics_targets import free_port

__all__ = ["free_port", "free_ports_in_a_row"]


def free_ports_in_a_row(count: int) -> int:
    """The first of `count` consecutive free loopback ports."""
    while True:
        first = free_port()
        if all(_free(first + i) for i in range(1, count)):
            return first


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
