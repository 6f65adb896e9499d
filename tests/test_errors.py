"""Errors: one hierarchy, one way to flatten any error into one line."""

from __future__ import annotations

from fusion_nas.errors import StoreError, allowed, one_line


def test_one_line_flattens_any_error() -> None:
    assert one_line(StoreError("no search\n  named 'x'")) == "no search named 'x'"
    assert one_line(ValueError("bad\nvalue")) == "ValueError: bad value"
    assert one_line(ValueError("bad\nvalue"), typed=False) == "bad value"
    assert one_line(RuntimeError("first\nsecond\nthird"), lines=2) == "RuntimeError: first second"
    assert one_line(KeyError()) == "KeyError" and one_line(" a \n b ") == "a b"


def test_allowed_lists_the_values_quoted() -> None:
    assert allowed(["a", 2]) == "'a', 2"
