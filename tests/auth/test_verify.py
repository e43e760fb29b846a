"""meshkit.auth.Authenticator: which tokens verify, what a refusal says, where keys come from.

Real keys and real pyjwt; the JWKS URL is served by a real HTTP server on loopback.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshkit.auth import Authenticator, Principal, Unauthenticated
from meshkit.config import AuthSettings, Settings
from meshkit.errors import ConfigError
from meshkit.signing import LocalSigner


def _auth(signer: LocalSigner, **overrides: object) -> Authenticator:
    fields: dict[str, object] = {
        "keys_file": str(signer.jwks_path),
        "issuer": signer.issuer,
        "audience": signer.audience,
        **overrides,
    }
    return Authenticator.from_settings(AuthSettings(**fields))  # type: ignore[arg-type]


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def _refusal(auth: Authenticator, metadata: list[tuple[str, str]]) -> str:
    with pytest.raises(Unauthenticated) as info:
        await auth.principal(metadata)
    return str(info.value)


async def test_a_good_token_gives_its_users_and_scope(signer: LocalSigner) -> None:
    auth = _auth(signer)

    user = await auth.principal(_bearer(signer.mint(users=["Alice", "bob"])))
    admin = await auth.principal(_bearer(signer.mint(users=["*"], admin=True)))

    assert user == Principal("Alice,bob", frozenset({"alice", "bob"}), admin=False)
    assert user.may_act_for("ALICE") and not user.may_act_for("carol")
    assert admin.admin and admin.may_act_for("anyone")


async def test_refusals_say_what_to_fix_and_never_echo_the_token(
    signer: LocalSigner, tmp_path: Path
) -> None:
    auth = _auth(signer)
    stranger = LocalSigner.open(tmp_path / "stranger")
    good = signer.mint(users=["alice"])
    now = int(time.time())
    base = {"iss": signer.issuer, "aud": signer.audience, "sub": "x", "users": ["alice"]}

    def signed(**claims: object) -> str:
        return jwt.encode(
            {**base, "exp": now + 600, **claims}, signer.key, "EdDSA", {"kid": signer.kid}
        )

    cases = {
        "missing credentials": [],
        "'Bearer <token>'": [("authorization", f"Basic {good}")],
        "not a JWT": _bearer("not-a-jwt"),
        "does not trust": _bearer(stranger.mint(users=["alice"])),
        "expired": _bearer(signed(exp=now - 3600)),
        "aud must include": _bearer(signed(aud="someone-else")),
        "issuer": _bearer(signed(iss="https://evil.example")),
        "'users' claim": _bearer(signed(users="alice")),
        "needs the 'admin' scope": _bearer(signed(users=["*"])),
        "signature": _bearer(good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")),
    }
    for expected, metadata in cases.items():
        message = await _refusal(auth, metadata)
        assert expected in message, (expected, message)
        for _, value in metadata:
            assert value.split()[-1] not in message
    assert "Bearer" in await _refusal(auth, [])  # says how to send one


async def test_an_unsigned_token_is_refused(signer: LocalSigner) -> None:
    # alg "none" must never be accepted: the algorithm comes from the key, not the token.
    unsigned = jwt.encode(
        {
            "iss": signer.issuer,
            "aud": signer.audience,
            "sub": "x",
            "users": ["*"],
            "scope": "admin",
            "exp": int(time.time()) + 600,
        },
        None,
        algorithm="none",
        headers={"kid": signer.kid},
    )

    assert "signature" in await _refusal(_auth(signer), _bearer(unsigned))


async def test_a_pem_public_key_works_as_the_key_file(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "public.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    auth = Authenticator.from_settings(
        AuthSettings(keys_file=str(pem), issuer="https://idp", audience="cm")
    )
    token = jwt.encode(
        {
            "iss": "https://idp",
            "aud": ["cm", "other"],
            "sub": "svc",
            "users": ["alice"],
            "exp": int(time.time()) + 60,
        },
        key,
        algorithm="ES256",
    )

    assert (await auth.principal(_bearer(token))).users == frozenset({"alice"})


@pytest.fixture
def jwks_server(tmp_path: Path) -> Iterator[tuple[str, list[LocalSigner], list[int]]]:
    """Serves the JWKS of whichever signer is first in the list; counts fetches."""
    signers = [LocalSigner.open(tmp_path / "k1")]
    fetches = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetches[0] += 1
            body = signers[0].jwks_path.read_bytes()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", signers, fetches
    server.shutdown()
    server.server_close()


async def test_keys_from_a_jwks_url_follow_rotation(
    jwks_server: tuple[str, list[LocalSigner], list[int]], tmp_path: Path
) -> None:
    url, signers, fetches = jwks_server
    first = signers[0]
    auth = Authenticator.from_settings(
        AuthSettings(jwks_url=url, issuer=first.issuer, audience=first.audience)
    )
    assert auth.keys is not None
    auth.keys.refresh_s = 0.0  # refetch at once on an unknown key id, for the test

    assert (await auth.principal(_bearer(first.mint(users=["alice"])))).users == {"alice"}
    assert (await auth.principal(_bearer(first.mint(users=["bob"])))).users == {"bob"}
    assert fetches[0] == 1  # cached

    signers[0] = LocalSigner.open(tmp_path / "k2")  # the provider rotates its key
    rotated = signers[0].mint(users=["carol"])
    assert (await auth.principal(_bearer(rotated))).users == {"carol"}
    assert fetches[0] == 2


def test_auth_is_on_by_default_and_needs_its_settings(tmp_path: Path) -> None:
    settings = Settings.from_env({})
    assert settings.auth.enabled

    with pytest.raises(ConfigError, match="CONTEXTMESH_AUTH_ISSUER"):
        Authenticator.from_settings(settings.auth)
    with pytest.raises(ConfigError, match="CONTEXTMESH_AUTH_KEYS_FILE"):
        Authenticator.from_settings(AuthSettings(issuer="i", audience="a"))
    with pytest.raises(ConfigError, match="CONTEXTMESH_AUTH_KEYS_FILE"):
        Authenticator.from_settings(
            AuthSettings(keys_file=str(tmp_path / "none.json"), issuer="i", audience="a")
        )


async def test_off_is_explicit_and_loud(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env({"CONTEXTMESH_AUTH": "off"})

    with caplog.at_level("WARNING"):
        auth = Authenticator.from_settings(settings.auth)

    assert not auth.enabled
    assert "AUTHENTICATION IS OFF" in caplog.text
    assert (await auth.principal([])).may_act_for("anyone")


async def test_a_verified_token_is_not_verified_again_until_it_expires(
    signer: LocalSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signature check costs about a RefreshBundle: the same token is checked once, and
    trusted no longer than it is valid."""
    auth = _auth(signer)
    token = signer.mint(users=["alice"], ttl_s=120)
    checks = 0
    decode = jwt.decode

    def counting_decode(*args: object, **kwargs: object) -> object:
        nonlocal checks
        checks += 1
        return decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting_decode)
    first = await auth.principal(_bearer(token))
    assert await auth.principal(_bearer(token)) == first and checks == 1
    assert (await auth.principal(_bearer(signer.mint(users=["bob"])))).users == {"bob"}
    assert checks == 2  # another token is checked on its own

    real_time = time.time
    soon = signer.mint(users=["carol"], ttl_s=20)
    await auth.principal(_bearer(soon))
    checks_before = checks
    monkeypatch.setattr(time, "time", lambda: real_time() + 21)  # past its exp
    await auth.principal(_bearer(soon))  # checked again (pyjwt's own leeway still takes it)
    assert checks == checks_before + 1
    monkeypatch.setattr(time, "time", lambda: real_time() + 61)  # past the longest trust
    await auth.principal(_bearer(token))
    assert checks == checks_before + 2
