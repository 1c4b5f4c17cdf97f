"""The controller's routers parse, call and render: the statements they need are the use
cases' (`controller.servers`, `hosts`, `catalog`, `agents`, `store`), so no router builds
a statement or calls a session. A router may still open a transaction and hand its session
on, name `Session` as a type, and map the store's exceptions to answers (`api.errors`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import passthru.controller.api as api

ROUTERS = sorted(Path(api.__file__).parent.glob("*.py"))
#: What a router may take from SQLAlchemy: the session's type, and the errors it maps.
ALLOWED = {"sqlalchemy.orm": {"Session"}, "sqlalchemy.exc": None, "sqlalchemy.orm.exc": None}


def sql_in(tree: ast.AST) -> list[str]:
    """Each statement-building import and each call of a session's method in `tree`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            allowed = ALLOWED.get(node.module or "", set())
            found += [f"line {node.lineno}: from {node.module} import {alias.name}"
                      for alias in node.names if allowed is not None and alias.name not in allowed]
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {alias.name}" for alias in node.names
                      if alias.name.startswith("sqlalchemy")]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "session"):
            found.append(f"line {node.lineno}: session.{node.func.attr}(...)")
    return found


@pytest.mark.parametrize("router", ROUTERS, ids=lambda path: path.name)
def test_a_router_builds_no_statement_and_calls_no_session(router: Path) -> None:
    assert sql_in(ast.parse(router.read_text())) == []


def test_the_check_finds_a_statement_and_a_session_call() -> None:
    source = ("from sqlalchemy import func, select\nfrom sqlalchemy.orm import Session\n"
              "def count(session: Session) -> int:\n"
              "    return session.scalar(select(func.count()))\n")
    assert sql_in(ast.parse(source)) == ["line 1: from sqlalchemy import func",
                                         "line 1: from sqlalchemy import select",
                                         "line 4: session.scalar(...)"]
