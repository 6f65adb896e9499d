"""Zero-cost proxies: rank untrained networks from one batch, in about a second each.

Four scores, larger is better (expected to be), all on an untrained model:

- ``naswot`` (Mellor et al., 2021): the log-determinant of the Hamming kernel of the binary
  activation codes over one batch. The code of a unit is "its pre-activation is > 0", read from
  the *input* of every activation module (``nn.GELU``, ``nn.ReLU`` and the other element-wise
  activation modules of :data:`ACTIVATIONS`): for ReLU that is exactly the reference's
  "ReLU output > 0", and for GELU it is the sign at which GELU switches from ~0 to ~x.
  ``K[i, j]`` counts the units on which samples ``i`` and ``j`` agree; the score is
  ``log det (K + I)``: ``K`` is a Gram matrix (positive semi-definite), so ``K + I`` is positive
  definite and a batch whose codes all coincide scores a finite small number, not ``-inf``.
  The functional ``elu`` inside linear attention is not a module and is not read.
- ``synflow`` (Tanaka et al., 2020): ``sum |θ ⊙ ∂R/∂θ|`` with ``R = sum f_|θ|(1)``, the output
  of the network whose parameters are replaced by their absolute values on an all-ones input
  (one sample, no data), in double precision. BatchNorm layers are bypassed (identity), as the
  reference implementation scores a copy of the network built without BatchNorm.
- ``grad_norm``: ``sum over parameter tensors of ||∂L/∂θ||_2``, the cross-entropy ``L`` of one
  batch of training data (the reference sums per-layer gradient norms the same way).
- ``snip`` (Lee et al., 2019): ``sum |θ ⊙ ∂L/∂θ|`` on the same batch.

Every parameter tensor of the network counts in synflow, grad_norm and snip (weights, biases,
LayerNorm, position embeddings and fusion weights; BatchNorm's only outside synflow), so
attention branches are scored like convolutions. The model runs in training mode (batch
statistics) except synflow's, which needs no batch. Scores are computed on a deep copy of the
model, so the model's parameters, buffers, gradients, modes and ``requires_grad`` flags are left
as they were, and the global RNG is forked: scoring does not move it.

    batch = train_batch(space, "mnist1d", size=64, seed=0)      # (x, y) of the TRAIN split
    s = score_arch(arch, space, batch, "naswot", seed=0)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fusion_nas.errors import FusionNasError, allowed
from fusion_nas.model.arch import Architecture
from fusion_nas.model.space import SearchSpace

PROXIES = ("naswot", "synflow", "grad_norm", "snip")
BATCH_SIZE = 64  # the batch the proxies are calibrated for
# Element-wise activation modules whose input sign is a unit's NASWOT code.
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.Hardswish,
    nn.Mish,
)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

Batch = tuple[torch.Tensor, torch.Tensor]  # (x float32 (B, C, *S), y int64 (B,))


class ProxyError(FusionNasError):
    """An unknown zero-cost proxy name, or a batch it cannot score."""


def check_proxy(proxy: str) -> str:
    """``proxy`` if it is a known proxy name; else a one-line :class:`ProxyError`."""
    if proxy not in PROXIES:
        raise ProxyError(f"unknown zero-cost proxy {proxy!r}; allowed: {allowed(PROXIES)}")
    return proxy


# --------------------------------------------------------------------------- the proxies


def naswot(model: nn.Module, batch: Batch) -> float:
    """``log det (K + I)`` of the Hamming kernel of the activation codes over ``batch``."""
    x = batch[0]
    n = x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(module: nn.Module, args: tuple) -> None:
        # (B, ...) -> (B, units) of +-1; c @ c.T = agree - disagree, so agree = (units + c c^T)/2
        c = (args[0].detach().reshape(n, -1) > 0).float() * 2.0 - 1.0
        kernel.add_(((c.shape[1] + c @ c.T) / 2.0).double())

    handles = [
        m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, ACTIVATIONS)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    kernel += torch.eye(n, dtype=torch.float64)  # positive definite: finite for any codes
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) > 0 else 0.0


def synflow(model: nn.Module, batch: Batch) -> float:
    """``sum |θ ⊙ ∂R/∂θ|`` of the |θ| network on an all-ones input, in double precision."""
    model.double().eval()  # BatchNorm is bypassed below; eval mode also takes a 1-value map
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    bypass = [
        m.register_forward_hook(lambda mod, args, out: args[0])  # BatchNorm -> identity
        for m in model.modules()
        if isinstance(m, _BATCHNORMS)
    ]
    try:
        ones = torch.ones(1, *batch[0].shape[1:], dtype=torch.float64)  # (1, C, *S)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(model(ones).sum(), params, allow_unused=True)
    finally:
        for h in bypass:
            h.remove()
    return sum(float((p.detach() * g).abs().sum()) for p, g in zip(params, grads) if g is not None)


def _loss_grads(model: nn.Module, batch: Batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(θ, ∂L/∂θ) of every parameter with a gradient; ``L`` the batch's cross-entropy."""
    x, y = batch
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [(p.detach(), g) for p, g in zip(params, grads) if g is not None]


def grad_norm(model: nn.Module, batch: Batch) -> float:
    """Sum over parameter tensors of the L2 norm of the loss gradient."""
    return sum(float(g.norm()) for _, g in _loss_grads(model, batch))


def snip(model: nn.Module, batch: Batch) -> float:
    """``sum |θ ⊙ ∂L/∂θ|``: the connection sensitivity of every parameter, summed."""
    return sum(float((p * g).abs().sum()) for p, g in _loss_grads(model, batch))


_SCORERS: dict[str, Callable[[nn.Module, Batch], float]] = {
    "naswot": naswot,
    "synflow": synflow,
    "grad_norm": grad_norm,
    "snip": snip,
}


# --------------------------------------------------------------------------- public API


def _check_batch(batch: Batch) -> Batch:
    try:
        x, y = batch
    except (TypeError, ValueError):
        raise ProxyError("a zero-cost batch must be a pair (x, y) of tensors") from None
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.shape[0] < 2:
        raise ProxyError("a zero-cost batch must be (x, y) tensors with at least 2 samples")
    return x.float(), y.long()


def score(model: nn.Module, batch: Batch, proxy: str, seed: int = 0) -> float:
    """Zero-cost score of ``model`` (larger: expected better) on one ``(x, y)`` batch.

    The model is scored as a deep copy on the CPU; it is left exactly as it was.
    """
    scorer = _SCORERS[check_proxy(proxy)]
    batch = _check_batch(batch)
    work = copy.deepcopy(model).cpu().float()
    work.train()
    for p in work.parameters():
        p.requires_grad_(True)
        p.grad = None
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        value = scorer(work, batch)
    if not math.isfinite(value):
        raise ProxyError(f"zero-cost proxy {proxy!r} is not finite ({value}) for this network")
    return value


def score_arch(
    arch: Architecture, space: SearchSpace, batch: Batch, proxy: str, seed: int = 0
) -> float:
    """Zero-cost score of ``arch`` built by ``build_model`` under ``torch.manual_seed(seed)``
    (the initial weights a search's trial with that seed starts from)."""
    from fusion_nas.model.build import build_model

    check_proxy(proxy)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, space)
    return score(model, batch, proxy, seed)


def train_batch(
    space: SearchSpace,
    dataset: str,
    *,
    size: int = BATCH_SIZE,
    seed: int = 0,
    data_dir: str | None = None,
    val_fraction: float = 0.2,
) -> Batch:
    """``size`` samples of the TRAIN split of ``dataset`` shaped for ``space``, drawn by ``seed``.

    The split is the one a search with ``--seed seed`` trains on
    (``fusion_nas.evaluation.trainer``'s
    ``dataset_for``): validation and test data never reach a proxy.
    """
    from fusion_nas.training.data import dataset_for, take

    splits = dataset_for(dataset, space.source, data_dir, val_fraction, seed, None)
    n = len(splits.train)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=gen)[: min(size, n)]
    return take(splits.train, idx)  # normalised inputs; only these samples are read
