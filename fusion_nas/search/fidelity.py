"""Multi-fidelity search: asynchronous successive halving over epochs, on the Pareto order.

``fusion-nas search --fidelity sh`` trains every proposed network for the first rung's epochs
only (for a 10-epoch proxy and ``eta = 3``: rungs 1, 3 and 10 epochs). When a network reaches
a rung, it is compared with every network of the search that reached the same rung (other
workers' and earlier runs' included, read from the store): the networks are ordered by
non-dominated rank on (validation accuracy at that rung, MACs), then by crowding distance
(:func:`fusion_nas.pareto.promotion_order`), and the network goes on to the next rung if it is
in the first ``ceil(n / eta)`` of the ``n``. Otherwise it stops there: its trial is recorded
as ``stopped`` (Optuna state PRUNED) with its accuracy at every rung it reached. Only networks
that reach the last rung are ``complete`` and can be on the front.

Promoting by accuracy alone would keep only the larger networks, which learn faster; the
Pareto order keeps the cheap end of the front alive too. The decision is made when a result
arrives (as ASHA and Optuna's ``SuccessiveHalvingPruner`` do), so workers never wait for a rung
to fill. A promoted network goes on from where it stopped
(:func:`fusion_nas.training.loop.train_proxy`
with ``stop_after``/``resume``): the learning-rate schedule always spans the full proxy, so its
accuracy at a rung is exactly the full run's accuracy after that many epochs, and a tabular
benchmark's stored per-epoch curves answer a rung without training.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from fusion_nas.errors import FusionNasError
from fusion_nas.pareto import promotion_order
from fusion_nas.store import records

FIDELITY_FORMS = ("full", "sh", "sh:E1,E2,...", "sh:E1,E2,.../ETA")
_SPEC = re.compile(r"^sh(?::(?P<rungs>[0-9, ]+))?(?:/(?P<eta>\d+))?$")
DEFAULT_ETA = 3


class FidelityError(FusionNasError):
    """A ``--fidelity`` value that cannot be used (one line, naming the allowed forms)."""


@dataclass(frozen=True)
class SuccessiveHalving:
    """Rungs (epochs, increasing, the last one the proxy's epochs) and the keep ratio ``1/eta``."""

    rungs: tuple[int, ...]
    eta: int = DEFAULT_ETA

    def __post_init__(self) -> None:
        if self.eta < 2:
            raise FidelityError(f"successive halving needs eta >= 2, got {self.eta}")
        if not self.rungs or any(r < 1 for r in self.rungs):
            raise FidelityError(f"rungs must be positive epoch counts, got {list(self.rungs)}")
        if list(self.rungs) != sorted(set(self.rungs)):
            raise FidelityError(f"rungs must increase, got {list(self.rungs)}")

    def __str__(self) -> str:
        return f"sh:{','.join(map(str, self.rungs))}/{self.eta}"

    @property
    def epochs(self) -> int:
        """Epochs of a network that reaches the last rung (the proxy's epochs)."""
        return self.rungs[-1]

    def keep(self, n: int) -> int:
        """How many of ``n`` networks at a rung go on: ``ceil(n / eta)``, at least one."""
        return max(1, math.ceil(n / self.eta))


def default_rungs(epochs: int, eta: int = DEFAULT_ETA) -> tuple[int, ...]:
    """``epochs / eta^k`` rounded, down to one epoch: 10 epochs, eta 3 -> (1, 3, 10)."""
    if eta < 2:
        raise FidelityError(f"successive halving needs eta >= 2, got {eta}")
    rungs = {epochs}
    value = float(epochs)
    while value / eta >= 1:
        value /= eta
        rungs.add(max(1, round(value)))
    return tuple(sorted(rungs))


def parse_fidelity(value: str | None, epochs: int) -> SuccessiveHalving | None:
    """``full`` (or None): every trial trains the whole proxy; ``sh[:E1,E2,...][/ETA]``:
    successive halving whose last rung must be the proxy's ``epochs``."""
    text = (value or "full").strip()
    if text == "full":
        return None
    match = _SPEC.match(text)
    if match is None:
        raise FidelityError(
            f"unknown --fidelity {value!r}; allowed: {', '.join(FIDELITY_FORMS)} "
            "(for example sh:1,3,10/3)"
        )
    eta = int(match["eta"]) if match["eta"] else DEFAULT_ETA
    if match["rungs"] is None:
        rungs = default_rungs(epochs, eta)
    else:
        try:
            rungs = tuple(int(r) for r in match["rungs"].split(",") if r.strip())
        except ValueError:
            raise FidelityError(f"--fidelity {value!r}: rungs must be integers") from None
    sh = SuccessiveHalving(rungs, eta)
    if sh.epochs != epochs:
        raise FidelityError(
            f"--fidelity {value!r}: the last rung ({sh.epochs} epochs) must be the proxy's "
            f"--epochs ({epochs})"
        )
    if len(sh.rungs) < 2:
        raise FidelityError(f"--fidelity {value!r} has one rung: that is --fidelity full")
    return sh


@dataclass(frozen=True)
class RungPoint:
    """A network's result at a rung: its trial, accuracy after the rung's epochs, and MACs."""

    number: int
    val_acc: float
    macs: float


def rung_points(trials: Iterable[FrozenTrial], epochs: int) -> list[RungPoint]:
    """Every trial's result at the rung of ``epochs`` (user attribute ``rungs``), by number.

    Trials that repeat a network (``duplicate_of``) are left out: their original counts.
    """
    out = []
    for t in trials:
        if records.trial_duplicate_of(t) is not None:
            continue
        macs = records.trial_macs(t)
        for entry in records.rung_history(t):
            if isinstance(entry, list) and len(entry) == 2 and entry[0] == epochs:
                if isinstance(macs, int | float):
                    out.append(RungPoint(t.number, float(entry[1]), float(macs)))
                break
    return sorted(out, key=lambda p: p.number)


@dataclass(frozen=True)
class Decision:
    """Whether a network goes on from a rung, and where it stood among the rung's networks."""

    promote: bool
    position: int  # 1-based place in the promotion order
    of: int  # networks at the rung
    keep: int  # how many of them go on

    def note(self, epochs: int, total: int) -> str:
        """One line for the trial's record."""
        return (
            f"stopped after {epochs} of {total} epochs: place {self.position} of {self.of} "
            f"at that rung (non-dominated rank, then crowding), the first {self.keep} go on"
        )


def decide(points: list[RungPoint], number: int, sh: SuccessiveHalving) -> Decision:
    """Promote trial ``number`` if it is among the first ``sh.keep(n)`` of ``points`` in
    :func:`~fusion_nas.pareto.promotion_order` (``points`` must include it)."""
    order = promotion_order([p.val_acc for p in points], [p.macs for p in points])
    numbers = [points[i].number for i in order]
    position = numbers.index(number) + 1
    keep = sh.keep(len(points))
    return Decision(position <= keep, position, len(points), keep)
