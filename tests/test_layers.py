"""The package's layers, as import-linter checks them (the contracts are in
pyproject.toml): each part imports only the parts below it, only the controller's app
imports its routers, and no parts import each other in a loop.

From the bottom: the error tree; the domain core (`pci/`, no I/O); beside each other,
importing none of each other, the simulated hardware, the host side, the controller,
the fleet page and the HTTP client (which reads only the controller's published
settings); the served application, which mounts the page beside the API; the demo; the
CLI on top. Every import counts, a function's or a type checker's own included.
`tests/cli/test_import_weight.py` checks what a CLI command loads at run time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import lint_imports

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def test_every_import_contract_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    status = lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert status == 0, report
    assert "4 kept, 0 broken" in report


def test_an_upward_import_breaks_the_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # The same layer contract over a package whose core imports its CLI.
    package = tmp_path / "layered"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("from layered import pci\n")
    (package / "pci.py").write_text("def fit() -> None:\n    from layered.cli import main\n")
    config = tmp_path / "setup.cfg"
    config.write_text("[importlinter]\nroot_package = layered\n\n"
                      "[importlinter:contract:layers]\nname = layers\ntype = layers\n"
                      "containers = layered\nlayers =\n    cli\n    pci\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    status = lint_imports(config_filename=str(config), no_cache=True, no_logo=True)

    assert status == 1
    assert "layered.pci -> layered.cli" in capsys.readouterr().out
