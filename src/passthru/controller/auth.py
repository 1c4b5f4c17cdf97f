"""Bearer tokens and what each role may do.

- admin: everything, in any project.
- member: their own project's servers and ports; reads the catalog (flavors, images,
  networks they can use, PCI flavors) but changes none of it.
- agent: reports inventory and heart-beats for its one host, nothing else.

Tokens are random and stored only as SHA-256 digests: a stolen database yields none.
A token may be named and given an expiry; it stops working when it expires or when its
row is deleted (revoked), on its next use on every replica. A token is looked up in the
store by its unique digest (`known_token`), and what is found is kept in memory by
`controller.token_cache`, which the store tells of every change of the set of tokens
(triggers: the `tokens` topic on SQLite, a notification on `TOKENS_CHANNEL` on
PostgreSQL), whoever makes it; this process's own changes are told it on commit too.
Issuing and revoking tokens are recorded as events.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from passthru.controller.enums import EventKind, Role
from passthru.controller.store.events import record
from passthru.controller.store.models import TokenRow, utcnow
from passthru.controller.store.paging import Window, by, rows_page
from passthru.controller.store.private_files import create_private
from passthru.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    UnauthorizedError,
)

ADMIN_PROJECT = "admin"
#: The longest a token may be given to live.
MAX_LIFETIME = timedelta(days=3660)
#: The PostgreSQL channel a change of the set of tokens is notified on (by a trigger of
#: the migration 0008_reqpath).
TOKENS_CHANNEL = "passthru_tokens"
#: Where a session notes that its transaction changed the set of tokens (`info`).
TOKENS_CHANGED = "passthru_tokens_changed"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a role, the project or host the token is bound to, and the
    token's id (None for a principal made up outside a request)."""

    role: Role
    project: str | None = None
    host: str | None = None
    token_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def describe(self) -> str:
        bound = self.host if self.role is Role.AGENT else self.project
        return f"{self.role} token of {bound}" if bound else f"{self.role} token"

    def require_admin(self, action: str) -> None:
        if not self.is_admin:
            raise ForbiddenError(f"{action} needs an admin token; this is a {self.describe()}")

    def require_project(self, tenant_id: str) -> None:
        """The `{tenant_id}` of the path must be the caller's project (admins: any)."""
        if self.role is Role.AGENT:
            raise ForbiddenError(f"an agent token (host {self.host}) may only report its "
                                 "host's inventory and heart-beat")
        if not self.is_admin and tenant_id != self.project:
            raise ForbiddenError(f"this token belongs to project {self.project}, not "
                                 f"{tenant_id}; use /v2/{self.project}/...")

    def require_host(self, host: str) -> None:
        if self.is_admin or (self.role is Role.AGENT and self.host == host):
            return
        raise ForbiddenError(f"a {self.describe()} cannot report for host {host}; give the "
                             f"agent a token made with passthru host-token {host}")


def expiry(expires_in: int | None, expires_at: datetime | None,
           now: datetime | None = None) -> datetime | None:
    """When a new token expires: `expires_in` seconds from now, or at `expires_at` (a time
    without a zone is UTC); None for never."""
    now = now or utcnow()
    if expires_in is not None and expires_at is not None:
        raise InvalidInputError("give expires_in or expires_at, not both")
    if expires_in is not None:
        if not 0 < expires_in <= MAX_LIFETIME.total_seconds():
            raise InvalidInputError(f"expires_in {expires_in} is not between 1 and "
                                    f"{MAX_LIFETIME.total_seconds():.0f} seconds")
        return now + timedelta(seconds=expires_in)
    if expires_at is None:
        return None
    try:
        moment = (expires_at.astimezone(UTC) if expires_at.tzinfo
                  else expires_at.replace(tzinfo=UTC))
    except OverflowError:  # a zone's offset past year 1 or 9999
        moment = None
    if moment is None or not now < moment <= now + MAX_LIFETIME:
        raise InvalidInputError(f"expires_at {expires_at.isoformat()} is not between now "
                                f"({now:%Y-%m-%d %H:%M:%S} UTC) and {MAX_LIFETIME.days} days "
                                "from now")
    return moment


def describe_token(row: TokenRow) -> str:
    """A token as events and messages name it: 'member token 7 (ci) of project alpha'."""
    name = f" ({row.name})" if row.name else ""
    bound = (f" of host {row.host}" if row.role is Role.AGENT
             else f" of project {row.project}" if row.project else "")
    return f"{row.role} token {row.id}{name}{bound}"


@dataclass(frozen=True, slots=True)
class Issued:
    """A token just issued: its row, and the token itself, which is never stored."""

    row: TokenRow
    token: str


def issue_token(session: Session, role: Role, *, project: str | None = None,
                host: str | None = None, name: str | None = None,
                expires_at: datetime | None = None, why: str = "") -> Issued:
    """A new token; only its digest is stored, so this is the one time it is seen."""
    token = "pt_" + secrets.token_urlsafe(32)
    row = TokenRow(digest=digest(token), role=role, project=project, host=host, name=name,
                   expires_at=expires_at)
    session.add(row)
    session.flush()
    _tokens_changed(session)
    until = f", expires {expires_at:%Y-%m-%d %H:%M:%S} UTC" if expires_at else ""
    record(session, EventKind.TOKEN_ISSUED, f"{describe_token(row)}{until}{why}", host=host)
    return Issued(row, token)


@dataclass(frozen=True, slots=True)
class Known:
    """A token found in the store: whose it is, and until when."""

    principal: Principal
    expires_at: datetime | None

    def principal_at(self, now: datetime | None = None) -> Principal:
        """The principal, or UnauthorizedError if the token has expired by `now`."""
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            at = f"{self.expires_at:%Y-%m-%d %H:%M:%S}"
            raise UnauthorizedError(f"the token expired at {at} UTC; ask an admin for a "
                                    "new one")
        return self.principal


def known_token(connection: Connection, token: str) -> Known:
    """What the store knows of `token`, or UnauthorizedError if nothing (never issued,
    or revoked)."""
    # A plain statement of the columns needed: this runs for every token not cached.
    row = connection.execute(_IDENTIFY, {"digest": digest(token)}).first()
    if row is None:
        raise UnauthorizedError("the token is not known to this controller (never issued, "
                                "or revoked); use the admin-token file of its data dir, or "
                                "ask an admin for one")
    return Known(Principal(row.role, row.project, row.host, row.id), row.expires_at)


def principal_of(session: Session, token: str, now: datetime | None = None) -> Principal:
    """Who `token` is, or UnauthorizedError if it is unknown or expired."""
    return known_token(session.connection(), token).principal_at(now)


def _tokens_changed(session: Session) -> None:
    """This transaction changes the set of tokens: this process's token cache forgets what
    it knows once it commits (the other replicas hear of it from the store)."""
    session.info[TOKENS_CHANGED] = True


_TOKENS = TokenRow.__table__
_IDENTIFY = select(_TOKENS.c.id, _TOKENS.c.role, _TOKENS.c.project, _TOKENS.c.host,
                   _TOKENS.c.expires_at).where(_TOKENS.c.digest == bindparam("digest"))


def revoke_token(session: Session, token_id: int, by: Principal) -> TokenRow:
    """Delete token `token_id`: it stops working with the next request, on every replica.
    The last admin token is kept: without it no one could issue tokens until a restart."""
    row = session.get(TokenRow, token_id)
    if row is None:
        raise NotFoundError(f"no token {token_id}; passthru token-list shows them")
    if row.role is Role.ADMIN:
        # Locked, so that two revokes at once cannot each leave the other's token last.
        admins = session.scalars(select(TokenRow.id).where(TokenRow.role == Role.ADMIN)
                                 .with_for_update()).all()
        if len(admins) == 1:
            raise ConflictError(f"token {token_id} is the last admin token; replace it with "
                                "passthru admin-token-rotate instead")
    session.delete(row)
    _tokens_changed(session)
    record(session, EventKind.TOKEN_REVOKED, f"{describe_token(row)}, by {by.describe()}",
           host=row.host)
    return row


def token_page(session: Session, page: Window, role: Role | None
               ) -> tuple[list[TokenRow], bool]:
    """Tokens by id (the marker is a token's id), of `role` if given."""
    scope = [] if role is None else [TokenRow.role == role]
    return rows_page(session, select(TokenRow).where(*scope), (TokenRow.id,), page, "token",
                     "id", by(TokenRow.id, int, scope))


def _write_private(path: Path, text: str) -> None:
    """Write `text` so that only the owner can ever read it, replacing `path` atomically."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    with os.fdopen(create_private(temporary), "w") as file:
        file.write(text + "\n")
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)


def _file_token(session: Session, path: Path) -> TokenRow | None:
    """The admin token row of the token in `path`, if the file holds one."""
    if not path.exists():
        return None
    row = session.scalars(select(TokenRow).where(
        TokenRow.digest == digest(path.read_text().strip()))).first()
    return row if row is not None and row.role is Role.ADMIN else None


def ensure_admin_token(session: Session, path: Path) -> bool:
    """Make sure `path` holds a working admin token; returns True if a new one was made."""
    if _file_token(session, path) is not None:
        return False
    issued = issue_token(session, Role.ADMIN, project=ADMIN_PROJECT, name=path.name,
                         why=f", written to {path}")
    _write_private(path, issued.token)
    return True


def rotate_admin_token(session: Session, path: Path) -> Issued:
    """Replace the admin token in `path` by a new one and delete the old one's row, so
    that the old token stops working on every replica."""
    old = _file_token(session, path)
    issued = issue_token(session, Role.ADMIN, project=ADMIN_PROJECT, name=path.name,
                         why=f", written to {path}")
    if old is not None:
        session.delete(old)
        _tokens_changed(session)
        record(session, EventKind.TOKEN_REVOKED, f"{describe_token(old)}, replaced by "
               f"admin token {issued.row.id} in {path}")
    _write_private(path, issued.token)
    return issued
