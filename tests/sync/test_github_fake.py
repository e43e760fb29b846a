"""The GitHub stand-in itself, checked with a plain HTTP client: it must behave like GitHub
where the source relies on it, or the source's tests prove nothing."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.fake_github import FakeGithub, populate

RAW = {"Accept": "application/vnd.github.raw+json"}


async def test_pagination_honours_per_page_up_to_100_and_links_every_page(
    fake_github: FakeGithub,
) -> None:
    populate(fake_github, "octo", 250)
    async with httpx.AsyncClient(base_url=fake_github.url) as client:
        default = await client.get("/users/octo/repos")
        capped = await client.get("/users/octo/repos", params={"per_page": 500, "page": 2})
        beyond = await client.get("/users/octo/repos", params={"per_page": 100, "page": 9})

    assert len(default.json()) == 30
    assert 'rel="next"' in default.headers["link"] and "page=2" in default.headers["link"]
    assert len(capped.json()) == 100
    links = capped.links
    assert {rel for rel in links} == {"next", "last", "prev", "first"}
    assert "page=3" in links["next"]["url"] and "per_page=100" in links["next"]["url"]
    assert links["next"]["url"].startswith(fake_github.url)
    assert beyond.json() == []
    assert "next" not in beyond.links


async def test_contents_raw_and_json_forms_and_404(fake_github: FakeGithub) -> None:
    fake_github.add_repo("octo/site", {"docs/guide.md": "guide", "README.md": "# hi"})
    async with httpx.AsyncClient(base_url=fake_github.url) as client:
        raw = await client.get("/repos/octo/site/contents/docs/guide.md", headers=RAW)
        doc = (await client.get("/repos/octo/site/contents/docs/guide.md")).json()
        readme = (await client.get("/repos/octo/site/readme")).json()
        missing = await client.get("/repos/octo/site/contents/nope.md", headers=RAW)
        bad_ref = await client.get("/repos/octo/site/readme", params={"ref": "other"})

    assert raw.content == b"guide" and raw.headers["content-length"] == "5"
    assert (doc["path"], doc["size"], doc["encoding"]) == ("docs/guide.md", 5, "base64")
    assert base64.b64decode(doc["content"]) == b"guide"
    assert (readme["path"], base64.b64decode(readme["content"])) == ("README.md", b"# hi")
    assert missing.status_code == 404 and missing.json()["message"] == "Not Found"
    assert bad_ref.status_code == 404


async def test_etags_answer_304_and_304s_are_free(fake_github: FakeGithub) -> None:
    fake_github.add_repo("octo/site", {"README.md": "# hi"})
    async with httpx.AsyncClient(base_url=fake_github.url) as client:
        first = await client.get("/repos/octo/site/contents/README.md", headers=RAW)
        etag = first.headers["etag"]
        again = await client.get(
            "/repos/octo/site/contents/README.md", headers={**RAW, "If-None-Match": etag}
        )
        fake_github.change_file("octo/site", "README.md", "# changed")
        changed = await client.get(
            "/repos/octo/site/contents/README.md", headers={**RAW, "If-None-Match": etag}
        )

    assert again.status_code == 304 and again.content == b""
    assert again.headers["x-ratelimit-remaining"] == first.headers["x-ratelimit-remaining"]
    assert changed.status_code == 200 and changed.content == b"# changed"
    assert changed.headers["etag"] != etag
    assert (
        int(changed.headers["x-ratelimit-remaining"])
        == int(first.headers["x-ratelimit-remaining"]) - 1
    )


async def test_an_exhausted_budget_answers_403_until_the_reset(fake_github: FakeGithub) -> None:
    fake_github.add_user("octo")
    fake_github.set_rate_limit(2, window_s=1)
    async with httpx.AsyncClient(base_url=fake_github.url) as client:
        answers = [await client.get("/users/octo") for _ in range(3)]
        await asyncio.sleep(max(0.0, fake_github.rate_reset - time.time()) + 0.05)
        renewed = await client.get("/users/octo")

    assert [a.status_code for a in answers] == [200, 200, 403]
    assert answers[2].headers["x-ratelimit-remaining"] == "0"
    assert "rate limit" in answers[2].json()["message"]
    assert renewed.status_code == 200 and renewed.headers["x-ratelimit-remaining"] == "1"


async def test_faults_are_used_up_and_counted(fake_github: FakeGithub) -> None:
    fake_github.add_repo("octo/site", {"README.md": "# hi"})
    fake_github.fail(500, repo="octo/site", times=2)
    fake_github.throttle(429, retry_after=7, path="/users/")
    async with httpx.AsyncClient(base_url=fake_github.url) as client:
        statuses = [(await client.get("/repos/octo/site/readme")).status_code for _ in range(3)]
        throttled = await client.get("/users/octo")

    assert statuses == [500, 500, 200]
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "7"
    assert fake_github.count(repo="octo/site") == 3
    assert fake_github.count(kind="readme", status=500) == 2
    assert fake_github.stats()["by_status"] == {"500": 2, "200": 1, "429": 1}


async def test_latency_is_a_non_blocking_sleep() -> None:
    with FakeGithub(latency_s=0.2) as gh:
        populate(gh, "octo", 1)
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=gh.url, limits=limits) as client:
            started = time.monotonic()
            answers = await asyncio.gather(*(client.get("/users/octo") for _ in range(50)))
            elapsed = time.monotonic() - started

    assert all(a.status_code == 200 for a in answers)
    assert elapsed >= 0.2  # the latency was applied
    assert gh.max_in_flight > 10  # many at once: the sleep blocks no other request


async def test_a_renamed_repository_answers_301_to_its_new_place(fake_github: FakeGithub) -> None:
    fake_github.add_repo("octo/old", {"README.md": "# hi"})
    repo = fake_github.rename_repo("octo/old", "new")
    async with httpx.AsyncClient(base_url=fake_github.url) as client:
        moved = await client.get("/repos/octo/old/readme?ref=main")
        followed = await client.get(moved.headers["location"])

    assert moved.status_code == 301
    assert moved.headers["location"] == f"{fake_github.url}/repositories/{repo.id}/readme?ref=main"
    assert followed.status_code == 200 and followed.json()["path"] == "README.md"


@pytest.mark.timeout(30)
def test_runs_from_the_command_line() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_github", "--port", "0", "--repos", "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("FAKE_GITHUB_URL=")
        url = line.partition("=")[2]
        repos = httpx.get(f"{url}/users/octo/repos").json()
        stats = httpx.get(f"{url}/_fake/stats").json()
        assert len(repos) == 3
        assert stats["requests"] == 1 and stats["by_kind"] == {"list": 1}
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


async def test_the_app_endpoints_verify_the_jwt_and_mint_tokens_that_expire(
    fake_github: FakeGithub,
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fake_github.add_app(7, key.public_key())
    fake_github.add_installation(70, 7, "octo")
    fake_github.add_user("octo")
    fake_github.add_repo("octo/private", {"README.md": "# p"}, private=True)
    now = int(time.time())

    def bearer(signer: rsa.RSAPrivateKey, **claims: int | str) -> dict[str, str]:
        payload = {"iat": now - 60, "exp": now + 540, "iss": "7", **claims}
        return {"Authorization": f"Bearer {jwt.encode(payload, signer, algorithm='RS256')}"}

    async with httpx.AsyncClient(base_url=fake_github.url) as client:
        mint = "/app/installations/70/access_tokens"
        wrong_key = await client.post(mint, headers=bearer(stranger))
        too_long = await client.post(mint, headers=bearer(key, exp=now + 3600))
        expired = await client.post(mint, headers=bearer(key, iat=now - 900, exp=now - 300))
        unknown = await client.post("/app/installations/71/access_tokens", headers=bearer(key))
        account = await client.get("/app/installations/70", headers=bearer(key))
        minted = await client.post(mint, headers=bearer(key))
        token = minted.json()["token"]
        with_token = await client.get(
            "/repos/octo/private", headers={"Authorization": f"Bearer {token}"}
        )
        me = await client.get("/user", headers={"Authorization": f"Bearer {token}"})
        fake_github.refuse_token(token)
        refused = await client.get(
            "/repos/octo/private", headers={"Authorization": f"Bearer {token}"}
        )

    assert [wrong_key.status_code, too_long.status_code, expired.status_code] == [401] * 3
    assert unknown.status_code == 404
    assert account.json()["account"]["login"] == "octo"
    assert minted.status_code == 201 and fake_github.minted(70) == [token]
    assert minted.json()["expires_at"].endswith("Z")
    assert with_token.status_code == 200
    assert me.status_code == 403  # installation tokens cannot ask GET /user
    assert refused.status_code == 401
