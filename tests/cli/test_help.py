from typer.testing import CliRunner

from passthru.cli.app import PANELS, commands
from passthru.cli.main import app


def test_every_command_has_its_place_in_the_help() -> None:
    registered = [command.name for command in commands.registered_commands]
    listed = [name for names in PANELS.values() for name in names]
    assert sorted(registered) == sorted(listed)
    # Shown group by group, in the order PANELS gives.
    assert registered == listed


def test_the_help_shows_the_groups_in_order() -> None:
    text = CliRunner().invoke(app, ["--help"], terminal_width=100).output
    positions = [text.index(panel) for panel in PANELS]
    assert positions == sorted(positions)


def test_the_help_gives_each_command_its_first_paragraph() -> None:
    text = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    for name in [n for names in PANELS.values() for n in names]:
        assert f"│ {name} " in text
    assert "List this project's servers with their hosts and PCI devices." in text
    # A command's own help is typer's, with its options.
    own = CliRunner().invoke(app, ["list", "--help"], terminal_width=200).output
    assert "--all-projects" in own and "--url" in own


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("passthru ")
