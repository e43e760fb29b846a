"""Tokens for tests: a signing key of the test's own, the env that makes services trust it,
and how each client sends a token (gRPC metadata, grpcurl -H, an HTTP header).

Auth is on in every test, as everywhere: the harness signs real tokens rather than turning
verification off.
"""

from __future__ import annotations

from meshkit.signing import LocalSigner

__all__ = ["auth_env", "bearer_header", "grpcurl_token"]


def auth_env(signer: LocalSigner) -> dict[str, str]:
    """The environment with which a gateway or searchsvc verifies `signer`'s tokens."""
    return {
        "CONTEXTMESH_AUTH_KEYS_FILE": str(signer.jwks_path),
        "CONTEXTMESH_AUTH_ISSUER": signer.issuer,
        "CONTEXTMESH_AUTH_AUDIENCE": signer.audience,
    }


def bearer_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def grpcurl_token(token: str) -> list[str]:
    """grpcurl options that send the token as metadata."""
    return ["-H", f"authorization: Bearer {token}"]
