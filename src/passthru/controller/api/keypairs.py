"""Keypairs: a project's SSH public keys, Nova's `os-keypairs` resource and bodies.

A server booted with `key_name` gets the key in its cloud-init seed. Only public keys are
taken (passthru makes no private keys), checked as `controller.catalog.keypairs` says. A
key cannot be deleted while a server that names it waits to be spawned: the spawn order
reads it then.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import CleanText, Name, NamePath
from passthru.controller.api.paging import Links, Page, PagedList
from passthru.controller.catalog import keypairs
from passthru.controller.catalog.keypairs import find_keypair, parse_public_key
from passthru.controller.store.models import KeypairRow

router = APIRouter(prefix="/v2/{tenant_id}/os-keypairs", tags=["keypairs"],
                   responses=ERROR_RESPONSES)


class KeypairCreate(BaseModel):
    name: Name
    public_key: CleanText = Field(min_length=1, max_length=16384,
                            description="one OpenSSH public key line, as in id_ed25519.pub")


class KeypairCreateBody(BaseModel):
    keypair: KeypairCreate


class Keypair(BaseModel):
    name: str
    type: str
    public_key: str
    fingerprint: str


class KeypairBody(BaseModel):
    keypair: Keypair


class KeypairList(PagedList):
    """Nova's list shape: each entry wrapped in its own `keypair`."""

    keypairs: list[KeypairBody]
    keypairs_links: Links


def keypair_view(row: KeypairRow) -> Keypair:
    return Keypair(name=row.name, type=row.public_key.split(None, 1)[0],
                   public_key=row.public_key, fingerprint=row.fingerprint)


@router.get("", response_model=KeypairList, summary="List the project's keypairs")
def list_keypairs(tenant_id: NamePath, who: TenantCaller, store: StoreDep, page: Page
                  ) -> KeypairList:
    """By name; the marker is a keypair's name, as Nova's."""
    with store.read() as session:
        rows, more = keypairs.page(session, tenant_id, page)
        return KeypairList(keypairs=[KeypairBody(keypair=keypair_view(r)) for r in rows],
                           keypairs_links=page.next_links(rows, more, lambda r: r.name))


@router.post("", status_code=201, response_model=KeypairBody,
             summary="Import an SSH public key")
def create_keypair(tenant_id: NamePath, who: TenantCaller, store: StoreDep,
                   body: KeypairCreateBody) -> KeypairBody:
    spec = body.keypair
    key = parse_public_key(spec.public_key)
    with store.write() as session:
        row = keypairs.create(session, tenant_id, spec.name, key)
        return KeypairBody(keypair=keypair_view(row))


@router.get("/{name}", response_model=KeypairBody, summary="Show a keypair")
def show_keypair(tenant_id: NamePath, who: TenantCaller, store: StoreDep,
                 name: NamePath) -> KeypairBody:
    with store.read() as session:
        return KeypairBody(keypair=keypair_view(find_keypair(session, tenant_id, name)))


@router.delete("/{name}", status_code=204, summary="Delete a keypair")
def delete_keypair(tenant_id: NamePath, who: TenantCaller, store: StoreDep,
                   name: NamePath) -> Response:
    with store.write() as session:
        keypairs.delete(session, tenant_id, name)
    return Response(status_code=204)
