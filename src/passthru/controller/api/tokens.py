"""Tokens: who am I, and (admin) tokens for project members."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from passthru.controller.api.deps import Caller, StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import Name
from passthru.controller.auth import issue_token
from passthru.controller.models import Role

router = APIRouter(tags=["tokens"], responses=ERROR_RESPONSES)


class Identity(BaseModel):
    role: Role
    project: str | None
    host: str | None


class MemberTokenCreate(BaseModel):
    project: Name


class MemberTokenCreateBody(BaseModel):
    token: MemberTokenCreate


class MemberToken(BaseModel):
    role: Role
    project: str
    token: str


@router.get("/v2/whoami", response_model=Identity, summary="The role and project of a token")
def whoami(who: Caller) -> Identity:
    return Identity(role=who.role, project=who.project, host=who.host)


@router.post("/v2/{tenant_id}/tokens", status_code=201, response_model=MemberToken,
             summary="Issue a token for a member of a project (admin)")
def create_member_token(who: TenantCaller, store: StoreDep, body: MemberTokenCreateBody
                        ) -> MemberToken:
    who.require_admin("issuing member tokens")
    project = body.token.project
    with store.write() as session:
        token = issue_token(session, Role.MEMBER, project=project)
    return MemberToken(role=Role.MEMBER, project=project, token=token)
