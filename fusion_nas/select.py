"""Choosing one trial of a search: by number, or by a pick rule over the complete trials.

Pick rules: ``knee`` (the knee point of the Pareto front), ``best`` (highest validation
accuracy; ties go to fewer MACs) and ``max-flops:X`` (the most accurate trial with at most X
MACs). Only validation accuracy is used: the test split never chooses an architecture.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fusion_nas.errors import FusionNasError, StoreError
from fusion_nas.pareto import knee_index

PICKS = ("knee", "best", "max-flops:X")


def select_trial(
    df: pd.DataFrame, *, trial: int | None = None, pick: str | None = None
) -> dict[str, Any]:
    """The row (as a dict) of ``trial`` or of the ``pick`` rule; exactly one must be given."""
    if (trial is None) == (pick is None):
        raise FusionNasError("give exactly one of --trial N or --pick knee|best|max-flops:X")
    if trial is not None:
        row = df[df.number == trial]
        if row.empty:
            span = f"0..{int(df.number.max())}" if len(df) else "none"
            raise StoreError(f"trial {trial} does not exist; trials: {span}")
        return row.iloc[0].to_dict()
    ok = df[df.status == "complete"].reset_index(drop=True)
    if ok.empty:
        raise StoreError("the search has no complete trial to pick from")
    if pick == "knee":
        index = knee_index(list(ok.val_acc), list(ok.macs))
        return ok.iloc[index].to_dict()
    if pick == "best":
        return ok.sort_values(["val_acc", "macs"], ascending=[False, True]).iloc[0].to_dict()
    if pick and pick.startswith("max-flops:"):
        raw = pick.split(":", 1)[1]
        try:
            limit = float(raw)
        except ValueError:
            raise FusionNasError(f"--pick max-flops:X needs a number, got {raw!r}") from None
        fit = ok[ok.macs <= limit]
        if fit.empty:
            cheapest = int(ok.macs.min())
            raise StoreError(
                f"no complete trial has at most {limit:,.0f} MACs; the cheapest has {cheapest:,}"
            )
        return fit.sort_values(["val_acc", "macs"], ascending=[False, True]).iloc[0].to_dict()
    raise FusionNasError(f"unknown pick {pick!r}; allowed: 'knee', 'best', 'max-flops:X'")
