"""Who is calling, and may they: bearer JWTs checked by one interceptor on every public server.

A caller sends `authorization: Bearer <JWT>` (gRPC metadata; over REST the Authorization
header, which Envoy's transcoder forwards as that metadata). The token is verified with keys
from a JWKS URL or a static key file, and its issuer, audience and expiry are checked (pyjwt;
the algorithm comes from the key, never from the token). Its claims (docs/security.md):

    {"iss": ..., "aud": ..., "exp": ..., "sub": "who",
     "users": ["octocat", "hubot"],   # the GitHub users the caller may act for
     "scope": "admin"}                # optional; admin may use "*" in users and the admin plane

Each server declares, per method, what a caller must hold (`Rule`): a request field that names
the user (`user_field("user")`), the owner of the job a request names (`JOB_OWNER`, checked by
the handler with `authorize_job` on the record it reads anyway), or the admin scope (`ADMIN`);
or it says that the handler authenticates its caller itself (`SELF_AUTHENTICATED`: a GitHub
webhook proves itself with a signature over its body, not a bearer token, and its caller
acts for no user). A method with no rule is refused; health and reflection stay open.
UNAUTHENTICATED says what to fix and never echoes the token; someone else's job answers
exactly as an unknown job does.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import pathlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
from jwt import PyJWK, PyJWKSet

from meshkit.config import AuthSettings
from meshkit.errors import ConfigError, JobNotFoundError, MeshError
from meshkit.interceptors import MethodWrapper

__all__ = [
    "ADMIN",
    "ADMIN_SCOPE",
    "ANY_USER",
    "AUTHENTICATED",
    "JOB_OWNER",
    "OPEN_SERVICES",
    "SELF_AUTHENTICATED",
    "AuthInterceptor",
    "Authenticator",
    "Principal",
    "Rule",
    "Unauthenticated",
    "authorize_job",
    "current_principal",
    "forward_credentials",
    "user_field",
]

log = logging.getLogger(__name__)

ADMIN_SCOPE = "admin"
ANY_USER = "*"
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
"""Services any caller may use without a token: probes and grpcurl's discovery."""

_HOW = (
    "send the metadata 'authorization: Bearer <token>' (REST: the Authorization header); "
    "for a local `contextmesh up`, `contextmesh token --user NAME` prints one"
)


class Unauthenticated(MeshError):
    """The credentials are missing or do not verify; the message says what to fix."""


@dataclass(frozen=True)
class Principal:
    """A verified caller: who it is, the users it may act for, whether it is an admin."""

    subject: str
    users: frozenset[str]
    admin: bool = False

    def may_act_for(self, user: str) -> bool:
        # GitHub names are case-insensitive; the users claim is stored lower-cased.
        return (self.admin and ANY_USER in self.users) or user.lower() in self.users


@dataclass(frozen=True)
class Rule:
    """What a caller must hold to call one method."""

    user_field: str | None = None
    """The request field naming the user the call acts for."""
    job_owner: bool = False
    """The handler checks the owner of the job it reads with `authorize_job`."""
    admin: bool = False
    """Only tokens with the admin scope."""
    self_authenticated: bool = False
    """No bearer token: the handler authenticates the caller itself, from the request (a
    signature over its body). The call's principal may act for no user."""


def user_field(name: str) -> Rule:
    return Rule(user_field=name)


JOB_OWNER = Rule(job_owner=True)
ADMIN = Rule(admin=True)
AUTHENTICATED = Rule()
SELF_AUTHENTICATED = Rule(self_authenticated=True)
NOBODY = Principal("unauthenticated", frozenset())
"""The principal of a self-authenticated call: it may act for no user and is not an admin."""


@dataclass
class _Call:
    principal: Principal
    owner_checked: bool = False


_current: contextvars.ContextVar[_Call] = contextvars.ContextVar("contextmesh_auth_call")


def current_principal() -> Principal:
    """The verified caller of the call being handled (limits are kept per caller)."""
    call = _current.get(None)
    if call is None:
        raise RuntimeError("current_principal called outside an authenticated call")
    return call.principal


def authorize_job(owner: str, job_id: str) -> None:
    """Raise JobNotFoundError, as for an unknown id, unless the caller may act for `owner`.

    Called by handlers of JOB_OWNER methods with the job record they read: someone else's
    job id is indistinguishable from one that never existed, so ids cannot be probed.
    """
    call = _current.get(None)
    if call is None:
        raise RuntimeError("authorize_job called outside an authenticated call")
    if not call.principal.may_act_for(owner):
        raise JobNotFoundError(job_id)
    call.owner_checked = True


def forward_credentials(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The caller's authorization metadata, to pass on to a service called on its behalf."""
    return tuple(
        (key, value)
        for key, value in (context.invocation_metadata() or ())
        if key == "authorization" and isinstance(value, str)
    )


class _Keys:
    """Verification keys by key id, from a static file or a JWKS URL (refetched on an
    unknown key id, at most once every `refresh_s`, so key rotation needs no restart)."""

    def __init__(
        self, keys: list[PyJWK], url: str | None = None, *, refresh_s: float = 30.0
    ) -> None:
        self.keys = keys
        self.url = url
        self.refresh_s = refresh_s
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def from_file(cls, path: pathlib.Path) -> _Keys:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError("CONTEXTMESH_AUTH_KEYS_FILE", f"cannot read {path}: {exc}") from None
        return cls(_parse_keys(text, "CONTEXTMESH_AUTH_KEYS_FILE"))

    def _find(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            return self.keys[0] if len(self.keys) == 1 else None
        return next((k for k in self.keys if k.key_id == kid), None)

    async def key_for(self, kid: str | None) -> PyJWK | None:
        found = self._find(kid)
        if found is not None or self.url is None:
            return found
        async with self._lock:
            if time.monotonic() - self._fetched >= self.refresh_s or not self.keys:
                self._fetched = time.monotonic()
                try:
                    self.keys = await asyncio.to_thread(_fetch_jwks, self.url)
                except Exception:
                    log.exception("cannot fetch the JWKS from %s", self.url)
        return self._find(kid)


def _fetch_jwks(url: str) -> list[PyJWK]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return _parse_keys(response.read().decode(), "CONTEXTMESH_AUTH_JWKS_URL")


def _parse_keys(text: str, variable: str) -> list[PyJWK]:
    """A JWKS document ({"keys": [...]}), one JWK, or a PEM public key."""
    try:
        if text.lstrip().startswith("-----BEGIN"):
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            return [_jwk_of_public_key(load_pem_public_key(text.encode()))]
        document = json.loads(text)
        if "keys" in document:
            keys = list(PyJWKSet.from_dict(document).keys)
        else:
            keys = [PyJWK.from_dict(document)]
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError(variable, f"not a JWKS, a JWK or a PEM public key: {exc}") from None
    if not keys:
        raise ConfigError(variable, "holds no usable key")
    return keys


def _jwk_of_public_key(key: Any) -> PyJWK:
    from jwt.algorithms import get_default_algorithms

    from meshkit.signing import algorithm_for

    alg = algorithm_for(key)
    jwk = json.loads(get_default_algorithms()[alg].to_jwk(key))
    return PyJWK.from_dict({**jwk, "alg": alg})


VERIFIED_MAX_AGE_S = 60.0
"""How long a verified token is trusted without checking its signature again: a key taken
out of the JWKS stops working within this long."""
VERIFIED_MAX_TOKENS = 10_000


class Authenticator:
    """Turns the authorization metadata of a call into a Principal, or Unauthenticated.

    A signature check costs about as much as a whole RefreshBundle, and a client sends the
    same token with every call: a verified token's principal is kept (bounded, oldest out
    first) until the token expires or VERIFIED_MAX_AGE_S has passed, whichever is first.
    Failures are never kept.
    """

    def __init__(self, keys: _Keys | None, *, issuer: str, audience: str) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self._verified: dict[str, tuple[Principal, float]] = {}

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> Authenticator:
        """The configured verifier; ConfigError names what is missing. With auth off (an
        explicit choice) every caller is an anonymous admin, and that is logged loudly."""
        if not settings.enabled:
            log.warning(
                "AUTHENTICATION IS OFF (CONTEXTMESH_AUTH=off): every caller may act for every "
                "user and use the admin plane. Never run like this where others can connect."
            )
            return cls(None, issuer="", audience="")
        if not settings.issuer:
            raise ConfigError("CONTEXTMESH_AUTH_ISSUER", "set the issuer (iss) tokens must carry")
        if not settings.audience:
            raise ConfigError(
                "CONTEXTMESH_AUTH_AUDIENCE", "set the audience (aud) tokens must carry"
            )
        if settings.keys_file:
            keys = _Keys.from_file(pathlib.Path(settings.keys_file))
        elif settings.jwks_url:
            keys = _Keys([], settings.jwks_url)
        else:
            raise ConfigError(
                "CONTEXTMESH_AUTH_KEYS_FILE",
                "set it (or CONTEXTMESH_AUTH_JWKS_URL) to the keys that verify tokens, "
                "or CONTEXTMESH_AUTH=off to run without authentication",
            )
        return cls(keys, issuer=settings.issuer, audience=settings.audience)

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    async def principal(self, metadata: Any) -> Principal:
        if self.keys is None:
            return Principal("anonymous", frozenset({ANY_USER}), admin=True)
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        if not values:
            raise Unauthenticated(f"missing credentials: {_HOW}")
        scheme, _, token = str(values[0]).strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(f"the authorization value must be 'Bearer <token>': {_HOW}")
        return await self.verify(token)

    async def verify(self, token: str) -> Principal:
        now = time.time()
        if (known := self._verified.get(token)) is not None and known[1] > now:
            return known[0]
        principal, expires = await self._verify(token)
        if len(self._verified) >= VERIFIED_MAX_TOKENS:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (principal, min(expires, now + VERIFIED_MAX_AGE_S))
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        """Check the token's signature and claims: its principal and expiry (epoch s)."""
        assert self.keys is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token is not a JWT") from None
        kid = header.get("kid")
        key = await self.keys.key_for(kid if isinstance(kid, str) else None)
        if key is None:
            raise Unauthenticated("the token is signed with a key this service does not trust")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=30,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired; get a new one") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                f"the token is not for this service: aud must include {self.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(f"the token's issuer (iss) must be {self.issuer!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token's signature does not verify") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated(
                f"the token's signature does not verify: its key signs with {key.algorithm_name}"
            ) from None
        except jwt.PyJWTError:
            raise Unauthenticated("the token is malformed or not valid yet") from None
        return _principal_of(claims), float(claims["exp"])


def _principal_of(claims: Mapping[str, Any]) -> Principal:
    users = claims.get("users", [])
    if not isinstance(users, list) or not all(isinstance(u, str) and u for u in users):
        raise Unauthenticated("the token's 'users' claim must be a list of GitHub user names")
    scope = claims.get("scope", "")
    scopes = scope.split() if isinstance(scope, str) else []
    admin = ADMIN_SCOPE in scopes
    if ANY_USER in users and not admin:
        raise Unauthenticated(f"'{ANY_USER}' in 'users' needs the {ADMIN_SCOPE!r} scope")
    return Principal(str(claims["sub"]), frozenset(u.lower() for u in users), admin=admin)


class AuthInterceptor(MethodWrapper):
    """Authenticates every call but health and reflection, then applies the method's Rule."""

    def __init__(self, authenticator: Authenticator | None, rules: Mapping[str, Rule]) -> None:
        if authenticator is None and rules:
            raise ValueError("methods with access rules need an Authenticator")
        super().__init__()
        self.authenticator = authenticator
        self.rules = dict(rules)

    def applies(self, method: str) -> bool:
        return method.strip("/").split("/")[0] not in OPEN_SERVICES

    async def _admit(self, method: str, request: Any, context: Any) -> _Call:
        rule = self.rules.get(method)
        if rule is None or self.authenticator is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} is not served here")
        assert rule is not None and self.authenticator is not None
        if rule.self_authenticated:
            return _Call(NOBODY)
        try:
            principal = await self.authenticator.principal(context.invocation_metadata())
        except Unauthenticated as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        if rule.admin and not principal.admin:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{method} needs a token with the admin scope"
            )
        if rule.user_field and hasattr(request, rule.user_field):
            user = str(getattr(request, rule.user_field))
            if not principal.may_act_for(user):
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"this token may not act for user {user!r}; ask for one whose 'users' "
                    "claim lists it",
                )
        return _Call(principal)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        rule = self.rules.get(method)
        needs_owner = rule is not None and rule.job_owner

        async def unchecked(context: Any) -> None:
            log.error("%s returned without checking the job owner (authorize_job)", method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}")

        if handler.unary_unary:
            inner_unary = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                call = await self._admit(method, request, context)
                _current.set(call)
                answer = await inner_unary(request, context)
                if needs_owner and not call.owner_checked:
                    await unchecked(context)
                return answer

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                call = await self._admit(method, request, context)
                _current.set(call)
                answers = inner_stream(request, context)
                if inspect.isawaitable(answers):  # a handler that writes with context.write
                    await answers
                    return
                async for item in answers:
                    if needs_owner and not call.owner_checked:
                        await unchecked(context)
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )

        # Client-streaming methods: none in the public contracts; refuse, never pass unchecked.
        async def refuse(requests: Any, context: Any) -> Any:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} is not served here")

        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                refuse, handler.request_deserializer, handler.response_serializer
            )
        return grpc.stream_unary_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )
