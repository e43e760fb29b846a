"""Child processes, started, awaited and stopped one way.

    child = launch([binary, "-c", config], name="nats-server", log=data_dir / "nats.log")
    child.wait_ready(tcp_ready("127.0.0.1", port), timeout=10.0)
    ...
    child.stop(grace=10.0)      # SIGTERM to its group, SIGKILL after the grace, reaped

Every child leads a process group of its own (start_new_session), so a signal reaches what it
forked too, and a terminal's Ctrl-C reaches only the parent, which decides the order of
shutdown. On Linux the kernel SIGKILLs the child when the *thread* that launched it exits
(PR_SET_PDEATHSIG, set by `setpriv` as the program is exec'd), so a parent that dies, even by
SIGKILL, leaves nothing behind: launch from a thread that lives as long as the child should
(the main thread, the event loop's thread, a supervisor's worker thread). Elsewhere that
guard is missing; a normal stop works.

Output, stdout and stderr merged, is appended to a log file (`log`; `output_tail()` quotes
what this run wrote, for error messages), handed to the caller as a pipe (`pipe=True`), or
dropped. Readiness is a plain callable polled until it returns True: `tcp_ready`,
`http_ready`, `grpc_health_ready`, `Child.printed`, or the caller's own. A child that exits
first raises ChildExitedError, one not ready in time ChildNotReadyError; both quote its log.

Reaping: an exit is first observed with waitid(WNOWAIT). While the child is an unreaped
zombie its pid, and so its group id, cannot be reused; the rest of the group is SIGKILLed
then, and only then is the child reaped. A group signal therefore never hits a stranger.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from meshkit.errors import MeshError

__all__ = [
    "Child",
    "ChildExitedError",
    "ChildNotReadyError",
    "LaunchError",
    "ReadyCheck",
    "grpc_health_ready",
    "http_ready",
    "launch",
    "tcp_ready",
]

ReadyCheck = Callable[[], bool]
"""One quick probe: True once the child is ready. Polled; an exception it raises propagates."""

_POLL_S = 0.02
"""Default pause between readiness probes, and between checks for an exit."""
_KILL_WAIT_S = 5.0
"""How long a SIGKILLed child may take to be reaped before kill() gives up on it."""
_TAIL_BYTES = 4000


class LaunchError(MeshError):
    """A child process did not become ready; the message ends with the tail of its log."""


class ChildExitedError(LaunchError):
    """The child exited before its readiness check passed."""


class ChildNotReadyError(LaunchError, TimeoutError):
    """The child was still running, but not ready, when the timeout ran out."""


def launch(
    argv: Sequence[str],
    *,
    name: str | None = None,
    log: str | os.PathLike[str] | None = None,
    pipe: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    die_with_parent: bool = True,
) -> Child:
    """Start `argv` in a process group of its own, stdin from /dev/null.

    Output goes to the end of `log`, to `Child.stdout` with `pipe=True`, or nowhere. `env`
    replaces the environment (None: inherit). `name` labels errors (default: the program).
    Raises OSError when the program cannot be run.
    """
    if log is not None and pipe:
        raise ValueError("output goes to a log or a pipe, not both")
    argv = [os.fspath(arg) for arg in argv]
    log_path = Path(log) if log is not None else None
    log_offset = 0
    with contextlib.ExitStack() as stack:
        output: int | IO[bytes] = subprocess.PIPE if pipe else subprocess.DEVNULL
        if log_path is not None:
            # The child keeps its own descriptor; ours closes once it is spawned.
            output = stack.enter_context(log_path.open("ab"))
            log_offset = output.tell()
        program = [_runnable(argv[0]), *argv[1:]]
        process = subprocess.Popen(
            _guarded(program) if die_with_parent else program,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    return Child(process, name or Path(argv[0]).name, log_path, log_offset)


class Child:
    """A launched process: readiness, signals to its group, stop, and its log's tail.

    Safe to use from several threads: one may block in wait() while another stops it.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        name: str,
        log: Path | None,
        log_offset: int,
    ) -> None:
        self.process = process
        self.name = name
        self.log = log
        self._log_offset = log_offset
        self._lock = threading.Lock()  # signals and the reap never interleave

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout(self) -> IO[bytes] | None:
        """The child's merged output when launched with `pipe=True`."""
        return self.process.stdout

    @property
    def returncode(self) -> int | None:
        """The exit code once reaped (negative: the signal that killed it); never reaps."""
        return self.process.returncode

    def poll(self) -> int | None:
        """The exit code, reaping the child if it has exited; None while it runs."""
        return self._reap() if self._exited() else None

    def __repr__(self) -> str:
        return f"Child({self.name!r}, pid={self.pid}, returncode={self.returncode})"

    # -- readiness -------------------------------------------------------------------------

    def wait_ready(
        self, check: ReadyCheck, ready_timeout: float, *, interval: float = _POLL_S
    ) -> None:
        """Poll `check` until it returns True. Raises ChildExitedError if the child exits
        first, ChildNotReadyError after `ready_timeout` seconds; the child is left running."""
        deadline = time.monotonic() + ready_timeout
        while True:
            self.raise_if_exited()
            if check():
                return
            if time.monotonic() >= deadline:
                raise self._not_ready(ready_timeout)
            time.sleep(interval)

    async def wait_ready_async(
        self, check: ReadyCheck, ready_timeout: float, *, interval: float = _POLL_S
    ) -> None:
        """wait_ready() for a coroutine: each probe runs in a worker thread, so a blocking
        connect never stalls the event loop."""
        deadline = time.monotonic() + ready_timeout
        while True:
            self.raise_if_exited()
            if await asyncio.to_thread(check):
                return
            if time.monotonic() >= deadline:
                raise self._not_ready(ready_timeout)
            await asyncio.sleep(interval)

    def raise_if_exited(self) -> None:
        """Raise ChildExitedError, with the log's tail, if the child is no longer running."""
        code = self.poll()
        if code is not None:
            raise ChildExitedError(
                f"{self.name} exited with code {code} before it was ready{self._quote_log()}"
            )

    def printed(self, text: str) -> ReadyCheck:
        """A check: ready once this run's log contains `text` (a line the child prints when
        it is ready). Never ready without a log."""
        return lambda: self.log is not None and text in self.output_tail(None)

    def output_tail(self, limit: int | None = _TAIL_BYTES) -> str:
        """The end (`limit` bytes; None: all) of what this run wrote to its log."""
        if self.log is None:
            return ""
        try:
            with self.log.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                start = self._log_offset if limit is None else max(self._log_offset, size - limit)
                log.seek(start)
                return log.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"<log unreadable: {exc}>"

    # -- signals and stopping --------------------------------------------------------------

    def signal(self, sig: signal.Signals) -> bool:
        """Send `sig` to the child's whole group; False when the child is already reaped."""
        with self._lock:
            if self.process.returncode is not None:
                return False
            _signal_group(self.pid, sig)
            return True

    def wait(self, timeout: float | None = None) -> int:
        """Block until the child exits, then SIGKILL what is left of its group and reap it;
        its exit code. Raises subprocess.TimeoutExpired after `timeout` seconds."""
        if timeout is not None:
            if not self._await_exit(timeout):
                raise subprocess.TimeoutExpired(self.process.args, timeout)
        elif self.process.returncode is None:
            with contextlib.suppress(ChildProcessError):  # another thread reaped it
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        return self._reap()

    def terminate(self, grace: float, *, cut_short: threading.Event | None = None) -> bool:
        """SIGTERM to the group, then wait up to `grace` seconds (less once `cut_short` is
        set) for the child to exit; True when it did, and it is reaped."""
        if not self.signal(signal.SIGTERM):
            return True
        if not self._await_exit(grace, cut_short):
            return False
        self._reap()
        return True

    def kill(self, timeout: float = _KILL_WAIT_S) -> bool:
        """SIGKILL to the group, as a crash would; True once the child is reaped (False if it
        outlived `timeout` seconds, as one stuck in the kernel can)."""
        self.signal(signal.SIGKILL)
        if not self._await_exit(timeout):
            return False
        self._reap()
        return True

    def stop(self, grace: float) -> int | None:
        """terminate(grace), then kill() if that was not enough; the exit code. Idempotent."""
        if not self.terminate(grace):
            self.kill()
        return self.returncode

    # -- internals -------------------------------------------------------------------------

    def _exited(self) -> bool:
        """Whether the child has exited, without reaping it."""
        if self.process.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # reaped by another thread since the check above
            return True

    def _await_exit(self, timeout: float, cut_short: threading.Event | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while not self._exited():
            if time.monotonic() >= deadline or (cut_short is not None and cut_short.is_set()):
                return False
            time.sleep(_POLL_S)
        return True

    def _reap(self) -> int:
        """Reap a child known to have exited, after killing the rest of its group."""
        with self._lock:
            if self.process.returncode is None:
                _signal_group(self.pid, signal.SIGKILL)  # what it forked dies with it
                self.process.wait()
            return self.process.returncode

    def _not_ready(self, timeout: float) -> ChildNotReadyError:
        return ChildNotReadyError(
            f"{self.name} (pid {self.pid}) was not ready within {timeout:g} s{self._quote_log()}"
        )

    def _quote_log(self) -> str:
        return f"; the end of {self.log}:\n{self.output_tail()}" if self.log is not None else ""


# -- readiness checks ---------------------------------------------------------------------


def tcp_ready(host: str, port: int, timeout: float = 0.5) -> ReadyCheck:
    """Ready once something accepts TCP connections on host:port."""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    return check


def http_ready(url: str, timeout: float = 1.0) -> ReadyCheck:
    """Ready once `url` answers HTTP, whatever the status: the server is listening."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    return check


def grpc_health_ready(target: str, service: str = "", timeout: float = 1.0) -> ReadyCheck:
    """Ready once the gRPC health service at `target` answers SERVING for `service` ('' is
    the server as a whole, SERVING from the start: name a service whose status turns SERVING
    later to wait for it)."""

    def check() -> bool:
        import grpc  # here: only launchers that use this check pay for the import
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return check


# -- process groups -----------------------------------------------------------------------


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # PermissionError: some kernels refuse to signal a group whose leader is a zombie.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# Runs after setpriv has set the flag: a parent that died before that (the child then
# belongs to init or a subreaper) would never send the signal, so the child gives up instead
# of running orphaned. $0 is the launcher's pid; the rest is the program and its arguments.
_PARENT_CHECK = 'test "$PPID" = "$0" || exit 1; exec "$@"'


def _guarded(argv: list[str]) -> list[str]:
    """argv run through `setpriv --pdeathsig KILL`: the kernel SIGKILLs the child when the
    thread that launched it exits. setpriv sets the flag and execs the program in place (same
    pid; the flag survives exec), so nothing runs between fork and exec. A preexec_fn would
    make subprocess fork() instead of vfork(), running every at-fork handler of a threaded
    parent (gRPC's among them), which can block the parent for good. A launcher that dies
    before setpriv has set the flag is caught by a shell check of the parent, once the flag
    is set. Without setpriv or sh (not Linux, or util-linux missing) the child runs
    unguarded."""
    if not sys.platform.startswith("linux"):
        return argv
    setpriv, shell = shutil.which("setpriv"), shutil.which("sh")
    if setpriv is None or shell is None:
        return argv
    return [
        setpriv,
        "--pdeathsig",
        "KILL",
        "--",
        shell,
        "-c",
        _PARENT_CHECK,
        str(os.getpid()),
        *argv,
    ]


def _runnable(program: str) -> str:
    """The program's path; FileNotFoundError or PermissionError when it cannot be run, as
    Popen would raise for it (under setpriv the failure would only reach the log)."""
    found = shutil.which(program) if os.sep not in program else program
    if found is None or not os.path.isfile(found):
        raise FileNotFoundError(errno.ENOENT, "no such program", program)
    if not os.access(found, os.X_OK):
        raise PermissionError(errno.EACCES, "not executable", program)
    return found
