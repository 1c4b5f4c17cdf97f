"""What the controller refuses, as errors the API turns into JSON with a status code."""

from __future__ import annotations

from passthru.pci.errors import PassthruError


class NotFoundError(PassthruError):
    """No such resource (or none the caller may see)."""


class ConflictError(PassthruError):
    """The request clashes with the stored state: a name taken, a resource still in use."""


class UnauthorizedError(PassthruError):
    """No token, or one the controller does not know."""


class ForbiddenError(PassthruError):
    """A known token whose role or project does not allow the request."""


class TooLargeError(PassthruError):
    """A request body over the size the controller takes (an image file past the limit)."""
