"""What every endpoint needs: the store and the caller (and, for images, their files).

The dependencies are `async def` because none of them blocks: FastAPI runs a plain `def`
dependency in its thread pool, a thread hop each, which cost an idle agent's long-poll
a quarter of its CPU."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import State
from starlette.requests import HTTPConnection

from passthru.controller.api.fields import NamePath
from passthru.controller.auth import Principal
from passthru.controller.catalog.cache import Catalog
from passthru.controller.catalog.image_files import ImageFiles
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.settings import Settings
from passthru.controller.store.db import Store
from passthru.controller.token_cache import TokenCache


class _Declared(HTTPBearer):
    """The bearer scheme, declared for the OpenAPI document; `api.limits` has already
    checked the token and refused requests without a known one, so the header is not
    parsed again."""

    async def __call__(self, request: HTTPConnection) -> HTTPAuthorizationCredentials | None:
        return None


_bearer = _Declared(auto_error=False, scheme_name="HTTPBearer",
                    description="A token from `passthru host-token`, `passthru "
                    "token-create` or the data dir's admin-token file")


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def scheduler_of(request: Request) -> Scheduler:
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler


def catalog_of(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


# A route on the hot path (POST /servers) takes the request and calls the `*_of` above
# instead: each dependency is solved anew on every request.
async def _store(request: Request) -> Store:
    return store_of(request)


StoreDep = Annotated[Store, Depends(_store)]


async def _scheduler(request: Request) -> Scheduler:
    return scheduler_of(request)


SchedulerDep = Annotated[Scheduler, Depends(_scheduler)]


async def _catalog(request: Request) -> Catalog:
    return catalog_of(request)


CatalogDep = Annotated[Catalog, Depends(_catalog)]


async def _image_files(request: Request) -> ImageFiles:
    files: ImageFiles = request.app.state.image_files
    return files


ImageFilesDep = Annotated[ImageFiles, Depends(_image_files)]


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]


async def identify(state: State, token: str) -> Principal:
    """Who `token` belongs to (UnauthorizedError if nobody, or if it expired): the one
    lookup of a token, made by `api.limits` before a request's body is read. From the
    replica's memory when it holds the token, in the event loop; else in the store, in
    a worker thread. A revoked token fails on its next use, on every replica (see
    controller.token_cache)."""
    tokens: TokenCache = state.tokens
    return (await tokens.known(token)).principal_at()


#: The bearer scheme on a route, for the OpenAPI document.
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def _caller(request: Request, _credentials: _Credentials) -> Principal:
    principal: Principal = request.state.principal
    return principal


Caller = Annotated[Principal, Depends(_caller)]


async def _tenant_caller(tenant_id: NamePath, request: Request,
                         _credentials: _Credentials) -> Principal:
    # The principal read here rather than through `Caller`: a level of dependencies
    # less to solve on every request of a project's routes.
    who: Principal = request.state.principal
    who.require_project(tenant_id)
    return who


#: The caller of a `/v2/{tenant_id}/...` route, checked to belong to that project.
TenantCaller = Annotated[Principal, Depends(_tenant_caller)]
