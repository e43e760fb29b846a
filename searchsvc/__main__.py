"""python -m searchsvc: serve SearchService on CONTEXTMESH_SEARCH_ADDR."""

from meshkit.service import run_service
from searchsvc.service import serve


def main() -> None:
    run_service("searchsvc", serve)


if __name__ == "__main__":
    main()
