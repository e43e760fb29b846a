"""What a broken contract rule reads like, the same in an RPC error and a parked task."""

from __future__ import annotations

import protovalidate

__all__ = ["describe_violations"]


def describe_violations(exc: protovalidate.ValidationError) -> str:
    """'field: message [rule id]' for each violation, joined by '; '."""
    parts = []
    for violation in exc.violations:
        path = violation.proto.field
        field = ".".join(e.field_name for e in path.elements) if path else ""
        parts.append(f"{field or 'request'}: {violation.proto.message} [{violation.proto.rule_id}]")
    return "; ".join(parts)
