"""Group commit, on SQLite and PostgreSQL: works of concurrent callers share one
transaction, each answered only once it has committed, and one that fails leaves the
others committed; agents' answers and deletes share the group of boots; a store's
writers take SQLite's lock in the order they came; concurrent boots through a real
`passthru serve` are all durable, each with its own devices, and a boot that fails among
them fails alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from passthru.controller.enums import EventKind
from passthru.controller.store.db import Store, on_rollback
from passthru.controller.store.events import record
from passthru.controller.store.migrate import upgrade
from passthru.controller.store.models import EventRow
from passthru.controller.store.wakeups import Wakeups, wake
from tests.controller.conftest import Api
from tests.controller.test_boot_attach import seed_catalog
from tests.controller.test_boot_durability import gpus_of, killed_after
from tests.controller.test_lifecycle import V2, Compute, boot, server
from tests.controller.test_races import Live, at_once, ok
from tests.pg import PostgresCluster


def _messages(store: Store) -> list[str]:
    with store.read() as session:
        return sorted(session.scalars(select(EventRow.message)))


def _queued(store: Store, count: int) -> None:
    """Wait until `count` works wait behind the group being run."""
    deadline = time.monotonic() + 60
    while len(store._group.queue) < count:
        assert time.monotonic() < deadline, "the works never queued"
        time.sleep(0.01)


class _Works:
    """A first work that holds its transaction until released, and five more, the third
    of which fails; with what each store committed and undid."""

    def __init__(self, store: Store) -> None:
        self.commits: list[int] = []
        event.listen(store.engine, "commit", lambda _connection: self.commits.append(1))
        self.started, self.release = threading.Event(), threading.Event()
        self.undone: list[int] = []

    def first(self, session: Session) -> str:
        record(session, EventKind.SERVER_CREATED, "first")
        self.started.set()
        self.release.wait(60)
        return "first"

    def write(self, number: int) -> Callable[[Session], str]:
        def work(session: Session) -> str:
            record(session, EventKind.SERVER_CREATED, f"work {number}")
            on_rollback(session, lambda: self.undone.append(number))
            if number == 2:
                raise ValueError("work 2 fails")
            return f"done {number}"
        return work


def _check_answers(answers: list[Future[str]], db_url: str) -> None:
    with pytest.raises(ValueError, match="work 2 fails"):
        answers[2].result()
    assert [answers[n].result() for n in (0, 1, 3, 4)] == [
        "done 0", "done 1", "done 3", "done 4"]
    # What a fresh store reads: the committed works, not the failed one.
    reopened = Store(db_url)
    try:
        assert _messages(reopened) == ["first", "work 0", "work 1", "work 3", "work 4"]
    finally:
        reopened.close()


def test_one_failing_work_leaves_the_others_of_its_group_committed(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'store.sqlite'}"  # group commit is SQLite's
    store = Store(db_url)
    upgrade(store.engine)
    works = _Works(store)
    with ThreadPoolExecutor(6) as pool:
        leader = pool.submit(store.grouped, works.first)
        assert works.started.wait(60)
        answers: list[Future[str]] = []
        for number in range(5):
            answers.append(pool.submit(store.grouped, works.write(number)))
            _queued(store, number + 1)  # they queue behind the first, into one group
        assert not any(answer.done() for answer in answers)
        works.release.set()
        assert leader.result() == "first"
        _check_answers(answers, db_url)
    assert len(works.commits) == 2  # the first alone, then the five together
    assert works.undone == [2]  # only the failed one's undo ran
    store.close()


@pytest.mark.postgres
def test_on_postgresql_each_work_commits_on_its_own(postgres: PostgresCluster) -> None:
    # One transaction holding several boots would lock their hosts out of order.
    db_url = postgres.new_database()
    store = Store(db_url)
    upgrade(store.engine)
    works = _Works(store)
    with ThreadPoolExecutor(6) as pool:
        leader = pool.submit(store.grouped, works.first)
        assert works.started.wait(60)
        answers = [pool.submit(store.grouped, works.write(number)) for number in range(5)]
        for answer in answers:  # done while the first still holds its transaction
            answer.exception(60)
        assert not leader.done()
        assert len(works.commits) == 4 and works.undone == [2]
        works.release.set()
        assert leader.result() == "first"
        _check_answers(answers, db_url)
    assert len(works.commits) == 5
    store.close()


def test_a_work_alone_that_fails_rolls_back_and_is_undone(store: Store) -> None:
    undone: list[str] = []

    def work(session: Session) -> None:
        record(session, EventKind.SERVER_CREATED, "never")
        on_rollback(session, lambda: undone.append("never"))
        session.execute(EventRow.__table__.insert(), {
            "kind": "x", "message": "bad", "server": None, "time": None})

    with pytest.raises(Exception, match="time"):
        store.grouped(work)
    assert undone == ["never"]
    assert _messages(store) == []


def _boots(live: Live, count: int) -> list[Callable[[], httpx.Response]]:
    def boot(name: str, flavor: str) -> Callable[[], httpx.Response]:
        return lambda: live.member.post("/servers", json={"server": {
            "name": name, "flavorRef": flavor}})
    return [boot(f"vm{n}", "m1.gpu") for n in range(count)] + [boot("bad", "no-such")]


@pytest.mark.slow
def test_concurrent_boots_are_all_durable_and_one_failing_fails_alone(
        db_url: str, tmp_path: Path) -> None:
    controller, answers = killed_after(db_url, tmp_path / "data",
                                       lambda live: at_once(_boots(live, 4)))
    *booted, bad = answers
    assert bad.status_code == 404, bad.text
    servers: list[dict[str, Any]] = [ok(answer)["server"] for answer in booted]
    assert {(s["status"], s["host"]) for s in servers} == {("BUILD", "compute-0")}
    devices = [address for s in servers for address in gpus_of(s)]
    assert len(devices) == 4 and len(set(devices)) == 4  # one GPU each, none twice
    controller.start()
    live = Live(controller)
    try:
        for server in servers:
            shown = ok(live.member.get(f"/servers/{server['id']}"))["server"]
            assert (shown["status"], gpus_of(shown)) == ("BUILD", gpus_of(server))
        listed = ok(live.member.get("/servers"))["servers"]
        assert sorted(s["name"] for s in listed) == ["vm0", "vm1", "vm2", "vm3"]
    finally:
        live.close()
        controller.stop()


def test_writers_of_one_store_take_sqlites_lock_in_the_order_they_came(
        tmp_path: Path) -> None:
    # SQLite's busy handler lets a writer that just came in before those waiting longer.
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    upgrade(store.engine)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.write() as session:
            record(session, EventKind.SERVER_CREATED, "first")
            session.flush()  # SQLite's lock is taken
            holding.set()
            release.wait(60)

    def write(number: int) -> None:
        with store.write() as session:
            record(session, EventKind.SERVER_CREATED, f"writer {number}")

    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(hold)
        assert holding.wait(60)
        writers = []
        for number in range(5):
            writers.append(pool.submit(write, number))
            deadline = time.monotonic() + 60
            while len(store._turns._waiting) < number + 1:  # in line behind the others
                assert time.monotonic() < deadline, "the writer never waited its turn"
                time.sleep(0.01)
        release.set()
        for done in (first, *writers):
            done.result(60)
    with store.read() as session:
        written = list(session.scalars(select(EventRow.message).order_by(EventRow.id)))
    assert written == ["first", *(f"writer {number}" for number in range(5))]
    store.close()


def test_an_agents_answer_and_a_delete_join_the_group_of_concurrent_boots(
        api: Api, tmp_path: Path) -> None:
    compute = Compute(api, "compute-1", tmp_path / "compute-1")
    seed_catalog(api)
    try:
        old = boot(api, "old", "m1.small")
        compute.run()
        assert server(api, "old")["status"] == "ACTIVE"
        new = boot(api, "new", "m1.small")
        store: Store = api.client.app.state.store  # type: ignore[attr-defined]
        works = _Works(store)
        with ThreadPoolExecutor(3) as pool:
            leader = pool.submit(store.grouped, works.first)  # as a boot holding its group
            assert works.started.wait(60)
            spawned = pool.submit(compute.run)  # spawns "new" and answers
            deleted = pool.submit(api.call, "DELETE", f"{V2}/servers/{old['id']}")
            _queued(store, 2)  # both wait behind the group being run, for the next one
            assert not spawned.done() and not deleted.done()
            works.release.set()
            assert leader.result(60) == "first"
            assert spawned.result(60) == 1
            assert deleted.result(60).status_code == 204
        assert server(api, "new")["status"] == "ACTIVE"
        assert compute.active(new["id"])
        assert compute.run() == 1  # the destroy the delete ordered, answered
        assert compute.run() == 0
    finally:
        compute.driver.close()


def test_a_failed_savepoint_leaves_the_wake_ups_of_the_works_before_it(tmp_path: Path
                                                                       ) -> None:
    # A work of a group that fails rolls back its savepoint only: the hosts the works
    # before it woke must still be woken when the group commits, and a whole rolled-back
    # transaction wakes nobody.
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    upgrade(store.engine)
    wakeups = Wakeups()
    wakeups.attach(store, notify=False)
    before = {host: wakeups.version(host) for host in ("host-a", "host-b", "host-c")}
    with store.write() as session:
        wake(session, "host-a")
        with pytest.raises(RuntimeError), session.begin_nested():
            wake(session, "host-b")
            raise RuntimeError("this work fails")
    assert wakeups.version("host-a") != before["host-a"]
    with pytest.raises(RuntimeError), store.write() as session:
        wake(session, "host-c")
        raise RuntimeError("the whole transaction fails")
    assert wakeups.version("host-c") == before["host-c"]
    store.close()


def test_a_work_of_a_group_wakes_its_hosts_once_the_whole_group_committed(
        tmp_path: Path) -> None:
    # A work's savepoint is released before the group's transaction commits: its agents
    # woken then would read orders without the change, under the version that has it.
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    upgrade(store.engine)
    wakeups = Wakeups()
    wakeups.attach(store, notify=False)
    before = wakeups.version("host-a")
    with store.write() as session:
        with session.begin_nested():
            wake(session, "host-a")
            record(session, EventKind.SERVER_DELETED, "the change host-a is woken for")
        assert wakeups.version("host-a") == before  # released, but not committed
        with session.begin_nested():
            record(session, EventKind.SERVER_CREATED, "another work of the group")
        assert wakeups.version("host-a") == before
    assert wakeups.version("host-a") != before
    assert "the change host-a is woken for" in _messages(store)
    store.close()
