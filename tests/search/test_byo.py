"""Bring your own study: the fusion space inside a user's own multi-objective Optuna study.

The user's objective suggests an architecture (``fusion_nas.suggest_architecture``), builds it
(``build_model``), counts its MACs (``arch_cost``), trains it briefly on data of its own and
returns (accuracy, MACs); a MACs budget is an Optuna constraint (``Trial.set_constraint``,
which replaced the samplers' ``constraints_func`` in Optuna 5).
"""

from __future__ import annotations

import optuna
import torch
import torch.nn.functional as F

import fusion_nas

MAX_MACS = 60_000  # the user's budget: some networks of the digits space exceed it


def _user_data(n: int = 128) -> tuple[torch.Tensor, ...]:
    """Generated (N, 1, 8, 8) images; the class is the brightest of the first ten pixels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 64, 1, 8, 8, generator=g)
    y = x.flatten(1)[:, :10].argmax(1)
    return x[:n], y[:n], x[n:], y[n:]


def test_a_users_optuna_study_searches_the_fusion_space_under_a_macs_constraint() -> None:
    space = fusion_nas.load_space("digits")
    x, y, xv, yv = _user_data()
    macs_seen: dict[int, int] = {}

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        arch = fusion_nas.suggest_architecture(trial, space)
        macs = fusion_nas.arch_cost(arch, space).macs
        macs_seen[trial.number] = macs
        trial.set_constraint("macs_over_budget", float(macs - MAX_MACS))  # <= 0: feasible
        torch.manual_seed(trial.number)
        model = fusion_nas.build_model(arch, space)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(2):  # brief training: two epochs of batches of 32
            for i in range(0, len(y), 32):
                loss = F.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            acc = (model(xv).argmax(1) == yv).float().mean().item()
        return acc, float(macs)

    sampler = optuna.samplers.NSGAIISampler(population_size=4, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=6)

    assert len(study.trials) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        acc, macs = t.values
        assert 0.0 <= acc <= 1.0 and macs == macs_seen[t.number] > 0
        # the parameters are the fusion space's: s{i}_{field}
        assert {"s0_operator", "s0_kernel", "s0_width"} <= set(t.params)
    # Optuna's constrained front holds only feasible networks (if any was feasible)
    feasible = [t for t in study.trials if t.values[1] <= MAX_MACS]
    assert all(t.values[1] <= MAX_MACS for t in study.best_trials) or not feasible


def test_suggest_architecture_gives_a_network_of_the_space() -> None:
    space = fusion_nas.load_space("digits")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    arch = fusion_nas.suggest_architecture(trial, space)
    assert space.validate(arch) == arch and arch.space == space.name
    out = fusion_nas.build_model(arch, space)(torch.zeros(2, 1, 8, 8))
    assert out.shape == (2, space.classes)


def test_the_evaluators_are_public() -> None:
    names = {"Evaluator", "TrainingEvaluator", "FunctionEvaluator", "TableEvaluator"}
    names |= {"EvalContext", "StopTraining", "DataSplits", "make_pool", "suggest_architecture"}
    assert names <= set(fusion_nas.__all__)
    assert fusion_nas.FunctionEvaluator.__module__ == "fusion_nas.evaluation.function"
