"""Orders benchmark: what idle agents cost the controller, and request -> ACTIVE; prints JSON.

    .venv/bin/python bench/orders.py [--hosts 10000] [--baseline REV] [--quick]

(a) Idle agents. A real `passthru serve` (SQLite) and one asyncio client standing for
`--hosts` agents, each with its own agent token (written to the store with the hosts,
before the controller starts), at the agent's own cadence (`passthru.host.agent.Agent`'s
defaults, named in the JSON): an idle agent sends nothing but a long-poll of its orders
(`wait` = its `poll_wait`, 300 s), on a connection of its own, asked again when it ends;
its report rounds find nothing to report and send nothing while the long-poll is held.
The controller counts each held long-poll as its agent's heart-beat and writes those in
batches. The first long-polls wait a random part of `poll_wait`, so that they are spread
evenly from the start. Nothing changes, so every long-poll ends "unchanged". The
controller's CPU (utime + stime from /proc/<pid>/stat) is read over a window as long as
one long-poll, after every agent holds one. The baseline is the code of `--baseline`
(which polls every 2 s and heart-beats every 60 s, as its agents did), measured the same
way with `--baseline-hosts` agents, and scaled to `--hosts` (polling cost is linear in
hosts).

(b) Request -> ACTIVE. Real `passthru agent` processes on simulated hosts (libvirt's
test driver over each host's node XML, VF settings recorded, as `passthru sim` sets up),
their default intervals, and 16 clients each booting a server (no devices), waiting for
ACTIVE, deleting it, and again; the time runs to the server's `updated` as the
controller made it ACTIVE. The same with the baseline's code
(its agents poll every 2 s and run one order at a time).

Every figure is taken on this machine while others may be using it: noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import ROOT, Serve, extract

sys.path.insert(0, str(ROOT / "src"))  # this tree's agent cadence and store, whatever is installed

#: The polling baseline's agents: orders every 2 s, a heart-beat every 60 s.
OLD_POLL_EVERY = 2.0
OLD_HEARTBEAT_EVERY = 60.0
#: The agents' first requests (whole orders, read from the store) are spread over this
#: many seconds per thousand agents, at least `RAMP_LEAST`, so as not to swamp the
#: controller before the measuring begins.
RAMP_PER_1000 = 10.0
RAMP_LEAST = 30.0
#: How much longer than asked an answer may take before the bench counts an error and
#: connects again (the controller was swamped, and dropped the request).
LATE = 60.0
CLIENTS = 16  # as the issue measures; --clients changes it


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str,
                   target: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """One HTTP/1.1 request on a kept-alive connection: its status and headers (the body
    is read and dropped). Written by hand: an HTTP client's connection pool is the
    bottleneck with thousands of connections in one process."""
    lines = [f"{method} {target} HTTP/1.1", "Host: bench", "Content-Length: 0",
             *(f"{key}: {value}" for key, value in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    found = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":")
                                                          for line in head[1:] if line)}
    await reader.readexactly(int(found.get("content-length", "0")))
    return status, found


def agent_cadence() -> dict[str, Any]:
    """What an idle agent of this tree sends: its defaults."""
    from passthru.host.agent import Agent

    return {"long_poll_wait_s": Agent.poll_wait, "report_interval_s": Agent.interval,
            "heartbeat_posts": "none while its long-poll is held (a report round with "
            "nothing to report sends nothing; the held long-poll is the heart-beat)"}


async def idle_agents(serve: Serve, tokens: dict[str, str], *, long_poll: bool,
                      window: float) -> dict[str, Any]:
    """Each agent long-polls at the agent's cadence (or polls every 2 s and heart-beats
    every 60 s, as the baseline's did); the controller's CPU per second over `window`
    seconds once every agent is going."""
    counts = {"orders": 0, "unchanged": 0, "heartbeats": 0, "errors": 0}
    ready: set[str] = set()
    stop = asyncio.Event()
    poll_wait = float(agent_cadence()["long_poll_wait_s"])
    ramp = max(RAMP_LEAST, RAMP_PER_1000 * len(tokens) / 1000)
    port = serve.port

    async def connected() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port)

    async def connected_at_last() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """An agent's first connection, tried again (each failure counted) while the
        controller is too busy to take it, as the agent itself tries again."""
        while True:
            try:
                return await connected()
            except OSError:
                counts["errors"] += 1
                await asyncio.sleep(1.0)

    async def heartbeats(path: str, auth: dict[str, str]) -> None:
        """A connection for each heart-beat, as the old agent's client made one."""
        await asyncio.sleep(random.uniform(0, OLD_HEARTBEAT_EVERY))
        while not stop.is_set():
            try:
                reader, writer = await connected()
                try:
                    status, _ = await _request(reader, writer, "POST", f"{path}/heartbeat",
                                               auth)
                finally:
                    writer.close()
                counts["heartbeats" if status < 400 else "errors"] += 1
            except (OSError, asyncio.IncompleteReadError):
                counts["errors"] += 1
            await asyncio.sleep(OLD_HEARTBEAT_EVERY)

    async def agent(host: str, token: str) -> None:
        path = f"/v2/agent/hosts/{host}"
        auth = {"Authorization": f"Bearer {token}"}
        beating = None if long_poll else asyncio.create_task(heartbeats(path, auth))
        await asyncio.sleep(random.uniform(0, ramp))
        etag: str | None = None
        wait = random.uniform(0, poll_wait)  # the first, to spread them evenly
        reader, writer = await connected_at_last()
        try:
            while not stop.is_set():
                try:
                    if long_poll and etag is not None:
                        status, found = await asyncio.wait_for(_request(
                            reader, writer, "GET", f"{path}/orders?wait={wait:g}",
                            {**auth, "If-None-Match": etag}), wait + LATE)
                        wait = poll_wait
                    else:
                        status, found = await asyncio.wait_for(_request(
                            reader, writer, "GET", f"{path}/orders", auth), LATE)
                    if status >= 400:
                        counts["errors"] += 1
                    counts["unchanged" if status == 304 else "orders"] += 1
                    if etag is None and status < 400:
                        ready.add(host)
                    etag = found.get("etag", etag)
                    if not long_poll:
                        await asyncio.sleep(OLD_POLL_EVERY)
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    counts["errors"] += 1
                    writer.close()
                    await asyncio.sleep(1.0)
                    with contextlib.suppress(OSError):
                        reader, writer = await connected()
        finally:
            if beating is not None:
                beating.cancel()
            writer.close()

    # What the controller costs with no agent at all (its sweeps and index checks).
    quiet_start = serve.cpu_seconds()
    await asyncio.sleep(20)
    quiet = (serve.cpu_seconds() - quiet_start) / 20
    tasks = [asyncio.create_task(agent(host, token)) for host, token in tokens.items()]
    await asyncio.sleep(ramp if long_poll else max(ramp, OLD_HEARTBEAT_EVERY))
    while len(ready) < len(tokens):  # every agent has had its orders once
        await asyncio.sleep(1)
    await asyncio.sleep(5)
    before_counts = dict(counts)
    start, cpu_start = time.monotonic(), serve.cpu_seconds()
    await asyncio.sleep(window)
    elapsed, cpu = time.monotonic() - start, serve.cpu_seconds() - cpu_start
    during = {key: counts[key] - before_counts[key] for key in counts}
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    requests = during["orders"] + during["unchanged"] + during["heartbeats"]
    cadence = (agent_cadence() if long_poll else
               {"poll_every_s": OLD_POLL_EVERY, "heartbeat_every_s": OLD_HEARTBEAT_EVERY})
    return {"hosts": len(tokens), "cadence": cadence, "window_s": round(elapsed, 1),
            "controller_cpu_cores": round(cpu / elapsed, 4),
            "controller_cpu_cores_without_agents": round(quiet, 4),
            "requests_per_s": round(requests / elapsed, 1),
            "cpu_ms_per_request": round(1000 * cpu / max(1, requests), 3),
            "requests": during}


def seeded(src: Path, work: Path, hosts: int) -> tuple[Serve, dict[str, str]]:
    """A controller that knows `hosts` hosts, up and heart-beaten just now, each with an
    agent token (returned, by host): written to its store while it is stopped, so that
    making them is not measured."""
    from passthru.controller.auth import issue_token
    from passthru.controller.enums import Role
    from passthru.controller.store.db import Store
    from passthru.controller.store.models import HostRow, utcnow

    data = work / "data-seeded"
    Serve(src, data).stop()
    store = Store(f"sqlite:///{data / 'passthru.sqlite'}")
    names = [f"idle-{n:05d}" for n in range(hosts)]
    with store.write() as session:
        now = utcnow()
        session.add_all(HostRow(name=name, last_heartbeat=now) for name in names)
        tokens = {name: issue_token(session, Role.AGENT, host=name).token for name in names}
    store.close()
    return Serve(src, data), tokens


def run_idle(src: Path, work: Path, hosts: int, long_poll: bool) -> dict[str, Any]:
    work.mkdir(parents=True)
    serve, tokens = seeded(src, work, hosts)
    try:
        window = float(agent_cadence()["long_poll_wait_s"]) + 10 if long_poll else 30.0
        result = asyncio.run(idle_agents(serve, tokens, long_poll=long_poll, window=window))
        print(json.dumps(result), file=sys.stderr)
        return result
    finally:
        serve.process.kill()  # its held long-polls were measured, not its shutdown
        serve.process.wait()
        serve.log.close()


def agent_config(src: Path, work: Path, number: int, url: str, token: str) -> Path:
    from passthru.sim import PROFILES, build_sysfs, host_config_toml, nodedev_xml

    profile = PROFILES["qat"]
    home = work / f"host-{number}"
    (home / "sys").mkdir(parents=True)
    build_sysfs(profile, home / "sys")
    node = home / "node.xml"
    node.write_text(nodedev_xml(profile))
    head = (f'token = "{token}"\ninstances_path = "{home / "instances"}"\n'
            f'image_cache = "{home / "images"}"\n')
    config = home / "host.toml"
    text = host_config_toml(profile, sysfs_root=home / "sys", controller=url,
                            nodedev_xml=node)
    config.write_text(head + text.replace(f'host = "sim-{profile.name}"',
                                          f'host = "sim-{number}"'))
    return config


def boot_loop(serve: Serve, boots: int, times: list[float], accepted: list[float],
              errors: list[str]) -> None:
    """Boot, wait for ACTIVE, delete, `boots` times. The time to ACTIVE is from just
    before the request to the moment the controller made the server ACTIVE (its
    `updated`, on this machine's clock): read every 0.25 s, so that the reads do not
    load the controller they measure."""
    with httpx.Client(base_url=serve.url, headers=dict(serve.http.headers),
                      timeout=120) as http:
        for _ in range(boots):
            start = time.time()
            body = {"server": {"name": f"vm-{random.getrandbits(48):x}",
                               "flavorRef": "m1.small", "networks": []}}
            created = http.post("/v2/admin/servers", json=body)
            accepted.append(time.time() - start)
            if created.status_code >= 300:
                errors.append(f"{created.status_code} {created.text[:200]}")
                continue
            server = created.json()["server"]["id"]
            while True:
                view = http.get(f"/v2/admin/servers/{server}").json()["server"]
                if view["status"] != "BUILD":
                    break
                time.sleep(0.25)
            if view["status"] == "ACTIVE":
                active = datetime.fromisoformat(view["updated"])
                if active.tzinfo is None:
                    active = active.replace(tzinfo=UTC)
                times.append(active.timestamp() - start)
            else:
                errors.append(view["status"])
            http.delete(f"/v2/admin/servers/{server}")


def run_active(src: Path, work: Path, hosts: int, boots: int,
               clients: int = CLIENTS) -> dict[str, Any]:
    work.mkdir(parents=True)
    serve = Serve(src, work / "data-active")
    agents: list[subprocess.Popen[bytes]] = []
    try:
        serve.http.post("/v2/admin/flavors", json={"flavor": {"name": "m1.small"}}
                        ).raise_for_status()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PASSTHRU_")}
        env["PYTHONPATH"] = str(src)
        for number in range(hosts):
            token = serve.http.post(f"/v2/admin/os-hosts/sim-{number}/tokens").json()["token"]
            config = agent_config(src, work, number, serve.url, token)
            log = (work / f"agent-{number}.log").open("wb")
            agents.append(subprocess.Popen(
                [sys.executable, "-c", "from passthru.cli.main import main; main()",
                 "agent", "--config", str(config)], env=env, stdout=log,
                stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while True:
            known = serve.http.get("/v2/admin/os-hosts").json()["hosts"]
            if len(known) >= hosts:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the agents did not report")
            time.sleep(0.5)
        time.sleep(3)  # the agents' first order rounds
        times: list[float] = []
        accepted: list[float] = []
        errors: list[str] = []
        threads = [threading.Thread(target=boot_loop, args=(serve, boots // clients,
                                                            times, accepted, errors))
                   for _ in range(clients)]
        cpu_start = serve.cpu_seconds()
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        cpu = serve.cpu_seconds() - cpu_start
        ordered = sorted(times)
        return {"hosts": hosts, "clients": clients, "boots": len(ordered),
                "errors": errors[:5], "error_count": len(errors),
                "active_p50_s": round(statistics.median(ordered), 3) if ordered else None,
                "active_p99_s": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 3)
                if ordered else None,
                "active_max_s": round(ordered[-1], 3) if ordered else None,
                "accepted_p50_s": round(statistics.median(accepted), 3) if accepted else None,
                "wall_s": round(elapsed, 1), "controller_cpu_s": round(cpu, 2)}
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
        serve.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000, help="idle agents (a)")
    parser.add_argument("--baseline", metavar="REV", help="the polling code to compare")
    parser.add_argument("--baseline-hosts", type=int, default=500,
                        help="idle agents of the baseline, scaled to --hosts")
    parser.add_argument("--sim-hosts", type=int, default=4, help="real agents (b)")
    parser.add_argument("--boots", type=int, default=160, help="boots (b), over the clients")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="clients (b)")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--skip-active", action="store_true")
    args = parser.parse_args()
    limit = raise_fd_limit()
    hosts = min(args.hosts, limit - 1000)
    report: dict[str, Any] = {
        "benchmark": "idle agents' controller CPU and request -> ACTIVE",
        "store": "SQLite, WAL, synchronous=FULL (as it ships: every commit fsynced)",
        "machine": {"cpus": os.cpu_count(), "load": os.getloadavg(), "fd_limit": limit},
    }
    with tempfile.TemporaryDirectory(prefix="passthru-orders-", dir="/var/tmp") as work:
        base = Path(work)
        old_src = extract(args.baseline, base / "old") if args.baseline else None
        if not args.skip_idle:
            report["idle_long_poll"] = run_idle(ROOT / "src", base / "idle-new", hosts, True)
            if old_src is not None:
                old = run_idle(old_src, base / "idle-old", args.baseline_hosts, False)
                old["scaled_to_hosts"] = hosts
                old["scaled_controller_cpu_cores"] = round(
                    old["controller_cpu_cores"] * hosts / args.baseline_hosts, 3)
                report["idle_polling_baseline"] = old
        if not args.skip_active:
            report["active_new"] = run_active(ROOT / "src", base / "active-new",
                                              args.sim_hosts, args.boots, args.clients)
            if old_src is not None:
                report["active_polling_baseline"] = run_active(
                    old_src, base / "active-old", args.sim_hosts, args.boots, args.clients)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
