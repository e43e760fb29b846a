"""contextmesh.search.v1.SearchService over a Searcher."""

from __future__ import annotations

import grpc
from contextmesh.search.v1 import search_pb2, search_service_pb2, search_service_pb2_grpc

from meshkit.auth import Rule, user_field
from searchsvc.engine import Searcher

__all__ = ["SEARCH_RULES", "SEARCH_SERVICE", "SearchServicer"]

SEARCH_SERVICE = search_service_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
SEARCH_RULES: dict[str, Rule] = {f"/{SEARCH_SERVICE}/Search": user_field("user")}
"""The gateway forwards its caller's token, so searchsvc checks the same caller again."""


class SearchServicer(search_service_pb2_grpc.SearchServiceServicer):
    """Requests are validated by the server's interceptor (user name, query length, top_k);
    a user with no bundle raises meshkit.rpc.NotFound, which the interceptor maps."""

    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher

    async def Search(
        self, request: search_service_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> search_service_pb2.SearchResponse:
        result = await self.searcher.search(request.user, request.query, request.top_k)
        return search_service_pb2.SearchResponse(
            hits=[
                search_pb2.SearchHit(
                    repository=hit.repository,
                    score=hit.score,
                    passage=hit.passage.text,
                    passage_source=hit.passage.source,
                )
                for hit in result.hits
            ],
            bundle_hash=result.bundle_hash,
            tuned=result.tuned,
        )
