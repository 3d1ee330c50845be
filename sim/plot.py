"""Figures for a run folder or a sweep folder: ``python -m sim.plot PATH`` (``--help`` for usage).

A run folder's figures are redrawn by the writer of the experiment that made them (read from the
run's ``.hydra/config.yaml``, else from ``summary.json`` / the dataset's attributes): a plain run
(``experiment=tissue`` of any substrate, ``serving``) by its substrate's figures, ``analogy``,
``cascade``, ``roofline``, ``society``, ``sensitivity`` and ``homeostasis`` by their own, rebuilt
from the files the run wrote (``results.nc``, ``summary.json``, its tables and its config; nothing is
simulated again), and any experiment whose module has a ``figures(ds, out_dir)`` (multicellular,
robustness, ...) by that. Another experiment gets the generic panels of every (replicate, time,
cell) variable, with a note saying so. A sweep folder gets the figures of :mod:`sim.sweep_figures`.
Exit codes: 0 figures written (or the experiment draws none,
``study``), 2 a path that is neither a run nor a sweep folder or a run that cannot be redrawn
(one line naming the path and what is missing), 4 drawing failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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


def sweep_figures(df, out_dir, swept=None) -> list[Path]:
    """The sweep figures of table ``df`` in ``out_dir/figures`` (:mod:`sim.sweep_figures`)."""
    from sim.sweep_figures import write_figures

    return write_figures(df, out_dir, swept)


# ---- run folders ----------------------------------------------------------------------------------

EXIT_USAGE, EXIT_FAILED = 2, 4


class CannotRedraw(Exception):
    """A run folder that lacks what its figures are drawn from (the message names the file)."""


class RunFolder:
    """What a run folder holds: its dataset, summary, plain config (None where a file is absent)."""

    def __init__(self, path: Path):
        from sim.io import read_json

        self.path = path
        self.summary = self.cfg = self.ds = None
        try:
            if (path / "summary.json").is_file():
                self.summary = read_json(path / "summary.json")
            if (path / ".hydra" / "config.yaml").is_file():
                from omegaconf import OmegaConf

                self.cfg = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"), resolve=True)
            if (path / "results.nc").is_file():
                with xr.open_dataset(path / "results.nc", engine="netcdf4") as ds:
                    self.ds = ds.load()
        except Exception as exc:  # a truncated or foreign file: name it rather than fail deep in a writer
            raise CannotRedraw(f"{path}: a file of the run folder cannot be read "
                               f"({type(exc).__name__}: {exc})") from exc

    @property
    def kind(self) -> str | None:
        """The experiment kind: the config's ``experiment.kind``, else the name the summary or the
        dataset records (built-in experiments are named as their kind)."""
        exp = (self.cfg or {}).get("experiment")
        if isinstance(exp, dict) and exp.get("kind"):
            return str(exp["kind"])
        for source in (self.summary or {}, self.ds.attrs if self.ds is not None else {}):
            if source.get("experiment"):
                return str(source["experiment"])
        return None

    def need(self, what: str):
        """The config, dataset or summary; CannotRedraw naming the missing file otherwise."""
        value = {"cfg": self.cfg, "ds": self.ds, "summary": self.summary}[what]
        if value is None:
            name = {"cfg": ".hydra/config.yaml", "ds": "results.nc", "summary": "summary.json"}[what]
            status = (self.summary or {}).get("status")
            reason = (self.summary or {}).get("reason", "")
            why = "" if status in (None, "ok") else f" (the run's status is {status!r}: {reason})"
            raise CannotRedraw(f"{self.path / name} is missing: the {self.kind or 'run'} figures are drawn "
                               f"from it{why}")
        return value


def _plain_run(run: RunFolder) -> list[Path]:
    """A plain run: the figures its substrate draws (as ``sim.api.run`` hands them to sim.app)."""
    from sim import substrates
    from sim.errors import ConfigError

    ds = run.need("ds")
    sub = (run.cfg or {}).get("substrate")
    name = sub.get("name") if isinstance(sub, dict) else sub
    name = name or (run.summary or {}).get("substrate") or ds.attrs.get("substrate")
    try:
        found = substrates.get(name) if name else None
    except ConfigError:  # a substrate registered by the user's own code, not in this process
        found = None
    if found is None or found.figures is None:
        print(f"note: substrate {name!r} has no figure writer here: drawing every trajectory", file=sys.stderr)
        return figures_for(ds, run.path)
    return list(found.figures(ds, run.path) or [])


def _analogy(run: RunFolder) -> list[Path]:
    import pandas as pd

    from sim.experiments import analogy_rows as rows
    from sim.experiments.analogy_output import analogy_figure

    ds, summary = run.need("ds"), run.need("summary")
    table = run.path / "analogy_table.parquet"
    if not table.is_file():
        raise CannotRedraw(f"{table} is missing: the analogy figure's verdicts are drawn from it")
    entries = []
    for rec in pd.read_parquet(table).to_dict("records"):
        entry = {"row": rows.row(rec["key"]), "verdict": rec["verdict"], "factor": rec["factor"],
                 "factor_low": rec["factor_low"], "factor_high": rec["factor_high"]}
        for side in rows.SIDES:
            entry[side] = rows.Spread(rec[f"{side}_mean"], rec[f"{side}_std"], rec[f"{side}_ci_low"],
                                      rec[f"{side}_ci_high"], int(rec[f"{side}_n"]), bool(rec[f"{side}_exact"]))
        entries.append(entry)
    return [analogy_figure(ds, entries, summary, run.path)]


def _cascade(run: RunFolder) -> list[Path]:
    from sim.experiments.cascade import cascade_figures, roofline_time
    from sim.substrates.llm import specs

    ds, summary, cfg = run.need("ds"), run.need("summary"), run.need("cfg")
    model, gpu = specs.model_spec(cfg), specs.gpu_spec(cfg)
    series, length = ds["series"].values.astype(str), ds["length"].values
    ch = {"series": series, "length": length, "cost": ds["cost_per_chain"].values}
    tokens = ds["loop_tokens_in"]
    loops = {"turns": ds["turns"].values, "tokens_in": tokens.sel(memory=False).values,
             "tokens_in_memory": tokens.sel(memory=True).values, "formula": ds["loop_tokens_in_formula"].values}
    t_dec = roofline_time(model, gpu, length[series == "llm"])
    return cascade_figures(ch, loops, summary, model, gpu, t_dec, run.path)


def _roofline(run: RunFolder) -> list[Path]:
    from sim.experiments import roofline
    from sim.substrates.llm.build import build_llm

    calculator_config = roofline.calculator_config
    roofline_figures = getattr(roofline, "roofline_figures", None)
    if roofline_figures is None:  # (where the LLM substrate's results module draws it)
        from sim.substrates.llm.results import roofline_figures

    ecfg, batch, context, power_state = calculator_config(run.need("cfg"))
    return roofline_figures(build_llm(ecfg), batch, context, power_state, run.path)


def _society(run: RunFolder) -> list[Path]:
    from sim.experiments.society import society_figures
    from sim.substrates.llm import society as so

    return society_figures(run.need("ds"), run.need("summary"), so.read_params(run.need("cfg")), run.path)


def _sensitivity(run: RunFolder) -> list[Path]:
    from sim.core.study import outcome_variable
    from sim.experiments.sensitivity import COLUMNS, figure

    ds, summary = run.need("ds"), run.need("summary")
    if summary.get("status") != "ok" or "param" not in ds.coords:
        raise CannotRedraw(f"{run.path}: the sensitivity run did not finish ok (status {summary.get('status')!r}): "
                           "it has no indices to draw")
    method = summary["method"]
    indices = {o: {c: ds[f"{c}__{outcome_variable(o)}"].values for c in COLUMNS[method]} for o in summary["outcomes"]}
    return figure(method, [str(n) for n in ds["param"].values], indices, run.path)


def _own(module: str, name: str):
    """An experiment whose figure writer needs the dataset only."""

    def draw(run: RunFolder) -> list[Path]:
        import importlib

        return list(getattr(importlib.import_module(module), name)(run.need("ds"), run.path) or [])

    return draw


REDRAW = {
    "tissue": _plain_run,
    "serving": _plain_run,
    "analogy": _analogy,
    "cascade": _cascade,
    "roofline": _roofline,
    "society": _society,
    "sensitivity": _sensitivity,
    "homeostasis": _own("sim.experiments.homeostasis", "homeostasis_figures"),
    "study": None,  # draws no figures (its table is study.parquet)
}


def _module_figures(kind: str):
    """The ``figures(ds, out_dir)`` of the module that registered experiment ``kind``
    (multicellular, robustness, standardization, ...), or None."""
    import importlib
    import inspect

    from sim import experiments

    try:
        fn = experiments.get(kind)
    except Exception:  # (an experiment module that does not import: nothing of its own to draw with)
        return None
    if fn is None:
        return None
    writer = getattr(importlib.import_module(fn.__module__), "figures", None)
    if not callable(writer):
        return None
    try:
        if len(inspect.signature(writer).parameters) != 2:
            return None
    except (TypeError, ValueError):
        return None
    return _own(fn.__module__, "figures")


def is_run(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("results.nc", "summary.json", ".hydra/config.yaml"))


def redraw_run(path) -> list[Path]:
    """Redraw the figures of run folder ``path`` with its experiment's own writer (module docstring)."""
    run = RunFolder(Path(path))
    kind = run.kind
    out_opts = ((run.cfg or {}).get("output") or {}) if isinstance((run.cfg or {}).get("output"), dict) else {}
    reduced = run.ds is not None and str(run.ds.attrs.get("cells", "")).startswith("summary")
    if reduced or out_opts.get("variables") not in (None, "all"):
        raise CannotRedraw(f"{run.path}: results.nc was written with output.cells=summary or a subset of "
                           "output.variables, so the per-cell trajectories its figures need are not there; "
                           "run it again with the default output (or figures=true) to draw them")
    if kind in REDRAW and REDRAW[kind] is None:
        print(f"{run.path}: experiment {kind!r} draws no figures", file=sys.stderr)
        return []
    if kind in REDRAW:
        return REDRAW[kind](run)
    own = _module_figures(kind) if kind else None
    if own is not None:
        return own(run)
    if kind is None and run.ds is not None and "pools" in run.ds and "energy_charge" in run.ds:
        return run_figures(run.ds, run.path)  # (a biology run folder without config or summary)
    ds = run.need("ds")
    if not any(set(v.dims) == {"replicate", "time", "cell"} for v in ds.data_vars.values()):
        raise CannotRedraw(f"{run.path}: experiment {kind!r} has no figure writer sim.plot can call from a run "
                           "folder, and its results.nc has no (replicate, time, cell) trajectories to draw")
    print(f"note: experiment {kind!r} has no figure writer sim.plot can call: drawing every trajectory",
          file=sys.stderr)
    return figures_for(ds, run.path)


def redraw_sweep(path) -> list[Path]:
    """Redraw the figures of sweep folder ``path`` from its typed table (collected afresh from the
    job folders, nothing else written)."""
    from sim.sweep import read_table, swept_parameters
    from sim.sweep_figures import write_figures

    table = read_table(path)
    if table.empty or not (table["status"] == "ok").any():
        raise CannotRedraw(f"{path}: no job of the sweep finished ok: nothing to draw")
    paths = write_figures(table, path, swept_parameters(table, path))
    if not paths:
        print(f"{path}: nothing to draw: no outcome differs between the jobs that finished ok", file=sys.stderr)
    return paths


# ---- command line ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit code 2, like every other refusal of the project
        print(f"error: python -m sim.plot: {message} (see python -m sim.plot --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m sim.plot",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Redraw the figures of a run folder or a sweep folder into its figures/ folder.",
        epilog="""\
a run folder (results.nc, summary.json, .hydra/config.yaml) is redrawn by its
  experiment's own figure writer (tissue and serving: the substrate's figures;
  analogy, cascade, roofline, society, sensitivity, homeostasis, multicellular,
  robustness: their own), from the files the run wrote
a sweep folder (numbered job folders, summary.parquet) gets figures/sweep_<x>.png
  per numeric swept parameter x (every outcome against x, one line per value of
  the other swept parameters, mean and +-1 s.d. band over seeds, a legend) and
  figures/sweep_<a>__<b>.png (heatmaps) per pair of numeric parameters

exit codes: 0 ok, 2 not a run or sweep folder (or a file to redraw from is
  missing), 4 drawing failed""",
    )
    p.add_argument("path", metavar="PATH", help="a run folder (runs/<experiment>/<time>/) or a sweep folder "
                                                "(runs/multirun/<time>/)")
    return p


def main(argv=None) -> int:
    from sim.sweep_load import is_sweep

    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    path = Path(args.path)
    allowed = "a run folder (results.nc, summary.json) or a sweep folder (numbered job folders, summary.parquet)"
    if not path.is_dir():
        print(f"error: PATH={str(path)!r}: no such folder; allowed: {allowed}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if is_run(path):
            paths = redraw_run(path)
        elif is_sweep(path):
            paths = redraw_sweep(path)
        else:
            print(f"error: PATH={str(path)!r}: neither a run nor a sweep folder; allowed: {allowed}", file=sys.stderr)
            return EXIT_USAGE
    except CannotRedraw as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a figure writer failed: one line, the files already written stay
        print(f"error: drawing the figures of {path} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
