"""int8 inference: PyTorch dynamic quantisation of a trained network's ``nn.Linear`` layers.

:func:`quantize_dynamic` returns an int8 copy of a model: every ``nn.Linear`` (attention's
query/key/value and output projections, the MLPs, the gate of ``gated``, squeeze-excitation and
the head) holds int8 weights and quantises its input per batch at run time; convolutions,
normalisation and the attention matmuls themselves stay float32. A conv-only network therefore
gains little (only its head is quantised); token-mixing networks gain the most.

How the quantised model is saved (:func:`write_quantized_export`): as a **state dict plus the
exported code**, not TorchScript. The exported ``.py`` defines the float ``FusionNet``; the int8
model is that network passed through the same ``quantize_dynamic`` call, after which its int8
state dict loads (with ``torch.load(..., weights_only=True)``, which runs no pickled code)::

    from torch.ao.quantization import quantize_dynamic
    model = quantize_dynamic(FusionNet(), {torch.nn.Linear}, dtype=torch.qint8)
    model.load_state_dict(torch.load("model-int8.pt", weights_only=True))

TorchScript would be one self-contained file, but it is deprecated in PyTorch, its archive is
executable code rather than weights, and it would hide the readable exported module. The loader
above is :data:`LOADER`; :func:`load_quantized` does the same for a float model at hand.

``torch.ao.quantization`` is deprecated in favour of torchao but still ships with PyTorch
2.13; its deprecation warning is silenced here.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusion_nas.errors import ExportError, allowed

__all__ = [
    "LOADER",
    "QUANT_MODES",
    "load_quantized",
    "quantize_dynamic",
    "quantized_linears",
    "write_quantized_export",
]

QUANT_MODES = ("dynamic",)
LOADER = (
    "int8 weights: model = torch.ao.quantization.quantize_dynamic(FusionNet(), "
    "{torch.nn.Linear}, dtype=torch.qint8), then model.load_state_dict(...) as below"
)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao -> torchao notice
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")  # the same
        yield


def check_mode(mode: str) -> str:
    """``mode`` if it is a known quantisation mode, else a one-line :class:`ExportError`."""
    if mode not in QUANT_MODES:
        raise ExportError(f"unknown quantisation {mode!r}; allowed: {allowed(QUANT_MODES)}")
    return mode


def quantize_dynamic(model: nn.Module) -> nn.Module:
    """An int8 copy of ``model`` in eval mode: ``nn.Linear`` layers dynamically quantised.

    ``model`` itself is left as it was. Runs on the CPU (the quantised kernels are CPU-only).
    """
    clone = copy.deepcopy(model).cpu().eval()
    with _quiet():
        return torch.ao.quantization.quantize_dynamic(clone, {nn.Linear}, dtype=torch.qint8)


def quantized_linears(model: nn.Module) -> int:
    """How many dynamically quantised linear layers ``model`` holds."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    return sum(isinstance(m, QLinear) for m in model.modules())


def load_quantized(float_model: nn.Module, state_dict: Mapping[str, Any]) -> nn.Module:
    """The int8 model of ``float_model``'s architecture with ``state_dict`` (of
    :func:`quantize_dynamic`'s output) loaded strictly."""
    model = quantize_dynamic(float_model)
    try:
        # as given, not copied into a dict: the quantised modules read its ``_metadata``
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, KeyError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise ExportError(f"int8 state_dict does not fit the architecture: {first}") from None
    return model


def write_quantized_export(
    arch: Any,
    space: Any,
    out: Path,
    *,
    state_dict: Mapping[str, torch.Tensor],
    weights: Path,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Write the exported code to ``out`` and the int8 state dict of the trained model to
    ``weights``; check that the file's own ``FusionNet`` runs them.

    ``state_dict`` holds the trained float weights (``build_model(arch, space).state_dict()``).
    The module docstring carries :data:`LOADER`. Returns ``max_abs_logit_change`` (int8 against
    float on a seeded batch of 8) for the caller to report.
    """
    from fusion_nas.deploy.export import _load_module, export_code, write_export
    from fusion_nas.model.build import build_model
    from fusion_nas.outputs import atomic_output, check_outputs

    check_outputs({"--out": out, "--weights": weights})

    meta = {**dict(meta or {}), "weights_file": Path(weights).name, "note": LOADER}
    float_model = build_model(arch, space)
    float_model.load_state_dict(dict(state_dict), strict=True)
    int8 = quantize_dynamic(float_model)
    tensors = int8.state_dict()
    # The file's FusionNet, quantised the documented way, must load and run the int8 weights.
    exported = _load_module(export_code(arch, space, meta=meta))["FusionNet"]()
    reloaded = load_quantized(exported, tensors)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(space.input_shape(8), generator=gen)
    with torch.no_grad():
        ref, got, fp = int8(x), reloaded(x), float_model.eval()(x)
    if not torch.equal(ref, got):
        raise ExportError("the exported module does not reproduce the int8 model")
    # The code and the int8 weights are both written to temporary names, then renamed.
    with atomic_output(Path(weights)) as tmp:
        torch.save(tensors, tmp)
        write_export(arch, space, out, meta=meta)
    return {"max_abs_logit_change": float((got - fp).abs().max())}
