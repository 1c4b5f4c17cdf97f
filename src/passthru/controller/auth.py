"""Bearer tokens and what each role may do.

- admin: everything, in any project.
- member: their own project's servers and ports; reads the catalog (flavors, images,
  networks they can use, PCI flavors) but changes none of it.
- agent: reports inventory and heart-beats for its one host, nothing else.

Tokens are random and stored only as SHA-256 digests: a stolen database yields none.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from passthru.controller.errors import ForbiddenError, UnauthorizedError
from passthru.controller.models import Role, TokenRow

ADMIN_PROJECT = "admin"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a role, and the project or host the token is bound to."""

    role: Role
    project: str | None = None
    host: str | None = None

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


def issue_token(session: Session, role: Role, *, project: str | None = None,
                host: str | None = None) -> str:
    """A new token; only its digest is stored, so this is the one time it is seen."""
    token = "pt_" + secrets.token_urlsafe(32)
    session.add(TokenRow(digest=digest(token), role=role, project=project, host=host))
    return token


def principal_of(session: Session, token: str) -> Principal:
    row = session.scalars(select(TokenRow).where(TokenRow.digest == digest(token))).first()
    if row is None:
        raise UnauthorizedError("the token is not known to this controller; use the "
                                "admin-token file of its data dir, or ask an admin for one")
    return Principal(row.role, row.project, row.host)


def _write_private(path: Path, text: str) -> None:
    """Write `text` so that only the owner can ever read it, replacing `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text + "\n")
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)


def ensure_admin_token(session: Session, path: Path) -> bool:
    """Make sure `path` holds a working admin token; returns True if a new one was made."""
    if path.exists():
        token = path.read_text().strip()
        row = session.scalars(select(TokenRow).where(TokenRow.digest == digest(token))).first()
        if row is not None and row.role is Role.ADMIN:
            return False
    _write_private(path, issue_token(session, Role.ADMIN, project=ADMIN_PROJECT))
    return True
