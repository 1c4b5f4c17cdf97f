"""Agents' answers to orders, exactly once: each answer may carry an idempotency key
(the `Idempotency-Key` header, chosen by the agent per answer and reused on every retry).
The first answer's result is kept under its key in the same transaction as its effect, so
a replay — the agent retrying after a reply it never got — gets that result back and
changes nothing, instead of being refused because the server has moved on. A key is bound
to one host, server and kind of answer; reusing it for another is refused.

Kept answers are pruned by age, by the retention sweep (`controller.store.retention`): a
replay comes within the agent's retry window, minutes, so a day's worth is plenty.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from passthru.controller.store.models import AnswerRow
from passthru.errors import ConflictError

#: The HTTP header an answer's idempotency key travels in.
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: What a key may be: printable ASCII without blanks, as long as the column holds.
KEY_PATTERN = r"^[\x21-\x7e]{1,128}$"


class AnswerKind(StrEnum):
    SPAWNED = "spawned"
    DESTROYED = "destroyed"
    POWERED = "powered"
    LOST = "lost"


def answer_once(session: Session, key: str | None, host: str, server: str, kind: AnswerKind,
                apply: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """`apply()`'s result, kept under `key`; or, for a key seen before, the result kept
    then, with `apply` not called. The second value says whether it was a replay. Without
    a key the answer is simply applied."""
    if key is None:
        return apply(), False
    kept = session.get(AnswerRow, key)
    if kept is None:
        # The key is taken first: a replay racing the first answer (PostgreSQL runs both
        # at once) waits on the key's row and then finds it, rather than applying again.
        mine = AnswerRow(key=key, host=host, server=server, kind=str(kind), result={})
        try:
            with session.begin_nested():
                session.add(mine)
        except IntegrityError:
            kept = session.get(AnswerRow, key, populate_existing=True)
        else:
            mine.result = apply()
            return mine.result, False
    if kept is None:  # taken, and gone again: pruned in between
        raise ConflictError(f"idempotency key {key!r} was in use just now; send the answer "
                            "again")
    if (kept.host, kept.server, kept.kind) != (host, server, str(kind)):
        raise ConflictError(
            f"idempotency key {key!r} was used for the {kept.kind} answer of server "
            f"{kept.server} on host {kept.host}; give each answer its own key")
    return dict(kept.result), True
