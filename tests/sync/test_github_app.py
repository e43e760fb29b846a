"""Users synced with a GitHub App installation's tokens, minted from the App's key on the
stand-in: minted once and shared, renewed before expiry and at once after an early 401, one
budget per installation across rotations and replicas, clear errors, no secret anywhere."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from meshkit.config import Settings
from meshkit.topology import Buckets
from syncsvc.sources.base import RepoListing, SourceError
from syncsvc.sources.github import GithubSource
from syncsvc.sources.github_app import GithubApp, installation_key
from syncsvc.sources.github_budget import SharedBudget
from syncsvc.sources.github_credentials import INSTALLATION, CredentialStore
from tests.support.fake_github import FakeGithub
from tests.sync.conftest import FAST_GITHUB_PACING

MakeSource = Callable[..., GithubSource]
CAP = 1024 * 1024
SHARED_TOKEN = "ghp_sharedSHAREDshared000000000000000"
APP_ID = 4242
# Every slot reads the shared view: each replica sees what the other published.
SHARING = replace(FAST_GITHUB_PACING, share_every_s=0.0)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def installation() -> int:
    """An installation id of the test's own, so its budget key is its own on the module's
    NATS server."""
    return secrets.randbelow(10**9) + 1


@pytest.fixture
def key_file(tmp_path: Path, app_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "app-key.pem"
    path.write_bytes(_pem(app_key))
    return path


@pytest.fixture
def store_dir(tmp_path: Path, installation: int) -> Path:
    """acme's entry names the installation; nobody else has one."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / "acme").write_text(f"installation:{installation}\n")
    return folder


@pytest.fixture
def world(fake_github: FakeGithub, app_key: rsa.RSAPrivateKey, installation: int) -> FakeGithub:
    """The App installed on the organisation acme (a public and a private repository)."""
    gh = fake_github
    gh.token = SHARED_TOKEN
    gh.add_app(APP_ID, app_key.public_key())
    gh.add_org("acme")
    gh.add_installation(installation, APP_ID, "acme")
    gh.add_repo("acme/site", {"README.md": "# site", ".repo-context.json": "{}"})
    gh.add_repo("acme/secret", {"README.md": "# secret"}, private=True)
    gh.add_user("other")
    gh.add_repo("other/site", {"README.md": "# other"})
    return gh


def store(
    gh: FakeGithub,
    store_dir: Path,
    key_file: Path | None,
    *,
    clock: Callable[[], float] | None = None,
    app_id: int | None = APP_ID,
) -> CredentialStore:
    """A replica's store: its own App, minting its own tokens, as a process would."""
    app = GithubApp(app_id, key_file, gh.url, clock=clock or time.time)
    return CredentialStore(SHARED_TOKEN, store_dir, app=app)


def listing(full_name: str) -> RepoListing:
    return RepoListing(full_name=full_name, fingerprint="f")


async def fetch(source: GithubSource, full_name: str, user: str = "acme") -> None:
    fetched = await source.fetch(listing(full_name), extra_files=(), max_file_bytes=CAP, user=user)
    assert fetched.readme.status in ("ok", "not_modified")


def sent(gh: FakeGithub, repo: str) -> list[str | None]:
    return [r.authorization for r in gh.requests(repo=repo)]


# -- the store -----------------------------------------------------------------------------


def test_an_entry_naming_an_installation_gives_a_credential_keyed_by_the_installation(
    world: FakeGithub, store_dir: Path, key_file: Path, installation: int
) -> None:
    credentials = store(world, store_dir, key_file)

    credential = credentials.for_user("acme")

    assert credential.source == INSTALLATION
    assert credential.token is None
    assert credential.id == installation_key(APP_ID, installation)
    assert credentials.for_user("ACME").installation is credential.installation
    assert credentials.for_user("other").token == SHARED_TOKEN


def test_a_malformed_installation_entry_fails_instead_of_using_the_shared_token(
    world: FakeGithub, store_dir: Path, key_file: Path
) -> None:
    (store_dir / "acme").write_text("installation:ghp_notANumberButAToken")
    credentials = store(world, store_dir, key_file)

    with pytest.raises(SourceError) as caught:
        credentials.for_user("acme")

    assert "installation:<number>" in str(caught.value)
    assert "ghp_notANumber" not in str(caught.value)
    assert not caught.value.transient


def test_the_app_settings_are_read_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "CONTEXTMESH_DATA_DIR": str(tmp_path),
            "CONTEXTMESH_GITHUB_APP_ID": "4242",
            "CONTEXTMESH_GITHUB_APP_KEY_FILE": str(tmp_path / "key.pem"),
        }
    )
    assert settings.github.app_id == 4242
    assert settings.github.app_key_file == (tmp_path / "key.pem").resolve()
    assert Settings.from_env({"CONTEXTMESH_DATA_DIR": str(tmp_path)}).github.app_id is None


# -- syncing with installation tokens ------------------------------------------------------


async def test_a_user_whose_entry_names_an_installation_is_synced_with_a_minted_token(
    world: FakeGithub,
    make_github_source: MakeSource,
    store_dir: Path,
    key_file: Path,
    installation: int,
) -> None:
    source = make_github_source(token=SHARED_TOKEN, credentials=store(world, store_dir, key_file))

    # Requests that start together, before any token: they wait for one mint.
    await asyncio.gather(*(fetch(source, "acme/site") for _ in range(5)))
    listed = await source.list_repositories("acme")
    await fetch(source, "other/site", user="other")

    [token] = world.minted(installation)  # concurrent requests waited for one mint
    assert {r.full_name for r in listed} == {"acme/site", "acme/secret"}  # acme's own App
    assert {r.authorization for r in world.requests(kind="list")} == {f"Bearer {token}"}
    assert set(sent(world, "acme/site")) == {f"Bearer {token}"}
    assert set(sent(world, "other/site")) == {f"Bearer {SHARED_TOKEN}"}
    [mint] = world.requests(kind="mint")
    assert mint.method == "POST" and mint.status == 201
    assert mint.authorization is not None and token not in mint.authorization  # the JWT
    assert world.count(status=401) == 0


async def test_a_token_near_its_expiry_is_replaced_before_use(
    world: FakeGithub,
    make_github_source: MakeSource,
    store_dir: Path,
    key_file: Path,
    installation: int,
) -> None:
    world.installation_token_lifetime_s = 400  # 100 s of use before the 300 s margin
    start = time.time()
    now = [start]
    source = make_github_source(
        token=SHARED_TOKEN, credentials=store(world, store_dir, key_file, clock=lambda: now[0])
    )
    await fetch(source, "acme/site")
    now[0] = start + 95
    await fetch(source, "acme/site")
    assert len(world.minted(installation)) == 1  # still well inside its life
    world.reset_log()

    now[0] = start + 105
    world.installation_token_lifetime_s = 3600  # the next one lives a full hour
    await fetch(source, "acme/site")

    _, second = world.minted(installation)
    assert set(sent(world, "acme/site")) == {f"Bearer {second}"}  # never the old one
    assert world.count(status=401) == 0


async def test_a_token_refused_early_is_minted_again_at_once(
    world: FakeGithub,
    make_github_source: MakeSource,
    store_dir: Path,
    key_file: Path,
    installation: int,
) -> None:
    source = make_github_source(token=SHARED_TOKEN, credentials=store(world, store_dir, key_file))
    await fetch(source, "acme/site")
    [first] = world.minted(installation)
    world.refuse_token(first)  # GitHub dropped it before its hour
    world.reset_log()

    await fetch(source, "acme/site")

    first_again, second = world.minted(installation)  # one mint, however many were refused
    assert first_again == first
    refused = world.requests(status=401)
    assert refused and {r.authorization for r in refused} == {f"Bearer {first}"}
    answered = [r.authorization for r in world.requests(repo="acme/site") if r.status != 401]
    assert answered == [f"Bearer {second}"] * 2  # README and context file, each sent again


# -- one budget per installation -----------------------------------------------------------


@pytest.fixture
async def budgets(js: JetStreamContext) -> KeyValue:
    return await js.key_value(Buckets.GITHUB_BUDGETS.name)


async def test_two_replicas_on_one_installation_share_one_budget_key_across_rotations(
    world: FakeGithub,
    make_github_source: MakeSource,
    store_dir: Path,
    key_file: Path,
    installation: int,
    budgets: KeyValue,
) -> None:
    world.add_repo("acme/more", {"README.md": "# more", ".repo-context.json": "{}"})
    world.set_rate_limit(4, window_s=3600)
    key = installation_key(APP_ID, installation)
    first = make_github_source(
        token=SHARED_TOKEN,
        pacing=SHARING,
        budgets=budgets,
        rate_limit_reserve=0,
        credentials=store(world, store_dir, key_file),
    )
    second = make_github_source(
        token=SHARED_TOKEN,
        pacing=SHARING,
        budgets=budgets,
        rate_limit_reserve=0,
        credentials=store(world, store_dir, key_file),
    )
    await fetch(first, "acme/site")  # two requests (README, context file) of four
    after_first = await SharedBudget(budgets, key).read()
    world.refuse_token(world.minted(installation)[0])  # a rotation on the first replica
    await fetch(first, "acme/more")  # two more (the 401s are not the installation's)

    # The second replica mints its own token, but the bucket already says nothing is left.
    with pytest.raises(SourceError) as caught:
        await fetch(second, "acme/site")

    assert after_first is not None and after_first.remaining == 2
    assert len(world.minted(installation)) == 2  # the second replica never minted or sent
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 3000
    shared = await SharedBudget(budgets, key).read()
    assert shared is not None and shared.remaining == 0 == world.rate_remaining(
        installation=installation
    )
    assert world.count(status=403) == 0
    stored = b"".join(
        [k.encode() + ((await budgets.get(k)).value or b"") for k in await budgets.keys()]
    )
    for token in world.minted(installation):
        assert token.encode() not in stored


# -- errors say what to fix, and never fall back to the shared token -----------------------


def break_setup(broken: str, key_file: Path, store_dir: Path) -> int | None:
    """Break one part of the App's setup; the App id the replica is configured with."""
    if broken == "missing":
        key_file.unlink()
    elif broken == "garbage":
        key_file.write_text("-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n")
    elif broken == "other_key":
        key_file.write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    elif broken == "unknown_installation":
        (store_dir / "acme").write_text("installation:7")
    elif broken == "no_app":
        return None
    return APP_ID


async def sync_fails(source: GithubSource) -> SourceError:
    with pytest.raises(SourceError) as caught:
        await source.fetch(listing("acme/site"), extra_files=(), max_file_bytes=CAP, user="acme")
    assert not caught.value.transient
    return caught.value


@pytest.mark.parametrize(
    ("broken", "says"),
    [
        ("missing", "CONTEXTMESH_GITHUB_APP_KEY_FILE) is unreadable (FileNotFoundError)"),
        ("garbage", "holds no unencrypted RSA private key in PEM"),
        ("other_key", "GitHub refused the App's JWT; check CONTEXTMESH_GITHUB_APP_ID"),
        ("unknown_installation", "no such installation of this App"),
        ("no_app", "no GitHub App is configured: set CONTEXTMESH_GITHUB_APP_ID"),
    ],
)
async def test_a_broken_app_setup_fails_the_users_sync_with_what_to_fix(
    world: FakeGithub,
    make_github_source: MakeSource,
    store_dir: Path,
    key_file: Path,
    app_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
    broken: str,
    says: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    app_id = break_setup(broken, key_file, store_dir)
    source = make_github_source(
        token=SHARED_TOKEN, credentials=store(world, store_dir, key_file, app_id=app_id)
    )

    error = await sync_fails(source)

    assert says in str(error)
    # Never the shared token instead: it would show acme's repositories as another sees them.
    assert world.requests(repo="acme/site") == []
    shown = str(error) + caplog.text
    assert "BEGIN" not in shown and "bm90IGEga2V5" not in shown and "eyJ" not in shown
    assert _pem(app_key).decode().splitlines()[1] not in shown


async def test_an_outage_while_minting_is_transient_and_still_not_the_shared_token(
    world: FakeGithub, make_github_source: MakeSource, store_dir: Path, key_file: Path
) -> None:
    world.fail(503, path="access_tokens", times=1)
    source = make_github_source(token=SHARED_TOKEN, credentials=store(world, store_dir, key_file))

    with pytest.raises(SourceError) as caught:
        await source.fetch(listing("acme/site"), extra_files=(), max_file_bytes=CAP, user="acme")

    assert caught.value.transient  # the task is retried later
    assert "could not mint a token for installation" in str(caught.value)
    assert world.requests(repo="acme/site") == []
    await fetch(source, "acme/site")  # GitHub is back: the retry mints


async def test_no_key_jwt_or_token_reaches_a_log_line_or_an_error(
    world: FakeGithub,
    make_github_source: MakeSource,
    store_dir: Path,
    key_file: Path,
    app_key: rsa.RSAPrivateKey,
    installation: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    source = make_github_source(token=SHARED_TOKEN, credentials=store(world, store_dir, key_file))
    await source.list_repositories("acme")
    world.refuse_token(world.minted(installation)[0])
    await fetch(source, "acme/site")
    jwts = [
        (r.authorization or "").removeprefix("Bearer ")
        for r in world.requests()
        if r.kind in ("mint", "installation")
    ]
    [token] = world.minted(installation)[1:]
    # GitHub's messages are echoed into errors: make one carry the current token.
    world.fail(403, path="readme", message=f"token {token} may not read this")

    error = await sync_fails(source)

    assert "minted a GitHub App token" in caplog.text  # the mints were logged, by key
    assert len(jwts) == 3 and all(jwts)  # two mints and the installation's account
    shown = caplog.text + str(error) + repr(source) + repr(store(world, store_dir, key_file))
    for secret in [*world.minted(installation), *jwts]:
        assert secret not in shown
    assert _pem(app_key).decode().splitlines()[1] not in shown
