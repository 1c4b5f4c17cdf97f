"""`passthru token-create`, `host-token`, `token-list` and `token-revoke` against a live
controller, as an operator types them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from passthru.errors import NotFoundError
from tests.cli.runner import as_json, ok, run
from tests.support.live import ServedApp


def whoami(live: ServedApp, token: str) -> int:
    return httpx.get(f"{live.url}/v2/whoami", headers={"Authorization": f"Bearer {token}"},
                     timeout=30).status_code


def test_issue_list_and_revoke_tokens(cli_env: ServedApp) -> None:
    member = as_json("passthru token-create --project alpha --name ci --expires-in 30d")
    agent = ok("passthru host-token c1 --name rack-4").stdout.strip()
    assert agent.startswith("pt_")
    expires = datetime.fromisoformat(member["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)
    listed = as_json("passthru token-list")
    assert [(t["role"], t["name"]) for t in listed] == [
        ("admin", "admin-token"), ("member", "ci"), ("agent", "rack-4")]
    table = ok("passthru token-list").stdout
    for header in ("ID", "Name", "Role", "Project / host", "Created (UTC)", "Expires (UTC)"):
        assert header in table
    assert member["token"] not in table and agent not in table
    line = next(line for line in table.splitlines() if "rack-4" in line)
    assert "c1" in line and "never" in line
    assert [t["name"] for t in as_json("passthru token-list --role agent")] == ["rack-4"]

    assert whoami(cli_env, member["token"]) == whoami(cli_env, agent) == 200
    revoked = ok(f"passthru token-revoke {listed[1]['id']} {listed[2]['id']}")
    assert f"revoked token {listed[2]['id']}" in revoked.stderr
    assert whoami(cli_env, member["token"]) == whoami(cli_env, agent) == 401
    assert [e["kind"] for e in as_json("passthru events --kind token-revoked")] == [
        "token-revoked", "token-revoked"]


def test_revoking_what_cannot_be_revoked_says_which(cli_env: ServedApp) -> None:
    (admin,) = as_json("passthru token-list")
    result = run(f"passthru token-revoke 999 {admin['id']}")
    assert result.exit_code == NotFoundError.exit_code  # the first refusal's
    assert "token 999: no token 999" in result.stderr
    assert "is the last admin token" in result.stderr


def test_a_bad_duration_is_a_usage_error(cli_env: ServedApp) -> None:
    result = run("passthru token-create --project alpha --expires-in soon")
    assert result.exit_code == 2
    assert "'soon' is not a duration" in result.output
