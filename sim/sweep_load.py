"""``sim.load_sweep(path)``: a Hydra sweep folder as one xarray Dataset and one typed table.

    sw = sim.load_sweep("runs/multirun/2026-01-01_12-00-00-000000")
    ds, table = sw                      # (or sw.dataset, sw.table)
    ds["energy_charge"].sel(job=ds["topology"] == "ring")
    ds.groupby("params.demand_scale").mean()

``dataset``: the jobs' ``results.nc`` concatenated along a new ``job`` dimension (the job numbers, as
Hydra numbers the job folders), with one coordinate on ``job`` per swept parameter (named by its
override key, ``params.demand_scale``, ``topology``; ``override.<key>`` where that name is already a
variable or dimension of the results), typed as in the table: int64, float64, bool or str. Jobs
without ``results.nc`` (failed, killed, or experiments that write none) are not in it; the table
still has their row. Where jobs differ in shape (``topology.n_cells`` swept), dimensions are the
union and the missing entries NaN. None when no job wrote ``results.nc``. Its attributes
``sweep_parameters`` (the swept keys) and ``sweep_fixed`` (``key=value`` of the overrides every job
shared) say what was varied. The arrays are loaded into memory (the files are closed).

``table``: one row per job, the ``summary.parquet`` columns (``job``, ``override.<key>`` typed as
:mod:`sim.sweep` describes, ``status``, ``reason`` and the outcomes), collected afresh from the job
folders (so a sweep still running or one killed before its table was written loads too).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import SimError
from sim.sweep import MULTIRUN_FILE, OVERRIDE_PREFIX, TABLE, job_folders, read_table, swept_parameters

RESULTS = "results.nc"


class NotASweep(SimError, ValueError):
    """A path that is not a sweep folder (names the path and what a sweep folder holds)."""

    def __init__(self, path, why: str):
        self.path = path
        super().__init__(f"path={str(path)!r}: {why}; allowed: a sweep folder (numbered job folders "
                         f"0, 1, ... with .hydra/overrides.yaml, or {TABLE}), as `python -m sim -m ...` writes")


@dataclasses.dataclass
class Sweep:
    """What :func:`load_sweep` returns; unpacks as ``dataset, table = sweep``."""

    dataset: object  # xarray.Dataset with a ``job`` dimension, or None (no job wrote results.nc)
    table: pd.DataFrame
    parameters: list[str]  # the swept override keys
    path: Path

    def __iter__(self):
        return iter((self.dataset, self.table))


def is_sweep(path) -> bool:
    """Whether ``path`` looks like a sweep folder (job folders, its table or Hydra's multirun.yaml)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / TABLE).is_file() or (path / MULTIRUN_FILE).is_file():
        return True
    return any((j / ".hydra").is_dir() or (j / "summary.json").is_file() for j in job_folders(path))


def _coordinate(col: pd.Series) -> np.ndarray:
    """A typed numpy array for a job coordinate (nullable ints with a gap become float, nullable
    booleans with a gap stay objects: xarray has no missing int or bool)."""
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_integer_dtype(col):
        if col.isna().any():
            return col.astype("float64" if pd.api.types.is_integer_dtype(col) else object).to_numpy()
        return col.to_numpy(dtype=bool if pd.api.types.is_bool_dtype(col) else np.int64)
    if pd.api.types.is_float_dtype(col):
        return col.to_numpy(dtype=np.float64)
    values = col.tolist()
    if all(isinstance(v, str) for v in values):
        return np.asarray(values, dtype=str)
    return np.asarray(values, dtype=object)


def _stack(path: Path, table: pd.DataFrame, params: list[str]):
    import xarray as xr

    parts, jobs = [], []
    for job in table["job"].tolist():
        f = path / str(job) / RESULTS
        if not f.is_file():
            continue
        try:
            with xr.open_dataset(f, engine="netcdf4") as ds:
                parts.append(ds.load())
        except Exception as exc:
            raise NotASweep(path, f"job {job}: {RESULTS} cannot be read ({type(exc).__name__}: {exc})") from exc
        jobs.append(job)
    if not parts:
        return None
    try:
        ds = xr.concat([d.expand_dims(job=[j]) for d, j in zip(parts, jobs)], dim="job", data_vars="all",
                       coords="different", compat="equals", join="outer", combine_attrs="drop_conflicts")
    except Exception as exc:  # (e.g. a sweep over `experiment`: results of different kinds)
        raise NotASweep(path, f"the jobs' {RESULTS} files cannot be stacked along job "
                              f"({type(exc).__name__}: {exc})") from exc
    rows = table.set_index("job").loc[jobs]
    coords = {}
    for key in params:
        name = key if key not in ds.variables and key not in ds.dims else OVERRIDE_PREFIX + key
        coords[name] = ("job", _coordinate(rows[OVERRIDE_PREFIX + key]))
    ds = ds.assign_coords(coords)
    ds.attrs["sweep_parameters"] = list(params)
    fixed = [f"{c[len(OVERRIDE_PREFIX):]}={table[c].dropna().iloc[0]}" for c in table.columns
             if c.startswith(OVERRIDE_PREFIX) and c[len(OVERRIDE_PREFIX):] not in params and table[c].notna().any()]
    ds.attrs["sweep_fixed"] = fixed
    return ds


def load_sweep(path) -> Sweep:
    """The sweep folder ``path`` as :class:`Sweep` (``dataset, table``; see the module docstring).
    Raises :class:`NotASweep` (naming the path) for a folder that is not a sweep."""
    path = Path(path)
    if not path.is_dir():
        raise NotASweep(path, "no such folder")
    if not is_sweep(path):
        raise NotASweep(path, "no job folders and no " + TABLE)
    table = read_table(path)
    if table.empty:
        raise NotASweep(path, "no jobs")
    params = swept_parameters(table, path)
    return Sweep(_stack(path, table, params), table, params, path)
