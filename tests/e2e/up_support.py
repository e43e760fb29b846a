"""Running `contextmesh up` from a test: start it on chosen ports once its banner is out,
call the CLI against it, and find the processes it left."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BIN", "ROOT", "cli", "processes_using", "start_up"]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def processes_using(marker: str) -> list[int]:
    """Pids whose command line mentions marker (our data dir), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def start_up(
    data_dir: Path,
    ports: dict[str, int],
    log: Path,
    env: dict[str, str] | None = None,
    options: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """`contextmesh up --no-training` on `ports` (plus `options`), once its banner is out."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "contextmesh"),
                "up",
                "--data-dir",
                str(data_dir),
                "--no-training",
                "--grpc-port",
                str(ports["grpc"]),
                "--rest-port",
                str(ports["rest"]),
                "--nats-port",
                str(ports["nats"]),
                "--search-port",
                str(ports["search"]),
                "--admin-port",
                str(ports["admin"]),
                *options,
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while "contextmesh is up" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return proc


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / "contextmesh"), *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert not check or done.returncode == 0, done.stdout + done.stderr
    return done
