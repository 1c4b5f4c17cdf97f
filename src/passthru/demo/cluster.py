"""The demo's processes: one `passthru serve` and one `passthru agent` per host.

Each runs as its own process in its own session, so that Ctrl-C reaches only the demo,
which then stops the agents and the controller in order. Should the demo itself be
killed, the kernel ends its children too (PR_SET_PDEATHSIG), so nothing keeps running.
Everything lives in one temporary directory that is removed at the end.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from passthru.client import Client
from passthru.controller.settings import ADMIN_TOKEN_FILE, split_listen
from passthru.demo.hosts import DemoHost
from passthru.errors import PassthruError

#: The `passthru` program as this Python runs it, wherever the console script lives.
PASSTHRU = (sys.executable, "-c", "from passthru.cli.main import main; main()")
_PR_SET_PDEATHSIG = 1
_STOP_TIMEOUT = 10.0
_LOG_TAIL = 1500


class DemoError(PassthruError):
    """The demo cluster could not be started or did not come up."""


#: The signals that stop the demo (Ctrl-C, kill), held while a child is forked.
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: the demo starts its children before any
    # other thread of its own, so nothing here can wait on a lock another thread holds.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Ctrl-C during a fork would be raised inside Python's own fork handlers, which
    swallow it; held, it arrives once the child is started and known, so it is stopped."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Child:
    """One process of the cluster, its output going to `log`."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def failure(self, what: str) -> DemoError:
        """An error saying `what` happened, with the end of the log (which goes away with
        the demo's directory)."""
        tail = self.log.read_text(errors="replace")[-_LOG_TAIL:] if self.log.exists() else ""
        return DemoError(f"{self.name} {what}; its log ends:\n{tail.rstrip()}")

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise self.failure(f"exited with status {self.process.returncode}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Cluster:
    """A controller on `listen` (default: a free loopback port) with its data in `root`,
    and the agents started against it."""

    root: Path
    listen: str | None = None
    #: In the order they were started: the controller first.
    children: list[Child] = field(default_factory=list)
    url: str = ""

    @property
    def admin_token(self) -> str:
        return (self.root / "controller" / ADMIN_TOKEN_FILE).read_text().strip()

    @property
    def fleet_page(self) -> str:
        return f"{self.url}/ui#token={self.admin_token}"

    def child(self, name: str) -> Child:
        return next(child for child in self.children if child.name == name)

    def agent(self, host: str) -> Child:
        return self.child(f"agent-{host}")

    def serve_command(self) -> list[str]:
        listen = self.listen or f"127.0.0.1:{free_port()}"
        host, port = split_listen(listen)
        reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.url = f"http://{reachable}:{port}"
        return ["serve", "--data-dir", str(self.root / "controller"), "--listen", listen]

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PASSTHRU_")}
        with log.open("ab") as output, _stop_signals_held():
            process = subprocess.Popen(
                [*PASSTHRU, *args], stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, env={**clean, **(env or {})},
                start_new_session=True, preexec_fn=_die_with_parent)
            self.children.append(Child(name, process, log))
        return self.children[-1]

    def start_controller(self, args: list[str], timeout: float = 30.0) -> None:
        """Start `passthru serve ARGS` and wait until it answers."""
        controller = self._spawn("controller", args)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            controller.check_running()
            try:
                if httpx.get(f"{self.url}/openapi.json", timeout=1.0).is_success:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise controller.failure(f"did not answer at {self.url} within {timeout:.0f} s")

    def host_token(self, host: str) -> str:
        with Client(self.url, self.admin_token) as api:
            return str(api.call("POST", api.tenant(f"/os-hosts/{host}/tokens"))["token"])

    def start_agent(self, host: DemoHost, token: str) -> None:
        self._spawn(f"agent-{host.name}", ["agent", "--config", str(host.config_file)],
                    env={"PASSTHRU_TOKEN": token})

    def check_running(self) -> None:
        for child in self.children:
            child.check_running()

    def stop(self) -> None:
        """Newest first: the agents, so that none reports to a controller going away."""
        for child in reversed(self.children):
            child.stop()


@contextmanager
def _uninterruptible() -> Iterator[None]:
    """A second Ctrl-C (or a kill) must not leave the cleanup half done."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def temporary_cluster(listen: str | None = None) -> Iterator[Cluster]:
    """A cluster in a new temporary directory; on the way out, however it is left (an
    error, Ctrl-C), every process is stopped and the directory removed."""
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="passthru-demo-")), listen)
    try:
        yield cluster
    finally:
        with _uninterruptible():
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)
