"""A small process supervisor for `contextmesh up`: start, watch, restart with backoff, stop.

    from meshctl.launch import grpc_health_ready, tcp_ready
    supervisor = Supervisor([
        ProcessSpec("nats", nats.argv, ready=tcp_ready("127.0.0.1", 4333)),
        ProcessSpec("gateway", [sys.executable, "-m", "gateway"], ready=grpc_health_ready(...)),
    ], log_dir=data_dir / "logs")
    sys.exit(supervisor.run())          # blocks until SIGINT/SIGTERM, then stops everything

Start: in order; a process with a readiness check must pass it before the next one starts
(start() raises ProcessNotReadyError, after stopping what it started, if it does not).
Watch: a process that exits when no stop was asked for is restarted after a backoff of 0.5 s,
doubling to 30 s, back to 0.5 s once a run lasted `reset_after` seconds; every exit is
reported on stderr ("syncsvc-1 exited with code -9; restarting in 1.0 s"). Stop: SIGTERM to
each process group in reverse start order, SIGKILL after the grace period; a second SIGINT or
SIGTERM to `run()` skips the grace. Output: each child's stdout and stderr, merged, go line by
line to the console with a "name | " prefix, to `<log_dir>/<name>.log`, or both.

No process is left behind: children are launched, signalled and reaped by meshctl.launch.
- each child leads its own process group (which also keeps a terminal's Ctrl-C away from it:
  only the supervisor decides the order of shutdown), and every signal goes to the whole
  group, so what a child forked goes with it; when a child exits, the rest of its group is
  SIGKILLed before it is restarted, as a container's would be.
- if the supervisor itself dies (SIGKILL, OOM), the kernel SIGKILLs the children: on Linux
  each one sets PR_SET_PDEATHSIG. Chosen over a pipe that the child watches because it needs
  no cooperation from the child: nats-server and envoy are binaries we do not write. Limits:
  it reaches the direct child only (our children do not fork), it exists on Linux only
  (elsewhere this guard is missing; a normal stop still works), and it fires when the
  *thread* that forked the child ends, which the design below respects.

Threads, not asyncio: each process has one worker thread that spawns it, blocks (Child.wait)
until it exits, and then backs off and spawns it again, so the thread outlives every child it
forks (what PR_SET_PDEATHSIG needs); one more thread per child copies its output. Blocking
waits are the simplest correct way to watch a child; readiness checks can be plain blocking
callables (a socket connect, a synchronous gRPC health call); and the supervisor is usable
unchanged from a synchronous main() that blocks until a signal, from tests, and from async
code (its calls return quickly, except start() and stop(), which wait by design). The cost,
two mostly idle threads per process, is nothing at our scale (about ten processes).
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Literal, TextIO

from meshctl.launch import Child, ChildExitedError, ChildNotReadyError, ReadyCheck, launch
from meshkit.errors import MeshError
from meshkit.retry import Jitter, RetryPolicy

__all__ = [
    "RESET_AFTER_S",
    "RESTART",
    "ProcessNotReadyError",
    "ProcessSpec",
    "ProcessState",
    "ProcessStatus",
    "Supervisor",
    "SupervisorError",
]

_READY_POLL_S = 0.05
_OUTPUT_DRAIN_S = 2.0
_KILL_WAIT_S = 5.0
_MAX_LINE = 64 * 1024


class SupervisorError(MeshError):
    """A process could not be started."""


class ProcessNotReadyError(SupervisorError):
    """A process did not pass its readiness check in time during start()."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


# -- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSpec:
    """One process to supervise."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    """Set on top of the supervisor's own environment (PYTHONUNBUFFERED=1 is added unless
    set, so Python children's output reaches the log as it is written)."""
    unset: Sequence[str] = ()
    """Variables of the supervisor's own environment the child must not inherit (secrets
    meant for another process, such as GITHUB_TOKEN)."""
    cwd: str | os.PathLike[str] | None = None
    ready: ReadyCheck | None = None
    """Polled (meshctl.launch checks: tcp_ready, grpc_health_ready, ...) after every spawn."""
    restart: bool = True
    """Restart after any exit the supervisor did not ask for (Kubernetes' Always policy)."""
    ready_timeout: float = 30.0
    stop_timeout: float | None = None
    """Grace between SIGTERM and SIGKILL; None takes the supervisor's `grace`."""


RESTART = RetryPolicy(attempts=None, base_delay_s=0.5, max_delay_s=30.0, jitter=Jitter.NONE)
"""The wait before restarting a process that exited: 0.5 s after its first quick exit,
doubling to 30 s, as Kubernetes' crash-loop backoff does; a supervisor restarts for ever."""
RESET_AFTER_S = 10.0
"""A run that lasted this long was not a crash loop: the next restart waits the shortest."""


class ProcessState(enum.StrEnum):
    STARTING = "starting"  # spawned, readiness check not passed yet
    RUNNING = "running"  # ready (or has no check)
    BACKOFF = "backoff"  # exited, waiting to be restarted
    EXITED = "exited"  # exited and not to be restarted (restart=False)
    STOPPED = "stopped"  # stopped by the supervisor


@dataclass(frozen=True)
class ProcessStatus:
    """A snapshot for a status display."""

    name: str
    state: ProcessState
    pid: int | None
    restarts: int
    up_since: float | None
    """Wall-clock time (time.time()) the current run started; None when not running."""
    last_exit_code: int | None
    """Of the previous run; negative: killed by that signal (as subprocess reports it)."""


# -- one supervised process ---------------------------------------------------------------


@dataclass
class _Managed:
    spec: ProcessSpec
    lock: threading.Condition = field(default_factory=threading.Condition)
    child: Child | None = None
    state: ProcessState = ProcessState.STARTING
    restarts: int = 0
    up_since: float | None = None
    last_exit_code: int | None = None
    spawn_error: OSError | None = None
    thread: threading.Thread | None = None
    log: IO[bytes] | None = None

    def status(self) -> ProcessStatus:
        with self.lock:
            child = self.child
            alive = child is not None and child.returncode is None  # unreaped
            return ProcessStatus(
                name=self.spec.name,
                state=self.state,
                pid=child.pid if alive and child is not None else None,
                restarts=self.restarts,
                up_since=self.up_since if alive else None,
                last_exit_code=self.last_exit_code,
            )


class _StopRequested(Exception):
    """Ends a readiness wait once the supervisor is stopping."""


class _Default(enum.Enum):
    STREAM = enum.auto()  # "the sys stream of the moment" (pytest swaps them)


class Supervisor:
    """Runs `specs` as child processes; see the module docstring."""

    def __init__(
        self,
        specs: Iterable[ProcessSpec],
        *,
        log_dir: str | os.PathLike[str] | None = None,
        console: TextIO | Literal[_Default.STREAM] | None = _Default.STREAM,
        events: TextIO | Literal[_Default.STREAM] | None = _Default.STREAM,
        restart: RetryPolicy = RESTART,
        reset_after_s: float = RESET_AFTER_S,
        grace: float = 10.0,
        die_with_parent: bool = True,
    ) -> None:
        """`log_dir`: write `<name>.log` per process there. `console`: where "name | line"
        output goes (default sys.stdout; None: nowhere). `events`: where starts, exits and
        restarts are reported (default sys.stderr; None: nowhere)."""
        self._managed = [_Managed(spec) for spec in specs]
        names = [m.spec.name for m in self._managed]
        if len(set(names)) != len(names):
            raise ValueError(f"process names must be unique: {names}")
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._console = sys.stdout if isinstance(console, _Default) else console
        self._events = sys.stderr if isinstance(events, _Default) else events
        self.restart = restart
        self.reset_after_s = reset_after_s
        self.grace = grace
        self._die_with_parent = die_with_parent
        self._width = max((len(n) for n in names), default=0)
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()  # set: no more (re)starts; run() returns
        self._force = threading.Event()  # set: skip the grace period
        self._stop_lock = threading.Lock()
        self._started = False
        self._stopped = False

    # -- public API ------------------------------------------------------------------------

    def start(self) -> None:
        """Start every process in order, each after the previous one is ready. On failure
        everything started is stopped and SupervisorError (or ProcessNotReadyError) raised."""
        if self._started:
            raise SupervisorError("a Supervisor starts once; create a new one")
        self._started = True
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for m in self._managed:
                if self._stopping.is_set():
                    return
                self._launch(m)
                self._await_first_ready(m)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process, in reverse order: SIGTERM to its group, SIGKILL after the
        grace period. Idempotent and safe to call from any thread."""
        self._stopping.set()
        with self._stop_lock:
            if self._stopped:
                return
            for m in reversed(self._managed):
                self._stop_one(m)
            self._stopped = True

    def run(self) -> int:
        """For a synchronous main(): start (unless start() was already called), block until
        SIGINT or SIGTERM, stop; returns 0. A second signal during the stop skips the grace
        period. Call from the main thread."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self._stopping.is_set():
                self._force.set()
            self._stopping.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if not self._started:
                self.start()
            # Short waits: a signal handler only runs when the main thread gets control.
            while not self._stopping.wait(0.2):
                pass
        finally:
            try:
                self.stop()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return 0

    def status(self) -> list[ProcessStatus]:
        """A snapshot of every process, in start order."""
        return [m.status() for m in self._managed]

    def status_of(self, name: str) -> ProcessStatus:
        for m in self._managed:
            if m.spec.name == name:
                return m.status()
        raise KeyError(name)

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start -----------------------------------------------------------------------------

    def _launch(self, m: _Managed) -> None:
        if self.log_dir is not None:
            # Kept open across restarts; the worker thread closes it when it ends.
            m.log = open(self.log_dir / f"{m.spec.name}.log", "ab")  # noqa: SIM115
        m.thread = threading.Thread(
            target=self._supervise, args=(m,), name=f"supervise-{m.spec.name}", daemon=True
        )
        m.thread.start()

    def _await_first_ready(self, m: _Managed) -> None:
        spec = m.spec
        deadline = time.monotonic() + spec.ready_timeout
        with m.lock:
            while True:
                if m.state is ProcessState.RUNNING or self._stopping.is_set():
                    return
                if m.spawn_error is not None and m.restarts == 0:
                    raise SupervisorError(f"cannot start {spec.name}: {m.spawn_error}")
                if m.state is ProcessState.EXITED:
                    raise ProcessNotReadyError(
                        spec.name,
                        f"{spec.name} exited with code {m.last_exit_code} before it was ready"
                        f"{self._see_log(spec.name)}",
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProcessNotReadyError(
                        spec.name,
                        f"{spec.name} was not ready within {spec.ready_timeout} s "
                        f"(restarts: {m.restarts}, last exit code: {m.last_exit_code})"
                        f"{self._see_log(spec.name)}",
                    )
                m.lock.wait(min(left, 0.2))

    def _see_log(self, name: str) -> str:
        return f"; see {self.log_dir / f'{name}.log'}" if self.log_dir is not None else ""

    # -- the worker thread: spawn, wait, back off, again -----------------------------------

    def _supervise(self, m: _Managed) -> None:
        failures = 0
        try:
            while True:
                started = time.monotonic()
                child = self._spawn(m)
                if child is None:
                    if self._stopping.is_set():
                        return
                    code: int | None = None
                    what = f"{m.spec.name} could not be started ({m.spawn_error})"
                else:
                    self._event(m, f"{m.spec.name} started (pid {child.pid})")
                    code = self._watch(m, child)
                    what = f"{m.spec.name} exited with code {code}"
                    if self._stopping.is_set():
                        self._set_state(m, ProcessState.STOPPED)
                        self._event(m, f"{m.spec.name} stopped (exit code {code})")
                        return
                if not m.spec.restart:
                    self._set_state(m, ProcessState.EXITED)
                    self._event(m, f"{what}; not restarting (restart=False)")
                    return
                failures = 0 if time.monotonic() - started >= self.reset_after_s else failures
                failures += 1
                delay = self.restart.delay_s(failures)
                self._set_state(m, ProcessState.BACKOFF)
                self._event(m, f"{what}; restarting in {delay:.1f} s")
                if self._stopping.wait(delay):
                    self._set_state(m, ProcessState.STOPPED)
                    return
                with m.lock:
                    m.restarts += 1
        finally:
            if m.log is not None:
                with self._write_lock:
                    m.log.close()

    def _spawn(self, m: _Managed) -> Child | None:
        spec = m.spec
        env = {k: v for k, v in os.environ.items() if k not in spec.unset}
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(spec.env or {})
        wants_output = self._console is not None or m.log is not None
        with m.lock:
            # Checked under the lock stop() takes to signal: no child is born after a stop.
            if self._stopping.is_set():
                return None
            try:
                child = launch(
                    spec.argv,
                    name=spec.name,
                    pipe=wants_output,
                    cwd=spec.cwd,
                    env=env,
                    die_with_parent=self._die_with_parent,
                )
            except OSError as exc:
                m.spawn_error = exc
                m.lock.notify_all()
                return None
            m.child, m.spawn_error = child, None
            m.up_since = time.time()
            m.state = ProcessState.STARTING if spec.ready is not None else ProcessState.RUNNING
            m.lock.notify_all()
        return child

    def _watch(self, m: _Managed, child: Child) -> int:
        """Wait for the child to exit (the launcher kills the rest of its group and reaps
        it); its exit code."""
        pump = None
        if child.stdout is not None:
            pump = threading.Thread(
                target=self._pump,
                args=(m, child.stdout),
                name=f"output-{m.spec.name}",
                daemon=True,
            )
            pump.start()
        if m.spec.ready is not None:
            self._probe_until_ready(m, child, m.spec.ready)
        code = child.wait()
        with m.lock:
            m.last_exit_code = code
            m.up_since = None
            m.lock.notify_all()
        if pump is not None:
            pump.join(_OUTPUT_DRAIN_S)  # its last lines before the exit is reported
        return code

    def _probe_until_ready(self, m: _Managed, child: Child, check: ReadyCheck) -> None:
        """Poll the readiness check until it passes, the child exits, the ready timeout runs
        out (reported; the process keeps running) or a stop begins."""

        def probe() -> bool:
            if self._stopping.is_set():
                raise _StopRequested
            try:
                return check()
            except Exception as exc:  # a broken check must not kill the supervisor
                self._event(m, f"{m.spec.name}: readiness check failed: {exc!r}")
                return False

        try:
            child.wait_ready(probe, m.spec.ready_timeout, interval=_READY_POLL_S)
        except (_StopRequested, ChildExitedError):
            return
        except ChildNotReadyError:
            self._event(m, f"{m.spec.name} not ready after {m.spec.ready_timeout} s")
            return
        self._set_state(m, ProcessState.RUNNING)
        self._event(m, f"{m.spec.name} is ready")

    # -- stop ------------------------------------------------------------------------------

    def _stop_one(self, m: _Managed) -> None:
        grace = m.spec.stop_timeout if m.spec.stop_timeout is not None else self.grace
        with m.lock:
            child = m.child  # final: no spawn happens once _stopping is set
        if child is not None and not child.terminate(grace, cut_short=self._force):
            self._event(m, f"{m.spec.name} did not stop within {grace:.1f} s; killing it")
            if not child.kill(_KILL_WAIT_S):
                self._event(m, f"{m.spec.name} (pid {child.pid}) survived SIGKILL")
        if m.thread is not None:
            m.thread.join(_OUTPUT_DRAIN_S + _KILL_WAIT_S)

    # -- output, events, state -------------------------------------------------------------

    def _pump(self, m: _Managed, stream: IO[bytes]) -> None:
        prefix = f"{m.spec.name:<{self._width}} | "
        try:
            for line in iter(lambda: stream.readline(_MAX_LINE), b""):
                with self._write_lock:
                    if m.log is not None and not m.log.closed:
                        m.log.write(line)
                        m.log.flush()
                    if self._console is not None:
                        text = line.decode("utf-8", "replace").rstrip("\r\n")
                        self._safe_write(self._console, f"{prefix}{text}\n")
        finally:
            stream.close()

    def _event(self, m: _Managed, message: str) -> None:
        with self._write_lock:
            if self._events is not None:
                self._safe_write(self._events, message + "\n")
            if m.log is not None and not m.log.closed:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                m.log.write(f"--- {stamp} supervisor: {message}\n".encode())
                m.log.flush()

    @staticmethod
    def _safe_write(stream: TextIO, text: str) -> None:
        # A closed or broken console must not take the supervisor down with it.
        with contextlib.suppress(ValueError, OSError):
            stream.write(text)
            stream.flush()

    def _set_state(self, m: _Managed, state: ProcessState) -> None:
        with m.lock:
            m.state = state
            m.lock.notify_all()
