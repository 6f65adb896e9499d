"""``--start-from``: zoo members of the space queued as a search's first trials.

A space may list zoo networks (``[zoo] members``, :mod:`fusion_nas.model.zoo`); they belong to
the space, scaled to its input, but not to its stage product, so no sampler can propose them.
``--start-from NAME,...`` queues them as the first trials of a new search, each marked with the
trial attribute :data:`~fusion_nas.store.records.START_KEY` (member, place, of). The loop builds
a marked trial's network from the space (:func:`queued_member`) instead of asking the strategy.

A queued member has no stage parameters. Optuna's NSGA-II and multivariate TPE model the
parameters every finished trial shares (the intersection search space), so one trial without
any would turn NSGA-II into random sampling for the rest of the search. :class:`BlindSampler`
wraps the strategy's sampler wherever the space has members and hands it a view of the study
in which the finished marked trials are failed ones (samplers learn from finished trials only):
the strategy samples the stage product as if the members had not run.
"""

from __future__ import annotations

import copy
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from fusion_nas.errors import FusionNasError
from fusion_nas.model.arch import Architecture
from fusion_nas.model.space import SearchSpace
from fusion_nas.store import records

__all__ = ["BlindSampler", "StudyView", "enqueue_members", "queued_member"]


def _hidden(t: FrozenTrial) -> FrozenTrial:
    """``t``, or for a ``--start-from`` trial a copy that ended failed, without values."""
    if records.START_KEY not in t.user_attrs or t.state != TrialState.COMPLETE:
        return t
    shown = copy.copy(t)  # the storage's object stays as it is
    shown.state, shown.values = TrialState.FAIL, None
    return shown


class StudyView:
    """``study`` with its finished ``--start-from`` trials shown as failed ones.

    Samplers build on finished trials only, so they see no member; the trials keep their
    places (NSGA-II indexes the trial list by trial number). Everything else is the study's.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)
        shown = [_hidden(t) for t in trials]
        return shown if states is None else [t for t in shown if t.state in states]

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        """The study's trials, the finished ``--start-from`` ones shown as failed."""
        return self._get_trials(deepcopy=deepcopy, states=states, use_cache=False)

    @property
    def trials(self) -> list[FrozenTrial]:
        """The study's trials, the finished ``--start-from`` ones shown as failed."""
        return self.get_trials()


class BlindSampler(optuna.samplers.BaseSampler):
    """``base``, shown the study with its ``--start-from`` trials as failed ones
    (:class:`StudyView`)."""

    def __init__(self, base: optuna.samplers.BaseSampler) -> None:
        self.base = base

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """The base sampler's, over the trials it may see."""
        return self.base.infer_relative_search_space(StudyView(study), trial)  # type: ignore[arg-type]

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        """The base sampler's, over the trials it may see."""
        return self.base.sample_relative(StudyView(study), trial, search_space)  # type: ignore[arg-type]

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """The base sampler's, over the trials it may see."""
        view = StudyView(study)
        return self.base.sample_independent(view, trial, param_name, param_distribution)  # type: ignore[arg-type]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """The base sampler's."""
        self.base.before_trial(StudyView(study), trial)  # type: ignore[arg-type]

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """The base sampler's."""
        self.base.after_trial(StudyView(study), trial, state, values)  # type: ignore[arg-type]

    def reseed_rng(self) -> None:
        """The base sampler's."""
        self.base.reseed_rng()


def enqueue_members(study: optuna.Study, space: SearchSpace, names: Sequence[str]) -> None:
    """Queue the zoo members ``names`` of ``space`` as the study's next trials, in order."""
    for name in names:
        space.member_arch(name)  # a name the space does not hold: one line, nothing queued
    for place, name in enumerate(names, start=1):
        records.enqueue_member(study, {"member": name, "place": place, "of": len(names)})


def queued_member(space: SearchSpace, trial: FrozenTrial) -> Architecture | None:
    """The zoo member a ``--start-from`` trial runs, or ``None`` for any other trial."""
    note = records.start_note(trial)
    if note is None:
        return None
    try:
        return space.member_arch(note["member"])
    except FusionNasError:
        return None  # the space no longer holds it: the strategy proposes afresh
