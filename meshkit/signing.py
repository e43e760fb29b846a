"""A local signing key: created once in a folder, kept across restarts, minting bearer JWTs.

`contextmesh up` keeps one in <data dir>/auth/ so a single machine is safe by default with no
identity provider: the services verify with its public half (jwks.json) and
`contextmesh token` signs with its private half. A deployment uses its identity provider's
JWKS URL instead (docs/security.md). The private key file is readable by its owner only.

    signer = LocalSigner.open(data_dir / "auth")          # creates the key the first time
    token = signer.mint(users=["octocat"], ttl_s=3600)
    signer.jwks_path                                      # CONTEXTMESH_AUTH_KEYS_FILE
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

__all__ = [
    "LOCAL_AUDIENCE",
    "LOCAL_ISSUER",
    "LocalSigner",
    "algorithm_for",
]

LOCAL_ISSUER = "contextmesh-local"
LOCAL_AUDIENCE = "contextmesh"
_ALG = "EdDSA"


def algorithm_for(key: Any) -> str:
    """The JWS algorithm a public or private key signs with."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    raise ValueError(f"unsupported key type {type(key).__name__}")


@dataclass(frozen=True)
class LocalSigner:
    """An Ed25519 key in `folder` (signing-key.pem, jwks.json) and what it signs as."""

    folder: pathlib.Path
    key: ed25519.Ed25519PrivateKey
    kid: str
    issuer: str = LOCAL_ISSUER
    audience: str = LOCAL_AUDIENCE

    @property
    def jwks_path(self) -> pathlib.Path:
        return self.folder / "jwks.json"

    @classmethod
    def open(cls, folder: str | os.PathLike[str], *, create: bool = True) -> LocalSigner:
        """Load the key in `folder`, creating it (and jwks.json) the first time."""
        folder = pathlib.Path(folder)
        path = folder / "signing-key.pem"
        if not path.exists():
            if not create:
                raise FileNotFoundError(f"no signing key at {path}; run `contextmesh up` first")
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            # Created 0600 before the key is written: it is never readable by others.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        signer = cls(folder, key, kid=_kid(public))
        signer._write_jwks()
        return signer

    def _write_jwks(self) -> None:
        jwk = json.loads(get_default_algorithms()[_ALG].to_jwk(self.key.public_key()))
        document = {"keys": [{**jwk, "kid": self.kid, "alg": _ALG, "use": "sig"}]}
        text = json.dumps(document, indent=2) + "\n"
        if not self.jwks_path.exists() or self.jwks_path.read_text() != text:
            self.jwks_path.write_text(text)

    def mint(
        self,
        *,
        users: Sequence[str],
        admin: bool = False,
        ttl_s: float = 3600.0,
        subject: str | None = None,
    ) -> str:
        """A token for `users` (["*"] only with admin) that expires after `ttl_s` seconds."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject or ("admin" if admin else ",".join(users)),
            "iat": now,
            "exp": now + int(ttl_s),
            "jti": secrets.token_hex(8),
            "users": list(users),
        }
        if admin:
            claims["scope"] = "admin"
        return jwt.encode(claims, self.key, algorithm=_ALG, headers={"kid": self.kid})


def _kid(public: bytes) -> str:
    import hashlib

    return hashlib.sha256(public).hexdigest()[:16]
