"""Errors of the domain core. Each message says what was wrong, where, and what to do."""

from __future__ import annotations


class PassthruError(Exception):
    """Base of every error passthru reports to a person."""


class PciValueError(PassthruError, ValueError):
    """A value (address, id, spec, request, flavor) that cannot be understood."""
