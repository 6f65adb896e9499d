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
