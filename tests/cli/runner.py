"""Running `passthru ...` command lines in-process, as a shell would split them."""

from __future__ import annotations

import json
import shlex
from typing import Any

from typer.testing import CliRunner, Result

from passthru.cli.main import app

_RUNNER = CliRunner()


def run(line: str) -> Result:
    """Run one command line (starting with `passthru`); returns the result whatever it is."""
    words = shlex.split(line)
    assert words[0] == "passthru", line
    return _RUNNER.invoke(app, words[1:])


def ok(line: str) -> Result:
    result = run(line)
    assert result.exit_code == 0, f"{line}\n{result.output}"
    return result


def as_json(line: str) -> Any:
    return json.loads(ok(f"{line} --json").stdout)
