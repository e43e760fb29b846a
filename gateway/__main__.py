"""python -m gateway: run the gateway against CONTEXTMESH_NATS_URL."""

from gateway.server import serve
from meshkit.service import run_service


def main() -> None:
    run_service("gateway", serve)


if __name__ == "__main__":
    main()
