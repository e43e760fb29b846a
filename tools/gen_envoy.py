"""Write k8s/base/envoy/envoy.yaml, the gateway's Envoy sidecar config, from the contracts.

    python tools/gen_envoy.py           # rewrite it
    python tools/gen_envoy.py --check   # exit 1 if it differs from what would be written

The transcoded services come from the descriptor image gen/contextmesh/contextmesh.binpb (run
tools/gen_contracts.py first when proto/ changed). In the pod, Envoy reads the same image
from SIDECAR_DESCRIPTOR_PATH, where k8s/base/gateway.yaml mounts it.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from generated_file import write_or_check

from meshctl.envoy import render_envoy_config, transcoded_services

ROOT = pathlib.Path(__file__).resolve().parents[1]
DESCRIPTOR = ROOT / "gen" / "contextmesh" / "contextmesh.binpb"
OUTPUT = ROOT / "k8s" / "base" / "envoy" / "envoy.yaml"
SIDECAR_DESCRIPTOR_PATH = "/etc/envoy/descriptor/contextmesh.binpb"
"""Where the gateway pod mounts the descriptor image (an emptyDir an init container fills)."""
REST_PORT = 8080
GATEWAY_PORT = 50051
ADMIN_PORT = 9901
"""Loopback only: reachable with kubectl port-forward, never from the pod network."""


def render() -> str:
    """The sidecar config: REST on every interface, the gateway on the pod's loopback."""
    return render_envoy_config(
        listen_host="0.0.0.0",
        listen_port=REST_PORT,
        upstream_host="127.0.0.1",
        upstream_ports=[GATEWAY_PORT],
        descriptor_path=SIDECAR_DESCRIPTOR_PATH,
        admin_port=ADMIN_PORT,
        services=transcoded_services(DESCRIPTOR),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if envoy.yaml is stale")
    args = parser.parse_args()
    return write_or_check(
        OUTPUT,
        render(),
        check=args.check,
        command="python tools/gen_envoy.py",
        source="the contracts",
    )


if __name__ == "__main__":
    sys.exit(main())
