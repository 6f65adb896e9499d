"""Measured inference latency of a model on this machine: torch eager or onnxruntime.

MACs are not latency: attention is memory-bound, and reshapes, softmax and normalisation cost
time but no MACs. :func:`measure_latency` times a model the same way every time:

- per batch size (default 1 and 64), ``warmup`` untimed forward passes, then exactly ``runs``
  timed ones on one fixed random input; the record keeps the median and the 10th, 25th, 75th and
  90th percentiles in milliseconds per batch (the spread says how noisy the machine was);
- ``backend="eager"``: the model in eval mode under ``torch.inference_mode`` with
  ``torch.set_num_threads(threads)`` (one thread by default, so trials measured while other
  jobs share the cores stay comparable); the previous thread count is restored afterwards;
  a model on a CUDA device is timed with CUDA events recorded around each forward pass on its
  stream after the warm-up (the GPU's own clock: host-side timers would count the launch
  queue, not the kernels), synchronising once after all runs;
- ``backend="onnxruntime"``: the model exported to ONNX (legacy exporter, opset
  :data:`fusion_nas.deploy.export.ONNX_OPSET`, dynamic batch axis) into a temporary file and run by
  an
  onnxruntime CPU session with ``threads`` intra-op threads and one inter-op thread; needs the
  ``onnx`` extra (``pip install -e '.[onnx]'``).

:func:`arch_latency` does the same for an :class:`~fusion_nas.model.arch.Architecture` of a space.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusion_nas.errors import FusionNasError, allowed
from fusion_nas.model.arch import Architecture

__all__ = [
    "BACKENDS",
    "LatencyError",
    "LatencyPoint",
    "LatencyRecord",
    "arch_latency",
    "measure_latency",
]

BACKENDS = ("eager", "onnxruntime")
DEFAULT_WARMUP = 5
DEFAULT_RUNS = 30
_ONNX_HINT = "pip install -e '.[onnx]'"


class LatencyError(FusionNasError):
    """A latency measurement was asked for with a bad setting or an unavailable backend."""


@dataclass(frozen=True)
class LatencyPoint:
    """Latency of one batch size: percentiles over the timed runs, milliseconds per batch."""

    batch: int
    median_ms: float
    p10_ms: float
    p25_ms: float
    p75_ms: float
    p90_ms: float

    @property
    def iqr_ms(self) -> float:
        """Interquartile range (p75 - p25), milliseconds."""
        return self.p75_ms - self.p25_ms

    @property
    def per_sample_ms(self) -> float:
        """Median milliseconds per sample of the batch."""
        return self.median_ms / self.batch


@dataclass(frozen=True)
class LatencyRecord:
    """What :func:`measure_latency` measured: one :class:`LatencyPoint` per batch size."""

    backend: str
    threads: int
    warmup: int
    runs: int
    points: tuple[LatencyPoint, ...]

    def point(self, batch: int) -> LatencyPoint:
        """The point of batch size ``batch``; :class:`LatencyError` if it was not measured."""
        for p in self.points:
            if p.batch == batch:
                return p
        raise LatencyError(
            f"batch size {batch!r} was not measured; measured: {allowed(self.batches)}"
        )

    @property
    def batches(self) -> tuple[int, ...]:
        """The measured batch sizes, in the order measured."""
        return tuple(p.batch for p in self.points)

    def median_ms(self, batch: int = 1) -> float:
        """Median milliseconds per batch of ``batch`` samples."""
        return self.point(batch).median_ms

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for a store or a results file)."""
        return {
            "backend": self.backend,
            "threads": self.threads,
            "warmup": self.warmup,
            "runs": self.runs,
            "points": [asdict(p) for p in self.points],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyRecord:
        """Inverse of :meth:`to_dict`."""
        points = tuple(LatencyPoint(**p) for p in data["points"])
        return cls(data["backend"], data["threads"], data["warmup"], data["runs"], points)


def _quantile(sorted_ms: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values (numpy's default method)."""
    pos = q * (len(sorted_ms) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (pos - lo)


def _point(batch: int, times_ms: list[float]) -> LatencyPoint:
    s = sorted(times_ms)
    q = {k: _quantile(s, v) for k, v in (("10", 0.1), ("25", 0.25), ("75", 0.75), ("90", 0.9))}
    return LatencyPoint(batch, _quantile(s, 0.5), q["10"], q["25"], q["75"], q["90"])


def _time_runs(call: Callable[[], Any], warmup: int, runs: int) -> list[float]:
    """``warmup`` untimed calls, then ``runs`` timed ones; milliseconds each."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def _time_runs_cuda(
    call: Callable[[], Any], warmup: int, runs: int, device: torch.device
) -> list[float]:
    """``warmup`` untimed calls, then ``runs`` calls each between two CUDA events on the
    current stream of ``device``; milliseconds each, read after one final synchronise."""
    with torch.cuda.device(device):
        for _ in range(warmup):
            call()
        torch.cuda.synchronize(device)  # the warm-up's kernels (and cuDNN's autotuning) done
        pairs = []
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize(device)
    return [float(start.elapsed_time(end)) for start, end in pairs]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LatencyError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _model_device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _eager(
    model: nn.Module, shape: tuple[int, ...], batches: Sequence[int], warmup: int, runs: int
) -> list[LatencyPoint]:
    device = _model_device(model)
    gen = torch.Generator().manual_seed(0)
    points = []
    for b in batches:
        x = torch.randn((b, *shape), generator=gen).to(device)  # (b, C, *S)

        def call(x: torch.Tensor = x) -> None:
            model(x)

        with torch.inference_mode():
            if device.type == "cuda":  # a GPU call returns before its kernels finish
                times = _time_runs_cuda(call, warmup, runs, device)
            else:
                times = _time_runs(call, warmup, runs)
            points.append(_point(b, times))
    return points


def _onnxruntime(
    model: nn.Module,
    shape: tuple[int, ...],
    batches: Sequence[int],
    warmup: int,
    runs: int,
    threads: int,
) -> list[LatencyPoint]:
    try:
        importlib.import_module("onnx")
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        raise LatencyError(
            f"backend 'onnxruntime' needs onnx and onnxruntime; install: {_ONNX_HINT}"
        ) from None
    from fusion_nas.deploy.export import write_onnx

    model = model.cpu()
    with tempfile.TemporaryDirectory(prefix="fusion-nas-latency-") as tmp:
        path = Path(tmp) / "model.onnx"
        write_onnx(model, torch.zeros((1, *shape)), path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    points = []
    for b in batches:
        feed = {"input": torch.randn((b, *shape), generator=gen).numpy()}  # (b, C, *S)
        points.append(_point(b, _time_runs(lambda f=feed: session.run(None, f), warmup, runs)))
    return points


def measure_latency(
    model: nn.Module,
    example_shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = (1, 64),
    warmup: int = DEFAULT_WARMUP,
    runs: int = DEFAULT_RUNS,
    threads: int = 1,
    backend: str = "eager",
) -> LatencyRecord:
    """Median and spread of ``model``'s forward time per batch size, on this machine.

    Args:
        model: any ``nn.Module`` taking one tensor; its train/eval modes are restored after.
        example_shape: the input shape ``(B, C, *S)``, e.g. ``space.input_shape(1)``; the
            leading batch axis is replaced by each of ``batch_sizes``.
        batch_sizes: batch sizes to time, each with its own warm-up.
        warmup: untimed forward passes before the timed ones (per batch size).
        runs: timed forward passes per batch size (a fixed number, never adaptive).
        threads: intra-op threads (``torch.set_num_threads`` or onnxruntime's setting).
        backend: ``"eager"`` (PyTorch) or ``"onnxruntime"`` (needs the ``onnx`` extra).

    Returns:
        A :class:`LatencyRecord` with one :class:`LatencyPoint` per batch size.

    Raises:
        LatencyError: a bad setting, or onnxruntime asked for but not installed.
    """
    if backend not in BACKENDS:
        raise LatencyError(f"unknown latency backend {backend!r}; allowed: {allowed(BACKENDS)}")
    shape = tuple(example_shape)
    if len(shape) < 2 or not all(type(n) is int and n >= 1 for n in shape):
        raise LatencyError(
            f"example_shape must be (B, C, *S) of positive integers, got {example_shape!r}"
        )
    batches = tuple(_check_int("batch size", b, 1) for b in batch_sizes)
    if not batches:
        raise LatencyError("batch_sizes must name at least one batch size")
    _check_int("warmup", warmup, 0)
    _check_int("runs", runs, 1)
    _check_int("threads", threads, 1)
    modes = {m: m.training for m in model.modules()}
    before = torch.get_num_threads()
    try:
        model.eval()
        if backend == "eager":
            torch.set_num_threads(threads)
            points = _eager(model, shape[1:], batches, warmup, runs)
        else:
            points = _onnxruntime(model, shape[1:], batches, warmup, runs, threads)
    finally:
        torch.set_num_threads(before)
        for m, training in modes.items():
            m.train(training)
    return LatencyRecord(backend, threads, warmup, runs, tuple(points))


def arch_latency(
    arch: Architecture,
    space: Any = None,
    *,
    seed: int = 0,
    **kwargs: Any,
) -> LatencyRecord:
    """:func:`measure_latency` of ``arch``'s model (weights seeded with ``seed``).

    ``space`` defaults to the built-in space ``arch`` names; ``kwargs`` go to
    :func:`measure_latency` (``batch_sizes``, ``warmup``, ``runs``, ``threads``, ``backend``).
    """
    from fusion_nas.model.build import build_model
    from fusion_nas.model.space import load_space

    space = space if space is not None else load_space(arch.space)
    with _seeded(seed):
        model = build_model(arch, space)
    return measure_latency(model, space.input_shape(1), **kwargs)


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's global generator for the body; its previous state is restored after."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
