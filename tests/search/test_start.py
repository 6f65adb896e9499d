"""``--start-from`` trials and the samplers: a queued zoo member has no stage parameters, and the
strategy's sampler must not see it (fusion_nas.search.start)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from fusion_nas.model.space import load_space
from fusion_nas.search.start import BlindSampler, StudyView, queued_member
from fusion_nas.store import records


def study_with_a_member_trial(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Four finished trials with parameters, then a finished ``--start-from`` trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for i in range(4):
        trial = study.ask()
        trial.suggest_categorical("s0_width", [8, 16])
        trial.suggest_categorical("s0_kernel", [3, 5])
        study.tell(trial, [0.5 + i / 10, 100 + i])
    records.enqueue_member(study, {"member": "tiny", "place": 1, "of": 1})
    trial = study.ask()
    assert trial.user_attrs[records.START_KEY]["member"] == "tiny"
    study.tell(trial, [0.9, 50])
    return study


@pytest.mark.parametrize(
    "make",
    [
        lambda: optuna.samplers.NSGAIISampler(population_size=2, seed=0),
        lambda: optuna.samplers.TPESampler(multivariate=True, n_startup_trials=1, seed=0),
    ],
)
def test_the_blind_sampler_keeps_the_joint_search_space_a_member_trial_would_empty(make):
    bare = study_with_a_member_trial(make())
    frozen = bare.trials[-1]
    # Optuna's own samplers lose every parameter to the member trial (they model only what
    # every finished trial shares): NSGA-II and multivariate TPE would sample independently.
    assert bare.sampler.infer_relative_search_space(bare, frozen) == {}
    blind = study_with_a_member_trial(BlindSampler(make()))
    space = blind.sampler.infer_relative_search_space(blind, blind.trials[-1])
    assert set(space) == {"s0_width", "s0_kernel"}
    trial = blind.ask()  # and it samples them jointly
    assert trial.suggest_categorical("s0_width", [8, 16]) in (8, 16)


def test_the_view_shows_only_member_trials_as_failed_in_their_places():
    study = study_with_a_member_trial(optuna.samplers.RandomSampler(seed=0))
    view = StudyView(study)
    assert [t.number for t in view.trials] == [0, 1, 2, 3, 4]  # list index = trial number
    assert [t.state for t in view.get_trials(deepcopy=False)] == [TrialState.COMPLETE] * 4 + [
        TrialState.FAIL
    ]
    complete = view._get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert [t.number for t in complete] == [0, 1, 2, 3]
    assert study.trials[4].state == TrialState.COMPLETE  # the stored trial is untouched
    assert study.trials[4].values == [0.9, 50]
    assert view.study_name == study.study_name  # everything else is the study's


def test_queued_member_reads_the_note_and_ignores_other_trials(monkeypatch):
    space = load_space("digits")
    study = study_with_a_member_trial(optuna.samplers.RandomSampler(seed=0))
    assert queued_member(space, study.trials[0]) is None
    # digits holds no members: a note naming one is ignored (the strategy proposes instead)
    assert queued_member(space, study.trials[-1]) is None
    arch = space.sample(0)
    monkeypatch.setattr(type(space), "member_arch", lambda self, name: arch)
    assert queued_member(space, study.trials[-1]) is arch
