"""The process supervisor, with real child processes: small Python scripts written per test.

Liveness is read from /proc (psutil is not installed): a pid is alive when /proc/<pid> exists
and is not a zombie (an orphan's zombie waits for pid 1 to reap it).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from meshctl.launch import grpc_health_ready, tcp_ready
from meshctl.supervisor import (
    RESTART,
    ProcessNotReadyError,
    ProcessSpec,
    ProcessState,
    ProcessStatus,
    Supervisor,
    SupervisorError,
)
from meshkit.retry import Jitter, RetryPolicy
from tests.support.polling import wait_until
from tests.support.ports import free_port

Make = Callable[..., tuple[Supervisor, io.StringIO]]

SCRIPTS = {
    "sleeper": """
import os, sys, time
print(f"hello from {os.getpid()}", flush=True)
print("this went to stderr", file=sys.stderr, flush=True)
time.sleep(600)
""",
    "crasher": """
import sys
print("crashing", flush=True)
sys.exit(3)
""",
    "stubborn": """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(600)
""",
    "forker": """
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(f"grandchild {grandchild.pid}", flush=True)
time.sleep(600)
""",
    "listener": """
import pathlib, socket, sys, time
time.sleep(float(sys.argv[2]))
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
pathlib.Path(sys.argv[3]).write_text("listening")
time.sleep(600)
""",
    "stamped": """
import sys, time
stamps = open(sys.argv[1], "a", buffering=1)
stamps.write(f"start {time.monotonic()}\\n")
time.sleep(float(sys.argv[2]))
stamps.write(f"exit {time.monotonic()}\\n")
sys.exit(int(sys.argv[3]))
""",
    "checker": """
import pathlib, sys, time
print("first was ready:", pathlib.Path(sys.argv[1]).exists(), flush=True)
time.sleep(600)
""",
    "grpc_health": """
import sys, time
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
server = grpc.server(futures.ThreadPoolExecutor(2))
servicer = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
server.start()
time.sleep(0.3)
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
time.sleep(600)
""",
}

# Runs a Supervisor as its own process, as `contextmesh up` does: argv[1] is a JSON list of
# [name, script, stop_timeout], argv[2] the file its events go to, argv[3] "prestart" to call
# start() before run() (as a CLI that prints a banner once everything is up does).
HARNESS = """
import json, sys
from meshctl.supervisor import ProcessSpec, Supervisor
specs = [
    ProcessSpec(name, [sys.executable, script], stop_timeout=stop)
    for name, script, stop in json.loads(sys.argv[1])
]
events = open(sys.argv[2], "w", buffering=1)
supervisor = Supervisor(specs, console=None, events=events, grace=30.0)
if sys.argv[3] == "prestart":
    supervisor.start()
sys.exit(supervisor.run())
"""

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def ignores_sigterm(pid: int) -> bool:
    """Whether the process has set SIGTERM to SIG_IGN (its SigIgn mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    raise AssertionError(f"no SigIgn for {pid}")


def stamps(path: Path, kind: str) -> list[float]:
    """The monotonic times (one clock for every process) the "stamped" child wrote at each
    "start" or "exit" of its runs."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [float(line.split()[1]) for line in lines if line.startswith(f"{kind} ")]


def waits_between_runs(path: Path) -> list[float]:
    """How long the "stamped" child stayed down before each restart: from one run's exit to
    the next run's start, so more than the supervisor's own wait, never less."""
    exits, restarts = stamps(path, "exit"), stamps(path, "start")[1:]
    return [start - exit for exit, start in zip(exits, restarts, strict=False)]


def started_pids(events: io.StringIO | Path, name: str) -> list[int]:
    text = events.read_text() if isinstance(events, Path) else events.getvalue()
    return [int(p) for p in re.findall(rf"^{name} started \(pid (\d+)\)$", text, re.M)]


@pytest.fixture
def scripts(tmp_path: Path) -> dict[str, str]:
    paths = {}
    for name, text in SCRIPTS.items():
        path = tmp_path / f"child_{name}.py"  # a prefix: "grpc_health.py" would shadow grpc_health
        path.write_text(text)
        paths[name] = str(path)
    return paths


@pytest.fixture
def supervise() -> Iterator[Make]:
    """Builds Supervisors that report events to a StringIO; every one is stopped at teardown."""
    made: list[Supervisor] = []

    def make(specs: list[ProcessSpec], **kwargs: object) -> tuple[Supervisor, io.StringIO]:
        events = io.StringIO()
        kwargs.setdefault("console", None)
        supervisor = Supervisor(specs, events=events, **kwargs)  # type: ignore[arg-type]
        made.append(supervisor)
        return supervisor, events

    yield make
    for supervisor in made:
        supervisor.stop()


def py(script: str, *args: str) -> list[str]:
    return [sys.executable, script, *args]


def test_backoff_doubles_to_the_cap() -> None:
    delays = [RESTART.delay_s(n) for n in range(1, 9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_starts_in_order_after_readiness_and_routes_output(
    tmp_path: Path, scripts: dict[str, str], supervise: Make
) -> None:
    port, marker = free_port(), tmp_path / "first.listening"
    console = io.StringIO()
    supervisor, events = supervise(
        [
            ProcessSpec(
                "first",
                py(scripts["listener"], str(port), "0.3", str(marker)),
                ready=tcp_ready("127.0.0.1", port),
                ready_timeout=5.0,
            ),
            ProcessSpec("second", py(scripts["checker"], str(marker))),
            ProcessSpec("sleeper", py(scripts["sleeper"]), env={"EXTRA": "1"}, cwd=tmp_path),
        ],
        console=console,
        log_dir=tmp_path / "logs",
    )
    supervisor.start()
    assert supervisor.status_of("first").state is ProcessState.RUNNING
    wait_until(lambda: "hello from" in console.getvalue(), what="sleeper output")
    wait_until(lambda: "first was ready" in console.getvalue(), what="checker output")

    # "second" started only once "first" accepted connections; names are padded to align.
    assert "second  | first was ready: True\n" in console.getvalue()
    assert "sleeper | this went to stderr\n" in console.getvalue()
    assert "first is ready" in events.getvalue()
    log = (tmp_path / "logs" / "second.log").read_text()
    assert "supervisor: second started (pid" in log
    assert "first was ready: True" in log
    statuses = supervisor.status()
    assert [s.name for s in statuses] == ["first", "second", "sleeper"]
    assert all(s.pid is not None and alive(s.pid) and s.restarts == 0 for s in statuses)
    assert all(s.up_since is not None and s.up_since <= time.time() for s in statuses)


def test_restarts_a_sigkilled_child_with_backoff(
    tmp_path: Path, scripts: dict[str, str], supervise: Make
) -> None:
    runs = tmp_path / "runs"
    supervisor, events = supervise(
        [ProcessSpec("syncsvc-1", py(scripts["stamped"], str(runs), "600", "0"))]
    )
    supervisor.start()
    killed_at = []
    for restarts in (1, 2):
        pid = supervisor.status_of("syncsvc-1").pid
        assert pid is not None
        wait_until(lambda n=restarts: len(stamps(runs, "start")) == n, what="the run's stamp")
        killed_at.append(time.monotonic())
        os.kill(pid, signal.SIGKILL)

        def restarted(old: int = pid, n: int = restarts) -> ProcessStatus | None:
            status = supervisor.status_of("syncsvc-1")
            return status if status.pid not in (None, old) and status.restarts == n else None

        status = wait_until(restarted, what="a new pid")
        assert status.state is ProcessState.RUNNING
        assert status.last_exit_code == -signal.SIGKILL
        assert not alive(pid)
    lines = events.getvalue().splitlines()
    assert "syncsvc-1 exited with code -9; restarting in 0.5 s" in lines
    assert "syncsvc-1 exited with code -9; restarting in 1.0 s" in lines
    # ... and it waited that long: each new run started at least the backoff after the kill.
    wait_until(lambda: len(stamps(runs, "start")) == 3, what="the new runs' stamps")
    restarted_at = stamps(runs, "start")[1:]
    waited = [start - kill for kill, start in zip(killed_at, restarted_at, strict=True)]
    assert waited[0] >= 0.5 and waited[1] >= 1.0, waited


def test_a_child_that_exits_at_once_does_not_spin(
    tmp_path: Path, scripts: dict[str, str], supervise: Make
) -> None:
    runs = tmp_path / "runs"
    supervisor, events = supervise(
        [ProcessSpec("crasher", py(scripts["stamped"], str(runs), "0", "3"))],
        restart=RetryPolicy(attempts=None, base_delay_s=0.1, max_delay_s=0.4, jitter=Jitter.NONE),
    )
    supervisor.start()
    wait_until(lambda: len(stamps(runs, "start")) >= 5, what="four restarts")
    delays = re.findall(r"crasher exited with code 3; restarting in (\S+) s", events.getvalue())
    assert delays[:4] == ["0.1", "0.2", "0.4", "0.4"]
    # Each restart waited its backoff (a spinning supervisor restarts in a few milliseconds).
    waited = waits_between_runs(runs)[:4]
    assert len(waited) == 4
    assert all(w >= least for w, least in zip(waited, (0.1, 0.2, 0.4, 0.4), strict=True)), waited


def test_backoff_resets_after_a_long_enough_run(
    tmp_path: Path, scripts: dict[str, str], supervise: Make
) -> None:
    runs = tmp_path / "runs"
    supervisor, events = supervise(
        [ProcessSpec("flaky", py(scripts["stamped"], str(runs), "0.3", "1"))],
        # A wait well above a Python start-up, so that a restart that did not wait shows.
        restart=RetryPolicy(attempts=None, base_delay_s=0.3, max_delay_s=5.0, jitter=Jitter.NONE),
        reset_after_s=0.2,
    )
    supervisor.start()
    wait_until(lambda: len(stamps(runs, "start")) >= 4, what="three restarts")
    # Every run lasted past reset_after_s, so every restart chose the shortest wait (the
    # choice is read from the log: an upper bound on a measured wait fails on a busy machine),
    # and waited it.
    delays = re.findall(r"flaky exited with code 1; restarting in (\S+) s", events.getvalue())
    assert len(delays) >= 3
    assert set(delays) == {"0.3"}
    waited = waits_between_runs(runs)[:3]
    assert len(waited) == 3 and min(waited) >= 0.3, waited


def test_stop_terminates_in_reverse_order_and_leaves_nothing_behind(
    scripts: dict[str, str], supervise: Make
) -> None:
    console = io.StringIO()
    supervisor, events = supervise(
        [
            ProcessSpec("a", py(scripts["sleeper"])),
            ProcessSpec("b", py(scripts["forker"])),
            ProcessSpec("c", py(scripts["stubborn"]), stop_timeout=0.3),
        ],
        console=console,
    )
    supervisor.start()
    grandchild = int(
        wait_until(lambda: re.search(r"grandchild (\d+)", console.getvalue()), what="fork")[1]
    )
    wait_until(lambda: "ignoring SIGTERM" in console.getvalue(), what="stubborn child")
    pids = [s.pid for s in supervisor.status()]
    assert None not in pids

    supervisor.stop()
    # The stubborn child was killed after its own 0.3 s, not the supervisor's grace.
    assert "c did not stop within 0.3 s; killing it" in events.getvalue()

    # Children are reaped by stop(); the grandchild, signalled with its group, dies a moment
    # later (kill() returns before the target has exited).
    assert [p for p in pids if p is not None and alive(p)] == []
    wait_until(lambda: not alive(grandchild), 2.0, "the grandchild killed with its group")
    lines = events.getvalue().splitlines()
    order = [line.split()[0] for line in lines if " stopped " in line]
    assert order == ["c", "b", "a"]
    assert "c did not stop within 0.3 s; killing it" in lines
    assert "a stopped (exit code -15)" in lines
    assert all(s.state is ProcessState.STOPPED and s.pid is None for s in supervisor.status())
    supervisor.stop()  # idempotent


def test_a_process_that_never_gets_ready_fails_start_and_is_cleaned_up(
    tmp_path: Path, scripts: dict[str, str], supervise: Make
) -> None:
    port = free_port()
    supervisor, events = supervise(
        [
            ProcessSpec("before", py(scripts["sleeper"])),
            ProcessSpec(
                "never",
                py(scripts["listener"], str(port), "600", str(tmp_path / "m")),
                ready=tcp_ready("127.0.0.1", port),
                ready_timeout=0.5,
            ),
            ProcessSpec("after", py(scripts["sleeper"])),
        ],
        log_dir=tmp_path / "logs",
    )
    with pytest.raises(ProcessNotReadyError, match=r"never was not ready within 0.5 s") as info:
        supervisor.start()
    assert info.value.name == "never"
    assert "logs/never.log" in str(info.value)
    pids = started_pids(events, "before") + started_pids(events, "never")
    assert len(pids) == 2
    assert not any(alive(pid) for pid in pids)
    assert started_pids(events, "after") == []


def test_an_unstartable_program_fails_start_at_once(supervise: Make, tmp_path: Path) -> None:
    supervisor, _ = supervise([ProcessSpec("ghost", [str(tmp_path / "no-such-program")])])
    with pytest.raises(SupervisorError, match="cannot start ghost"):
        supervisor.start()


def test_restart_false_leaves_an_exited_process_down(
    scripts: dict[str, str], supervise: Make
) -> None:
    supervisor, events = supervise([ProcessSpec("once", py(scripts["crasher"]), restart=False)])
    supervisor.start()

    def exited() -> ProcessStatus | None:
        status = supervisor.status_of("once")
        return status if status.state is ProcessState.EXITED else None

    status = wait_until(exited, what="exit")
    assert (status.pid, status.restarts, status.last_exit_code) == (None, 0, 3)
    assert "once exited with code 3; not restarting (restart=False)" in events.getvalue()


def test_grpc_health_check_gates_readiness(scripts: dict[str, str], supervise: Make) -> None:
    assert grpc_health_ready("127.0.0.1:1", timeout=0.2)() is False
    port = free_port()
    supervisor, events = supervise(
        [
            ProcessSpec(
                "gateway",
                py(scripts["grpc_health"], str(port)),
                ready=grpc_health_ready(f"127.0.0.1:{port}", timeout=0.5),
                ready_timeout=8.0,
            )
        ]
    )
    supervisor.start()
    assert supervisor.status_of("gateway").state is ProcessState.RUNNING
    assert "gateway is ready" in events.getvalue()


def _start_harness(
    tmp_path: Path, children: Sequence[tuple[str, str, float | None]], *, prestart: bool
) -> tuple[subprocess.Popen[bytes], Path, list[int]]:
    events = tmp_path / "harness-events.log"
    mode = "prestart" if prestart else "run"
    harness = subprocess.Popen(
        [sys.executable, "-c", HARNESS, json.dumps(children), str(events), mode],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def running() -> list[int] | None:
        text = events if events.exists() else io.StringIO()
        pids = [pid for name, _, _ in children for pid in started_pids(text, name)]
        return pids if len(pids) == len(children) else None

    return harness, events, wait_until(running, 10.0, "the harness's children")


def test_sigterm_to_the_supervisor_process_stops_every_child(
    tmp_path: Path, scripts: dict[str, str]
) -> None:
    children = [
        ("stubborn", scripts["stubborn"], None),  # started first, so stopped last
        ("s1", scripts["sleeper"], None),
        ("s2", scripts["sleeper"], None),
    ]
    harness, events, pids = _start_harness(tmp_path, children, prestart=True)
    with harness:
        wait_until(lambda: ignores_sigterm(pids[0]), what="the stubborn child's SIG_IGN")
        harness.send_signal(signal.SIGTERM)

        def stopped(name: str) -> bool:
            return f"\n{name} stopped (exit code" in events.read_text()

        wait_until(lambda: stopped("s1") and stopped("s2"), what="s1 and s2 stopped")
        assert alive(pids[0])  # waiting out its 30 s grace
        harness.send_signal(signal.SIGTERM)  # a second signal skips the grace
        _, stderr = harness.communicate(timeout=15.0)  # half the 30 s grace it skips
    assert harness.returncode == 0, stderr.decode()
    assert "stubborn did not stop within 30.0 s; killing it" in events.read_text()
    assert [pid for pid in pids if alive(pid)] == []


def test_sigkill_of_the_supervisor_takes_its_children_down(
    tmp_path: Path, scripts: dict[str, str]
) -> None:
    children = [(f"s{i}", scripts["sleeper"], None) for i in range(3)]
    harness, _, pids = _start_harness(tmp_path, children, prestart=False)
    with harness:
        harness.kill()
        harness.communicate(timeout=5.0)
    wait_until(lambda: not any(alive(pid) for pid in pids), what="children killed by the kernel")


def test_unset_keeps_a_variable_of_the_supervisor_from_a_child(
    scripts: dict[str, str], supervise: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How `up` keeps GITHUB_TOKEN from every process but syncsvc.
    monkeypatch.setenv("CM_TEST_SECRET", "s3cr3t")
    supervisor, _ = supervise(
        [
            ProcessSpec("without", py(scripts["sleeper"]), unset=("CM_TEST_SECRET",)),
            ProcessSpec("with", py(scripts["sleeper"])),
        ]
    )
    supervisor.start()

    def environ_of(name: str) -> bytes:
        pid = supervisor.status_of(name).pid
        assert pid is not None
        # Until the child has exec'd the script, /proc shows the environment this process
        # started with, which never held the secret.
        wait_until(
            lambda: scripts["sleeper"].encode() in Path(f"/proc/{pid}/cmdline").read_bytes(),
            what=f"{name} to run its script",
        )
        return Path(f"/proc/{pid}/environ").read_bytes()

    assert b"CM_TEST_SECRET=s3cr3t" in environ_of("with")
    assert b"CM_TEST_SECRET" not in environ_of("without")
