import inspect
from importlib import import_module

from typer.testing import CliRunner

from passthru.cli.app import PANELS, commands
from passthru.cli.main import app


def declared() -> dict[str, str]:
    """Each declared command's first paragraph, once every module the table names has
    declared its commands."""
    for entries in PANELS.values():
        for module, _ in entries.values():
            import_module(f"passthru.cli.{module}")
    paragraphs = {}
    for info in commands.registered_commands:
        text = inspect.cleandoc(info.help if info.help is not None
                                else inspect.getdoc(info.callback) or "")
        paragraphs[info.name] = " ".join(text.split("\n\n")[0].split())
    return paragraphs


def test_every_command_has_its_place_in_the_help() -> None:
    listed = [name for entries in PANELS.values() for name in entries]
    assert sorted(declared()) == sorted(listed)
    for panel, entries in PANELS.items():
        for name, (module, _) in entries.items():
            info = next(i for i in commands.registered_commands if i.name == name)
            assert info.callback.__module__ == f"passthru.cli.{module}", name
            assert info.rich_help_panel == panel, name


def test_the_table_gives_each_command_its_first_paragraph() -> None:
    paragraphs = declared()
    for entries in PANELS.values():
        for name, (_, summary) in entries.items():
            assert summary == paragraphs[name], name


def test_the_help_shows_the_groups_in_order() -> None:
    text = CliRunner().invoke(app, ["--help"], terminal_width=100).output
    positions = [text.index(panel) for panel in PANELS]
    assert positions == sorted(positions)
    names = [name for entries in PANELS.values() for name in entries]
    positions = [text.index(f"│ {name} ") for name in names]
    assert positions == sorted(positions)


def test_the_help_gives_each_command_its_first_paragraph() -> None:
    text = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    for name in [n for entries in PANELS.values() for n in entries]:
        assert f"│ {name} " in text
    assert "List this project's servers with their hosts and PCI devices." in text
    # A command's own help is typer's, with its options.
    own = CliRunner().invoke(app, ["list", "--help"], terminal_width=200).output
    assert "--all-projects" in own and "--url" in own


def test_an_unknown_command_is_refused() -> None:
    result = CliRunner().invoke(app, ["lsit"])
    assert result.exit_code == 2
    assert "No such command 'lsit'" in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("passthru ")
