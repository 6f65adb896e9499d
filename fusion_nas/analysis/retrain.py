"""The training protocol shared by searched networks and baselines, and the final retraining.

:class:`TrainingProtocol` holds the one protocol: the proxy run that scores a network on the
validation part of the training data, and the final run that reports *test* accuracy.
Both work on a stored search's handle and one of its typed trials
(:class:`~fusion_nas.store.handles.StoredSearch`, :class:`~fusion_nas.store.handles.StoredTrial`):
the handle holds the parsed space and proxy settings, the trial its architecture.
``proxy_weights`` re-runs a trial's proxy training with the search's recorded seed and
settings (training is deterministic for a given seed and thread count) and checks that the
validation accuracy matches the stored one. ``retrain`` trains the architecture from scratch
on the full training split (train + validation) with a longer schedule and only then
evaluates it on the test split, once. It is the only code path that touches the test split.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fusion_nas.deploy.export import write_export
from fusion_nas.errors import OutputError, one_line
from fusion_nas.model.build import build_model
from fusion_nas.model.space import SearchSpace
from fusion_nas.outputs import atomic_output, check_outputs
from fusion_nas.settings import retrain_dir
from fusion_nas.store.handles import StoredSearch, StoredTrial
from fusion_nas.store.queries import safe_filename
from fusion_nas.store.records import RetrainRecord
from fusion_nas.training.devices import device_name
from fusion_nas.training.protocol import RETRAIN_EPOCHS, TrainingProtocol

OUT_FILES = ("model.py", "model.pt", "result.json")  # what retrain writes into its folder


def default_out_dir(name: str, number: int) -> Path:
    """``<retrain dir>/<search>-trial<N>``: where ``retrain`` writes when no folder is given."""
    return retrain_dir() / f"{safe_filename(name)}-trial{int(number)}"


def check_out_dir(out: Path) -> None:
    """Refuse (one line) a retrain folder that is a file, holds folders where its files go, or
    cannot be written; nothing is created."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {str(out)!r} is a file; allowed: a folder (new or existing)")
    check_outputs({f"--out {out}/{f}": out / f for f in OUT_FILES})


def search_protocol(search: StoredSearch) -> TrainingProtocol:
    """The training protocol of a search: its dataset, space, proxy settings and seed."""
    record = search.record
    return TrainingProtocol(
        dataset=record.dataset,
        space=search.space,
        proxy=search.proxy,
        seed=record.seed,
        data_dir=record.data_dir,
    )


def proxy_weights(
    search: StoredSearch, trial: StoredTrial
) -> tuple[dict[str, torch.Tensor], float | None]:
    """Re-run the trial's proxy training; return its ``state_dict`` and validation accuracy.

    Uses the trial's recorded thread count: on a CPU the result depends on it.
    """
    space: SearchSpace = search.space
    protocol = search_protocol(search)
    arch = trial.architecture()
    before = torch.get_num_threads()
    threads = trial.record.threads
    if isinstance(threads, (int, float)) and threads == threads and threads >= 1:
        torch.set_num_threads(int(threads))  # the trial's thread count: bit-identical result
    try:
        model, result = protocol.proxy_score(lambda: build_model(arch, space))
    finally:
        torch.set_num_threads(before)
    return model.state_dict(), result.val_acc


def retrain(
    search: StoredSearch,
    trial: StoredTrial,
    *,
    epochs: int = RETRAIN_EPOCHS,
    out_dir: Path | None = None,
    threads: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    weight_decay: float | None = None,
    device: str = "cpu",
) -> RetrainRecord:
    """Train ``trial`` of ``search`` from scratch on all training data; test it once.

    ``lr``, ``batch_size`` and ``weight_decay`` set the final schedule (None: the proxy's);
    ``device`` is where it trains (``cpu``, ``cuda:N``, ``mps``).
    """
    name, space, row = search.name, search.space, trial.record
    arch = trial.architecture()
    if threads:
        torch.set_num_threads(threads)
    protocol = dataclasses.replace(
        search_protocol(search),
        final_lr=lr,
        final_batch_size=batch_size,
        final_weight_decay=weight_decay,
        device=device,
    )
    schedule = protocol.schedule(epochs)
    out = Path(out_dir) if out_dir else default_out_dir(name, row.number)
    check_out_dir(out)  # before the training: a place that cannot be written loses nothing
    model, final = protocol.retrain(lambda: build_model(arch, space), epochs)
    test_acc = final.test_acc

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "code": str(out / "model.py"),
        "weights": str(out / "model.pt"),
        "record": str(out / "result.json"),
    }
    write_export(
        arch,
        space,
        Path(files["code"]),
        meta={
            "search": name,
            "trial": row.number,
            "val_accuracy": row.val_acc,
            "store_url": search.store.url,
            "note": f"retrained {epochs} epochs on all training data; test acc {test_acc:.4f}",
            "weights_file": "model.pt",
        },
        state_dict=model.state_dict(),
        weights=Path(files["weights"]),
    )
    record = RetrainRecord(
        search=name,
        trial=row.number,
        arch_id=arch.arch_id,
        arch=arch.to_dict(),
        arch_desc=arch.describe(),
        macs=int(row.macs),
        params=int(row.params),
        proxy_val_acc=row.val_acc,
        epochs=epochs,
        train_samples=final.train_samples,
        test_samples=final.test_samples,
        test_acc=test_acc,
        seconds=round(final.seconds, 2),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        files=files,
        lr=schedule.lr,
        batch_size=schedule.batch_size,
        weight_decay=schedule.weight_decay,
        device=device_name(device),
    )
    with atomic_output(Path(files["record"])) as tmp:
        tmp.write_text(json.dumps(record.to_attr(), indent=2) + "\n")
    search.save_retrain(record)
    return record


# --------------------------------------------------------------------------- trained weights


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a ``state_dict`` file into ``model``; a wrong file is a one-line error."""
    from fusion_nas.analysis.explain import ExplainError

    if not path.is_file():
        raise ExplainError(f"weights file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExplainError(f"cannot read weights {str(path)!r}: {one_line(exc)}") from None
    if not isinstance(state, dict):
        raise ExplainError(f"{str(path)!r} holds no state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ExplainError(
            f"weights {str(path)!r} do not fit this trial's network: {one_line(exc, lines=2)}"
        ) from None


def trial_weights(
    search: StoredSearch,
    trial: StoredTrial,
    model: nn.Module,
    *,
    weights: Path | None = None,
    on_status: Callable[[str], None] | None = None,
) -> str:
    """Load ``trial``'s trained weights into ``model`` (its network); say where they came from.

    In this order: the ``weights`` file; the weights of ``fusion-nas retrain`` of this trial if
    their file is still there (trained on train + validation: the validation samples were seen
    in training); else the trial's proxy training re-run with the search's seed and settings
    (deterministic, as ``export --weights``). Only a complete trial has proxy weights.
    """
    from fusion_nas.analysis.explain import ExplainError

    if weights is not None:
        load_weights(model, Path(weights))
        return f"weights file {weights}"
    retrained = search.retrains().get(trial.number)
    path = Path(retrained.files.get("weights", "")) if retrained else None
    if path is not None and path.is_file():
        load_weights(model, path)
        return f"retrain weights {path} (trained on train + validation)"
    if not trial.complete:
        raise ExplainError(
            f"trial {trial.number} of {search.name!r} is {trial.status}: it has no trained "
            "weights; pick a complete trial or give --weights"
        )
    (on_status or (lambda text: None))("Re-running the trial's proxy training for its weights...")
    state, val_acc = proxy_weights(search, trial)
    model.load_state_dict(state)
    source = "proxy training re-run (seeded)"
    recorded = trial.record.val_acc
    if val_acc is not None and recorded is not None and val_acc != recorded:
        source += f"; validation accuracy {val_acc:.4f}, recorded {recorded:.4f}"
    return source
