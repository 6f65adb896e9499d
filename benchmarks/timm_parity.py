"""The zoo against timm: parameters, per-stage shapes, MACs four ways and CPU latency.

Two outputs:

1. ``tests/model/data/timm_parity.json`` (the timm side; ``tests/model/test_zoo_parity.py``
   checks every zoo network against it without timm): per timm model its parameter count, the
   output shape of each of its stages at 224x224, batch 1 (forward hooks on ``model.stages[i]``;
   LeViT's and EfficientFormer's token outputs ``(B, N, C)`` are converted to ``(B, C, H, W)``
   with ``H = W = sqrt(N)`` and marked ``from_tokens``), thop's MACs of the model, the project's
   cost model (:func:`fusion_nas.model.cost.count_cost`) on the model at 224 and at timm's
   published resolution, and timm's published parameters and GMACs (from timm's results CSV,
   named in the file), with the timm version and the command that wrote it.
2. ``benchmarks/results/zoo_parity.json`` and ``.md``: per zoo network (``fusion_nas/zoo/``)
   the parameters of ours and timm's, MACs (our cost model on our network, timm's published
   figure, thop on timm's model, our cost model on timm's model) and the batch-1 CPU latency of
   both models, measured interleaved (``--rounds`` rounds of
   :func:`fusion_nas.deploy.latency.measure_latency` with ``--runs`` timed runs each, ours then
   timm's, the order swapped every round; the median of the round medians and their ratio).
   A zoo network whose file is not there yet is listed as skipped.

timm is imported from ``--timm-path`` (a ``pip install --no-deps --target DIR timm`` folder) if
given. Where torchvision cannot be imported (a CPU torch beside the registry's CUDA torchvision
wheels), ``--stub-torchvision`` installs an import stub for ``torchvision``, ``huggingface_hub``
and ``safetensors`` before timm is imported: timm's model code builds every model here without
them (they serve data transforms and weight downloads, which this script does not use). The data
file says whether the stub was used. On a machine where timm imports normally, leave the flag
out.

    python benchmarks/timm_parity.py --timm-path /tmp/timmpkg --stub-torchvision --timm-only
    python benchmarks/timm_parity.py --timm-path /tmp/timmpkg --stub-torchvision --rounds 15
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.abc
import importlib.machinery
import json
import math
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "model" / "data" / "timm_parity.json"
RESULTS = ROOT / "benchmarks" / "results"
SIZE = 224
# zoo file -> timm model (the zoo files name theirs in [zoo].timm; this is the expected set)
FAMILIES = {
    "mobilevit_xxs": "mobilevit_xxs",
    "edgenext_xx_small": "edgenext_xx_small",
    "levit_128s": "levit_128s",
    "efficientformer_l1": "efficientformer_l1",
    "coatnet_0": "coatnet_0_224",
    "maxvit_tiny": "maxvit_tiny_tf_224",
}
EXTRA_MODELS = ("coatnet_0_rw_224",)  # recorded beside coatnet_0_224 (timm's trained CoAtNet-0)
# timm's published figures: results/benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv of
# huggingface/pytorch-image-models (commit 7479d451), columns infer_img_size, param_count (M),
# infer_gmacs. mobilevit_xxs and edgenext_xx_small are published at their default size 256.
PUBLISHED_SOURCE = (
    "huggingface/pytorch-image-models results/benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv "
    "(commit 7479d451a6dfd8af27f941b8e82a7402461fae80): param_count, infer_gmacs, infer_img_size"
)
PUBLISHED = {
    "mobilevit_xxs": {"params_m": 1.27, "gmacs": 0.42, "img_size": 256},
    "edgenext_xx_small": {"params_m": 1.33, "gmacs": 0.26, "img_size": 256},
    "levit_128s": {"params_m": 7.78, "gmacs": 0.31, "img_size": 224},
    "efficientformer_l1": {"params_m": 12.29, "gmacs": 1.3, "img_size": 224},
    "coatnet_0_224": {"params_m": 25.04, "gmacs": 4.58, "img_size": 224},
    "coatnet_0_rw_224": {"params_m": 27.44, "gmacs": 4.43, "img_size": 224},
    "maxvit_tiny_tf_224": {"params_m": 30.92, "gmacs": 5.6, "img_size": 224},
}
STUBBED = ("torchvision", "huggingface_hub", "safetensors")


# --------------------------------------------------------------------------- importing timm


class _Stub(types.ModuleType):
    """A module whose every attribute is another stub, callable and usable as a base class."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _Stub(f"{self.__name__}.{name}")
        setattr(self, name, sub)
        return sub

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of :data:`STUBBED` packages (and their submodules) with stubs."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _Stub(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def import_timm(timm_path: Path | None, stub: bool) -> types.ModuleType:
    """timm, from ``timm_path`` first if given, with :data:`STUBBED` stubbed if ``stub``."""
    if stub:
        sys.meta_path.insert(0, _StubFinder())
    if timm_path is not None:
        sys.path.insert(0, str(timm_path))
    return importlib.import_module("timm")


# --------------------------------------------------------------------------- the timm side


def stage_shapes(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Output shape of each ``model.stages[i]`` on ``x``; token outputs ``(B, N, C)`` become
    ``(B, C, H, W)`` with ``H = W = sqrt(N)`` (square inputs only) and say so."""
    from fusion_nas.model.zoo import stage_outputs

    out = []
    for i, shape in enumerate(stage_outputs(model, x)):
        row: dict[str, Any] = {"module": f"stages.{i}"}
        if len(shape) == 3:  # (B, N, C) tokens of a square map
            side = math.isqrt(shape[1])
            assert side * side == shape[1], shape
            row.update(shape=[shape[0], shape[2], side, side], from_tokens=list(shape))
        else:
            row["shape"] = list(shape)
        out.append(row)
    return out


def thop_macs(model: nn.Module, x: torch.Tensor) -> int:
    """thop's MACs of ``model`` on ``x`` (a copy is profiled: thop adds buffers to modules)."""
    import thop

    with torch.no_grad():
        macs, _ = thop.profile(copy.deepcopy(model), inputs=(x,), verbose=False)
    return int(macs)


def timm_record(timm: types.ModuleType, name: str) -> dict[str, Any]:
    """Everything ``timm_parity.json`` keeps about timm model ``name``."""
    from fusion_nas.model.cost import count_cost

    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    published = PUBLISHED.get(name)
    record: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "default_input_size": list(model.pretrained_cfg.get("input_size", ())),
        "stages": stage_shapes(model, x),
        "thop_macs": thop_macs(model, x),
        "cost_model_macs": count_cost(model, x).macs,
        "published": published,
    }
    if published and published["img_size"] != SIZE:
        n = published["img_size"]
        record["cost_model_macs_at_published_size"] = count_cost(
            model, torch.randn(1, 3, n, n)
        ).macs
    return record


def timm_side(timm: types.ModuleType, names: list[str], command: str, stub: bool) -> dict:
    """The content of ``timm_parity.json`` for ``names``."""
    models = {}
    for name in names:
        start = time.perf_counter()
        models[name] = timm_record(timm, name)
        print(f"{name}: {models[name]['params']:,} params ({time.perf_counter() - start:.1f} s)")
    return {
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "command": command,
        "imports": (
            f"{', '.join(STUBBED)} replaced by an import stub (timm's model code builds without "
            "them; they serve transforms and weight downloads)"
            if stub
            else "timm imported normally"
        ),
        "input": [1, 3, SIZE, SIZE],
        "stage_shapes": (
            "forward hooks on model.stages[i]; token outputs (B, N, C) converted to (B, C, H, W) "
            "with H = W = sqrt(N), the token shape kept under from_tokens"
        ),
        "macs": (
            "thop_macs: thop.profile (counts modules only, not functional matmuls); "
            "cost_model_macs: fusion_nas.model.cost.count_cost (every conv, linear, matmul, "
            "einsum and attention product); both at the input above"
        ),
        "published_source": PUBLISHED_SOURCE,
        "models": models,
    }


# --------------------------------------------------------------------------- the zoo side


def interleaved_latency(
    ours: nn.Module, theirs: nn.Module, rounds: int, runs: int, warmup: int
) -> dict[str, Any]:
    """Batch-1 one-thread CPU latency of two models, measured in alternating rounds."""
    from fusion_nas.deploy.latency import measure_latency

    shape = (1, 3, SIZE, SIZE)
    medians: dict[str, list[float]] = {"ours": [], "timm": []}
    models = {"ours": ours, "timm": theirs}
    for r in range(rounds):
        order = ("ours", "timm") if r % 2 == 0 else ("timm", "ours")
        for key in order:
            rec = measure_latency(
                models[key],
                shape,
                batch_sizes=(1,),
                warmup=warmup if r < 2 else 1,
                runs=runs,
                threads=1,
            )
            medians[key].append(rec.median_ms(1))
    ours_ms, timm_ms = (statistics.median(medians[k]) for k in ("ours", "timm"))
    return {
        "ours_ms": round(ours_ms, 3),
        "timm_ms": round(timm_ms, 3),
        "ratio_ours_over_timm": round(ours_ms / timm_ms, 3),
        "round_medians_ms": {k: [round(v, 3) for v in vs] for k, vs in medians.items()},
    }


def zoo_row(
    timm: types.ModuleType, zoo_name: str, data: dict, rounds: int, runs: int, warmup: int
) -> dict[str, Any]:
    """One zoo network against its timm model."""
    from fusion_nas.model.build import build_model
    from fusion_nas.model.cost import arch_cost
    from fusion_nas.model.zoo import load_zoo, zoo_arch, zoo_stage_shapes

    space = load_zoo(zoo_name)
    timm_name = space.zoo["timm"]
    ref = data["models"][timm_name]
    arch = zoo_arch(zoo_name)
    cost = arch_cost(arch, space)
    ours_shapes = zoo_stage_shapes(zoo_name)
    ends = space.zoo["stage_ends"]
    shapes_equal = [list(ours_shapes[i]) for i in ends] == [s["shape"] for s in ref["stages"]]
    pub = ref["published"] or {}
    row: dict[str, Any] = {
        "zoo": zoo_name,
        "timm": timm_name,
        "params_ours": cost.params,
        "params_timm": ref["params"],
        "params_ratio": round(cost.params / ref["params"], 5),
        "stage_shapes_equal": shapes_equal,
        "macs_ours_cost_model": cost.macs,
        "macs_timm_published": round(pub["gmacs"] * 1e9) if pub else None,
        "published_img_size": pub.get("img_size"),
        "macs_timm_thop": ref["thop_macs"],
        "macs_timm_cost_model": ref["cost_model_macs"],
        "macs_timm_cost_model_at_published_size": ref.get("cost_model_macs_at_published_size"),
    }
    torch.manual_seed(0)
    ours = build_model(arch, space).eval()
    theirs = timm.create_model(timm_name).eval()
    row["latency"] = interleaved_latency(ours, theirs, rounds, runs, warmup)
    return row


def markdown(rows: list[dict[str, Any]], skipped: list[str], meta: dict[str, Any]) -> str:
    """The results table in Markdown."""

    def g(n: int | None) -> str:
        return "-" if n is None else f"{n / 1e9:.3f}"

    lines = [
        "# Zoo networks against timm",
        "",
        f"timm {meta['timm_version']}, torch {meta['torch_version']}, {meta['machine']}; "
        "input 224x224, batch 1. MACs in G; latency: one thread, median of the round medians "
        f"({meta['rounds']} interleaved rounds of {meta['runs']} runs).",
        "",
        *([meta["note"], ""] if meta.get("note") else []),
        "| zoo | timm | params ours / timm | shapes | MACs ours | timm published | "
        "thop on timm | cost model on timm | ms ours | ms timm | ours/timm |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat = r["latency"]
        pub = g(r["macs_timm_published"])
        if r["published_img_size"] not in (None, SIZE):
            pub += f" (at {r['published_img_size']})"
        lines.append(
            f"| {r['zoo']} | {r['timm']} | {r['params_ours']:,} / {r['params_timm']:,} "
            f"({r['params_ratio']:.4f}) | {'equal' if r['stage_shapes_equal'] else 'DIFFER'} | "
            f"{g(r['macs_ours_cost_model'])} | {pub} | {g(r['macs_timm_thop'])} | "
            f"{g(r['macs_timm_cost_model'])} | {lat['ours_ms']} | {lat['timm_ms']} | "
            f"{lat['ratio_ours_over_timm']} |"
        )
    for r in rows:
        at = r.get("macs_timm_cost_model_at_published_size")
        if at is not None:
            lines += [
                "",
                f"{r['timm']}: timm publishes its cost at {r['published_img_size']}x"
                f"{r['published_img_size']}; the cost model on timm's model there gives "
                f"{g(at)} G.",
            ]
    if skipped:
        lines += ["", "Skipped (no zoo file yet): " + ", ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def zoo_side(
    timm: types.ModuleType,
    data: dict,
    rounds: int,
    runs: int,
    warmup: int,
    out: Path,
    note: str | None = None,
) -> dict[str, Any]:
    """Write ``zoo_parity.json`` and ``.md`` for every zoo file present."""
    from fusion_nas.model.zoo import list_zoo

    present = list_zoo()
    rows, skipped = [], [n for n in FAMILIES if n not in present]
    for name in present:
        start = time.perf_counter()
        rows.append(zoo_row(timm, name, data, rounds, runs, warmup))
        print(f"{name}: {time.perf_counter() - start:.1f} s")
    meta = {
        "timm_version": data["timm_version"],
        "torch_version": torch.__version__,
        "machine": " ".join(
            filter(None, (platform.machine(), platform.processor(), f"{os.cpu_count()} cores"))
        ),
        "load_before": list(os.getloadavg()),
        "rounds": rounds,
        "runs": runs,
        "warmup": warmup,
        "command": data.get("zoo_command"),
        "note": note,
    }
    result = {"meta": meta, "rows": rows, "skipped": skipped}
    out.mkdir(parents=True, exist_ok=True)
    (out / "zoo_parity.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (out / "zoo_parity.md").write_text(markdown(rows, skipped, meta), encoding="utf-8")
    return result


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison; returns the zoo results (or the timm data with ``--timm-only``)."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--timm-path", type=Path, default=None, help="A folder holding timm.")
    ap.add_argument(
        "--stub-torchvision",
        action="store_true",
        help="Stub torchvision, huggingface_hub and safetensors before importing timm.",
    )
    ap.add_argument("--timm-only", action="store_true", help="Write only the timm data file.")
    ap.add_argument(
        "--reuse-timm",
        action="store_true",
        help="Read the timm data file instead of rewriting it (the zoo side only).",
    )
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--rounds", type=int, default=15, help="Interleaved latency rounds.")
    ap.add_argument("--runs", type=int, default=5, help="Timed runs per model and round.")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--note", default=None, help="A line for the results (what was measured).")
    args = ap.parse_args(argv)
    if min(args.rounds, args.runs) < 1 or args.warmup < 0:
        ap.error("--rounds and --runs must be >= 1, --warmup >= 0")
    torch.set_num_threads(1)
    timm = import_timm(args.timm_path, args.stub_torchvision)
    shown = [a if a != str(args.timm_path) else "DIR" for a in sys.argv[1:]]
    command = " ".join(["python", "benchmarks/timm_parity.py", *shown])
    if args.reuse_timm:
        data = json.loads(args.data.read_text(encoding="utf-8"))
    else:
        names = [*FAMILIES.values(), *EXTRA_MODELS]
        data = timm_side(timm, names, command, args.stub_torchvision)
        args.data.parent.mkdir(parents=True, exist_ok=True)
        args.data.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.data}")
    if args.timm_only:
        return data
    data["zoo_command"] = command
    return zoo_side(timm, data, args.rounds, args.runs, args.warmup, args.out, args.note)


if __name__ == "__main__":
    main()
