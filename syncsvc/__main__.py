"""python -m syncsvc: run a sync worker against CONTEXTMESH_NATS_URL."""

from meshkit.service import run_service
from syncsvc.service import serve


def main() -> None:
    run_service("syncsvc", serve)


if __name__ == "__main__":
    main()
