"""NATS administration: make the identities for a deployment, and declare the topology.

    contextmesh nats-keys DIR   one NKey seed per identity (0600) and authorization.conf, the
                                server's users and permissions; Kubernetes takes both from
                                Secrets (docs/security.md lists the kubectl commands)
    contextmesh declare         create or update every stream, consumer and bucket, as the
                                identity in CONTEXTMESH_NATS_NKEY_SEED_FILE (the admin one):
                                the Kubernetes declare Job; `up` does the same in-process

Seeds are never printed; DIR keeps them across runs, so running nats-keys again only adds
missing identities and rewrites authorization.conf.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from meshkit import nats_auth
from meshkit.config import Settings
from meshkit.nats_client import connect
from meshkit.topology import declare_as_configured

__all__ = ["AUTHORIZATION_FILE", "add_parsers", "write_keys"]

AUTHORIZATION_FILE = "authorization.conf"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nats-keys", help="make NATS identities and their server authorization")
    p.add_argument("dir", help="where the seeds (<identity>.nk) and authorization.conf go")
    p.set_defaults(run=nats_keys)
    p = sub.add_parser("declare", help="declare streams, consumers and buckets (admin identity)")
    p.set_defaults(run=declare_topology)


def write_keys(folder: Path) -> Path:
    """Seeds for every identity (kept when present) and the authorization block naming them."""
    keys = nats_auth.generate(folder)
    path = folder / AUTHORIZATION_FILE
    path.unlink(missing_ok=True)
    path.touch(0o600)
    path.write_text(nats_auth.authorization_block(keys), encoding="utf-8")
    return path


def nats_keys(args: argparse.Namespace) -> int:
    folder = Path(args.dir).resolve()
    path = write_keys(folder)
    print(f"wrote {path} and a seed per identity ({', '.join(nats_auth.IDENTITIES)}) in {folder}")
    return 0


async def _declare(settings: Settings) -> None:
    nc, js = await connect(settings.nats, name="contextmesh-declare")
    try:
        await declare_as_configured(js, settings)
    finally:
        await nc.drain()


def declare_topology(args: argparse.Namespace) -> int:
    asyncio.run(_declare(Settings.from_env()))
    print("declared every stream, consumer and bucket")
    return 0
