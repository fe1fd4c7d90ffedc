"""Where an export writes: a folder beside the one asked for, moved there whole when the export
succeeded and removed when it failed, so an interrupted or failed export leaves no half-written
folder (one a killed export left is removed by the next)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def staged(out: Path):
    """Yield the staging folder of `out` (which is absent or empty)."""
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def moved(result: dict, staging: Path, out: Path) -> dict:
    """An export's result with the paths under the staging folder named where they are now."""
    old, new = str(staging.resolve()), str(out.resolve())
    return {k: v.replace(old, new, 1) if isinstance(v, str) and v.startswith(old) else v for k, v in result.items()}
