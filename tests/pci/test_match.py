"""Match values: literal, glob and regex, on RE2."""

from __future__ import annotations

import fnmatch
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passthru.errors import InvalidInputError
from passthru.pci.match import (
    MatchKind,
    compile_attribute,
    compile_id,
    compile_value,
    did_you_mean,
    tag_key,
)


@pytest.mark.parametrize(("text", "kind"), [
    ("physnet1", MatchKind.LITERAL),
    ("1.0", MatchKind.LITERAL),
    ("gpu-*", MatchKind.GLOB),
    ("000[1-2]", MatchKind.GLOB),
    ("a?c", MatchKind.GLOB),
    ("(1|3)", MatchKind.REGEX),
    ("1|3", MatchKind.REGEX),
    ("a+", MatchKind.REGEX),
    ("^x$", MatchKind.REGEX),
    ("\\d", MatchKind.REGEX),
    ("re:physnet", MatchKind.REGEX),
    ("re:[ab]", MatchKind.REGEX),
])
def test_kind_is_recognised(text: str, kind: MatchKind) -> None:
    matcher = compile_value(text)
    assert matcher.kind is kind
    assert matcher.text == text


@pytest.mark.parametrize(("text", "value", "expected"), [
    ("physnet1", "physnet1", True),
    ("physnet1", "physnet10", False),
    ("physnet1", "PHYSNET1", False),
    ("gpu-*", "gpu-fast", True),
    ("gpu-*", "xgpu-fast", False),
    ("000[1-2]", "0002", True),
    ("000[1-2]", "0003", False),
    ("000[!1-2]", "0003", True),
    ("a?c", "abc", True),
    ("a?c", "abbc", False),
    ("[", "[", True),
    ("[z-a]", "z", False),  # a reversed range matches nothing, as in fnmatch
    ("x[!z-a]", "xq", True),
    ("a[ .]b", "a b", True),
    ("(1|3)", "3", True),
    ("(1|3)", "13", False),  # a regex matches the whole value
    ("(1|3)", "2", False),
    ("re:phys", "physnet", False),
    ("re:phys.*", "physnet", True),
    ("re:a.c", "a.c", True),
    ("1.0", "1x0", False),  # '.' alone does not make a regex
])
def test_matches(text: str, value: str, expected: bool) -> None:
    assert compile_value(text).matches(value) is expected


@pytest.mark.parametrize("text", ["x", "*", "re:.*", "(1|3)"])
def test_a_missing_value_never_matches(text: str) -> None:
    assert compile_value(text).matches(None) is False


def test_ignore_case() -> None:
    assert compile_value("AB*", ignore_case=True).matches("abc")
    assert compile_value("Ab", ignore_case=True).matches("aB")
    assert not compile_value("AB*").matches("abc")


@pytest.mark.parametrize(("text", "message"), [
    ("", "product_id is empty; write '*' to match any value"),
    ("(1|3", "product_id: regex '(1|3' is not valid (missing )"),
    ("re:(a)\\1", "regex '(a)\\\\1' is not valid"),
    ("re:(?=a)", "not valid"),
])
def test_bad_values_are_refused_with_the_value_quoted(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        compile_value(text, what="product_id")
    assert message in str(raised.value)


def test_non_text_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="not text"):
        compile_value(3)  # type: ignore[arg-type]


def test_no_regex_can_backtrack_for_ever() -> None:
    # Exponential in a backtracking engine; linear on RE2.
    assert not compile_value("re:(a+)+$").matches("a" * 50_000 + "b")
    assert not compile_value("(x|x)*y").matches("x" * 50_000)


def test_compiled_matchers_are_cached() -> None:
    assert compile_value("re:ca.he") is compile_value("re:ca.he")


def test_remembered_results_stay_right_past_the_memo_bound() -> None:
    matcher = compile_value("re:v[0-9]*7")
    values = [f"v{n}" for n in range(3000)]
    assert [v for v in values if matcher.matches(v)] == [v for v in values if v.endswith("7")]
    assert matcher.matches("v7") and not matcher.matches("v8")


@pytest.mark.parametrize(("text", "value", "expected"), [
    ("8086", "8086", True),
    ("0x8086", "8086", True),
    ("0X8086", "8086", True),
    ("0xa", "000a", True),
    ("a", "000a", True),
    ("10DE", "10de", True),
    ("8086", "8087", False),
    ("154[CD]", "154c", True),
    ("0x154*", "1540", True),
    ("re:15[0-9A-F]{2}", "15bc", True),
    ("(154c|1572)", "1572", True),
    ("*", "abcd", True),
])
def test_ids(text: str, value: str, expected: bool) -> None:
    assert compile_id(text, what="product_id").matches(value) is expected


@pytest.mark.parametrize(("text", "message"), [
    ("80x86", "product_id '80x86' is not a hex number"),
    ("10000", "out of range"),
    ("v1", "not a hex number"),
])
def test_bad_ids(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        compile_id(text, what="product_id")
    assert message in str(raised.value)


def test_an_id_written_as_a_number_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="quoted hex string"):
        compile_id(8086)  # type: ignore[arg-type]


@pytest.mark.parametrize(("key", "text", "value", "expected"), [
    ("dev_type", "type-PF", "type-PF", True),
    ("dev_type", "PF", "type-PF", True),
    ("dev_type", "vf", "type-VF", True),
    ("dev_type", "type-PF", "type-VF", False),
    ("dev_type", "type-?F", "type-VF", True),
    ("dev_class", "030000", "030000", True),
    ("dev_class", "0x030000", "030000", True),
    ("dev_class", "03*", "030200", True),
    ("dev_class", "0x02*", "020000", True),
    ("dev_class", "03*", "020000", False),
    ("numa_node", "1", "1", True),
    ("numa_node", 1, "1", True),
    ("numa_node", "[01]", "1", True),
    ("numa_node", "0", "1", False),
    ("e.group", "gpu", "gpu", True),
    ("e.group", "gpu", "GPU", False),
    ("driver", "vfio-pci", "vfio-pci", True),
    ("vendor_id", "0x8086", "8086", True),
])
def test_attributes(key: str, text: str | int, value: str, expected: bool) -> None:
    assert compile_attribute(key, text).matches(value) is expected


@pytest.mark.parametrize(("key", "text", "message"), [
    ("dev_type", "type-XX", "dev_type 'type-XX' is not a device type; expected one of type-PCI"),
    ("dev_class", "0300", "dev_class '0300' is not a PCI class code: expected 6 hex digits"),
    ("dev_class", "zz0000", "not a PCI class code"),
    ("numa_node", "one", "numa_node 'one' is not a NUMA node number"),
    ("e.group", 3, "e.group: 3 must be written as a quoted string"),
    ("e.group", True, "is not a value"),
    ("e.group", ["a"], "is not a value"),
    ("vendor_id", 8086, "quoted hex string"),
])
def test_attribute_errors(key: str, text: object, message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        compile_attribute(key, text)  # type: ignore[arg-type]
    assert message in str(raised.value)


@pytest.mark.parametrize(("key", "canonical"), [
    ("e.group", "e.group"),
    ("e.QAclass", "e.QAclass"),
    ("physical_network", "e.physical_network"),
    ("e.physical_network", "e.physical_network"),
    ("e.a-b.c_1", "e.a-b.c_1"),
])
def test_tag_keys(key: str, canonical: str) -> None:
    assert tag_key(key) == canonical


@pytest.mark.parametrize(("key", "message"), [
    ("group", "write 'e.group'"),
    ("e.", "e.g. 'e.group'"),
    ("e.a b", "e.g. 'e.group'"),
    ("E.group", "extra tags start with 'e.'"),
])
def test_bad_tag_keys(key: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        tag_key(key)
    assert message in str(raised.value)


def test_did_you_mean() -> None:
    assert did_you_mean("vendr_id", ["vendor_id", "product_id"]) == "did you mean 'vendor_id'?"
    assert did_you_mean("zzz", ["b", "a"]) == "known keys: a, b"


# --- properties: our globs and regexes agree with Python's own ---------------------------

glob_chars = st.sampled_from([*"abc1-.*? ", "[ab]", "[a-c]", "[!a]", "[!]]", "[]a]", "[",
                              "[c-a]", "[a-]", "[--a]", "[!c-a]", "]"])
globs = st.lists(glob_chars, min_size=1, max_size=6).map("".join)
values = st.text(alphabet="abc1-.[]!", max_size=8)


@given(globs, values)
def test_glob_agrees_with_fnmatch(glob: str, value: str) -> None:
    assert compile_value(glob).matches(value) is fnmatch.fnmatchcase(value, glob)


atoms = st.sampled_from(["a", "b", "c", "1", ".", "[ab]", "[^a]", "\\.", "(a|b)", "(ab|c)"])
quantifiers = st.sampled_from(["", "", "*", "+", "?", "{1,2}"])
regexes = st.lists(st.tuples(atoms, quantifiers).map("".join), min_size=1, max_size=4).map(
    lambda parts: "re:" + "".join(parts))
regex_values = st.text(alphabet="abc1.", max_size=6)


@given(regexes, regex_values)
def test_regex_agrees_with_python_re(regex: str, value: str) -> None:
    expected = re.fullmatch(regex.removeprefix("re:"), value) is not None
    assert compile_value(regex).matches(value) is expected


@given(st.integers(0, 0xFFFF), st.sampled_from(["{:x}", "{:04x}", "0x{:x}", "{:04X}", "0X{:X}"]))
def test_every_spelling_of_an_id_matches_its_canonical_form(number: int, spelling: str) -> None:
    assert compile_id(spelling.format(number)).matches(f"{number:04x}")
