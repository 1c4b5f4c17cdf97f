"""The error tree: each meaning has its own status, body kind and exit code; every error
class passthru raises sits under one meaning; an API answer's kind maps back to its class."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import passthru
from passthru.errors import (
    TREE,
    ConflictError,
    InvalidInputError,
    NoCapacityError,
    PassthruError,
    TooLargeError,
    UnavailableError,
    for_answer,
)

#: Errors with no meaning of their own: a demo's failed step or cluster, told apart by
#: their message only; the CLI's ApiError takes the meaning its answer names.
_GENERIC = {"DemoError", "StepFailedError", "ApiError"}


def _all_error_classes() -> set[type[PassthruError]]:
    for module in pkgutil.walk_packages(passthru.__path__, "passthru."):
        importlib.import_module(module.name)
    found: set[type[PassthruError]] = set()
    todo: list[type[PassthruError]] = [PassthruError]
    while todo:
        for child in todo.pop().__subclasses__():
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_each_meaning_has_its_own_kind_and_exit_code() -> None:
    assert len({meaning.kind for meaning in TREE}) == len(TREE)
    codes = [meaning.exit_code for meaning in TREE if meaning is not TooLargeError]
    assert len(set(codes)) == len(codes)
    assert 0 not in codes and TooLargeError.exit_code == InvalidInputError.exit_code
    assert (InvalidInputError.status, ConflictError.status, NoCapacityError.status) == (
        400, 409, 409)


def test_every_error_class_has_a_meaning() -> None:
    meanings = set(TREE) - {PassthruError}
    loose = sorted(kind.__qualname__ for kind in _all_error_classes() - set(TREE)
                   if kind.__name__ not in _GENERIC
                   and not any(issubclass(kind, meaning) for meaning in meanings))
    assert loose == []


def test_the_host_side_and_the_scheduler_are_under_their_meanings() -> None:
    from passthru.controller.scheduler.placement import NoValidHostError
    from passthru.host.libvirt_driver import LibvirtError
    from passthru.pci.lifecycle import ClaimError
    from passthru.pci.spec import DeviceSpecError

    assert NoValidHostError.exit_code == 5 and NoValidHostError.kind == "no_capacity"
    assert (ClaimError.status, LibvirtError.exit_code, DeviceSpecError.status) == (409, 8, 400)


@pytest.mark.parametrize("meaning", TREE)
def test_an_answer_maps_back_to_its_class(meaning: type[PassthruError]) -> None:
    assert for_answer(meaning.status, meaning.kind) is meaning


@pytest.mark.parametrize(("status", "expected"), [
    (None, UnavailableError), (429, UnavailableError), (502, UnavailableError),
    (409, ConflictError), (422, InvalidInputError), (418, InvalidInputError),
    (500, PassthruError),
])
def test_an_answer_without_a_kind_maps_by_status(status: int | None,
                                                 expected: type[PassthruError]) -> None:
    assert for_answer(status) is expected
    assert for_answer(status, "not-a-kind") is expected


def test_restated_keeps_the_class_and_codes() -> None:
    error = NoCapacityError("no host has 1 free T4")
    again = error.restated(f"boot vm: {error}")
    assert type(again) is NoCapacityError and str(again) == "boot vm: no host has 1 free T4"
    assert str(error) == "no host has 1 free T4"
