"""A live `passthru serve` for the benchmarks, and the source tree of another revision.

Every benchmark that goes through the REST API starts the controller the same way: a
process of its own (so that its CPU can be read from /proc and nothing of the bench's is
counted in it), from a given source tree (this one, or a revision's extracted by
`extract` for a baseline), on a data dir, with PASSTHRU_* variables of the caller's
environment left out so that only the arguments decide.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def passthru_command(*args: str) -> list[str]:
    """`passthru ARGS` from the source tree on the child's PYTHONPATH."""
    return [sys.executable, "-c", "from passthru.cli.main import main; main()", *args]


def child_env(src: Path) -> dict[str, str]:
    """This environment without PASSTHRU_* variables, importing passthru from `src`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSTHRU_")}
    env["PYTHONPATH"] = str(src)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def extract(rev: str, into: Path) -> Path:
    """The `src` tree of git revision `rev`, extracted under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Serve:
    """`passthru serve` of the source tree `src` on the data dir `data` (made if missing,
    its log beside it), with `args` added; `http` calls it as admin, on paths below
    `prefix`."""

    def __init__(self, src: Path, data: Path, *args: str, prefix: str = "",
                 start_timeout: float = 600.0) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data.parent.mkdir(parents=True, exist_ok=True)
        self.log = (data.parent / f"serve-{self.port}.log").open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            passthru_command("serve", "--listen", f"127.0.0.1:{self.port}",
                             "--data-dir", str(data), *args),
            env=child_env(src), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + start_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"passthru serve exited: see {self.log.name}")
            try:
                httpx.get(f"{self.url}/openapi.json", timeout=5.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("passthru serve did not start") from None
                time.sleep(0.2)
        #: Seconds from starting the process to its first answer.
        self.start_s = round(time.perf_counter() - started, 1)
        self.token = (data / "admin-token").read_text().strip()
        self.http = self.client()

    def client(self) -> httpx.Client:
        """Another admin client, for a thread of its own."""
        return httpx.Client(base_url=self.url + self.prefix, timeout=600.0,
                            headers={"Authorization": f"Bearer {self.token}"})

    def cpu_seconds(self) -> float:
        """The controller's CPU seconds so far (user + system)."""
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()
