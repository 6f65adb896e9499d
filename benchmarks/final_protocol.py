"""Which final protocol? Test accuracy of a few baselines under several final schedules.

A comparison of searched and hand-written networks is only fair under one protocol that serves
both. This trains the chosen baselines of a space (``fusion_nas.analysis.baselines``) from scratch
on all
training data under each schedule (epochs, peak learning rate, batch size, AdamW weight decay;
warm-up then cosine decay, as every run of the toolkit) and tests each once. Writes
``benchmarks/results/final_protocol_<space>.json``.

    python benchmarks/final_protocol.py --space mnist1d --only paper-cnn,all-conv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from fusion_nas.analysis import baselines as bl
from fusion_nas.model.space import load_space
from fusion_nas.training.loop import ProxyConfig
from fusion_nas.training.protocol import TrainingProtocol

RESULTS = Path(__file__).parent / "results"
_DEFAULT = ProxyConfig()
# (epochs, lr, batch size, weight decay): the proxy's former settings (lr 3e-3) at 60 epochs
# (retrain's default) and at 150, and the MNIST-1D paper's 6,000 steps at its learning rate,
# with and without weight decay.
SCHEDULES = [
    (60, 3e-3, _DEFAULT.batch_size, _DEFAULT.weight_decay),
    (150, 3e-3, _DEFAULT.batch_size, _DEFAULT.weight_decay),
    (150, 1e-2, 100, 0.0),
    (150, 1e-2, 128, 0.05),
]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Train every (baseline, schedule) pair once; write and return the rows."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="mnist1d")
    p.add_argument("--dataset", default=None)
    p.add_argument("--only", default="paper-cnn,all-conv,can", help="comma-separated baselines")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every schedule's epochs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    chosen, _ = bl.select(space, [n.strip() for n in args.only.split(",") if n.strip()])
    rows = []
    for epochs, lr, batch, decay in SCHEDULES:
        epochs = max(1, round(epochs * args.scale))
        protocol = TrainingProtocol(
            dataset=args.dataset or space.name,
            space=space,
            proxy=_DEFAULT,
            seed=args.seed,
            final_lr=lr,
            final_batch_size=batch,
            final_weight_decay=decay,
        )
        for b in chosen:
            _, result = protocol.retrain(b.build, epochs)
            row = {
                "baseline": b.name,
                "macs": b.macs,
                "params": b.params,
                "epochs": epochs,
                "lr": lr,
                "batch_size": batch,
                "weight_decay": decay,
                "test_acc": result.test_acc,
                "seconds": round(result.seconds, 1),
                "threads": args.threads,
            }
            rows.append(row)
            print(
                f"{b.name:>14} {epochs:>4} ep lr {lr:g} batch {batch} decay {decay:g}: "
                f"test {result.test_acc:.4f} ({result.seconds:.0f} s)",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"final_protocol_{space.name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
