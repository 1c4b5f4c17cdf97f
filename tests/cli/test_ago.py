from datetime import UTC, datetime

import pytest

from passthru.cli.hosts import ago

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("stamp", "expected"), [
    (None, "never"),
    ("2026-11-23T11:59:56Z", "4 s ago"),
    ("2026-11-23T11:57:00+00:00", "3 min ago"),
    ("2026-11-23T09:30:00Z", "2 h ago"),
    ("2026-11-20T12:00:00Z", "3 d ago"),
    ("2026-11-23T12:00:05Z", "0 s ago"),  # a controller clock slightly ahead
])
def test_ago(stamp: str | None, expected: str) -> None:
    assert ago(stamp, NOW) == expected
