"""SearchConfig parses the evaluator, fidelity and pre-screen once, typed; the record keeps the
stored strings (so existing stores resume)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusion_nas.errors import FusionNasError
from fusion_nas.model.space import load_space
from fusion_nas.search.config import SearchConfig, TableSpec, _fingerprint
from fusion_nas.search.fidelity import FidelityError, SuccessiveHalving
from fusion_nas.search.prescreen import PrescreenError, PrescreenSpec
from fusion_nas.training.loop import ProxyConfig


def _config(**kw) -> SearchConfig:
    kw.setdefault("proxy", ProxyConfig(epochs=10))
    return SearchConfig(name="s", space=load_space("digits"), dataset="digits", **kw)


def test_strings_become_typed_values(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    c = _config(evaluator=f"table:{table}@2", fidelity="sh/3", prescreen=" 20 : 5 ", trials=6)
    assert c.evaluator == TableSpec(table, 2) and c.table == TableSpec(table, 2)
    assert c.fidelity == SuccessiveHalving((1, 3, 10), 3) == c.halving
    assert c.prescreen == PrescreenSpec(20, 5, "naswot") == c.screening
    plain = _config()
    assert plain.evaluator == "train" and plain.table is None
    assert plain.fidelity is None and plain.prescreen is None


def test_the_record_keeps_the_stored_strings(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    c = _config(evaluator=f"table:{table}", fidelity="sh:1,3,10", prescreen="20:5", trials=6)
    record = c.record()
    assert record.evaluator == f"table:{table.resolve()}"
    assert record.fidelity == "sh:1,3,10/3"
    assert record.prescreen == "20:5:naswot"
    plain = _config().record()
    assert (plain.evaluator, plain.fidelity, plain.prescreen) == ("train", "full", None)


def test_typed_values_give_the_same_record_as_strings(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    typed = _config(
        evaluator=TableSpec(table, 1),
        fidelity=SuccessiveHalving((1, 3, 10)),
        prescreen=PrescreenSpec(20, 5, "synflow"),
        trials=6,
    )
    strings = _config(
        evaluator=f"table:{table}@1",
        fidelity="sh:1,3,10/3",
        prescreen="20:5",
        prescreen_proxy="synflow",
        trials=6,
    )
    assert typed == strings and typed.prescreen_proxy == "synflow"
    assert _fingerprint(typed.record()) == _fingerprint(strings.record())
    assert typed.record().prescreen == strings.record().prescreen == "20:5:synflow"


def test_typed_values_are_checked_as_strings_are() -> None:
    with pytest.raises(FidelityError, match="last rung"):
        _config(fidelity=SuccessiveHalving((1, 3)))
    with pytest.raises(FusionNasError, match="M=5 trials to queue"):
        _config(prescreen=PrescreenSpec(20, 5), trials=4)
    with pytest.raises(PrescreenError, match="K >= M >= 1"):
        PrescreenSpec(2, 5)
    with pytest.raises(FusionNasError, match="unknown zero-cost proxy"):
        _config(prescreen=PrescreenSpec(20, 5, "nope"))
