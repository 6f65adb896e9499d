"""Choosing one trial of a search: :func:`fusion_nas.results.pick_trial` under its old name."""

from __future__ import annotations

from fusion_nas.results import PICKS, pick_trial

select_trial = pick_trial

__all__ = ["PICKS", "pick_trial", "select_trial"]
