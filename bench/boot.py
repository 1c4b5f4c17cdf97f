"""From `boot` to a real guest's first console line, end to end, printed as JSON.

What a user waits for: a real `passthru serve` (SQLite, fsync as it runs by default), a
real `passthru agent` whose libvirt is a private libvirtd with the qemu driver, and the
guest the demo boots (a Debian kernel, an initrd made here, a qcow2 disk). Each round
boots one VM through the REST API with a key, a 1 GB disk and a NIC on a bridge, and
times, from the POST:

- `accepted_s`: the API's 202 (placed and claimed);
- `active_s`: the server is ACTIVE (the agent fetched the image — from its cache after
  the first round —, made the disk overlay and the seed ISO, defined and started the
  domain);
- `first_console_line_s`: the guest's first line in the host's console log (firmware
  and kernel under the domain type the agent chose);
- `booted_s` and `ready_s`: the guest's init said it booted, then finished reading its
  seed and disk;
- `console_api_s`: its `booted` line reached `GET .../console-log`.

The domain type is the agent's own choice (`domain_type = "auto"`: KVM only where a probe
shows that KVM really runs a guest), and is reported with the figures; the first round
also includes the one image download. Run: `python bench/boot.py [--rounds N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from passthru.sim import PROFILES, build_sysfs, host_config_toml
from passthru.sim.guest import MARKER, build_guest_image
from passthru.sim.hypervisor import missing, running_libvirtd

T = TypeVar("T")
PASSTHRU = Path(sys.executable).with_name("passthru")
BRIDGE = "br-bench"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _until(what: str, check: Callable[[], T | None], timeout: float = 600.0) -> T:
    deadline = time.monotonic() + timeout
    while (found := check()) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)
    return found


def _env(url: str, token: str) -> dict[str, str]:
    return {**os.environ, "PASSTHRU_URL": url, "PASSTHRU_TOKEN": token}


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(PASSTHRU), *args], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: passthru {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def _line_time(log: Path, text: str) -> float | None:
    """When `text` first appears in the console log (None: not yet)."""
    try:
        return time.monotonic() if text in log.read_text(errors="replace") else None
    except FileNotFoundError:
        return None


def _round(api: httpx.Client, instances: Path, number: int) -> dict[str, Any]:
    body = {"server": {"name": f"bench-{number}", "flavorRef": "b1.tiny", "imageRef": "guest",
                       "key_name": "bench", "networks": [{"uuid": "mgmt"}]}}
    started = time.monotonic()
    answer = api.post("/v2/admin/servers", json=body)
    accepted = time.monotonic()
    answer.raise_for_status()
    uuid = answer.json()["server"]["id"]

    def status() -> dict[str, Any] | None:
        server = api.get(f"/v2/admin/servers/{uuid}").json()["server"]
        if server["status"] == "ERROR":
            raise SystemExit(f"bench: server ERROR: {server['fault']}")
        return server if server["status"] == "ACTIVE" else None

    server = _until("ACTIVE", status)
    active = time.monotonic()
    log = instances / uuid / "console.log"
    first = _until("a first console line", lambda: time.monotonic()
                   if log.exists() and log.stat().st_size > 0 else None)
    booted = _until("the guest's boot", lambda: _line_time(log, f"{MARKER} booted"))
    ready = _until("the guest's ready", lambda: _line_time(log, f"{MARKER} ready"))
    seen = _until("the console through the API", lambda: time.monotonic() if f"{MARKER} booted"
                  in api.get(f"/v2/admin/servers/{uuid}/console-log").json()["output"]
                  else None)
    domain_type = "kvm" if "type='kvm'" in server["domain_xml"] or 'type="kvm"' in \
        server["domain_xml"] else "qemu"
    api.delete(f"/v2/admin/servers/{uuid}").raise_for_status()
    _until("the domain removed", lambda: True if not (instances / uuid).exists() else None)
    return {"domain_type": domain_type, "accepted_s": accepted - started,
            "active_s": active - started, "first_console_line_s": first - started,
            "booted_s": booted - started, "ready_s": ready - started,
            "console_api_s": seen - started}


def _run(rounds: int, work: Path) -> dict[str, Any]:
    guest = build_guest_image(work / "guest")
    with running_libvirtd(work / "libvirtd", f"ptb-{os.getpid()}") as libvirtd:
        libvirtd.ip("link", "add", BRIDGE, "type", "bridge")
        libvirtd.ip("link", "set", BRIDGE, "up")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        data = work / "data"
        serve = subprocess.Popen([str(PASSTHRU), "serve", "--listen", f"127.0.0.1:{port}",
                                  "--data-dir", str(data)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        agent: subprocess.Popen[bytes] | None = None
        try:
            _until("the controller", lambda: True if _answers(url) else None, 60)
            token = (data / "admin-token").read_text().strip()
            env = _env(url, token)
            host_token = _cli(env, "host-token", "bench-qemu").strip()
            home = work / "host"
            profile = PROFILES["x710-2x"]
            settings = {"host": "bench-qemu", "token": host_token, "order_interval": 0.2,
                        "libvirt_uri": libvirtd.uri, "libvirt_netns": libvirtd.netns,
                        "instances_path": str(home / "instances"),
                        "image_cache": str(home / "images"), "domain_type": "auto"}
            text = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
            text += f'bridge_mappings = {{ mgmt = "{BRIDGE}" }}\n'
            snippet = host_config_toml(profile, sysfs_root=build_sysfs(profile, home / "sys"),
                                       controller=url)
            config = home / "host.toml"
            config.write_text(text + "\n".join(line for line in snippet.splitlines()
                                               if not line.startswith("host = ")) + "\n")
            agent = subprocess.Popen([str(PASSTHRU), "agent", "--config", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            key = work / "key"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)
            _cli(env, "image-create", "guest", "--file", str(guest.disk), "--kernel",
                 str(guest.kernel), "--initrd", str(guest.initrd), "--property",
                 f"os_command_line={guest.kernel_args}")
            _cli(env, "keypair-create", "bench", "--public-key", f"{key}.pub")
            _cli(env, "flavor-create", "b1.tiny", "--vcpus", "1", "--ram", "256", "--disk", "1")
            _cli(env, "net-create", "mgmt", "--physical-network", "mgmt")
            with httpx.Client(base_url=url, timeout=60,
                              headers={"Authorization": f"Bearer {token}"}) as api:
                _until("the host up", lambda: True if any(
                    h["name"] == "bench-qemu" and h["status"] == "up"
                    for h in api.get("/v2/admin/os-hosts").json()["hosts"]) else None, 120)
                results = [_round(api, home / "instances", n) for n in range(1, rounds + 1)]
        finally:
            for child in (agent, serve):
                if child is not None:
                    child.terminate()
                    child.wait(30)
    keys = [k for k in results[0] if k.endswith("_s")]
    return {
        "benchmark": "boot to a real guest's first console line (REST, real agent, libvirtd "
                     "with the qemu driver)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_1min_before": os.getloadavg()[0]},
        "store": "SQLite (passthru serve's default; synchronous as serve sets it)",
        "domain_type": results[0]["domain_type"],
        "rounds": results,
        "median": {k: round(statistics.median(r[k] for r in results), 3) for k in keys},
        "median_after_first": ({k: round(statistics.median(r[k] for r in results[1:]), 3)
                                for k in keys} if len(results) > 1 else None),
    }


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/openapi.json", timeout=1)
    except httpx.TransportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if (reason := missing()) is not None:
        print(json.dumps({"benchmark": "boot", "skipped": reason}))
        return
    with tempfile.TemporaryDirectory(prefix="passthru-bench-boot-") as work:
        print(json.dumps(_run(args.rounds, Path(work)), indent=2))


if __name__ == "__main__":
    main()
