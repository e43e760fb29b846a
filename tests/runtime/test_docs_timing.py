"""docs/architecture.md's JetStream table says what meshkit/topology.py declares."""

from __future__ import annotations

import re
from pathlib import Path

from meshkit.topology import ALL_WORK_STREAMS

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def documented() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[0] in {ws.stream for ws in ALL_WORK_STREAMS}:
            rows[cells[0]] = cells
    return rows


def seconds(cell: str) -> float:
    return float(re.fullmatch(r"([\d.]+) s", cell).group(1))  # type: ignore[union-attr]


def test_the_documented_timing_is_the_declared_timing() -> None:
    rows = documented()
    assert set(rows) == {ws.stream for ws in ALL_WORK_STREAMS}
    for ws in ALL_WORK_STREAMS:
        _, subject, consumer, ack_wait, deadline, retries, max_deliver, in_flight = rows[ws.stream]
        assert subject == f"`{ws.subject}`" and consumer == f"`{ws.consumer}`"
        assert seconds(ack_wait) == ws.ack_wait_s
        assert seconds(deadline) == ws.deadline_s
        assert tuple(float(d) for d in retries.split(",")) == ws.retry_backoff_s
        assert int(max_deliver) == ws.max_deliver
        assert int(in_flight) == ws.max_ack_pending
