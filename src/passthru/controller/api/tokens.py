"""Tokens: who am I, and (admin) tokens for project members, the list of every token,
and revoking one. Agent tokens are issued per host (`api.hosts`).

A token is shown once, when it is issued; the list shows what each is for (role,
project or host, name, when it expires), never the token or its digest. A revoked token
stops working with its next request, on every replica.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from passthru.controller.api.deps import Caller, StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import Name
from passthru.controller.api.paging import Links, Page, PagedList
from passthru.controller.auth import (
    MAX_LIFETIME,
    Issued,
    expiry,
    issue_token,
    revoke_token,
    token_page,
)
from passthru.controller.enums import Role
from passthru.controller.store.db import Store
from passthru.controller.store.models import utcnow

router = APIRouter(tags=["tokens"], responses=ERROR_RESPONSES)
#: Token ids are the store's 32-bit integers.
MAX_ID = 2**31 - 1


class Identity(BaseModel):
    role: Role
    project: str | None
    host: str | None
    #: The token's id in the token list (what token-revoke takes).
    id: int | None = None


class TokenOptions(BaseModel):
    """What a new token is for and how long it lives (by default: for ever)."""

    name: Name | None = Field(None, description="what the token is for, shown by the list")
    expires_in: int | None = Field(None, ge=1, le=int(MAX_LIFETIME.total_seconds()),
                                   description="seconds from now until it stops working")
    expires_at: datetime | None = Field(None, description="when it stops working (UTC "
                                        "unless a zone is given)")

    def issue(self, store: Store, role: Role, *, project: str | None = None,
              host: str | None = None) -> Issued:
        until = expiry(self.expires_in, self.expires_at)
        with store.write() as session:
            return issue_token(session, role, project=project, host=host, name=self.name,
                               expires_at=until)


class MemberTokenCreate(TokenOptions):
    project: Name


class MemberTokenCreateBody(BaseModel):
    token: MemberTokenCreate


class IssuedToken(BaseModel):
    """A new token: shown this once, the controller keeps only its digest."""

    id: int
    role: Role
    name: str | None
    expires_at: datetime | None
    token: str


class MemberToken(IssuedToken):
    project: str


class TokenInfo(BaseModel):
    id: int
    name: str | None
    role: Role
    project: str | None
    host: str | None
    created_at: datetime
    expires_at: datetime | None
    expired: bool


class TokenList(PagedList):
    tokens: list[TokenInfo]
    tokens_links: Links


@router.get("/v2/whoami", response_model=Identity, summary="The role and project of a token")
async def whoami(who: Caller) -> Identity:  # nothing to wait for: no thread hop
    return Identity(role=who.role, project=who.project, host=who.host, id=who.token_id)


@router.post("/v2/{tenant_id}/tokens", status_code=201, response_model=MemberToken,
             summary="Issue a token for a member of a project (admin)")
def create_member_token(who: TenantCaller, store: StoreDep, body: MemberTokenCreateBody
                        ) -> MemberToken:
    who.require_admin("issuing member tokens")
    options = body.token
    issued = options.issue(store, Role.MEMBER, project=options.project)
    return MemberToken(id=issued.row.id, role=Role.MEMBER, project=options.project,
                       name=issued.row.name, expires_at=issued.row.expires_at,
                       token=issued.token)


@router.get("/v2/{tenant_id}/tokens", response_model=TokenList,
            summary="List every token: role, project or host, name, expiry (admin)")
def list_tokens(who: TenantCaller, store: StoreDep, page: Page,
                role: Role | None = Query(None, description="only tokens of this role"),
                ) -> TokenList:
    """By id; the marker is a token's id."""
    who.require_admin("listing tokens")
    now = utcnow()
    with store.read() as session:
        rows, more = token_page(session, page, role)
        return TokenList(tokens=[
            TokenInfo(id=row.id, name=row.name, role=row.role, project=row.project,
                      host=row.host, created_at=row.created_at, expires_at=row.expires_at,
                      expired=row.expires_at is not None and row.expires_at <= now)
            for row in rows], tokens_links=page.next_links(rows, more, lambda r: r.id))


@router.delete("/v2/{tenant_id}/tokens/{token_id}", status_code=204,
               summary="Revoke a token: it stops working at once, on every replica (admin)")
def delete_token(who: TenantCaller, store: StoreDep,
                 token_id: int = Path(ge=1, le=MAX_ID, description="as the list shows it"),
                 ) -> Response:
    who.require_admin("revoking tokens")
    with store.write() as session:
        revoke_token(session, token_id, who)
    return Response(status_code=204)
