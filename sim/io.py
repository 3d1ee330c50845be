"""Atomic file output: write to a temporary name in the same folder, fsync, then rename.

A job killed mid-write leaves at worst a ``.tmp-*`` file, never a truncated ``results.nc`` or
``summary.json`` that looks complete.

Non-finite numbers have one representation that every writer and reader of this project agrees
on. JSON has no literal for them (Python's ``Infinity``/``NaN`` tokens are not JSON, and other
readers refuse them), so :func:`write_json` writes NaN as ``null`` and +-inf as the strings
``"inf"`` / ``"-inf"`` (:func:`to_json_value`); :func:`read_json` (and :func:`decode_nonfinite`
on any value) turns those strings back into IEEE floats. Tables (``summary.parquet``, see
:mod:`sim.sweep`) hold IEEE values in float-typed columns, never the strings: a column that mixed
``"inf"`` with numbers is what made pyarrow refuse a sweep's whole table.
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


NONFINITE_STRINGS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}  # how JSON files spell them


def to_json_value(obj):
    """``obj`` with numpy scalars as Python numbers and non-finite floats as JSON can hold them:
    NaN -> ``null``, +inf -> ``"inf"``, -inf -> ``"-inf"`` (see the module docstring)."""
    if isinstance(obj, dict):
        return {str(k): to_json_value(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_value(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


_clean = to_json_value  # (the old private name)


def decode_nonfinite(value):
    """The inverse of :func:`to_json_value` for one scalar: ``"inf"``, ``"-inf"``, ``"nan"`` -> float."""
    if isinstance(value, str) and value in NONFINITE_STRINGS:
        return NONFINITE_STRINGS[value]
    return value


def read_json(path):
    """A JSON file written by :func:`write_json`, with non-finite numbers decoded back to floats
    (in mappings and lists, recursively)."""

    def decode(obj):
        if isinstance(obj, dict):
            return {k: decode(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [decode(v) for v in obj]
        return decode_nonfinite(obj)

    return decode(json.loads(Path(path).read_text()))


def json_text(data, *, sort_keys: bool = True) -> str:
    """The text :func:`write_json` writes (strict JSON: ``allow_nan=False``, non-finite numbers as
    described in the module docstring)."""
    return json.dumps(to_json_value(data), indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"


def write_json(path, data, *, sort_keys: bool = True) -> None:
    """JSON with sorted keys by default; ``sort_keys=False`` keeps mapping order (configs, where
    the order of e.g. producer kinds is meaningful)."""
    text = json_text(data, sort_keys=sort_keys)  # (before the temporary: a value JSON cannot hold raises here)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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


def write_npz(path, arrays: dict) -> None:
    """``np.savez`` of ``arrays`` (name -> array), atomically, without pickles."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, **arrays)


def write_dataset_npz(path, ds) -> None:
    """An ``xarray.Dataset`` as a plain ``.npz``: every variable and coordinate under its name, and
    ``__meta__`` (JSON: each array's dims and attributes, the dataset's attributes). The fallback
    when ``results.nc`` cannot be written (see ``sim.app``): numpy needs no netCDF library and no
    particular file name, so the computed arrays survive a failed netCDF write."""
    import numpy as np

    arrays, meta = {}, {"attrs": to_json_value(dict(ds.attrs)), "variables": {}}
    for name, var in list(ds.coords.items()) + list(ds.data_vars.items()):
        values = np.asarray(var.values)
        if values.dtype == object:
            values = values.astype(str)
        arrays[str(name)] = values
        meta["variables"][str(name)] = {"dims": list(var.dims), "attrs": to_json_value(dict(var.attrs)),
                                        "coord": name in ds.coords}
    arrays["__meta__"] = np.array(json.dumps(meta, default=str))
    write_npz(path, arrays)
