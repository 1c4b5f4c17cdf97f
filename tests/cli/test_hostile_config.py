"""Malformed and hostile host configs through the real `passthru discover` and `passthru
agent` command lines: one `error:` line naming the file, exit 2, never a traceback."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.runner import run

Writer = Callable[[Path], Path]


def _bytes(data: bytes) -> Writer:
    def write(tmp_path: Path) -> Path:
        path = tmp_path / "host.toml"
        path.write_bytes(data)
        return path
    return write


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "host.toml"
    path.mkdir()
    return path


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "host.toml"
    os.mkfifo(path)  # opening it would wait for a writer for ever
    return path


DEEP = 50_000
CASES: dict[str, tuple[Writer, str]] = {
    "binary garbage": (_bytes(bytes(range(256)) * 4),
                       "is not UTF-8 text (byte 0x80 at line 2, column 118); TOML is UTF-8"),
    "invalid utf-8": (_bytes(b'host = "caf\xe9"\n'), "is not UTF-8 text (byte 0xe9 at line 1"),
    "nested arrays": (_bytes(b"pci_information = " + b"[" * DEEP + b"]" * DEEP),
                      "nests arrays or inline tables too deeply to read"),
    "nested inline tables": (_bytes(b"x = " + b"{a=" * DEEP + b"1" + b"}" * DEEP),
                             "nests arrays or inline tables too deeply to read"),
    "nested just readable": (_bytes(b"pci_information = " + b"[" * 30 + b"]" * 30),
                             "key 'pci_information' nests arrays or tables more than 8 levels"),
    "wrong type": (_bytes(b"host = 5"), "key 'host': Input should be a valid string (got 5)"),
    "unknown key": (_bytes(b'sourse = "sysfs"'), "unknown key 'sourse' (did you mean 'source'?)"),
    "markup in a key": (_bytes(b'"[/]" = 1'), "unknown key '[/]'"),
    "bad regex": (_bytes(b'[[pci_information]]\nmatch = { vendor_id = "re:(" }'),
                  "pci_information entry 1: match vendor_id: regex '(' is not valid"),
    "bad address regex": (_bytes(b'[[pci_information]]\nmatch = { address = '
                                 b'{ bus = "(", slot = "02" } }'),
                          "bus: regex '(' is not valid"),
    "interval inf": (_bytes(b"interval = inf"),
                     "key 'interval': inf s is out of range; re-scan every 1 s to 86400 s"),
    "interval nan": (_bytes(b"interval = nan"), "key 'interval': nan s is out of range"),
    "order_interval tiny": (_bytes(b"order_interval = 1e-300"),
                            "key 'order_interval': 1e-300 s is out of range; check power "
                            "states (and poll an older controller for orders) every 0.05 s to 3600 s"),
    "long host": (_bytes(b'host = "' + b"h" * 10_000 + b'"'),
                  "key 'host': the host name is 10000 characters long"),
    "host with a slash": (_bytes(b'host = "a/b"'), "key 'host': 'a/b' is not a host name"),
    "empty physnet": (_bytes(b'bridge_mappings = { "" = "br0" }'),
                      "key 'bridge_mappings': '' = 'br0' names no physical network"),
    "empty bridge": (_bytes(b'bridge_mappings = { physnet1 = "" }'),
                     "'physnet1' = '' does not map a physical network to a bridge name"),
    "too big": (_bytes(b"#" * (1 << 20) + b"\n"), "is larger than 1 MiB"),
    "a directory": (_directory, "is a directory; give the TOML file itself"),
    "a fifo": (_fifo, "is not a regular file"),
    "missing": (lambda tmp_path: tmp_path / "absent.toml",
                "cannot read host config {path}: No such file or directory"),
}


@pytest.mark.parametrize("command", ["discover", "agent"])
@pytest.mark.parametrize("case", CASES)
def test_a_bad_host_config_is_one_error_line_and_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, case: str) -> None:
    monkeypatch.setenv("PASSTHRU_TOKEN", "t")  # so the agent has no other reason to stop
    write, expected = CASES[case]
    path = write(tmp_path)
    result = run(f"passthru {command} --config {shlex.quote(str(path))}")
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and str(path) in lines[0]
    assert expected.format(path=path) in lines[0]
