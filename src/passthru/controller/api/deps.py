"""What every endpoint needs: the store and the caller (and, for images, their files)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from passthru.controller.api.fields import NamePath
from passthru.controller.auth import Principal, digest, principal_of
from passthru.controller.db import Store
from passthru.controller.errors import UnauthorizedError
from passthru.controller.image_files import ImageFiles
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="A token from `passthru host-token`, "
                     "`passthru token-create` or the data dir's admin-token file")


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(_store)]


def _scheduler(request: Request) -> Scheduler:
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler


SchedulerDep = Annotated[Scheduler, Depends(_scheduler)]


def _image_files(request: Request) -> ImageFiles:
    files: ImageFiles = request.app.state.image_files
    return files


ImageFilesDep = Annotated[ImageFiles, Depends(_image_files)]
def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]


def _caller(request: Request, store: StoreDep,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
            ) -> Principal:
    if credentials is None:
        raise UnauthorizedError("no token given: send 'Authorization: Bearer <token>' "
                                "(the CLI takes --token or PASSTHRU_TOKEN)")
    # Tokens are never changed once issued, so a known one needs no second lookup.
    known: dict[str, Principal] = request.app.state.principals
    key = digest(credentials.credentials)
    if key not in known:
        with store.read() as session:
            known[key] = principal_of(session, credentials.credentials)
    return known[key]


Caller = Annotated[Principal, Depends(_caller)]


def _tenant_caller(tenant_id: NamePath, who: Caller) -> Principal:
    who.require_project(tenant_id)
    return who


#: The caller of a `/v2/{tenant_id}/...` route, checked to belong to that project.
TenantCaller = Annotated[Principal, Depends(_tenant_caller)]
