"""Write docs/configuration.md from the documented fields of meshkit/config.py.

    python tools/gen_config_doc.py           # rewrite the page
    python tools/gen_config_doc.py --check   # exit 1 if the page is stale

Each settings field is followed by a docstring "VARIABLE: meaning"; this turns them into the
table, so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE = ROOT / "meshkit" / "config.py"
PAGE = ROOT / "docs" / "configuration.md"

HEADER = """# Configuration

Every process reads the same environment variables once at start into
`meshkit.config.Settings` (frozen, typed). A missing or malformed value stops the process
with an error that names the variable. `contextmesh up` sets them for its processes; on
Kubernetes they come from the ConfigMap and Secret in `k8s/base/`. This page is generated
from `meshkit/config.py` by `python tools/gen_config_doc.py`.

| variable | default | meaning |
|---|---|---|
"""

FOOTER = """\
| `CONTEXTMESH_<STREAM>_ACK_WAIT_S` | see docs/architecture.md | for STREAM in DISCOVER, \
SYNC, MERGE, TRAIN, NOTIFY: how long a delivery may go without an acknowledgement or \
in-progress before JetStream gives it to another worker (a crashed or hung worker's task moves on \
after it); workers send in-progress every third of it |
| `CONTEXTMESH_<STREAM>_DEADLINE_S` | see docs/architecture.md | the longest one attempt may \
run; past it the handler is cancelled and the attempt counts as failed |
| `CONTEXTMESH_<STREAM>_RETRY_BACKOFF_S` | see docs/architecture.md | comma-separated delays \
before each retry of a failed attempt; a task is tried once more than there are delays, \
then parked in DEADLETTER |
| `CONTEXTMESH_TRACE_CONSOLE` | unset | `1` prints trace spans to stdout; export over OTLP \
is set by the standard `OTEL_*` variables (docs/architecture.md, Tracing and logs) |
| `CONTEXTMESH_TARGET` | `localhost:50051` | the gateway that the CLI's client commands call |
| `CONTEXTMESH_ADMIN_TARGET` | `localhost:50053` | the admin listener that \
`contextmesh deadletters` calls |
| `CONTEXTMESH_TOKEN` | unset | the bearer token the CLI sends; unset: the admin token `up` keeps \
in `<data dir>/auth/admin.token` |

Blob store credentials follow each provider's usual variables: see docs/storage.md.
"""


def _default(node: ast.expr | None) -> str:
    if node is None:
        return "unset"
    if isinstance(node, ast.Call) and any(k.arg == "default_factory" for k in node.keywords):
        return "unset"  # an empty collection
    if isinstance(node, ast.Call) and any(k.arg == "default" for k in node.keywords):
        node = next(k.value for k in node.keywords if k.arg == "default")
    text = ast.unparse(node)
    if text == "None":
        return "unset"
    return f"`{text.strip(chr(39))}`"


def render() -> str:
    rows = []
    for cls in ast.parse(SOURCE.read_text()).body:
        if not (isinstance(cls, ast.ClassDef) and cls.name.endswith("Settings")):
            continue
        for field, doc in zip(cls.body, cls.body[1:], strict=False):
            if not (isinstance(field, ast.AnnAssign) and isinstance(doc, ast.Expr)):
                continue
            if not isinstance(doc.value, ast.Constant) or not isinstance(doc.value.value, str):
                continue
            text = " ".join(doc.value.value.split())
            variable, _, meaning = text.partition(":")
            variable = variable.rstrip(".")
            rows.append(f"| `{variable}` | {_default(field.value)} | {meaning.strip()} |")
    return HEADER + "\n".join(rows) + "\n" + FOOTER


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    page = render()
    if parser.parse_args().check:
        if not PAGE.exists() or PAGE.read_text() != page:
            print(
                "docs/configuration.md is stale; run: python tools/gen_config_doc.py",
                file=sys.stderr,
            )
            return 1
        return 0
    PAGE.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
