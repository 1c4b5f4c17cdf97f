"""Every error passthru reports to a person, by what it means, not where it was raised.

    PassthruError                     500  exit 1   anything else (a demo step that failed)
    ├── InvalidInputError             400  exit 2   a value, spec, request, file or option
    │   └── TooLargeError             413  exit 2   a body over the size the controller takes
    ├── NotFoundError                 404  exit 3   no such resource (or none the caller sees)
    ├── ConflictError                 409  exit 4   clashes with the stored state, or the
    │   │                                           resource's state does not allow it
    │   └── NoCapacityError           409  exit 5   no host can take it; says why of each
    ├── UnauthorizedError             401  exit 6   no token, or an unknown one
    ├── ForbiddenError                403  exit 7   a token whose role or project forbids it
    ├── HostError                     500  exit 8   the host side failed: sysfs, libvirt,
    │                                               netlink, images, instance files
    └── UnavailableError              503  exit 9   the controller or its store cannot be
                                                    reached now; send it again later

Each class carries its HTTP status (`status`, what the API answers), the `kind` the
API's error body names, and its exit code (`exit_code`, what a `passthru` command exits
with), so that the API's handler and the CLI's wrapper read them off the error. A refusal
the CLI gets from the API takes the class its body's `kind` names (`for_answer`), so a
command exits alike whether it found the problem itself or the controller did. A host
failure answers 500, not 502: a client sends a request that met a 502 (a proxy without its
controller) again. Every message says what was wrong, where, and what to do. The module
imports nothing of passthru's: the domain core raises these too.
"""

from __future__ import annotations

import copy
from typing import Self


class PassthruError(Exception):
    """Base of every error passthru reports to a person."""

    kind: str = "error"
    status: int = 500
    exit_code: int = 1

    def restated(self, message: str) -> Self:
        """The same error (class, status, exit code) saying `message`: a caller adds what
        it was doing."""
        again = copy.copy(self)
        again.args = (message,)
        return again


class InvalidInputError(PassthruError, ValueError):
    """A value (address, id, spec, request, flavor, file, option) that cannot be used."""

    kind = "invalid_input"
    status = 400
    exit_code = 2


class TooLargeError(InvalidInputError):
    """A request body over the size the controller takes (an image file past the limit)."""

    kind = "too_large"
    status = 413


class NotFoundError(PassthruError):
    """No such resource (or none the caller may see)."""

    kind = "not_found"
    status = 404
    exit_code = 3


class ConflictError(PassthruError):
    """The request clashes with the stored state (a name taken, a resource in use, a
    change made meanwhile), or the resource's state does not allow it now."""

    kind = "conflict"
    status = 409
    exit_code = 4


class NoCapacityError(ConflictError):
    """No host can take the request now; the message says what each host lacked."""

    kind = "no_capacity"
    exit_code = 5


class UnauthorizedError(PassthruError):
    """No token, or one the controller does not know."""

    kind = "unauthorized"
    status = 401
    exit_code = 6


class ForbiddenError(PassthruError):
    """A known token whose role or project does not allow the request."""

    kind = "forbidden"
    status = 403
    exit_code = 7


class HostError(PassthruError):
    """A host-side step failed: reading sysfs, libvirt, netlink, an image, instance files."""

    kind = "host"
    status = 500
    exit_code = 8


class UnavailableError(PassthruError):
    """The controller, or its store, cannot be reached now; the request may be sent again."""

    kind = "unavailable"
    status = 503
    exit_code = 9


#: Every class of the tree, its base first.
TREE: tuple[type[PassthruError], ...] = (
    PassthruError, InvalidInputError, TooLargeError, NotFoundError, ConflictError,
    NoCapacityError, UnauthorizedError, ForbiddenError, HostError, UnavailableError)

_BY_KIND = {kind.kind: kind for kind in TREE}
#: Answers that say "send it again later": a rate limit, a proxy without its controller.
_LATER = frozenset({429, 502, 504})
_BY_STATUS = {kind.status: kind for kind in reversed(TREE)}  # a status's first class wins


def for_answer(status: int | None, kind: str | None = None) -> type[PassthruError]:
    """The class of an API answer: by the `kind` its error body names, else by its status
    (None: no answer came, the controller is away)."""
    if (named := _BY_KIND.get(kind or "")) is not None:
        return named
    if status is None or status in _LATER:
        return UnavailableError
    return _BY_STATUS.get(status, InvalidInputError if 400 <= status < 500 else PassthruError)
