"""One `contextmesh up` per data dir: a second refuses at once, saying why, instead of
fighting the first over ports and files in a loop of restarts."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

from meshctl.up import LOCK_FILE


def test_a_second_up_on_the_same_data_dir_refuses_at_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with (data_dir / LOCK_FILE).open("a+b") as held:  # as the running `up` holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = subprocess.run(
            [sys.executable, "-m", "meshctl", "up", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert second.returncode == 1
    assert "another `contextmesh up` is running on" in second.stderr
    assert not (data_dir / "nats").exists()  # it started nothing
