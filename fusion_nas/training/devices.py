"""Devices a trial trains on: ``--device auto|cpu|cuda|cuda:N|mps``.

A device *spec* is what a user writes; :func:`parse_device` checks its form and
:func:`worker_devices` turns it into one concrete device per worker, checked against what this
machine has:

- ``auto``: CUDA when present (every GPU, round-robin), else MPS when present, else the CPU;
- ``cpu`` and ``mps``: every worker on that device;
- ``cuda``: every GPU, worker ``i`` on ``cuda:(i mod G)`` with ``G`` GPUs;
- ``cuda:N``: every worker on GPU ``N``.

With ``trials_per_device=N`` on CUDA there are at least ``N`` workers per GPU (one small proxy
network cannot fill a GPU): ``workers = GPUs x N`` unless more workers are asked for.

:func:`device_name` is what a trial records (``cpu``, ``cuda:0 (NVIDIA H100 80GB HBM3)``).
:func:`check_precision` refuses, in one line, a training precision a device cannot run
(``fp16`` on a CPU whose torch has no fp16 autocast, ``bf16`` on a GPU without bfloat16);
:func:`peak_memory` and :func:`is_out_of_memory` serve a trial's record on a GPU.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterable

import torch

from fusion_nas.errors import FusionNasError, allowed

DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N", "mps")
DEVICE_HELP = (  # the CLI's --device help
    "Where to train: 'auto' (CUDA when present, else MPS, else the CPU), 'cpu', 'cuda' "
    "(every GPU; with --workers K, worker i gets GPU i mod G), 'cuda:N' or 'mps'. Recorded."
)
_CUDA_INDEX = re.compile(r"cuda:(\d+)")
# Training precisions (ProxyConfig.precision): fp32, or autocast to bfloat16 or float16 (the
# latter with a gradient scaler, whose loss scaling keeps small fp16 gradients from flushing
# to zero).
PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def worker_devices(spec: str, workers: int = 1, trials_per_device: int | None = None) -> list[str]:
    """One concrete device per worker (``cpu``, ``mps``, ``cuda:N``), GPUs round-robin.

    ``trials_per_device=N`` (CUDA only; ignored elsewhere): at least ``N`` workers per GPU in
    use, so that ``--device cuda`` on ``G`` GPUs runs ``max(workers, G * N)`` trials at once,
    ``N`` on each GPU (``cuda:N`` alone: ``max(workers, N)``). ``None``: ``workers`` as given.

    Raises :class:`DeviceError` (one line naming what is present) for a device this machine
    does not have, or for ``trials_per_device`` below 1.
    """
    text = parse_device(spec)
    workers = max(1, int(workers))
    per_device = 1 if trials_per_device is None else trials_per_device
    if not isinstance(per_device, int) or isinstance(per_device, bool) or per_device < 1:
        raise DeviceError(
            f"--trials-per-device must be a positive integer, got {trials_per_device!r}"
        )
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
        if trials_per_device is not None:  # N on every GPU, unless --workers asks for more
            workers = max(workers, gpus * per_device)
        return [f"cuda:{i % gpus}" for i in range(workers)]
    index = int(text[5:])
    if index >= gpus:
        raise DeviceError(
            f"--device {spec!r}: there is no GPU {index} on this machine; present: {present()}"
        )
    return [text] * max(workers, per_device)


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


class PrecisionError(FusionNasError):
    """A training precision is unknown, or the device cannot train in it."""


def parse_precision(value: str) -> str:
    """``value`` checked against :data:`PRECISIONS` (one line naming the allowed ones)."""
    if value not in PRECISIONS:
        raise PrecisionError(
            f"--precision {value!r} is not a precision; allowed: {allowed(PRECISIONS)}"
        )
    return value


@functools.lru_cache(maxsize=16)
def _probe(device_type: str, precision: str) -> str | None:
    """Why ``device_type`` cannot train in ``precision`` (``None``: it can).

    CUDA is answered from torch's capability queries (nothing is allocated in this process,
    whose workers are the ones that train). Other devices run one tiny step: a linear layer
    under autocast (an older CPU torch warns and silently runs fp32, so the output's dtype is
    checked) and, for fp16, the gradient scaler's unscale.
    """
    dtype = AUTOCAST_DTYPES[precision]
    if not torch.amp.is_autocast_available(device_type):
        return f"torch {torch.__version__} has no autocast on {device_type}"
    if device_type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bfloat16 support"
        return None
    try:
        layer = torch.nn.Linear(4, 4).to(device_type)
        opt = torch.optim.SGD(layer.parameters(), lr=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "target dtype is not supported": checked below
            with torch.autocast(device_type, dtype=dtype):
                out = layer(torch.ones(2, 4, device=device_type))  # (2, 4)
        if out.dtype != dtype:
            return f"torch {torch.__version__} has no {precision} autocast on {device_type}"
        if precision == "fp16":
            scaler = torch.amp.GradScaler(device_type)
            scaler.scale(out.float().sum()).backward()
            scaler.unscale_(opt)
    except Exception as exc:  # any failure of the probe means the device cannot train so
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{precision} training fails on {device_type}: {first[:120]}"
    return None


def check_precision(precision: str, devices: str | Iterable[str]) -> None:
    """Refuse (:class:`PrecisionError`, one line) a precision one of ``devices`` cannot run.

    ``devices``: concrete devices (``cpu``, ``cuda:0``, ``mps``), e.g. from
    :func:`worker_devices`. ``fp32`` runs everywhere.
    """
    parse_precision(precision)
    if precision == "fp32":
        return
    names = [devices] if isinstance(devices, str) else list(devices)
    for device_type in dict.fromkeys(torch.device(d).type for d in names):
        reason = _probe(device_type, precision)
        if reason is not None:
            raise PrecisionError(
                f"--precision {precision!r} cannot run on {device_type}: {reason}; "
                f"allowed here: {allowed(usable_precisions(device_type))}"
            )


def usable_precisions(device_type: str) -> list[str]:
    """The precisions ``device_type`` can train in (``fp32`` always)."""
    return ["fp32", *(p for p in AUTOCAST_DTYPES if _probe(device_type, p) is None)]


def reset_peak_memory(device: str) -> None:
    """Start counting ``device``'s peak memory afresh (a no-op off CUDA)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def peak_memory(device: str) -> int | None:
    """Bytes of tensors allocated at most on ``device`` since :func:`reset_peak_memory`
    (``torch.cuda.max_memory_allocated``); ``None`` off CUDA, where torch keeps no count."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    return int(torch.cuda.max_memory_allocated(dev))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device running out of memory (``torch.cuda.OutOfMemoryError``, or
    a ``RuntimeError`` saying 'out of memory', as MPS and older torch raise it)."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
