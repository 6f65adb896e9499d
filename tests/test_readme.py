"""The README's bring-your-own examples, run as written.

Each ``<!-- readme-example: NAME -->`` marker in README.md precedes one Python block; the
blocks run in order in one namespace (as cells of a notebook would), in a temporary folder
that holds ``my_training.py`` (the block of that name) on the import path, so the worker
processes of the ``train_fn`` example import it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
BLOCK = re.compile(r"<!-- readme-example: (?P<name>[\w.]+) -->\n```python\n(?P<code>.*?)```", re.S)


def examples() -> dict[str, str]:
    """The README's example blocks by name, in the README's order."""
    return {m["name"]: m["code"] for m in BLOCK.finditer(README.read_text(encoding="utf-8"))}


def test_the_readme_has_the_three_entry_points() -> None:
    assert list(examples()) == ["data", "my_training.py", "train_fn", "optuna"]


@pytest.mark.slow
def test_the_bring_your_own_examples_run_as_written(tmp_path: Path, monkeypatch, capsys) -> None:
    blocks = examples()
    (tmp_path / "my_training.py").write_text(blocks.pop("my_training.py"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {"__name__": "readme"}
    try:
        for name, code in blocks.items():
            exec(compile(code, f"README.md:{name}", "exec"), namespace)
            if name == "data":  # the user's data went through a real search
                df = namespace["df"]
                assert len(df) == 4 and set(df.status) == {"complete"}
            if name == "train_fn":  # successive halving under the user's loop, 2 workers
                df = namespace["df"]
                assert len(df) == 6 and set(df.status) <= {"complete", "stopped"}
                assert "stopped" in set(df.status)
                done = df[df.status == "complete"]
                assert len(done) and all(len(c) == 3 for c in done.curve)
            if name == "optuna":  # the fusion space inside the user's own study
                study = namespace["study"]
                assert len(study.trials) == 8
                assert all(t.values[1] <= 60_000 for t in study.best_trials)
    finally:
        sys.modules.pop("my_training", None)
    assert "val_acc" in capsys.readouterr().out  # the examples printed their tables
