"""Match values: the literal, glob or regex an operator writes for a device attribute.

One spelling serves `pci_information` match values and PCI flavor values:

- a literal (`8086`, `physnet1`) matches itself;
- a glob with `*`, `?` or `[..]` (`154[cd]`, `gpu-*`) matches like a shell pattern;
- a regex written `re:...`, or recognised by regex syntax (`(`, `|`, `+`, `^`, `$`, `\\`)
  as the seed writes `(1|3)`, must match the whole value.

Globs and regexes run on RE2, which matches in linear time: no value an operator writes
can make the scheduler backtrack for ever. A literal that contains one of the regex signs
is read as a regex; escape the sign (`phys\\+net`) to match it literally.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import re2

from passthru.errors import InvalidInputError
from passthru.pci.device import PHYSICAL_NETWORK, DevType, canonical_attr, normalize_id

REGEX_PREFIX = "re:"
_REGEX_SIGNS = frozenset("(|+^$\\")
_GLOB_SIGNS = frozenset("*?[")

#: Results of glob/regex matches are remembered per matcher: the values matched (ids,
#: tags) repeat across thousands of devices and pools. Bounded so no matcher grows for ever.
_MEMO_LIMIT = 1024

#: Attributes whose values are 4-digit hex ids.
ID_ATTRS = frozenset({"vendor_id", "product_id"})

_TAG_NAME = re2.compile(r"e\.[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class MatchKind(StrEnum):
    LITERAL = "literal"
    GLOB = "glob"
    REGEX = "regex"


@dataclass(frozen=True, slots=True)
class ValueMatcher:
    """A compiled match value. `text` is what the operator wrote; two matchers are equal
    when they match the same values the same way."""

    text: str
    kind: MatchKind
    _literal: str | None = field(repr=False)
    _regex: Any = field(repr=False, compare=False)
    _ignore_case: bool = field(repr=False)
    _memo: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def matches(self, value: str | None) -> bool:
        """Whether `value` is matched; a missing value (None) never is."""
        if value is None:
            return False
        if self._literal is not None:
            return (value.lower() if self._ignore_case else value) == self._literal
        hit = self._memo.get(value)
        if hit is None:
            hit = self._regex.fullmatch(value) is not None
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[value] = hit
        return hit


def compile_regex(pattern: str, *, what: str, ignore_case: bool = False) -> Any:
    """An RE2 regex, or a InvalidInputError that quotes it and says what RE2 disliked."""
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    options.never_capture = True
    try:
        return re2.compile(pattern, options)
    except re2.error as error:
        reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) \
            else str(error)
        raise InvalidInputError(
            f"{what}: regex {pattern!r} is not valid ({reason}); regexes use RE2 syntax, "
            "without back-references or look-arounds") from None


def glob_to_regex(glob: str) -> str:
    """An RE2 regex matching what the shell-style `glob` matches (as fnmatch does)."""
    parts: list[str] = ["(?s)"]
    i, n = 0, len(glob)
    while i < n:
        char = glob[i]
        i += 1
        if char == "*":
            if parts[-1] != ".*":
                parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif char == "[":
            end = _class_end(glob, i)
            if end < 0:
                parts.append(r"\[")
            else:
                parts.append(_class_regex(glob[i:end]))
                i = end + 1
        else:
            parts.append(re2.escape(char))
    return "".join(parts)


def _class_end(glob: str, start: int) -> int:
    """Index of the `]` closing a class that opens before `start`, or -1 when unclosed."""
    j = start
    if j < len(glob) and glob[j] == "!":
        j += 1
    if j < len(glob) and glob[j] == "]":
        j += 1  # a leading ']' is a member, not the end
    return glob.find("]", j)


def _class_regex(body: str) -> str:
    """A `[..]` class as fnmatch reads it: `!` negates, `a-c` is a range, and a reversed
    range such as `c-a` matches nothing."""
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    items: list[str] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            if low <= high:
                items.append(f"{_class_char(low)}-{_class_char(high)}")
            i += 3
        else:
            items.append(_class_char(body[i]))
            i += 1
    if not items:
        return "." if negate else r"[^\x00-\x{10ffff}]"
    return "[" + ("^" if negate else "") + "".join(items) + "]"


def _class_char(char: str) -> str:
    # \x{..} is literal inside any RE2 class, whatever the character.
    return char if char.isalnum() else f"\\x{{{ord(char):x}}}"


def classify(text: str) -> tuple[MatchKind, str]:
    """The kind of a match value and its pattern (without a `re:` prefix)."""
    if text.startswith(REGEX_PREFIX):
        return MatchKind.REGEX, text[len(REGEX_PREFIX):]
    if any(c in _REGEX_SIGNS for c in text):
        return MatchKind.REGEX, text
    if any(c in _GLOB_SIGNS for c in text):
        return MatchKind.GLOB, text
    return MatchKind.LITERAL, text


def compile_value(text: str, *, what: str = "value", ignore_case: bool = False) -> ValueMatcher:
    """Compile a literal, glob or regex match value; `what` names it in error messages.

    Matchers are cached: the same text compiles once however often it is asked for.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"{what}: {text!r} is not text; write the value in quotes")
    if text == "":
        raise InvalidInputError(f"{what} is empty; write '*' to match any value")
    return _compile_value(text, what, ignore_case)


@functools.lru_cache(maxsize=4096)
def _compile_value(text: str, what: str, ignore_case: bool) -> ValueMatcher:
    kind, pattern = classify(text)
    if kind is MatchKind.LITERAL:
        return _literal(text, text.lower() if ignore_case else text, ignore_case=ignore_case)
    regex_text = pattern if kind is MatchKind.REGEX else glob_to_regex(pattern)
    regex = compile_regex(regex_text, what=what, ignore_case=ignore_case)
    return ValueMatcher(text, kind, None, regex, ignore_case)


def compile_id(text: str, *, what: str = "id") -> ValueMatcher:
    """A vendor or product id: literals normalised ('0x8086' is '8086', '0xa' is '000a'),
    globs and regexes case-insensitive."""
    if not isinstance(text, str):
        raise InvalidInputError(
            f"{what} {text!r} must be written as a quoted hex string, e.g. '8086'")
    kind, _ = classify(text)
    if kind is MatchKind.LITERAL:
        return _literal(text, normalize_id(text, what), ignore_case=True)
    if kind is MatchKind.GLOB:
        text = text.removeprefix("0x").removeprefix("0X")
    return compile_value(text, what=what, ignore_case=True)


def _literal(text: str, canonical: str, *, ignore_case: bool = False) -> ValueMatcher:
    return ValueMatcher(text, MatchKind.LITERAL, canonical, None, ignore_case)


def _compile_dev_type(text: str, what: str) -> ValueMatcher:
    kind, _ = classify(text)
    if kind is not MatchKind.LITERAL:
        return compile_value(text, what=what, ignore_case=True)
    for dev_type in DevType:
        if text.lower() in (dev_type.value.lower(), dev_type.value[5:].lower()):
            return _literal(text, dev_type.value)
    choices = ", ".join(t.value for t in DevType)
    raise InvalidInputError(f"{what} {text!r} is not a device type; expected one of {choices}")


def _compile_dev_class(text: str, what: str) -> ValueMatcher:
    kind, _ = classify(text)
    if kind is MatchKind.GLOB:
        return compile_value(text.removeprefix("0x"), what=what, ignore_case=True)
    if kind is MatchKind.REGEX:
        return compile_value(text, what=what, ignore_case=True)
    digits = text.lower().removeprefix("0x")
    if len(digits) != 6 or any(c not in "0123456789abcdef" for c in digits):
        raise InvalidInputError(
            f"{what} {text!r} is not a PCI class code: expected 6 hex digits "
            "(class, subclass, interface), e.g. '030000'; to match a class and any "
            "subclass write a glob such as '03*'")
    return _literal(text, digits, ignore_case=True)


def _compile_numa_node(text: str, what: str) -> ValueMatcher:
    kind, _ = classify(text)
    if kind is MatchKind.LITERAL and not (text.isascii() and text.isdigit()):
        raise InvalidInputError(f"{what} {text!r} is not a NUMA node number, e.g. '0'")
    return compile_value(text, what=what)


def compile_attribute(key: str, value: str | int, *, what: str | None = None) -> ValueMatcher:
    """The matcher for `key`'s value, with the rules of that attribute.

    Ids are hex (see `compile_id`); `dev_type` is one of type-PCI, type-PF, type-VF (or
    PCI, PF, VF); `dev_class` is six hex digits; `numa_node` a number; anything else
    (tags, driver, netdev) is plain text compared case-sensitively.
    """
    label = what or key
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInputError(f"{label}: {value!r} is not a value; write it as a quoted string")
    if key in ID_ATTRS:
        return compile_id(value, what=label)  # type: ignore[arg-type]
    if isinstance(value, int):
        if key != "numa_node":
            raise InvalidInputError(f"{label}: {value!r} must be written as a quoted string")
        value = str(value)
    if key == "dev_type":
        return _compile_dev_type(value, label)
    if key == "dev_class":
        return _compile_dev_class(value, label)
    if key == "numa_node":
        return _compile_numa_node(value, label)
    return compile_value(value, what=label)


def tag_key(key: str, *, what: str = "tag") -> str:
    """An extra tag's key: `e.<name>`; Nova's bare `physical_network` is `e.physical_network`."""
    key = canonical_attr(key)
    if key == PHYSICAL_NETWORK or _TAG_NAME.fullmatch(key):
        return key
    bare = not key.startswith("e.") and _TAG_NAME.fullmatch(f"e.{key}")
    hint = f"write 'e.{key}'" if bare else "e.g. 'e.group'"
    raise InvalidInputError(
        f"{what} {key!r} is not an extra tag name: extra tags start with 'e.' followed by "
        f"letters, digits, '_', '.' or '-' ({hint})")


def did_you_mean(key: str, known: Collection[str]) -> str:
    """A hint naming the known key closest to a mistyped one, or every known key."""
    close = difflib.get_close_matches(key, list(known), n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "known keys: " + ", ".join(sorted(known))
