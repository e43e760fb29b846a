"""The launcher with real child processes: a small Python script that prints, listens, sleeps,
forks or ignores SIGTERM, as each test asks. Liveness is read from /proc, as in
test_supervisor.py: a pid is alive while /proc/<pid> exists and is not a zombie.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshctl.launch import (
    Child,
    ChildExitedError,
    ChildNotReadyError,
    http_ready,
    launch,
    tcp_ready,
)
from tests.support.polling import wait_until
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]

# argv: a list of actions, run in order.
#   print:TEXT   print a line        listen:PORT   accept TCP on PORT
#   sleep:S      sleep S seconds     exit:CODE     exit with CODE
#   fork         start a grandchild in the same group and print "grandchild PID"
#   stubborn     ignore SIGTERM
CHILD = """
import signal, socket, subprocess, sys, time
keep = []
for action in sys.argv[1:]:
    verb, _, arg = action.partition(":")
    if verb == "print":
        print(arg, flush=True)
    elif verb == "listen":
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(arg)))
        sock.listen()
        keep.append(sock)
    elif verb == "sleep":
        time.sleep(float(arg))
    elif verb == "exit":
        sys.exit(int(arg))
    elif verb == "fork":
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"grandchild {grandchild.pid}", flush=True)
    elif verb == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
"""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Launches the CHILD script with the given actions, logging to tmp_path/child.log; every
    child is killed at teardown."""
    children: list[Child] = []

    def run(*actions: str, log: Path | None = tmp_path / "child.log") -> Child:
        child = launch([sys.executable, "-c", CHILD, *actions], name="child", log=log)
        children.append(child)
        return child

    yield run
    for child in children:
        child.kill()


def grandchild_pid(child: Child) -> int:
    wait_until(lambda: "grandchild " in child.output_tail(), what="the grandchild's pid")
    return int(child.output_tail().split("grandchild ", 1)[1].split()[0])


def test_ready_once_the_port_accepts(start: Callable[..., Child]) -> None:
    port = free_port()
    child = start("sleep:0.3", f"listen:{port}", "sleep:600")
    assert not tcp_ready("127.0.0.1", port)()

    child.wait_ready(tcp_ready("127.0.0.1", port), 10.0)

    assert child.poll() is None
    assert tcp_ready("127.0.0.1", port)()


def test_ready_once_the_output_has_the_line(start: Callable[..., Child]) -> None:
    child = start("print:warming up", "sleep:0.3", "print:Server is ready", "sleep:600")
    ready = child.printed("Server is ready")

    child.wait_ready(ready, 10.0)

    assert ready() and child.poll() is None
    assert child.output_tail() == "warming up\nServer is ready\n"


def test_http_ready_takes_any_answer_even_an_error_status(tmp_path: Path) -> None:
    port = free_port()
    assert not http_ready(f"http://127.0.0.1:{port}/missing")()
    server = launch(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        log=tmp_path / "http.log",
        cwd=tmp_path,
    )
    try:
        server.wait_ready(http_ready(f"http://127.0.0.1:{port}/missing"), 10.0)  # a 404
    finally:
        server.stop(5.0)


def test_an_early_exit_raises_with_the_tail_of_this_runs_output(
    tmp_path: Path, start: Callable[..., Child]
) -> None:
    start("print:first run", "exit:0").wait()
    child = start("print:config error: port taken", "exit:3")

    with pytest.raises(ChildExitedError, match="child exited with code 3") as raised:
        child.wait_ready(lambda: False, 10.0)

    message = str(raised.value)
    assert message.endswith("config error: port taken\n")
    assert str(tmp_path / "child.log") in message
    assert "first run" not in message  # the log is shared; the quote is of this run only
    assert child.returncode == 3


def test_not_ready_in_time_raises_and_leaves_the_child_running(
    start: Callable[..., Child],
) -> None:
    child = start("print:still loading", "sleep:600")
    wait_until(child.printed("still loading"))  # so that the error can quote it

    with pytest.raises(ChildNotReadyError, match=r"was not ready within 0.3 s") as raised:
        child.wait_ready(child.printed("never printed"), 0.3)

    assert isinstance(raised.value, TimeoutError)
    assert raised.value.args[0].endswith("still loading\n")
    assert child.poll() is None


def test_stop_terminates_within_the_grace(start: Callable[..., Child]) -> None:
    child = start("print:up", "sleep:600")
    wait_until(child.printed("up"))

    assert child.stop(grace=5.0) == -signal.SIGTERM
    assert not alive(child.pid)
    assert child.stop(grace=5.0) == -signal.SIGTERM  # idempotent


def test_stop_escalates_to_sigkill_after_the_grace(start: Callable[..., Child]) -> None:
    child = start("stubborn", "print:ignoring SIGTERM", "sleep:600")
    wait_until(child.printed("ignoring SIGTERM"))

    began = time.monotonic()
    assert child.stop(grace=0.3) == -signal.SIGKILL

    assert time.monotonic() - began >= 0.3
    assert not alive(child.pid)


def test_terminate_gives_up_at_once_when_cut_short(start: Callable[..., Child]) -> None:
    child = start("stubborn", "print:ignoring SIGTERM", "sleep:600")
    wait_until(child.printed("ignoring SIGTERM"))
    hurry = threading.Event()
    hurry.set()

    began = time.monotonic()
    assert child.terminate(30.0, cut_short=hurry) is False
    assert time.monotonic() - began < 5.0
    assert child.poll() is None


def test_stop_leaves_no_orphan_and_no_process_group(start: Callable[..., Child]) -> None:
    child = start("fork", "sleep:600")
    grandchild = grandchild_pid(child)
    assert alive(grandchild) and os.getpgid(grandchild) == child.pid

    child.stop(grace=5.0)

    wait_until(lambda: not alive(grandchild), what="the grandchild to die with its group")
    wait_until(lambda: not group_exists(child.pid))


def test_a_child_that_exits_on_its_own_takes_its_group_with_it(
    start: Callable[..., Child],
) -> None:
    child = start("fork", "sleep:0.3", "exit:1")
    grandchild = grandchild_pid(child)

    assert child.wait() == 1

    wait_until(lambda: not alive(grandchild), what="the grandchild to die, not be orphaned")


def test_the_child_dies_with_the_thread_that_launched_it(tmp_path: Path) -> None:
    launched: list[Child] = []

    def launch_and_leave() -> None:
        child = launch(
            [sys.executable, "-c", CHILD, "print:up", "sleep:600"], log=tmp_path / "o.log"
        )
        launched.append(child)
        wait_until(child.printed("up"))  # the guard is set once the program runs

    thread = threading.Thread(target=launch_and_leave)
    thread.start()
    thread.join()
    [child] = launched

    wait_until(lambda: child.poll() is not None)
    assert child.returncode == -signal.SIGKILL


def test_a_child_whose_launcher_exits_at_once_does_not_run_on(tmp_path: Path) -> None:
    # Each launcher dies as soon as launch() returns, often before setpriv has set the
    # guard; unchecked, most of their children ran on under init (35 of 40 when measured).
    token = f"orphan-check-{tmp_path.name}"
    launcher = (
        "import os, sys\n"
        "from meshctl.launch import launch\n"
        f"launch([sys.executable, '-c', 'import time; time.sleep(600)', {token!r}])\n"
        "os._exit(0)\n"
    )
    try:
        for _ in range(10):
            subprocess.run([sys.executable, "-c", launcher], cwd=ROOT, check=True)
        wait_until(lambda: not pids_running(token), what="every launched child to end")
    finally:
        for pid in pids_running(token):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def pids_running(token: str) -> list[int]:
    """Processes whose arguments hold `token` (a zombie's are empty)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if token.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
    return pids


def test_a_program_that_cannot_run_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        launch([str(tmp_path / "no-such-program")])
