"""The no-silent-skips hook: with the CI flag a skip of any kind fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import NO_SKIP_FLAG

TOY_SUITE = """
import pytest

def test_skips():
    pytest.skip("no browser")

@pytest.mark.skipif(True, reason="no database")
def test_marked():
    pass

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

def test_passes():
    pass
"""


@pytest.fixture
def toy(pytester: pytest.Pytester) -> pytest.Pytester:
    """A suite with a runtime skip, a skip mark, an xfail and a pass, under our conftest."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_toy=TOY_SUITE)
    return pytester


def test_a_developer_machine_may_skip(toy: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.delenv(NO_SKIP_FLAG, raising=False)
    result = toy.runpytest("-ra")
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    for reason in ("no browser", "no database"):  # -ra prints why
        result.stdout.fnmatch_lines([f"*SKIPPED*{reason}*"])
    assert result.ret == 0


@pytest.mark.parametrize("value", ["1", "true"])
def test_in_ci_every_skip_fails(toy: pytest.Pytester, monkeypatch, value: str) -> None:
    monkeypatch.setenv(NO_SKIP_FLAG, value)
    result = toy.runpytest()
    # The runtime skip fails the test; the skip mark fails its setup (an error). An expected
    # failure stays what it is: it is not a missing component.
    result.assert_outcomes(passed=1, failed=1, errors=1, xfailed=1)
    for reason in ("no browser", "no database"):  # each names the flag and the reason
        result.stdout.fnmatch_lines([f"*{NO_SKIP_FLAG}=1*{reason}*"])
    assert result.ret == 1


def test_in_ci_a_module_skipped_at_import_fails(pytester: pytest.Pytester, monkeypatch) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_extra='import pytest\npytest.importorskip("no_such_extra")\n')
    monkeypatch.setenv(NO_SKIP_FLAG, "1")
    result = pytester.runpytest()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*no_such_extra*"])
    monkeypatch.setenv(NO_SKIP_FLAG, "0")  # "0" means off
    assert pytester.runpytest().ret == 5  # nothing collected, nothing failed


def test_the_test_command_sets_the_flag() -> None:
    script = (Path(__file__).parents[1] / "scripts" / "run-tests.sh").read_text()
    assert f"export {NO_SKIP_FLAG}=1" in script
