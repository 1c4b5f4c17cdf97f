"""Orders pushed by long-poll, and heart-beats written in batches.

A long-poll is held until its host's orders change and is answered then with them; one
whose host sees no change ends with 304 from memory, reading nothing of the servers; a
transaction rolled back wakes nobody. With PostgreSQL, a change committed through one
`passthru serve` process answers a long-poll held by another (NOTIFY). A heart-beat of a
host that is up waits for the next batch; one of a host down brings it up at once; the
batch brings up a host marked down meanwhile, and a host silent past the timeout still
goes down. A held long-poll is its agent's heart-beat for as long as it is held, minutes
past the timeout: its host is held, and noted by the flushes with no other request, until
the long-poll ends, or its connection goes, which ends the long-poll at once. A report
wakes the host's long-poll, whose answer carries the inventory generation.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from passthru.asgi import create_app
from passthru.controller.hosts.heartbeats import Heartbeats
from passthru.controller.hosts.reports import mark_silent_hosts_down
from passthru.controller.store.models import EventRow, HostRow, HostStatus, utcnow
from passthru.controller.store.wakeups import Wakeups, wake
from tests.controller.conftest import Api
from tests.controller.test_boot_attach import seed_catalog
from tests.support.live import LiveController, ServedApp
from tests.support.postgres import PostgresCluster

HOST = "c1"
ORDERS = f"/v2/agent/hosts/{HOST}/orders"


def report(api: Api, token: str, host: str = HOST) -> int:
    answer = api.ok("PUT", f"/v2/agent/hosts/{host}/inventory", token, json={"devices": []})
    return int(answer["generation"])


def boot(api: Api, name: str) -> dict[str, Any]:
    body = {"server": {"name": name, "flavorRef": "m1.small", "networks": []}}
    return dict(api.ok("POST", "/v2/admin/servers", json=body)["server"])


def until(what: str, check: Callable[[], bool]) -> None:
    """Wait for `check` to hold (a state, not a duration: no timing is asserted)."""
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.01)


@pytest.fixture
def agent_token(api: Api) -> str:
    token = api.agent(HOST)
    report(api, token)
    api.ok("POST", f"/v2/agent/hosts/{HOST}/heartbeat", token)
    state = api.client.app.state  # type: ignore[attr-defined]
    state.heartbeats.flush(state.store)
    seed_catalog(api)
    return token


def wakeups(api: Api) -> Wakeups:
    found: Wakeups = api.client.app.state.wakeups  # type: ignore[attr-defined]
    return found


def long_poll(api: Api, token: str, etag: str, wait: float = 60) -> Future[httpx.Response]:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(api.client.get, ORDERS, params={"wait": wait}, headers={
        "Authorization": f"Bearer {token}", "If-None-Match": etag})
    pool.shutdown(wait=False)
    return future


def test_a_long_poll_is_answered_when_its_hosts_orders_change(api: Api,
                                                               agent_token: str) -> None:
    first = api.call("GET", ORDERS, agent_token, expect=200)
    assert first.json()["spawn"] == []
    held = long_poll(api, agent_token, first.headers["ETag"])
    until("the long-poll is held", lambda: wakeups(api).waiting() == 1)
    other = api.agent("c2")
    report(api, other, "c2")  # another host's change does not answer it
    assert not held.done()
    server = boot(api, "vm")
    answer = held.result(timeout=60)
    assert answer.status_code == 200
    assert [order["server_uuid"] for order in answer.json()["spawn"]] == [server["id"]]
    assert answer.headers["ETag"] != first.headers["ETag"]
    # The version it carries is current: asked again with it, the agent waits.
    again = long_poll(api, agent_token, answer.headers["ETag"], wait=0.2)
    assert again.result(timeout=60).status_code == 304


def test_an_unchanged_long_poll_ends_with_304_reading_no_servers(api: Api,
                                                                 agent_token: str) -> None:
    etag = api.call("GET", ORDERS, agent_token, expect=200).headers["ETag"]
    statements: list[str] = []
    engine = api.client.app.state.store.engine  # type: ignore[attr-defined]

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        answer = long_poll(api, agent_token, etag, wait=0.3).result(timeout=60)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert answer.status_code == 304
    assert answer.headers["ETag"] == etag
    # The token is known from memory (controller.token_cache): nothing is read.
    read = [s for s in statements if s not in ("BEGIN", "COMMIT", "ROLLBACK")]
    assert read == [], read


def test_a_rolled_back_transaction_wakes_nobody(api: Api, agent_token: str) -> None:
    etag = api.call("GET", ORDERS, agent_token, expect=200).headers["ETag"]
    store = api.client.app.state.store  # type: ignore[attr-defined]
    before = wakeups(api).version(HOST)
    held = long_poll(api, agent_token, etag, wait=1.0)
    until("the long-poll is held", lambda: wakeups(api).waiting() == 1)
    with pytest.raises(RuntimeError), store.write() as session:
        wake(session, HOST)
        raise RuntimeError("rolled back")
    assert held.result(timeout=60).status_code == 304
    assert wakeups(api).version(HOST) == before
    with store.write() as session:
        wake(session, HOST)
    assert wakeups(api).version(HOST) != before


def test_a_version_from_another_replica_or_life_is_answered_at_once(
        api: Api, agent_token: str) -> None:
    answer = api.client.get(ORDERS, params={"wait": 60}, headers={
        "Authorization": f"Bearer {agent_token}", "If-None-Match": '"0123456789ab.0.7"'})
    assert answer.status_code == 200
    assert answer.headers["ETag"].strip('"').startswith(wakeups(api).replica)


def test_a_plain_get_answers_at_once_and_the_admin_may_read_too(api: Api,
                                                                 agent_token: str) -> None:
    assert api.call("GET", ORDERS, expect=200).json()["running"] == []


def store_heartbeat(api: Api, host: str = HOST) -> tuple[HostStatus, Any]:
    with api.client.app.state.store.read() as session:  # type: ignore[attr-defined]
        row = session.scalars(select(HostRow).where(HostRow.name == host)).one()
        return row.status, row.last_heartbeat


def test_heartbeats_of_an_up_host_are_written_in_a_batch(api: Api, agent_token: str) -> None:
    state = api.client.app.state  # type: ignore[attr-defined]
    heartbeats: Heartbeats = state.heartbeats
    generation = report(api, agent_token)
    heartbeats.flush(state.store)
    _, written = store_heartbeat(api)
    alive = api.ok("POST", f"/v2/agent/hosts/{HOST}/heartbeat", agent_token)
    assert alive["status"] == "up" and alive["generation"] == generation
    assert store_heartbeat(api)[1] == written  # only noted so far
    assert heartbeats.pending() == 1
    assert heartbeats.flush(state.store) == []
    assert store_heartbeat(api)[1] > written


def test_a_flush_returns_once_what_another_flush_took_is_written(
        api: Api, agent_token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A flush that found the batch taken by a flush still writing it used to return at
    # once, before anything it was asked to write was in the store.
    from passthru.controller.hosts import heartbeats as module

    state = api.client.app.state  # type: ignore[attr-defined]
    report(api, agent_token)
    _, before = store_heartbeat(api)
    writing, release = threading.Event(), threading.Event()
    write = module._write

    def held(store: Any, seen: Any) -> list[str]:
        writing.set()
        assert release.wait(60)
        return write(store, seen)

    monkeypatch.setattr(module, "_write", held)
    heartbeats = Heartbeats(held_every=3600.0)  # its own: the app's flusher never takes it
    noted = heartbeats.note(HOST)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(heartbeats.flush, state.store)
        assert writing.wait(60)
        second = pool.submit(heartbeats.flush, state.store)
        with pytest.raises(TimeoutError):
            second.result(timeout=0.5)  # waits for the first to have written
        release.set()
        assert second.result(60) == [] and first.result(60) == []
    assert store_heartbeat(api)[1] == noted != before


def test_a_down_host_comes_up_on_its_heartbeat_and_on_a_batch(api: Api,
                                                              agent_token: str) -> None:
    state = api.client.app.state  # type: ignore[attr-defined]
    store, heartbeats = state.store, state.heartbeats
    later = utcnow() + timedelta(seconds=1000)

    def silence() -> list[str]:
        heartbeats.flush(store)
        with store.write() as session:
            return mark_silent_hosts_down(session, 10, now=later)

    assert silence() == [HOST]
    assert store_heartbeat(api)[0] is HostStatus.DOWN
    # A down host's heart-beat is written at once.
    alive = api.ok("POST", f"/v2/agent/hosts/{HOST}/heartbeat", agent_token)
    assert alive["status"] == "up" and store_heartbeat(api)[0] is HostStatus.UP
    # Noted while up (its long-poll counts), then marked down before the batch is written:
    # the batch brings it up again, with the event.
    api.call("GET", ORDERS, agent_token, expect=200)
    with store.write() as session:
        assert mark_silent_hosts_down(session, 10, now=later) == [HOST]
    assert heartbeats.flush(store) == [HOST]
    assert store_heartbeat(api)[0] is HostStatus.UP
    with store.read() as session:
        ups = session.scalars(select(EventRow.kind).where(EventRow.host == HOST)).all()
    assert [str(kind) for kind in ups].count("host-up") == 2  # once per time it was down
    # Silent past the timeout it goes down, whatever was batched before.
    assert silence() == [HOST]


def test_the_app_writes_the_batch_on_its_own(settings: Any, tmp_path: Path) -> None:
    from dataclasses import replace

    quick = replace(settings, heartbeat_flush_interval=0.05)
    with TestClient(create_app(quick)) as client:
        api = Api(client, (quick.admin_token_path).read_text().strip())
        token = api.agent(HOST)
        report(api, token)
        api.ok("POST", f"/v2/agent/hosts/{HOST}/heartbeat", token)
        client.app.state.heartbeats.flush(client.app.state.store)  # type: ignore[attr-defined]
        _, written = store_heartbeat(api)
        api.ok("POST", f"/v2/agent/hosts/{HOST}/heartbeat", token)
        until("the batch is written", lambda: store_heartbeat(api)[1] > written)


@pytest.fixture
def two_replicas(postgres: PostgresCluster, tmp_path: Path) -> Iterator[list[LiveController]]:
    url = postgres.new_database()
    first = LiveController(tmp_path / "replica-0", url)
    second = LiveController(tmp_path / "replica-1", url)
    first.start()
    second.data_dir.mkdir(parents=True)
    shutil.copy2(first.data_dir / "admin-token", second.data_dir / "admin-token")
    second.start()
    try:
        yield [first, second]
    finally:
        first.stop()
        second.stop()


@pytest.mark.postgres
def test_a_change_through_one_replica_answers_a_long_poll_held_by_another(
        two_replicas: list[LiveController]) -> None:
    first, second = two_replicas
    admin = {"Authorization": f"Bearer {first.admin_token}"}
    with httpx.Client(base_url=first.url, headers=admin, timeout=120) as one:
        token = one.post(f"/v2/admin/os-hosts/{HOST}/tokens").json()["token"]
        agent = {"Authorization": f"Bearer {token}"}
        assert one.put(f"/v2/agent/hosts/{HOST}/inventory", headers=agent,
                       json={"devices": []}).status_code == 200
        assert one.post("/v2/admin/flavors",
                        json={"flavor": {"name": "m1.small"}}).is_success
        with httpx.Client(base_url=second.url, headers=agent, timeout=120) as two:
            etag = two.get(ORDERS).headers["ETag"]
            unchanged = two.get(ORDERS, params={"wait": 0.3}, headers={"If-None-Match": etag})
            assert unchanged.status_code == 304
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(two.get, ORDERS, params={"wait": 100},
                                   headers={"If-None-Match": etag})
                # Held: answered only by the boot below, within the wait.
                time.sleep(0.5)
                assert not held.done()
                server = one.post("/v2/admin/servers", json={"server": {
                    "name": "vm", "flavorRef": "m1.small", "networks": []}}).json()["server"]
                answer = held.result(timeout=120)
    assert answer.status_code == 200
    assert [order["server_uuid"] for order in answer.json()["spawn"]] == [server["id"]]


def test_waiting_is_without_a_thread() -> None:
    """Many waiters on one event loop, none of them on a thread; woken by a bump from
    another thread."""
    wakeups = Wakeups()
    version = wakeups.version(HOST)

    async def main() -> list[bool]:
        waiters = [asyncio.ensure_future(wakeups.wait(HOST, version, 60)) for _ in range(500)]
        await asyncio.sleep(0)
        assert wakeups.waiting() == 500
        before = threading.active_count()
        threading.Thread(target=wakeups.bump, args=([HOST],)).start()
        results = await asyncio.gather(*waiters)
        assert threading.active_count() <= before + 1
        return results

    assert asyncio.run(main()) == [True] * 500
    assert wakeups.waiting() == 0


def test_a_stopping_controller_answers_its_held_long_polls(tmp_path: Path) -> None:
    """SIGTERM answers what waits (304) rather than leaving the web server's graceful
    shutdown waiting for every long-poll to run out."""
    controller = LiveController(tmp_path / "data")
    controller.start()
    admin = {"Authorization": f"Bearer {controller.admin_token}"}
    try:
        with httpx.Client(base_url=controller.url, headers=admin, timeout=600) as http:
            etag = http.get(ORDERS).headers["ETag"]
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(http.get, ORDERS, params={"wait": 500},
                                   headers={"If-None-Match": etag})
                time.sleep(0.5)
                assert not held.done()
                assert controller.process is not None
                controller.process.terminate()
                answer = held.result(timeout=120)
                controller.process.wait(timeout=120)  # ended, as SIGTERM ends it
        assert answer.status_code == 304
    finally:
        controller.kill()


def test_a_report_answers_the_long_poll_with_the_new_generation(api: Api,
                                                                agent_token: str) -> None:
    first = api.call("GET", ORDERS, agent_token, expect=200)
    generation = int(first.headers["X-Inventory-Generation"])
    held = long_poll(api, agent_token, first.headers["ETag"])
    until("the long-poll is held", lambda: wakeups(api).waiting() == 1)
    # Another pool grouping is another generation of the host's inventory.
    api.ok("PUT", f"/v2/agent/hosts/{HOST}/inventory", agent_token,
           json={"devices": [], "pool_attrs": ["vendor_id"]})
    answer = held.result(timeout=60)
    assert answer.status_code == 200
    assert int(answer.headers["X-Inventory-Generation"]) == generation + 1


def test_a_held_long_poll_keeps_its_host_up_until_its_connection_goes(tmp_path: Path) -> None:
    controller = LiveController(tmp_path / "data", options=["--heartbeat-timeout", "2"])
    controller.start()
    admin = {"Authorization": f"Bearer {controller.admin_token}"}
    try:
        with httpx.Client(base_url=controller.url, headers=admin, timeout=60) as http:
            token = http.post(f"/v2/admin/os-hosts/{HOST}/tokens").json()["token"]
            agent = {"Authorization": f"Bearer {token}"}
            http.put(f"/v2/agent/hosts/{HOST}/inventory", headers=agent,
                     json={"devices": []}).raise_for_status()
            etag = http.get(ORDERS, headers=agent).headers["ETag"]

            def host() -> dict[str, Any]:
                found: dict[str, Any] = http.get(f"/v2/admin/os-hosts/{HOST}").json()["host"]
                return found

            # Held for up to the controller's orders_wait_max (300 s), far past the
            # timeout: its heart-beat is written again and again while it waits.
            held = socket.create_connection(("127.0.0.1", controller.port))
            held.sendall((f"GET {ORDERS}?wait=300 HTTP/1.1\r\nHost: c\r\n"
                          f"Authorization: Bearer {token}\r\n"
                          f"If-None-Match: {etag}\r\n\r\n").encode())
            seen = [host()["last_heartbeat"]]
            for _ in range(3):
                until("the held long-poll beats again",
                      lambda: host()["last_heartbeat"] != seen[-1])
                seen.append(host()["last_heartbeat"])
                assert host()["status"] == "up"
            # Its agent gone, the host falls silent and goes down, its wait not over.
            held.close()
            until("the host goes down", lambda: host()["status"] == "down")
    finally:
        controller.kill()


def test_a_held_host_is_noted_by_every_flush_due_and_no_more_once_let_go(
        api: Api, agent_token: str) -> None:
    store = api.client.app.state.store  # type: ignore[attr-defined]
    heartbeats = Heartbeats(held_every=0)  # a flush of held hosts due every time
    with heartbeats.holding(HOST):
        seen = [store_heartbeat(api)[1]]
        # Nothing noted, nothing asked of the controller: each flush moves the held
        # host's heart-beat on.
        for _ in range(3):
            until("the clock moves", lambda: utcnow() > seen[-1])
            assert heartbeats.pending() == 0
            assert heartbeats.flush(store) == []
            seen.append(store_heartbeat(api)[1])
            assert seen[-1] > seen[-2]
            assert store_heartbeat(api)[0] is HostStatus.UP
    assert heartbeats.held() == 0
    until("the clock moves", lambda: utcnow() > seen[-1])
    assert heartbeats.flush(store) == []
    assert store_heartbeat(api)[1] == seen[-1]


def test_a_long_poll_holds_its_host_while_it_waits(api: Api, agent_token: str) -> None:
    state = api.client.app.state  # type: ignore[attr-defined]
    etag = api.call("GET", ORDERS, agent_token, expect=200).headers["ETag"]
    held = long_poll(api, agent_token, etag, wait=60)
    try:
        until("the long-poll holds its host", lambda: state.heartbeats.held() == 1)
        until("the long-poll waits", lambda: wakeups(api).waiting() == 1)
    finally:
        with state.store.write() as session:
            wake(session, HOST)  # answers it
    assert held.result(timeout=60).status_code == 200
    assert state.heartbeats.held() == 0
    # One that runs out lets it go too.
    etag = api.call("GET", ORDERS, agent_token, expect=200).headers["ETag"]
    assert long_poll(api, agent_token, etag, wait=0.2).result(timeout=60).status_code == 304
    assert state.heartbeats.held() == 0


def test_an_admins_long_poll_holds_no_host(api: Api, agent_token: str) -> None:
    state = api.client.app.state  # type: ignore[attr-defined]
    etag = api.call("GET", ORDERS, expect=200).headers["ETag"]
    held = long_poll(api, api.admin, etag, wait=60)
    until("the long-poll waits", lambda: wakeups(api).waiting() == 1)
    assert state.heartbeats.held() == 0
    with state.store.write() as session:
        wake(session, HOST)
    assert held.result(timeout=60).status_code == 200


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FastAPI, int]]:
    """The app behind a real web server (as `passthru serve` runs it), in a thread of
    this process so that its state can be read; a long heart-beat timeout, so that
    nothing is noted by a timer while the test runs."""
    served = ServedApp(tmp_path / "data", heartbeat_timeout=3600)
    served.start()
    try:
        yield served.app, served.port
    finally:
        served.stop()


def test_a_closed_connection_ends_its_long_poll_and_its_host_stops_counting(
        served: tuple[FastAPI, int]) -> None:
    app, port = served
    state = app.state
    admin = {"Authorization": f"Bearer {state.settings.admin_token_path.read_text().strip()}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        token = http.post(f"/v2/admin/os-hosts/{HOST}/tokens", headers=admin).json()["token"]
        agent = {"Authorization": f"Bearer {token}"}
        http.put(f"/v2/agent/hosts/{HOST}/inventory", headers=agent,
                 json={"devices": []}).raise_for_status()
        etag = http.get(ORDERS, headers=agent).headers["ETag"]
    held = socket.create_connection(("127.0.0.1", port))
    held.sendall((f"GET {ORDERS}?wait=300 HTTP/1.1\r\nHost: c\r\n"
                  f"Authorization: Bearer {token}\r\n"
                  f"If-None-Match: {etag}\r\n\r\n").encode())
    try:
        until("the long-poll holds its host", lambda: state.heartbeats.held() == 1)
        until("the long-poll waits", lambda: state.wakeups.waiting() == 1)
    finally:
        held.close()
    # Its wait (300 s) far from over, and nothing to wake on a timer for an hour: the
    # connection's end alone ends the long-poll and lets the host go.
    until("the long-poll ends", lambda: state.wakeups.waiting() == 0)
    until("its host counts no more", lambda: state.heartbeats.held() == 0)
