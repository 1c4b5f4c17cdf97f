"""The CLI's HTTP client sends what the user typed, whatever its letters."""

from __future__ import annotations

from tests.cli.runner import as_json, ok
from tests.support.live import ServedApp


def test_a_name_with_blanks_question_marks_and_accents_reaches_the_controller(
        cli_env: ServedApp) -> None:
    name = "big GPU é?#x"
    ok(f"passthru flavor-create '{name}' --vcpus 1 --ram 512 --disk 1")
    assert as_json(f"passthru flavor-show '{name}'")["name"] == name
    assert [flavor["name"] for flavor in as_json("passthru flavor-list")] == [name]
