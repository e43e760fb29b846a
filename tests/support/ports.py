"""Free loopback ports for servers that cannot bind port 0 and report back: the one helper
`contextmesh up` uses too."""

from __future__ import annotations

from meshctl.metrics_targets import free_port

__all__ = ["free_port"]
