"""`contextmesh up`: the whole system on one machine, each service its own process.

nats-server (JetStream, store under the data directory, fsync before every ack), the
gateway, N sync workers, the merge worker, the notifier (callbacks), the search service and
the trainer when the `train` extra is installed, and Envoy serving REST. A process that dies
is restarted with backoff, as Kubernetes would; Ctrl-C or SIGTERM stops everything and
leaves nothing behind. A second `up` reuses the data directory: jobs, bundles and models
survive.

Safe by default: everything listens on 127.0.0.1 unless `--host` says otherwise (the admin
listener needs its own `--admin-host`), and authentication is always on. The first start
creates a signing key in <data dir>/auth/ (kept across restarts); the services verify tokens
with its public half, `contextmesh token` signs with it, and each start writes an admin
token there that the CLI uses when CONTEXTMESH_TOKEN is not set.

NATS is locked down (meshkit.nats_auth): on first start `up` writes one NKey seed per identity
into `<data dir>/nats/auth` (0600, kept across restarts) and the server config (0600) that
names their public keys with least-privilege permissions; anonymous clients are refused, and
the monitoring port is off. NATS counts as ready once the `admin` identity has declared every
stream, consumer and bucket; each service then gets only its own seed and binds without
declaring. GITHUB_TOKEN reaches syncsvc alone: every other child has it removed from the
environment it inherits.

Each service process gets a free loopback port for its Prometheus /metrics; the banner
lists them, and `<data dir>/prometheus-targets.json` names them all for a Prometheus
file_sd config (meshctl.metrics_targets).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import importlib.util
import itertools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nats import errors as nats_errors

from meshctl.launch import ReadyCheck, grpc_health_ready, tcp_ready
from meshctl.metrics_targets import TARGETS_FILE, MetricsTarget, free_port, write_targets
from meshctl.nats_server import ClusterSettings, NatsServer
from meshctl.supervisor import ProcessSpec, Supervisor
from meshkit import nats_auth
from meshkit.config import Settings
from meshkit.signing import LocalSigner

__all__ = ["add_parser", "build_specs"]

LOCK_FILE = "up.lock"
"""Held (flock) by the running `up` of a data dir."""

DEMO_SOURCE = Path(__file__).resolve().parent / "demo_repos"
CLUSTER_SIZE = 3
"""Servers of `up --cluster`: what k8s/ deploys, the smallest that outlives losing one."""
CLUSTER_REPLICAS = 2
"""Replicas of every service under `up --cluster`, as k8s/'s floor."""
ADMIN_TOKEN_TTL_S = 30 * 86400
SECRETS = ("GITHUB_TOKEN", "CONTEXTMESH_GITHUB_TOKEN")
"""Only syncsvc talks to GitHub: no other child inherits these."""
NATS_VARIABLES = (
    "CONTEXTMESH_NATS_CREDS",
    "CONTEXTMESH_NATS_NKEY_SEED_FILE",
    "CONTEXTMESH_NATS_OPS_NKEY_SEED_FILE",
    "CONTEXTMESH_NATS_USER",
)
"""Set per child by up; never inherited from up's own environment."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run everything on this machine (embedded default)")
    p.add_argument(
        "--data-dir",
        default=os.environ.get("CONTEXTMESH_DATA_DIR", ".contextmesh"),
        help="where NATS, blobs and logs live (env CONTEXTMESH_DATA_DIR)",
    )
    p.add_argument("--sync-workers", type=int, default=2, help="sync worker processes")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the gateway and REST listen on (default loopback; 0.0.0.0: everywhere)",
    )
    p.add_argument("--grpc-port", type=int, default=50051, help="gateway gRPC port")
    p.add_argument(
        "--admin-port", type=int, default=50053, help="admin gRPC port (OpsService, admin tokens)"
    )
    p.add_argument(
        "--admin-host", default="127.0.0.1", help="address the admin listener binds (loopback)"
    )
    p.add_argument("--rest-port", type=int, default=8080, help="REST (Envoy) port; 0: no REST")
    p.add_argument("--nats-port", type=int, default=4222, help="NATS client port")
    p.add_argument("--search-port", type=int, default=50052, help="search service port")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--local-source",
        metavar="DIR",
        help="serve <DIR>/<user>/<repo> folders (default: the demo repositories)",
    )
    source.add_argument(
        "--github",
        action="store_true",
        help="sync from GitHub (token in GITHUB_TOKEN; CONTEXTMESH_GITHUB_API_URL for Enterprise)",
    )
    p.add_argument("--no-training", action="store_true", help="end jobs when the bundle is ready")
    p.add_argument(
        "--cluster",
        action="store_true",
        help=f"{CLUSTER_SIZE} nats-servers in one JetStream cluster (every stream and bucket "
        f"R{CLUSTER_SIZE}, NATS ports --nats-port and the next {CLUSTER_SIZE - 1}) and "
        f"{CLUSTER_REPLICAS} replicas of every service, each on a different server",
    )
    p.set_defaults(run=run)


def _have_training() -> bool:
    return importlib.util.find_spec("sentence_transformers") is not None


def _identity(auth_dir: Path, name: str, *, ops: bool = False) -> dict[str, str]:
    env = {
        "CONTEXTMESH_NATS_USER": name,
        "CONTEXTMESH_NATS_NKEY_SEED_FILE": str(nats_auth.seed_path(auth_dir, name)),
        "CONTEXTMESH_NATS_DECLARE": "off",
    }
    if ops:
        env["CONTEXTMESH_NATS_OPS_NKEY_SEED_FILE"] = str(
            nats_auth.seed_path(auth_dir, nats_auth.OPS)
        )
    return env


def declared_ready(port: int, seed_file: Path, env: Mapping[str, str]) -> ReadyCheck:
    """Ready once NATS answers and the admin identity has declared the topology (with the
    services' own settings: replicas, TRAIN timing, byte bounds). Run again on every restart
    of nats-server, so a wiped store is declared again before anything binds."""
    reachable = tcp_ready("127.0.0.1", port)
    url = f"nats://127.0.0.1:{port}"

    def check() -> bool:
        if not reachable():
            return False
        try:
            asyncio.run(_declare(url, seed_file, Settings.from_env({**os.environ, **env})))
        except (nats_errors.Error, TimeoutError, OSError):
            return False  # a cluster still electing its JetStream leader: ask again
        return True

    return check


async def _declare(url: str, seed_file: Path, settings: Settings) -> None:
    import nats

    from meshkit.topology import declare_as_configured

    nc = await nats.connect(
        url,
        name="contextmesh-up-declare",
        nkeys_seed=str(seed_file),
        inbox_prefix=nats_auth.inbox_prefix(nats_auth.ADMIN),
        allow_reconnect=False,
        connect_timeout=2,
    )
    try:
        await declare_as_configured(nc.jetstream(timeout=10), settings)
    finally:
        await nc.close()


@dataclass(frozen=True)
class Servers:
    """The NATS side of `up`: one server, or a cluster (`--cluster`)."""

    specs: list[ProcessSpec]
    urls: list[str]
    """Client URL of each server; replica i of a service connects to urls[i % len(urls)]."""


def _nats_servers(
    args: argparse.Namespace, data_dir: Path, keys: Mapping[str, str], env: Mapping[str, str]
) -> Servers:
    """The nats-server process(es), each after the previous one is ready; the last is ready
    once the admin identity has declared the topology."""
    auth_dir = data_dir / "nats" / "auth"
    count = CLUSTER_SIZE if args.cluster else 1
    ports = [args.nats_port + i for i in range(count)]
    routes = [free_port() for _ in ports] if args.cluster else []
    specs = []
    for i, port in enumerate(ports):
        server = NatsServer(
            data_dir / "nats" if not args.cluster else data_dir / "nats-cluster" / f"n{i + 1}",
            port=port,
            server_name=f"n{i + 1}" if args.cluster else None,
            cluster=ClusterSettings(
                "contextmesh", routes[i], tuple(f"nats://127.0.0.1:{r}" for r in routes)
            )
            if args.cluster
            else None,
            authorization=nats_auth.authorization_block(keys),
            die_with_parent=False,
        )
        server.write_config()
        last = i == count - 1
        specs.append(
            ProcessSpec(
                "nats" if not args.cluster else f"nats-{i + 1}",
                server.argv,
                ready=declared_ready(port, nats_auth.seed_path(auth_dir, nats_auth.ADMIN), env)
                if last
                else tcp_ready("127.0.0.1", port),
                unset=(*SECRETS, *NATS_VARIABLES),
            )
        )
    return Servers(specs, [f"nats://127.0.0.1:{port}" for port in ports])


def build_specs(
    args: argparse.Namespace, data_dir: Path
) -> tuple[list[ProcessSpec], dict[str, str], list[MetricsTarget]]:
    """The processes to supervise, the environment they share, and the /metrics endpoint of
    each service process (a free loopback port each)."""
    auth_dir = data_dir / "nats" / "auth"
    keys = nats_auth.generate(auth_dir)
    training = not args.no_training and _have_training()
    signer = LocalSigner.open(data_dir / "auth")
    replicas = CLUSTER_REPLICAS if args.cluster else 1
    env = {
        "CONTEXTMESH_NATS_URL": f"nats://127.0.0.1:{args.nats_port}",
        "CONTEXTMESH_JS_REPLICAS": str(CLUSTER_SIZE if args.cluster else 1),
        "CONTEXTMESH_DATA_DIR": str(data_dir),
        "CONTEXTMESH_GATEWAY_ADDR": _address(args.host, args.grpc_port),
        "CONTEXTMESH_ADMIN_ADDR": _address(args.admin_host, args.admin_port),
        # Set explicitly: an inherited CONTEXTMESH_AUTH=off never reaches what up runs.
        "CONTEXTMESH_AUTH": "on",
        "CONTEXTMESH_AUTH_KEYS_FILE": str(signer.jwks_path),
        "CONTEXTMESH_AUTH_ISSUER": signer.issuer,
        "CONTEXTMESH_AUTH_AUDIENCE": signer.audience,
        "CONTEXTMESH_SEARCH_ADDR": f"127.0.0.1:{args.search_port}",
        "CONTEXTMESH_TRAINING": "on" if training else "off",
        "CONTEXTMESH_LOG_FORMAT": os.environ.get("CONTEXTMESH_LOG_FORMAT", "text"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    if args.github:
        env["CONTEXTMESH_SOURCE"] = "github"
    else:
        env["CONTEXTMESH_SOURCE"] = "local"
        env["CONTEXTMESH_LOCAL_SOURCE_DIR"] = str(Path(args.local_source or DEMO_SOURCE).resolve())
    servers = _nats_servers(args, data_dir, keys, env)
    py = sys.executable
    no_secrets = (*SECRETS, *NATS_VARIABLES)
    metrics: list[MetricsTarget] = []
    placed = itertools.count()

    def service(
        name: str,
        identity: str,
        ready: ReadyCheck | None = None,
        **overrides: str,
    ) -> ProcessSpec:
        """A service process on the next server in turn (replicas spread over the cluster)."""
        target = MetricsTarget(name, identity, free_port())
        metrics.append(target)
        return ProcessSpec(
            name,
            [py, "-m", identity],
            env={
                **env,
                "CONTEXTMESH_NATS_URL": servers.urls[next(placed) % len(servers.urls)],
                **_identity(auth_dir, identity, ops=identity == "gateway"),
                "CONTEXTMESH_METRICS_HOST": target.host,
                "CONTEXTMESH_METRICS_PORT": str(target.port),
                **overrides,
            },
            ready=ready,
            unset=NATS_VARIABLES if identity == "syncsvc" else no_secrets,
        )

    def named(identity: str, i: int) -> str:
        return identity if replicas == 1 else f"{identity}-{i + 1}"

    # Replica 1 of the gateway and searchsvc takes the ports the banner names; the others
    # take free ones (Envoy balances over every gateway; each gateway asks its own search).
    grpc_ports = [args.grpc_port, *(free_port() for _ in range(replicas - 1))]
    search_ports = [args.search_port, *(free_port() for _ in range(replicas - 1))]
    admin_ports = [args.admin_port, *(free_port() for _ in range(replicas - 1))]
    specs = [*servers.specs]
    for i in range(replicas):
        specs.append(
            service(
                named("gateway", i),
                "gateway",
                ready=grpc_health_ready(f"{_dial(args.host)}:{grpc_ports[i]}"),
                CONTEXTMESH_GATEWAY_ADDR=_address(args.host, grpc_ports[i]),
                CONTEXTMESH_ADMIN_ADDR=_address(args.admin_host, admin_ports[i]),
                CONTEXTMESH_SEARCH_ADDR=f"127.0.0.1:{search_ports[i]}",
            )
        )
    specs += [service(f"syncsvc-{i + 1}", "syncsvc") for i in range(args.sync_workers)]
    for identity in ("mergesvc", "notifysvc"):
        specs += [service(named(identity, i), identity) for i in range(replicas)]
    if _have_training():
        # No readiness gate: loading torch takes seconds, and nothing else waits on search.
        specs += [
            service(
                named("searchsvc", i),
                "searchsvc",
                CONTEXTMESH_SEARCH_ADDR=f"127.0.0.1:{search_ports[i]}",
            )
            for i in range(replicas)
        ]
    if training:
        specs += [service(named("trainsvc", i), "trainsvc") for i in range(replicas)]
    if args.rest_port:
        specs.append(_envoy_spec(data_dir, args, grpc_ports))
    return specs, env, metrics


def _envoy_spec(data_dir: Path, args: argparse.Namespace, gateways: list[int]) -> ProcessSpec:
    from meshctl.envoy import envoy_binary, packaged_descriptor, render_envoy_config

    descriptor = packaged_descriptor()
    config = data_dir / "envoy.yaml"
    config.write_text(
        render_envoy_config(
            listen_host=args.host,
            listen_port=args.rest_port,
            upstream_host=_dial(args.host),
            upstream_ports=gateways,
            descriptor_path=descriptor,
        )
    )
    argv = [
        str(envoy_binary()),
        "-c",
        str(config),
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--log-level",
        "warn",
    ]
    return ProcessSpec(
        "envoy",
        argv,
        ready=tcp_ready(_dial(args.host), args.rest_port),
        unset=(*SECRETS, *NATS_VARIABLES),
    )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dial(host: str) -> str:
    """Where a local client reaches a listener bound to `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host.strip("[]")


def write_admin_token(data_dir: Path) -> Path:
    """A fresh admin token for the CLI of the person who ran `up`, readable by them only."""
    signer = LocalSigner.open(data_dir / "auth")
    path = data_dir / "auth" / "admin.token"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(signer.mint(users=["*"], admin=True, ttl_s=ADMIN_TOKEN_TTL_S) + "\n")
    return path


def _hold(data_dir: Path) -> IO[bytes] | None:
    """Take the data dir for this `up` (held until the process ends); None when another
    `up` holds it: two would fight over its ports and files in a loop of restarts."""
    lock = (data_dir / LOCK_FILE).open("a+b")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    held = _hold(data_dir)
    if held is None:
        print(
            f"contextmesh up: another `contextmesh up` is running on {data_dir}; stop it "
            "first, or give this one its own --data-dir (and ports)",
            file=sys.stderr,
        )
        return 1
    specs, env, metrics = build_specs(args, data_dir)
    token_path = write_admin_token(data_dir)
    targets_path = data_dir / TARGETS_FILE
    write_targets(targets_path, metrics)
    supervisor = Supervisor(specs, log_dir=data_dir / "logs", console=None)

    supervisor.start()
    source = "GitHub" if args.github else env["CONTEXTMESH_LOCAL_SOURCE_DIR"]
    host = _dial(args.host)
    rest = f"http://{host}:{args.rest_port}" if args.rest_port else "off"
    nats = f"nats://127.0.0.1:{args.nats_port}"
    if args.cluster:
        nats = (
            f"a cluster of {CLUSTER_SIZE} servers, every stream and bucket R{CLUSTER_SIZE}: "
            + ", ".join(f"nats://127.0.0.1:{args.nats_port + i}" for i in range(CLUSTER_SIZE))
            + f"\n           {CLUSTER_REPLICAS} replicas of every service, each on a different "
            "server; REST balances over the gateways"
        )
    print(
        f"contextmesh is up (data in {data_dir}, logs in {data_dir / 'logs'})\n"
        f"  gRPC     {host}:{args.grpc_port}   "
        f"grpcurl -plaintext {host}:{args.grpc_port} list\n"
        f"  REST     {rest}\n"
        f"  admin    {_dial(args.admin_host)}:{args.admin_port} (admin tokens only)\n"
        f"  tokens   the CLI uses {token_path}; others: contextmesh token --user NAME\n"
        f"  NATS     {nats}\n"
        f"           (NKey users; seeds in {data_dir / 'nats' / 'auth'})\n"
        f"  source   {source}\n"
        f"  training {env['CONTEXTMESH_TRAINING']}\n"
        f"  metrics  {', '.join(f'{t.process} {t.address}' for t in metrics)}\n"
        f"           (Prometheus file_sd list: {targets_path})\n"
        "Try: contextmesh refresh demo --watch      (Ctrl-C stops everything)",
        flush=True,
    )
    return supervisor.run()
