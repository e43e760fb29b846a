"""The `contextmesh` command."""

from __future__ import annotations

import argparse
import sys

import grpc

from meshctl import commands, nats_admin, up

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="contextmesh",
        description="Fresh bundles of your repositories' context, and search over them. "
        "Client commands talk to CONTEXTMESH_TARGET (default localhost:50051) with the bearer "
        "token in CONTEXTMESH_TOKEN, else the admin token `up` keeps in its data directory.",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    up.add_parser(sub)
    commands.add_parsers(sub)
    nats_admin.add_parsers(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except grpc.RpcError as exc:
        code = exc.code()
        print(f"contextmesh: {code.name}: {exc.details()}", file=sys.stderr)
        return 2 if code == grpc.StatusCode.INVALID_ARGUMENT else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
