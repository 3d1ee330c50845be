"""Figures for a run folder or a sweep folder: ``python -m sim.plot PATH``."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from sim.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def generic_figures(ds: xr.Dataset, out_dir) -> list[Path]:
    """Every (replicate, time, cell) variable, summed over cells and averaged over replicates."""
    names = [n for n, v in ds.data_vars.items() if set(v.dims) == {"replicate", "time", "cell"}]
    if not names:
        return []
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    t = ds["time"].values
    for ax, name in zip(axes.flat, names):
        ax.plot(t, ds[name].sum("cell").mean("replicate"))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"time ({ds['time'].attrs.get('units', 's')})", fontsize=8)
        ax.set_ylabel(ds[name].attrs.get("units", ""), fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / "figures" / "trajectories.png")]


def figures_for(ds: xr.Dataset, out_dir) -> list[Path]:
    """The figures that fit the dataset: the biology tissue set, or every trajectory otherwise."""
    if "pools" in ds and "energy_charge" in ds:
        return run_figures(ds, out_dir)
    (Path(out_dir) / "figures").mkdir(parents=True, exist_ok=True)
    return generic_figures(ds, out_dir)


def run_figures(ds: xr.Dataset, out_dir) -> list[Path]:
    out = Path(out_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    t = ds["time"].values
    paths = []

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    mean_pools = ds["pools"].mean(("replicate", "cell"))
    for sp in ds["species"].values:
        axes[0].plot(t, mean_pools.sel(species=sp), label=str(sp))
    axes[0].set(xlabel="time (s)", ylabel="mM", title="pools (mean over cells, replicates)")
    axes[0].legend(fontsize=8)
    ec = ds["energy_charge"].mean("replicate")
    for c in ds["cell"].values[: min(20, ds.sizes["cell"])]:
        axes[1].plot(t, ec.sel(cell=c), lw=0.6, alpha=0.6)
    axes[1].plot(t, ec.mean("cell"), color="k", lw=2, label="mean")
    axes[1].set(xlabel="time (s)", ylabel="energy charge", title="energy charge per cell", ylim=(0, 1.02))
    axes[1].legend(fontsize=8)
    axes[2].plot(t, ds["dg_atp"].mean(("replicate", "cell")))
    axes[2].set(xlabel="time (s)", ylabel="kJ/mol", title="dG of ATP hydrolysis (mean)")
    fig.tight_layout()
    paths.append(_save(fig, out / "pools_energy_charge.png"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in ("produced", "spent", "transported_out"):
        axes[0].plot(t, ds[name].sum("cell").mean("replicate"), label=name)
    axes[0].set(xlabel="time (s)", ylabel="mM (summed over cells)", title="currency ledger (cumulative)")
    axes[0].legend(fontsize=8)
    spent = ds["spent_by_kind"].sum("cell").mean("replicate")
    axes[1].bar([str(k) for k in ds["consumer_kind"].values], spent.values)
    axes[1].set(ylabel="mM", title="currency spent by consumer kind")
    axes[1].tick_params(axis="x", rotation=30)
    fig.tight_layout()
    paths.append(_save(fig, out / "ledger.png"))

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(t, ds["alive"].sum("cell").mean("replicate"), label="cells alive")
    ax2 = ax.twinx()
    ax2.plot(t, ds["n_producers"].sum("cell").mean("replicate"), color="C1", label="producers alive")
    ax.set(xlabel="time (s)", ylabel="cells alive", title="tissue fate")
    ax2.set_ylabel("producers alive")
    fig.tight_layout()
    paths.append(_save(fig, out / "fate.png"))
    return paths


def sweep_figures(df, out_dir) -> list[Path]:
    """One panel per numeric outcome against the first swept key."""
    out = Path(out_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    keys = [c for c in df.columns if c.startswith("override.")]
    outcomes = [c for c in ("energy_charge", "dg_atp_kj_per_mol", "currency_pool_turnover_s", "cells_alive")
                if c in df.columns]
    if not keys or not outcomes:
        return []
    x = keys[0]
    fig, axes = plt.subplots(1, len(outcomes), figsize=(4 * len(outcomes), 3.4))
    axes = np.atleast_1d(axes)
    for ax, y in zip(axes, outcomes):
        ax.plot(df[x].astype(str), df[y], "o")
        ax.set(xlabel=x.removeprefix("override."), ylabel=y)
    fig.tight_layout()
    return [_save(fig, out / "sweep.png")]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m sim.plot PATH (a run folder with results.nc or a sweep folder with summary.parquet)", file=sys.stderr)
        return 2
    path = Path(argv[0])
    if (path / "results.nc").is_file():
        with xr.open_dataset(path / "results.nc", engine="netcdf4") as ds:
            paths = figures_for(ds.load(), path)
    elif (path / "summary.parquet").is_file():
        import pandas as pd

        paths = sweep_figures(pd.read_parquet(path / "summary.parquet"), path)
    else:
        print(f"error: {path} holds neither results.nc nor summary.parquet", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
