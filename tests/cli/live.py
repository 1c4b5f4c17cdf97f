"""A real `passthru serve` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from tests.pg import free_port

PASSTHRU = Path(sys.executable).with_name("passthru")


def child_env() -> dict[str, str]:
    """This environment without PASSTHRU_* settings, which would override the child's own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PASSTHRU_")}


class Child:
    """A `passthru` subprocess that a test can kill, as in a crash, or stop."""

    process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as when a machine dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class LiveController(Child):
    """`passthru serve` in a subprocess; `start()` waits until it answers. `options` are
    more `serve` options, e.g. a short `--heartbeat-timeout`."""

    def __init__(self, data_dir: Path, db_url: str | None = None,
                 options: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.db_url = db_url
        self.options = tuple(options)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def start(self, timeout: float = 120.0) -> None:
        # Generous: a loaded 2-core machine can take a while to import and migrate.
        command = [str(PASSTHRU), "serve", "--listen", f"127.0.0.1:{self.port}",
                   "--data-dir", str(self.data_dir)]
        if self.db_url:
            command += ["--db", self.db_url]
        command += self.options
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env=child_env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"passthru serve exited: {self.log.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/openapi.json", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"passthru serve did not answer in {timeout}s")



def kill_mid_burst(controller: Child, write: Callable[[int, list[str]], None],
                   writers: int, after: int) -> list[str]:
    """Run `write(n, acknowledged)` in `writers` threads, each appending what the
    controller acknowledged, and SIGKILL the controller once `after` writes are (or every
    writer stopped); returns every acknowledged write once the writers have stopped."""
    acknowledged: list[str] = []
    threads = [threading.Thread(target=write, args=(n, acknowledged)) for n in range(writers)]
    for thread in threads:
        thread.start()
    while len(acknowledged) < after and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    controller.kill()
    for thread in threads:
        thread.join()
    return acknowledged
