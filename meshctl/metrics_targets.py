"""Where Prometheus finds the services' /metrics: one port per process, listed for file_sd.

`contextmesh up` (and the end-to-end tests' Mesh) give every service process a free loopback
port in CONTEXTMESH_METRICS_PORT and write the list of them as a Prometheus file_sd file,
`<data dir>/prometheus-targets.json`:

    [{"targets": ["127.0.0.1:40123"], "labels": {"service": "gateway"}}, ...]

A Prometheus with `file_sd_configs: [{files: [that path]}]` scrapes them all, each series
labelled with the service it came from (the metrics carry no such label themselves).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TARGETS_FILE", "MetricsTarget", "free_port", "write_targets"]

TARGETS_FILE = "prometheus-targets.json"
"""Its name in the data directory."""


@dataclass(frozen=True)
class MetricsTarget:
    """One process's /metrics endpoint."""

    process: str
    """The process's name (syncsvc-1), as the banner and the logs call it."""
    service: str
    """The service it runs (syncsvc): the `service` label of its series."""
    port: int
    host: str = "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick); the process given it binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def write_targets(path: Path, targets: Iterable[MetricsTarget]) -> None:
    """Write the file_sd list, replacing the file in one rename: Prometheus rereads it when
    it changes and must never see half of it."""
    entries = [{"targets": [t.address], "labels": {"service": t.service}} for t in targets]
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(entries, indent=2) + "\n")
    os.replace(partial, path)
