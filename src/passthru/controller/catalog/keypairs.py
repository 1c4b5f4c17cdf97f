"""SSH public keys as `passthru keypair-create` takes them: one OpenSSH line, checked.

The line is `TYPE BASE64 [COMMENT]` (what `ssh-keygen` writes to `id_*.pub`). The base64
body is the key in SSH wire format, which names its type again and then carries the key
itself; the whole of it is read, so that a truncated or pasted-together key is refused
here rather than by cloud-init inside a guest nobody can log into. The fingerprint is
`ssh-keygen -l`'s: SHA256 of the body, in unpadded base64.

Keys belong to a project: `find_keypair` looks one up by name there, and a key a server
waiting to be spawned names is not deleted (the spawn order reads it then).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from passthru.controller.catalog.rules import require_free
from passthru.controller.store.models import KeypairRow, ServerRow, ServerStatus
from passthru.controller.store.paging import Window, by, rows_page
from passthru.errors import ConflictError, InvalidInputError, NotFoundError

_ED25519 = "ssh-ed25519"
_RSA = "ssh-rsa"
#: ECDSA curves and the length of one point coordinate on each, in bytes.
_ECDSA = {"ecdsa-sha2-nistp256": 32, "ecdsa-sha2-nistp384": 48, "ecdsa-sha2-nistp521": 66}
KEY_TYPES = (_ED25519, _RSA, *_ECDSA)
_MIN_RSA_BITS = 1024


@dataclass(frozen=True, slots=True)
class PublicKey:
    type: str
    line: str
    fingerprint: str


class _Wire:
    """Reads SSH wire-format strings (a 4-byte big-endian length, then the bytes)."""

    def __init__(self, blob: bytes) -> None:
        self.blob, self.at = blob, 0

    def string(self, what: str) -> bytes:
        if self.at + 4 > len(self.blob):
            raise _TruncatedError(what)
        size = int.from_bytes(self.blob[self.at:self.at + 4], "big")
        start, self.at = self.at + 4, self.at + 4 + size
        if self.at > len(self.blob):
            raise _TruncatedError(what)
        return self.blob[start:self.at]

    def done(self) -> bool:
        return self.at == len(self.blob)


class _TruncatedError(Exception):
    pass


def _check_body(kind: str, wire: _Wire) -> str | None:
    """Why the key after the type is not a `kind` key, or None when it is one."""
    if kind == _ED25519:
        if len(wire.string("key")) != 32:
            return "an ed25519 key is 32 bytes"
    elif kind == _RSA:
        wire.string("exponent")
        modulus = wire.string("modulus").lstrip(b"\0")
        if len(modulus) * 8 < _MIN_RSA_BITS:
            return f"an RSA key needs at least {_MIN_RSA_BITS} bits"
    else:
        curve = wire.string("curve").decode(errors="replace")
        if kind != f"ecdsa-sha2-{curve}":
            return f"it names curve {curve!r}"
        point = wire.string("point")
        if len(point) != 1 + 2 * _ECDSA[kind] or point[0] != 4:
            return "its point is not an uncompressed point on the curve"
    return None if wire.done() else "extra bytes follow the key"


def parse_public_key(text: str) -> PublicKey:
    """The checked key of one OpenSSH public key line, or a InvalidInputError saying why not."""
    line = text.strip()
    advice = "give the .pub file ssh-keygen wrote (e.g. ~/.ssh/id_ed25519.pub)"
    if not line or "\n" in line or "\r" in line:
        raise InvalidInputError("the public key must be one line 'TYPE BASE64 [COMMENT]'; "
                                f"{advice}")
    words = line.split(None, 2)
    kind = words[0]
    if kind not in KEY_TYPES:
        if "PRIVATE KEY" in line:
            raise InvalidInputError(f"this is a private key, not a public one; {advice}")
        raise InvalidInputError(f"public key type {kind[:40]!r} is not one of "
                                f"{', '.join(KEY_TYPES)}; {advice}")
    if len(words) < 2:
        raise InvalidInputError(f"the {kind} public key has no key after its type; {advice}")
    try:
        blob = base64.b64decode(words[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"the {kind} public key's body is not base64; {advice}") from None
    wire = _Wire(blob)
    try:
        named = wire.string("type").decode(errors="replace")
        if named != kind:
            raise InvalidInputError(f"the public key line says {kind} but its body is a "
                                    f"{named[:40]!r} key; {advice}")
        problem = _check_body(kind, wire)
    except _TruncatedError as cut:
        problem = f"it ends before its {cut}"
    if problem is not None:
        raise InvalidInputError(f"the {kind} public key is damaged: {problem}; {advice}")
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return PublicKey(kind, " ".join(words), f"SHA256:{digest}")


def find_keypair(session: Session, project: str, name: str, *, keep: bool = False,
                 lock: bool = False) -> KeypairRow:
    """The project's keypair `name`. `keep`: it cannot be deleted until this transaction
    ends (a boot naming it); `lock`: nothing else may name it meanwhile (its delete). On
    PostgreSQL FOR SHARE and FOR UPDATE; SQLite writers hold the whole store anyway."""
    query = select(KeypairRow).where(KeypairRow.project == project, KeypairRow.name == name)
    if keep or lock:
        query = query.with_for_update(read=not lock)
    row = session.scalars(query).first()
    if row is None:
        raise NotFoundError(f"project {project} has no keypair {name!r} (list them with "
                            "passthru keypair-list)")
    return row


def page(session: Session, project: str, window: Window) -> tuple[list[KeypairRow], bool]:
    """The project's keypairs by name; the marker is a keypair's name, as Nova's."""
    mine = KeypairRow.project == project
    return rows_page(session, select(KeypairRow).where(mine), (KeypairRow.name,), window,
                     "keypair", "name", by(KeypairRow.name, scope=[mine]))


def create(session: Session, project: str, name: str, key: PublicKey) -> KeypairRow:
    require_free(session, KeypairRow.name, name,
                 f"project {project} has a keypair named {name!r} already",
                 KeypairRow.project == project)
    row = KeypairRow(name=name, project=project, public_key=key.line,
                     fingerprint=key.fingerprint)
    session.add(row)
    session.flush()
    return row


def delete(session: Session, project: str, name: str) -> None:
    row = find_keypair(session, project, name, lock=True)
    waiting = session.scalar(select(func.count()).select_from(ServerRow).where(
        ServerRow.project == project, ServerRow.key_name == name,
        ServerRow.status == ServerStatus.BUILD))
    if waiting:
        raise ConflictError(f"keypair {name} is named by {waiting} server(s) still being "
                            "built, which get it when spawned; delete it once they are "
                            "ACTIVE")
    session.delete(row)
