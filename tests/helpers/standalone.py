"""Running exported code where fusion_nas cannot be imported: an isolated interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any


def run_isolated(code: str, args: list[str], cwd: Path, timeout: float = 120) -> Any:
    """Run ``code`` with ``args`` in ``python -I`` (no PYTHONPATH, no user site: the toolkit is
    not importable) in ``cwd``; returns the JSON of its last printed line."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(code), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def export_case(
    folder: Path, name: str, arch: Any, space: Any, model: Any, meta: dict | None = None
) -> Any:
    """Write ``name.py`` (the export of ``arch`` with ``model``'s weights in ``name.pt``) and a
    random input batch ``name.input.pt`` into ``folder``; returns the model's logits on it,
    what the exported file must give back."""
    import torch

    from fusion_nas.deploy.export import write_export

    extra = {} if meta is None else {"meta": meta}
    write_export(
        arch,
        space,
        folder / f"{name}.py",
        state_dict=model.state_dict(),
        weights=folder / f"{name}.pt",
        **extra,
    )
    x = torch.randn(space.input_shape(2))
    torch.save(x, folder / f"{name}.input.pt")
    with torch.no_grad():
        return model(x)
