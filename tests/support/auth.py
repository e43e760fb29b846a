"""Tokens for tests: a signing key of the test's own, the env that makes services trust it,
and how each client sends a token (gRPC metadata, grpcurl -H, an HTTP header).

Auth is on in every test, as everywhere: the harness signs real tokens rather than turning
verification off.
"""

from __future__ import annotations

from meshkit.auth import Authenticator
from meshkit.config import AuthSettings
from meshkit.signing import LocalSigner

__all__ = ["auth_env", "authenticator_for", "bearer_header", "grpcurl_token"]


def authenticator_for(signer: LocalSigner) -> Authenticator:
    """What an in-process server verifies `signer`'s tokens with."""
    return Authenticator.from_settings(
        AuthSettings(
            keys_file=str(signer.jwks_path), issuer=signer.issuer, audience=signer.audience
        )
    )


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
