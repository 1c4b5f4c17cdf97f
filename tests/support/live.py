"""A live controller on a free loopback port, for end-to-end tests: `passthru serve` in a
process (`LiveController`), which a test can kill, restart and read the log of, or the
same app and web server in a thread of the test's own process (`ServedApp`), which starts
in a fraction of the time and whose state a test can read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from passthru.asgi import create_app
from passthru.controller.http_protocol import uvicorn_options
from passthru.controller.settings import Settings
from tests.pg import free_port

PASSTHRU = Path(sys.executable).with_name("passthru")


def child_env() -> dict[str, str]:
    """This environment without PASSTHRU_* settings, which would override the child's own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PASSTHRU_")}


class Child:
    """A `passthru` subprocess that a test can kill, as in a crash, or stop, and whose
    output goes to `log`."""

    process: subprocess.Popen[bytes] | None = None
    log: Path
    #: What `log_tail` heads the log's end with.
    title = "passthru"

    def log_tail(self, chars: int = 3000) -> str:
        text = self.log.read_text() if self.log.exists() else "(no output)"
        return f"--- {self.title} ---\n{text[-chars:]}"

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


class Controller:
    """Where a live controller answers, and the admin token it wrote to its data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()


class ServedApp(Controller):
    """The app `passthru serve` runs, behind uvicorn with `serve`'s options, in a thread
    of this process; `settings` are `Settings` fields, e.g. a long `heartbeat_timeout`."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        super().__init__(data_dir)
        self.settings = Settings(data_dir, **settings)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def app(self) -> FastAPI:
        assert self._server is not None, "not started"
        app = self._server.config.app
        assert isinstance(app, FastAPI)
        return app

    def start(self, timeout: float = 120.0) -> None:
        # The server's log goes to the test's own (log_config=None), as pytest captures it.
        config = uvicorn.Config(create_app(self.settings), host="127.0.0.1", port=self.port,
                                log_config=None, log_level="warning", access_log=False,
                                **uvicorn_options(self.settings))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the app's web server stopped before it answered")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app's web server did not answer in {timeout}s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        # Held long-polls are answered now, not when their wait runs out: the web server's
        # shutdown waits for every request to end.
        self.app.state.wakeups.close()
        self._thread.join(60)


class LiveController(Child, Controller):
    """`passthru serve` in a subprocess; `start()` waits until it answers. `options` are
    more `serve` options, e.g. a short `--heartbeat-timeout`."""

    title = "controller"

    def __init__(self, data_dir: Path, db_url: str | None = None,
                 options: Sequence[str] = ()) -> None:
        Controller.__init__(self, data_dir)
        self.db_url = db_url
        self.options = tuple(options)
        self.log = data_dir.parent / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

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
