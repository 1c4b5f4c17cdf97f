"""The store goes away and comes back: a real `passthru serve` answers 503 with
Retry-After meanwhile, logs the outage once, and serves again with no restart."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from passthru.client import Client
from passthru.controller.store.db import unreachable
from tests.pg import PostgresCluster, free_port
from tests.support.live import LiveController

pytestmark = pytest.mark.postgres


def _refused_for_now(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "3"
    assert answer.json()["error"]["message"] == (
        "the controller's store cannot be reached now (PostgreSQL down or restarting, or "
        "SQLite locked); retry in 3 s")


def test_an_outage_answers_503_and_ends_without_a_restart(tmp_path: Path) -> None:
    # A cluster of its own: stopping the suite's shared one would fail other tests.
    cluster = PostgresCluster()
    cluster.start()
    try:
        live = LiveController(tmp_path / "data", cluster.new_database(), options=(
            "--store-retry-after", "3", "--heartbeat-timeout", "4"))
        live.start()
        try:
            admin = httpx.Client(base_url=f"{live.url}/v2/admin",
                                 headers={"Authorization": f"Bearer {live.admin_token}"})
            assert admin.get("/flavors").status_code == 200
            cluster.halt()
            _refused_for_now(admin.get("/flavors"))
            _refused_for_now(admin.post("/flavors", json={"flavor": {"name": "m1"}}))
            # A token not seen before cannot be checked either: 503, not 401.
            _refused_for_now(httpx.get(f"{live.url}/v2/whoami",
                                       headers={"Authorization": "Bearer pt_new"}))
            # The CLI's client waits for the store, sending its POST again on each 503.
            waiting = ThreadPoolExecutor(1).submit(
                Client(live.url, live.admin_token).call, "POST", "/v2/admin/flavors",
                json={"flavor": {"name": "m2"}})
            time.sleep(2.5)  # the background sweep runs, and meets the outage too
            _refused_for_now(admin.get("/flavors"))
            cluster.resume()
            assert admin.get("/flavors").status_code == 200
            answer = admin.post("/flavors", json={"flavor": {"name": "m1"}})
            assert answer.status_code == 201, answer.text
            assert waiting.result()["flavor"]["name"] == "m2"
            names = [flavor["name"] for flavor in admin.get("/flavors").json()["flavors"]]
            assert sorted(names) == ["m1", "m2"]
        finally:
            live.stop()
    finally:
        cluster.stop()
    log = live.log.read_text()
    assert log.count("the store is unreachable, answering 503 until it is back") == 1, log
    assert log.count("the store is reachable again after") == 1, log
    assert "Traceback" not in log


def test_what_counts_as_an_outage(tmp_path: Path) -> None:
    """Real errors of both stores: a refused connection and a lock held past the busy
    timeout are outages; a request's own fault (a duplicate key) is not."""
    gone = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    with pytest.raises(DBAPIError) as refused:
        gone.connect()
    assert unreachable(refused.value)

    path = tmp_path / "store.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    holder.execute("INSERT INTO t VALUES (1)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    with pytest.raises(DBAPIError) as locked, engine.connect() as connection:
        connection.execute(text("SELECT * FROM t"))
    assert unreachable(locked.value)
    holder.execute("ROLLBACK")

    with pytest.raises(IntegrityError) as duplicate, engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (1)"))
    assert not unreachable(duplicate.value)
