"""Devices a trial trains on: ``--device auto|cpu|cuda|cuda:N|mps``.

A device *spec* is what a user writes; :func:`parse_device` checks its form and
:func:`worker_devices` turns it into one concrete device per worker, checked against what this
machine has:

- ``auto``: CUDA when present (every GPU, round-robin), else MPS when present, else the CPU;
- ``cpu`` and ``mps``: every worker on that device;
- ``cuda``: every GPU, worker ``i`` on ``cuda:(i mod G)`` with ``G`` GPUs;
- ``cuda:N``: every worker on GPU ``N``.

:func:`device_name` is what a trial records (``cpu``, ``cuda:0 (NVIDIA H100 80GB HBM3)``).
"""

from __future__ import annotations

import functools
import re

import torch

from fusion_nas.errors import FusionNasError, allowed

DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N", "mps")
DEVICE_HELP = (  # the CLI's --device help
    "Where to train: 'auto' (CUDA when present, else MPS, else the CPU), 'cpu', 'cuda' "
    "(every GPU; with --workers K, worker i gets GPU i mod G), 'cuda:N' or 'mps'. Recorded."
)
_CUDA_INDEX = re.compile(r"cuda:(\d+)")


class DeviceError(FusionNasError):
    """A device spec is malformed or names a device this machine does not have."""


def parse_device(spec: str) -> str:
    """The spec in its canonical form (lower case, no spaces); a bad form raises one line."""
    text = spec.strip().lower() if isinstance(spec, str) else ""
    if text in ("auto", "cpu", "cuda", "mps") or _CUDA_INDEX.fullmatch(text):
        if text.startswith("cuda:"):
            text = f"cuda:{int(text[5:])}"  # cuda:01 -> cuda:0
        return text
    raise DeviceError(f"--device {spec!r} is not a device; use one of: {allowed(DEVICE_FORMS)}")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def present() -> str:
    """What this machine offers, for error messages: ``cpu, cuda:0..cuda:1 (2 GPUs)``."""
    found = ["cpu"]
    if torch.cuda.is_available() and (n := torch.cuda.device_count()) > 0:
        found.append("cuda:0" if n == 1 else f"cuda:0..cuda:{n - 1} ({n} GPUs)")
    if _mps_available():
        found.append("mps")
    return ", ".join(found)


def _gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_devices(spec: str, workers: int = 1) -> list[str]:
    """One concrete device per worker (``cpu``, ``mps``, ``cuda:N``), GPUs round-robin.

    Raises :class:`DeviceError` (one line naming what is present) for a device this machine
    does not have.
    """
    text = parse_device(spec)
    workers = max(1, int(workers))
    gpus = _gpu_count()
    if text == "auto":
        text = "cuda" if gpus else ("mps" if _mps_available() else "cpu")
    if text == "cpu":
        return ["cpu"] * workers
    if text == "mps":
        if not _mps_available():
            raise DeviceError(
                f"--device 'mps': no MPS device on this machine; present: {present()}"
            )
        return ["mps"] * workers
    if not gpus:
        build = "" if torch.version.cuda else f" (torch {torch.__version__} is built without CUDA)"
        raise DeviceError(
            f"--device {spec!r}: no CUDA device on this machine{build}; present: {present()}"
        )
    if text == "cuda":
        return [f"cuda:{i % gpus}" for i in range(workers)]
    index = int(text[5:])
    if index >= gpus:
        raise DeviceError(
            f"--device {spec!r}: there is no GPU {index} on this machine; present: {present()}"
        )
    return [text] * workers


def resolve_device(spec: str) -> str:
    """The one device a single in-process worker trains on (``auto`` resolved)."""
    return worker_devices(spec, 1)[0]


@functools.lru_cache(maxsize=16)
def device_name(device: str) -> str:
    """Human-readable name recorded with a trial: ``cpu``, ``mps``, ``cuda:0 (NVIDIA ...)``."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return str(dev)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
