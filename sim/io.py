"""Atomic file output: write to a temporary name in the same folder, fsync, then rename.

A job killed mid-write leaves at worst a ``.tmp-*`` file, never a truncated ``results.nc`` or
``summary.json`` that looks complete.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


TEMP_PREFIX = ".tmp-"  # what a temporary of ours is called (and what remove_temporaries removes)


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_temporaries(folder) -> list[Path]:
    """Delete the ``.tmp-*`` files a killed writer left under ``folder`` (recursively); returns them.

    Only for a folder nobody is writing to (``sim.app.resume_run`` calls it under the run lock)."""
    removed = []
    for p in sorted(Path(folder).rglob(TEMP_PREFIX + "*")):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def write_json(path, data, *, sort_keys: bool = True) -> None:
    """JSON with sorted keys by default; ``sort_keys=False`` keeps mapping order (configs, where
    the order of e.g. producer kinds is meaningful)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_clean(data), indent=2, sort_keys=sort_keys) + "\n")


def write_text(path, text: str) -> None:
    """A text file (UTF-8), e.g. the ``.hydra/*.yaml`` files of a run folder (see sim.app)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_netcdf(path, ds) -> None:
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")


def write_parquet(path, df) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
