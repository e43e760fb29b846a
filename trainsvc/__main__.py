"""python -m trainsvc: run a training worker against CONTEXTMESH_NATS_URL."""

from meshkit.service import run_service
from trainsvc.service import serve


def main() -> None:
    run_service("trainsvc", serve)


if __name__ == "__main__":
    main()
