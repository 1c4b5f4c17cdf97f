"""Tokens on two replicas of one store: listed without their secret, answered from each
replica's memory once seen, yet revoked or expired at once on both (through the API, the
CLI or by hand in the store), the admin token rotated; and the data dir its owner's
alone."""

from __future__ import annotations

import asyncio
import logging
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, event, select, update

from passthru.asgi import create_app
from passthru.controller.auth import digest, issue_token
from passthru.controller.enums import Role
from passthru.controller.settings import Settings
from passthru.controller.store.db import Store
from passthru.controller.store.migrate import upgrade
from passthru.controller.store.models import EventRow, TokenRow
from passthru.controller.token_cache import TokenCache
from passthru.errors import UnauthorizedError
from tests.cli.runner import ok
from tests.controller.conftest import Api
from tests.controller.test_api_images import new_image, qcow2, upload

V2 = "/v2/admin"


class Replicas:
    """Two controllers on one store, each with its own data dir (and admin token)."""

    def __init__(self, one: Api, two: Api, settings: tuple[Settings, Settings]) -> None:
        self.one, self.two = one, two
        self.settings = settings

    @property
    def store(self) -> Store:
        store: Store = self.one.client.app.state.store  # type: ignore[attr-defined]
        return store

    def status_on_both(self, token: str) -> tuple[int, int]:
        return (self.one.call("GET", "/v2/whoami", token).status_code,
                self.two.call("GET", "/v2/whoami", token).status_code)

    def refused_on_both(self, token: str) -> bool:
        """Whether both refuse `token` once a change of the tokens has reached them: at
        once with SQLite (each use reads the tokens' version); with PostgreSQL when its
        notification arrives, a moment after the commit (waited for here, 5 s at most),
        but at once on the replica that made the change through its API."""
        patience = 5.0 if self.store.engine.dialect.name == "postgresql" else 0.0
        deadline = time.monotonic() + patience
        while self.status_on_both(token) != (401, 401):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def events(self, kind: str) -> list[str]:
        with self.store.read() as session:
            return list(session.scalars(select(EventRow.message).where(EventRow.kind == kind)
                                        .order_by(EventRow.id)))


@pytest.fixture
def replicas(db_url: str, tmp_path: Path) -> Iterator[Replicas]:
    one, two = (Settings(tmp_path / name, db_url=db_url) for name in ("one", "two"))
    with TestClient(create_app(one)) as first, TestClient(create_app(two)) as second:
        yield Replicas(Api(first, one.admin_token_path.read_text().strip()),
                       Api(second, two.admin_token_path.read_text().strip()), (one, two))


def member(api: Api, project: str = "alpha", **options: object) -> dict[str, object]:
    body = {"token": {"project": project, **options}}
    return dict(api.ok("POST", f"{V2}/tokens", json=body))


def test_a_token_deleted_from_the_store_fails_at_once_on_both_replicas(
        replicas: Replicas) -> None:
    token = str(member(replicas.one)["token"])
    assert replicas.status_on_both(token) == (200, 200)
    with replicas.store.write() as session:
        session.execute(delete(TokenRow).where(TokenRow.digest == digest(token)))
    assert replicas.refused_on_both(token)


def test_a_token_seen_before_is_answered_from_memory(replicas: Replicas) -> None:
    token = str(member(replicas.one)["token"])
    assert replicas.status_on_both(token) == (200, 200)
    looked_up: list[str] = []

    def executed(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "FROM tokens" in statement:
            looked_up.append(statement)

    # On any engine: on SQLite the token cache looks tokens up on a connection of its own.
    event.listen(Engine, "before_cursor_execute", executed)
    try:
        assert replicas.status_on_both(token) == (200, 200)
        assert looked_up == []
        assert replicas.one.call("GET", "/v2/whoami", "pt_unknown").status_code == 401
        assert len(looked_up) == 1  # an unknown token is looked up each time
    finally:
        event.remove(Engine, "before_cursor_execute", executed)


def test_a_token_revoked_through_one_replica_fails_on_the_other(replicas: Replicas) -> None:
    issued = member(replicas.one, name="ci")
    token, token_id = str(issued["token"]), issued["id"]
    assert replicas.status_on_both(token) == (200, 200)
    replicas.one.ok("DELETE", f"{V2}/tokens/{token_id}")
    assert replicas.one.call("GET", "/v2/whoami", token).status_code == 401
    assert replicas.refused_on_both(token)
    answer = replicas.two.call("GET", "/v2/alpha/servers", token, expect=401)
    assert "revoked" in answer.json()["error"]["message"]
    replicas.two.call("DELETE", f"{V2}/tokens/{token_id}", expect=404)
    assert replicas.events("token-revoked") == [
        f"member token {token_id} (ci) of project alpha, by admin token of admin"]


def test_the_list_shows_every_token_but_never_its_secret(replicas: Replicas) -> None:
    issued = member(replicas.one, name="ci", expires_in=3600)
    agent = replicas.one.ok("POST", f"{V2}/os-hosts/c1/tokens")
    listed = replicas.two.ok("GET", f"{V2}/tokens")["tokens"]
    assert [(t["role"], t["project"], t["host"], t["name"]) for t in listed] == [
        ("admin", "admin", None, "admin-token"), ("admin", "admin", None, "admin-token"),
        ("member", "alpha", None, "ci"), ("agent", None, "c1", None)]
    assert [t["id"] for t in listed[2:]] == [issued["id"], agent["id"]]
    assert listed[2]["expires_at"] == issued["expires_at"] is not None
    assert not any(t["expired"] for t in listed)
    text = str(listed)
    for secret in (issued["token"], agent["token"]):
        assert str(secret) not in text
        assert digest(str(secret))[:16] not in text
    agents = replicas.one.ok("GET", f"{V2}/tokens", params={"role": "agent"})["tokens"]
    assert [t["id"] for t in agents] == [agent["id"]]


def test_an_expired_token_is_refused_with_when_it_expired(replicas: Replicas) -> None:
    issued = member(replicas.one, expires_in=3600)
    token = str(issued["token"])
    assert replicas.status_on_both(token) == (200, 200)
    past = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    with replicas.store.write() as session:
        session.execute(update(TokenRow).where(TokenRow.id == issued["id"])
                        .values(expires_at=past))
    assert replicas.refused_on_both(token)
    answer = replicas.two.call("GET", "/v2/whoami", token)
    assert answer.json()["error"]["message"].startswith(
        "the token expired at 2025-01-02 03:04:05 UTC")
    listed = replicas.one.ok("GET", f"{V2}/tokens")["tokens"]
    assert [t["expired"] for t in listed if t["id"] == issued["id"]] == [True]


def test_a_token_lives_until_its_expires_at(replicas: Replicas) -> None:
    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    issued = member(replicas.one, expires_at=at.isoformat())
    assert datetime.fromisoformat(str(issued["expires_at"])) == at
    host = replicas.one.ok("POST", f"{V2}/os-hosts/c1/tokens", json={"token": {
        "name": "rack 4", "expires_at": at.replace(tzinfo=None).isoformat()}})
    assert (host["host"], host["name"], datetime.fromisoformat(host["expires_at"])) == (
        "c1", "rack 4", at)
    assert replicas.status_on_both(str(host["token"])) == (200, 200)
    issued_events = replicas.events("token-issued")
    assert issued_events[-1] == (f"agent token {host['id']} (rack 4) of host c1, expires "
                                 f"{at:%Y-%m-%d %H:%M:%S} UTC")


@pytest.mark.parametrize(("options", "status", "says"), [
    ({"expires_at": "2020-01-01T00:00:00Z"}, 400, "is not between now"),
    ({"expires_at": "9999-12-31T23:00:00-05:00"}, 400, "is not between now"),
    ({"expires_in": 60, "expires_at": "2099-01-01T00:00:00Z"}, 400, "not both"),
    ({"expires_in": 0}, 422, "expires_in"),
    ({"expires_in": 10**12}, 422, "expires_in"),
    ({"name": " "}, 422, "name"),
])
def test_a_bad_expiry_is_refused_and_issues_nothing(api: Api, options: dict[str, object],
                                                   status: int, says: str) -> None:
    answer = api.call("POST", f"{V2}/tokens", json={"token": {"project": "a", **options}},
                      expect=status)
    assert says in answer.json()["error"]["message"]
    assert len(api.ok("GET", f"{V2}/tokens")["tokens"]) == 1


def test_the_last_admin_token_cannot_be_revoked(api: Api) -> None:
    (admin,) = api.ok("GET", f"{V2}/tokens")["tokens"]
    answer = api.call("DELETE", f"{V2}/tokens/{admin['id']}", expect=409)
    assert "admin-token-rotate" in answer.json()["error"]["message"]
    api.ok("GET", "/v2/whoami")


def test_only_admins_list_or_revoke_tokens(api: Api) -> None:
    alpha = member(api)
    api.call("GET", "/v2/alpha/tokens", str(alpha["token"]), expect=403)
    api.call("DELETE", f"/v2/alpha/tokens/{alpha['id']}", str(alpha["token"]), expect=403)


def test_rotating_the_admin_token_ends_the_old_one_on_both_replicas(
        replicas: Replicas, db_url: str) -> None:
    one = replicas.settings[0]
    old = one.admin_token_path.read_text().strip()
    assert replicas.status_on_both(old) == (200, 200)
    ok(f"passthru admin-token-rotate --data-dir {one.data_dir} --db {db_url}")
    new = one.admin_token_path.read_text().strip()
    assert new != old
    assert stat.S_IMODE(one.admin_token_path.stat().st_mode) == 0o600
    assert replicas.refused_on_both(old)
    assert replicas.status_on_both(new) == (200, 200)
    # The other replica's own admin token is not this one, and still works.
    assert replicas.status_on_both(replicas.two.admin) == (200, 200)
    assert replicas.events("token-revoked")[-1].startswith("admin token 1 (admin-token) of project admin, "
                                                           "replaced by admin token")


def modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    found |= {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}
    return found


def test_the_data_dir_is_its_owners_alone_from_the_start(api: Api, settings: Settings,
                                                         tmp_path: Path) -> None:
    image = new_image(api, "debian")
    answer = upload(api, "debian", "disk", qcow2(tmp_path / "disk.qcow2"))
    assert answer.status_code == 200, answer.text
    found = modes(settings.data_dir)
    assert {"passthru.sqlite", "passthru.sqlite-wal", "passthru.sqlite-shm", "admin-token",
            "images", f"images/{image['id']}/disk", "images/.incoming"} <= set(found)
    loose = {path: oct(mode) for path, mode in found.items()
             if mode != (0o700 if (settings.data_dir / path).is_dir() else 0o600)}
    assert loose == {}


def test_a_loose_data_dir_is_tightened_at_start_up(settings: Settings,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    create_app(settings).state.store.close()
    (settings.image_dir / "some-image").mkdir(parents=True)
    (settings.image_dir / "some-image" / "disk").write_bytes(b"disk")
    for path in [settings.data_dir, *settings.data_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    with caplog.at_level(logging.WARNING):
        create_app(settings).state.store.close()
    loose = {path: oct(mode) for path, mode in modes(settings.data_dir).items()
             if mode & 0o077}
    assert loose == {}
    assert any("were open to other users" in record.message for record in caplog.records)


def test_on_sqlite_a_token_is_looked_up_in_the_event_loop(tmp_path: Path) -> None:
    """An entry that ran out (an agent's token, used once a long-poll) costs no worker
    thread: the lookup is read in the event loop, and a revoke still counts at once."""
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    upgrade(store.engine)
    with store.write() as session:
        token = issue_token(session, Role.AGENT, host="c1").token
    cache = TokenCache(store, seconds=0)  # every use looks its token up
    lookups: list[int] = []

    def executed(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("SELECT") and "FROM tokens" in statement:
            lookups.append(threading.get_ident())

    async def use_twice() -> int:
        for _ in range(2):
            assert (await cache.known(token)).principal.host == "c1"
        with store.write() as session:
            session.execute(delete(TokenRow).where(TokenRow.digest == digest(token)))
        with pytest.raises(UnauthorizedError):
            await cache.known(token)
        return threading.get_ident()

    event.listen(Engine, "before_cursor_execute", executed)
    try:
        loop_thread = asyncio.run(use_twice())
    finally:
        event.remove(Engine, "before_cursor_execute", executed)
        cache.close()
        store.close()
    assert lookups == [loop_thread] * 3
