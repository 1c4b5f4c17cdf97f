"""The demo cluster's processes: started for real, and gone afterwards however the demo
ends (done, an error, Ctrl-C, or the demo itself killed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from passthru.demo.cluster import Cluster, DemoError, temporary_cluster
from passthru.demo.hosts import simulated_host
from passthru.sim import PROFILES


def gone(pid: int, within: float = 15.0) -> bool:
    """Whether process `pid` has ended (reaped or a zombie) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def start(cluster: Cluster) -> None:
    cluster.start_controller(cluster.serve_command())


@pytest.mark.parametrize("stop", [RuntimeError("a step failed"), KeyboardInterrupt()],
                         ids=["error", "ctrl-c"])
def test_every_process_stops_and_the_directory_goes_however_the_demo_ends(
        stop: BaseException) -> None:
    with pytest.raises(type(stop)), temporary_cluster() as cluster:
        start(cluster)
        host = simulated_host(PROFILES["qat"], cluster.root / "qat", cluster.url)
        cluster.start_agent(host, cluster.host_token(host.name))
        cluster.check_running()
        raise stop
    assert [(child.name, child.process.poll() is not None) for child in cluster.children] == [
        ("controller", True), ("agent-sim-qat", True)]
    assert not cluster.root.exists()


def test_a_controller_that_cannot_listen_is_reported_with_its_log() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DemoError, match=r"(?s)controller exited with status \d+; its log "
                                            r"ends:.*address already in use"), \
                temporary_cluster(listen=f"127.0.0.1:{port}") as cluster:
            start(cluster)
    assert not cluster.root.exists()


def test_an_agent_that_exits_is_reported_with_its_log() -> None:
    with temporary_cluster() as cluster:
        start(cluster)
        host = simulated_host(PROFILES["qat"], cluster.root / "qat", cluster.url)
        host.config_file.write_text(host.config_file.read_text() + 'interval = "often"\n')
        cluster.start_agent(host, cluster.host_token(host.name))
        agent = cluster.agent(host.name)
        agent.process.wait(timeout=30)
        with pytest.raises(DemoError, match=r"(?s)agent-sim-qat exited with status 2; .*"
                                            r"interval"):
            cluster.check_running()


def test_the_processes_end_when_the_demo_is_killed(tmp_path: Path) -> None:
    # SIGKILL leaves the demo no time to clean up: the kernel ends its children instead.
    script = ("import sys, time\n"
              "from passthru.demo.cluster import temporary_cluster\n"
              "with temporary_cluster() as cluster:\n"
              "    cluster.start_controller(cluster.serve_command())\n"
              "    print(cluster.child('controller').process.pid, flush=True)\n"
              "    time.sleep(600)\n")
    demo = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        assert demo.stdout is not None
        controller = int(demo.stdout.readline())
        assert Path(f"/proc/{controller}").exists()
    finally:
        demo.send_signal(signal.SIGKILL)
        demo.wait()
    assert gone(controller)
