"""python -m notifysvc: run the notifier against CONTEXTMESH_NATS_URL."""

from meshkit.service import run_service
from notifysvc.service import serve


def main() -> None:
    run_service("notifysvc", serve)


if __name__ == "__main__":
    main()
