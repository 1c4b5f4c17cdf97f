"""Device ledger benchmark: one device transition at a time, on hosts of 10, 520 and
2,056 devices; prints JSON.

    .venv/bin/python bench/ledger.py [--rounds N]

Each host is SR-IOV NICs only (2 PFs x 4 VFs, 8 x 64, 8 x 256: the biggest is the
2,056-device host of issue 12), so every claim, allocation and free has a PF/VF family.
The store is SQLite on disk, WAL with `synchronous=FULL` (every commit fsynced). Each
transition is one write transaction, timed from its start to its commit (wall time and
this thread's CPU time), as the API runs it:

- `claim`: `claim_in_store` for one VF (host lock, ledger claim, room, placement);
- `allocate` (spawned): the ledger's allocation of the server's devices;
- `free` (delete): the ledger's free of the server's devices (its PF unblocked);
- `delta`: an inventory delta of one device (a VF's driver changes).

The baseline is the full load/save path as it was before the ledger (`HostDevices.load`
+ `save` of `controller/host_devices.py` before the ledger, loaded from git into
this process): load every row of the host, core rules, compare all, regroup every pool.
Besides the store the scheduler is brought up to date after each transition: the new
path applies the ledger's records (`Scheduler.apply`), the old one read the host again
(`Scheduler.refresh`); both are timed as `index`. `lifecycle` adds claim, allocate and
free with their index updates (a destroy changes no device).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import event

ROOT = Path(__file__).resolve().parents[1]
# PASSTHRU_SRC: another revision's tree (`serving.extract`), to compare the new path.
sys.path.insert(0, os.environ.get("PASSTHRU_SRC", str(ROOT / "src")))

from passthru.controller import ledger  # noqa: E402
from passthru.controller.hosts.reports import report_full  # noqa: E402
from passthru.controller.scheduler.claim import claim_in_store  # noqa: E402
from passthru.controller.scheduler.service import Scheduler  # noqa: E402
from passthru.controller.store.db import Store  # noqa: E402
from passthru.controller.store.migrate import upgrade  # noqa: E402
from passthru.controller.store.models import PciRequestRow, ServerRow  # noqa: E402
from passthru.pci import lifecycle  # noqa: E402
from passthru.pci.device import DeviceStatus, DevType, PciDevice  # noqa: E402
from passthru.pci.fit import Selection  # noqa: E402
from passthru.pci.inventory import InventoryDelta, apply_delta, check_delta  # noqa: E402
from passthru.pci.request import NumaPolicy, RequestSource  # noqa: E402

SIZES = {10: (2, 4), 520: (8, 64), 2056: (8, 256)}
POOL_ATTRS = ("vendor_id", "product_id", "e.*")


#: The last revision with the load/save path (the ledger's commit replaced it).
OLD_PATH = "0ef0178^"


#: Where what the baseline imports lives now: the controller's modules moved into its parts.
MOVED = {
    "from passthru.controller.events import EventKind, record":
        "from passthru.controller.enums import EventKind\n"
        "from passthru.controller.store.events import record",
    "from passthru.controller.mapping import": "from passthru.controller.store.mapping import",
    "from passthru.controller.models import": "from passthru.controller.store.models import",
}


def baseline_module() -> ModuleType | str:
    """`controller/host_devices.py` as it was before the ledger, imported from git; or why
    it cannot be (no git, or a clone without that history, a shallow one say)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{OLD_PATH}:src/passthru/controller/host_devices.py"],
            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        return "unavailable: git is not installed"
    except subprocess.CalledProcessError as error:
        return f"unavailable: git show {OLD_PATH} failed: {error.stderr.strip()[:200]}"
    for old, new in MOVED.items():
        assert old in source, old
        source = source.replace(old, new)
    path = Path(tempfile.mkdtemp()) / "baseline_host_devices.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_host_devices", path)
    assert spec is not None and spec.loader is not None
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nics(pfs: int, vfs: int) -> list[PciDevice]:
    devices = []
    for pf in range(pfs):
        parent = f"0000:{pf + 1:02x}:00.0"
        devices.append(PciDevice(parent, "8086", "1572", DevType.PF, numa_node=0,
                                 sriov_totalvfs=vfs, sriov_numvfs=vfs,
                                 tags={"e.physical_network": "physnet1"}))
        devices += [PciDevice(f"0000:{0x40 + 2 * pf + vf // 128:02x}:{vf % 128 // 8:02x}."
                              f"{vf % 8}", "8086", "154c",
                              DevType.VF, parent_addr=parent, numa_node=0, driver="vfio-pci",
                              tags={"e.physical_network": "physnet1"}) for vf in range(vfs)]
    return devices


def fsync_store(path: Path) -> Store:
    store = Store(f"sqlite:///{path}")

    @event.listens_for(store.engine, "connect")
    def full(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=FULL")

    upgrade(store.engine)
    return store


class Timer:
    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.thread_time()
        yield
        self.wall.setdefault(name, []).append((time.perf_counter() - wall) * 1000)
        self.cpu.setdefault(name, []).append((time.thread_time() - cpu) * 1000)

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: {"ms_median": round(statistics.median(times), 3),
                       "ms_p90": round(sorted(times)[int(len(times) * 0.9)], 3),
                       "cpu_ms_median": round(statistics.median(self.cpu[name]), 3)}
                for name, times in self.wall.items()}


def servers(store: Store, count: int) -> list[tuple[str, str]]:
    made = []
    with store.write() as session:
        for i in range(count):
            server = ServerRow(name=f"vm{i}", project="bench")
            session.add(server)
            session.flush()
            request = PciRequestRow(uuid=f"{server.uuid[:30]}-r", server_uuid=server.uuid,
                                    position=0, count=1, alternatives=[],
                                    source=RequestSource.FLAVOR, numa_policy=NumaPolicy.LEGACY)
            session.add(request)
            made.append((server.uuid, request.uuid))
    return made


def unplace(store: Store, owner: str) -> None:
    """The server off its host again, so that the next round can claim for it anew."""
    with store.write() as session:
        server = session.get_one(ServerRow, owner)
        server.host_id = None


def run(size: int, rounds: int, old: ModuleType | None, workdir: Path) -> dict[str, Any]:
    pfs, vfs = SIZES[size]
    devices = nics(pfs, vfs)
    assert len(devices) == size
    store = fsync_store(workdir / f"ledger-{size}.db")
    with store.write() as session:
        report_full(session, "h", devices, POOL_ATTRS)
    owners = servers(store, rounds)
    scheduler = Scheduler(store)
    scheduler.load()
    new, base = Timer(), Timer()
    vf = next(d for d in devices if d.dev_type is DevType.VF)

    # `work` gets the session alone; `...` since mypy cannot type a lambda whose defaults
    # bind the round's values against a one-argument Callable.
    def transition(timer: Timer, name: str, work: Callable[..., object],
                   index: Callable[[list[ledger.HostChanges]], None]) -> None:
        with timer(f"{name}+index"):
            with timer(name), store.write() as session:
                work(session)
                changes = ledger.changes_of(session)
            with timer("index"):
                index(changes)

    def refresh(_: list[ledger.HostChanges]) -> None:
        scheduler.refresh(["h"])

    for round_, (owner, request_id) in enumerate(owners):
        driver = "vfio-pci" if round_ % 2 else "iavf"
        changed = PciDevice(**{**vars_of(vf), "driver": driver})
        # The new ledger.
        picked = scheduler.index.loaded("h").devices[vf.address]
        selection = Selection({request_id: (picked,)}, None)
        transition(new, "claim", lambda s, sel=selection, o=owner: claim_in_store(
            s, scheduler._hosts["h"], sel, o), scheduler.apply)
        transition(new, "allocate", lambda s, o=owner: _allocate_new(s, o), scheduler.apply)
        transition(new, "delta", lambda s, c=changed: _delta_new(s, c), scheduler.apply)
        transition(new, "free", lambda s, o=owner: ledger.free(s, o, "vm"), scheduler.apply)
        unplace(store, owner)
        if old is None:
            continue
        # The old full load/save path, on the same rows.
        transition(base, "claim", lambda s, r=request_id, o=owner: _old(
            s, old, lambda d: lifecycle.claim(d, Selection({r: (d[vf.address],)}, None), o)),
            refresh)
        transition(base, "allocate", lambda s, o=owner: _old(
            s, old, lambda d: lifecycle.allocate(d, o)), refresh)
        transition(base, "delta", lambda s, c=changed: _old(
            s, old, lambda d: apply_delta(d, check_delta(InventoryDelta(changed=[c]), d))),
            refresh)
        transition(base, "free", lambda s, o=owner: _old(
            s, old, lambda d: lifecycle.free(d, o)), refresh)
    for timer in (new, base) if old is not None else (new,):
        timer.wall["lifecycle"] = [sum(parts) for parts in zip(
            *(timer.wall[f"{name}+index"] for name in ("claim", "allocate", "free")),
            strict=True)]
        timer.cpu["lifecycle"] = [sum(parts) for parts in zip(
            *(timer.cpu[f"{name}+index"] for name in ("claim", "allocate", "free")),
            strict=True)]
        for name in ("claim", "allocate", "delta", "free"):
            timer.wall.pop(f"{name}+index")
            timer.cpu.pop(f"{name}+index")
    entry = scheduler.index.hosts["h"]
    assert all(d.status is DeviceStatus.AVAILABLE for d in entry.devices.values())
    store.close()
    if old is None:
        return {"devices": size, "ledger": new.summary()}
    return {"devices": size, "ledger": new.summary(), "full_load_save": base.summary()}


def vars_of(device: PciDevice) -> dict[str, Any]:
    return {name: getattr(device, name) for name in device.__slots__
            if name not in ("status", "owner", "request_id", "missing", "taint")}


def _allocate_new(session: Any, owner: str) -> None:
    host = ledger.lock_host(session, "h")
    assert host is not None
    ledger.allocate(session, host, owner, "vm")


def _delta_new(session: Any, changed: PciDevice) -> None:
    from passthru.controller.hosts.reports import report_delta

    host = ledger.lock_host(session, "h")
    assert host is not None
    report_delta(session, "h", InventoryDelta(changed=[changed]), POOL_ATTRS, host.generation)


def _old(session: Any, old: ModuleType, rules: Callable[[dict[str, PciDevice]], object]) -> None:
    host = old.lock_host(session, "h")
    state = old.HostDevices.load(session, host)
    rules(state.devices)
    state.save(session)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    old = baseline_module()
    baseline = f"the full load/save path of {OLD_PATH}" if isinstance(old, ModuleType) else old
    with tempfile.TemporaryDirectory() as workdir:
        results = [run(size, args.rounds, old if isinstance(old, ModuleType) else None,
                       Path(workdir)) for size in SIZES]
    print(json.dumps({"store": "sqlite, WAL, synchronous=FULL", "rounds": args.rounds,
                      "baseline": baseline, "hosts": results}, indent=2))


if __name__ == "__main__":
    main()
