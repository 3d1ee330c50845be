"""Helpers shared by the test modules (not a test file: pytest puts tests/ on sys.path)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

ROOT = Path(__file__).resolve().parents[1]


def bio_substrate() -> dict:
    """The shipped biology preset as a plain dict (a fresh copy each call)."""
    return yaml.safe_load((ROOT / "conf" / "substrate" / "bio.yaml").read_text())


def quiet_bio_substrate(**chains) -> dict:
    """The biology preset without producer wear, failure or biogenesis (a deterministic supply),
    with optional overrides of its ``chains`` section."""
    sub = bio_substrate()
    prod = sub["producers"]
    prod["hazard_per_s"] = 0.0
    prod["birth_per_s"] = 0.0
    for kind in prod["kinds"].values():
        kind["damage_per_s"] = 0.0
    sub["chains"].update(chains)
    return sub


def run_child(args, timeout=180):
    """``python ARGS`` in the repository root (a fresh process: JAX on CPU, Hydra's short errors)."""
    env = dict(os.environ, HYDRA_FULL_ERROR="0", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_same_results(a: Path, b: Path) -> None:
    """Bit-identical ``results.nc`` (every variable, coordinate and attribute) and ``summary.json``
    (but for the wall-clock and compile times) of run folders ``a`` and ``b``."""
    da, db = xr.load_dataset(a / "results.nc"), xr.load_dataset(b / "results.nc")
    xr.testing.assert_identical(da, db)
    for name in list(da.data_vars) + list(da.coords):
        assert np.array_equal(da[name].values, db[name].values), name
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    for key in ("wall_s", "compile_s"):
        sa.pop(key), sb.pop(key)
    assert sa == sb
