"""python -m mergesvc: run a merge worker against CONTEXTMESH_NATS_URL."""

from mergesvc.service import serve
from meshkit.service import run_service


def main() -> None:
    run_service("mergesvc", serve)


if __name__ == "__main__":
    main()
