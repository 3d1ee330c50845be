"""``experiment=sensitivity``: global sensitivity of chosen outcomes to chosen parameters (SALib).

``python -m sim experiment=sensitivity`` (bio: which of demand, supply, uptake and conductance
control the energy charge) or e.g. ``substrate=generic`` (the charged fraction). The SALib
sample (``sensitivity.method``):

- ``sobol``: Saltelli's extension of the Sobol' sequence, ``SALib.sample.sobol.sample(problem, N,
  calc_second_order=False)`` = ``N x (D + 2)`` points, analysed with ``SALib.analyze.sobol.analyze``:
  first-order ``S1`` and total ``ST`` indices with their ``conf_level`` confidence half-widths
  (bootstrap, ``S1_conf`` / ``ST_conf``);
- ``morris``: ``SALib.sample.morris.sample(problem, N, num_levels)`` = ``N x (D + 1)`` points
  (``N`` trajectories), analysed with ``SALib.analyze.morris.analyze``: ``mu_star`` (with
  ``mu_star_conf``), ``sigma`` and ``mu``.

``N`` is ``sensitivity.samples``. Every point is evaluated through the batched path
(:mod:`sim.core.study`: ``chunk_points`` points per engine call, one compile, every point with
the same replicate keys). Writes ``sensitivity.csv`` / ``.md`` (one row per outcome x parameter),
``figures/sensitivity.png`` (one panel per outcome: S1 and ST per parameter with confidence error
bars, or mu_star and sigma), ``results.nc`` (the evaluated points and outcomes, dimension
``point``, plus the indices, dimensions ``outcome`` x ``param``) and ``summary.json``.
"""

from __future__ import annotations

import numpy as np

from sim.api import RunOutput
from sim.core import study as st
from sim.errors import ConfigError
from sim.experiments import register
from sim.io import CORE_OUTCOMES, COUNT, DIMENSIONLESS, MAPPING, OF_NAMED, TEXT
from sim.experiments.study import _int, cost_summary, failure, run_points, study_setup

METHODS = ("sobol", "morris")
COLUMNS = {"sobol": ("S1", "S1_conf", "ST", "ST_conf"), "morris": ("mu_star", "mu_star_conf", "sigma", "mu")}


def sample(method: str, problem: dict, n: int, seed: int, num_levels: int = 4) -> np.ndarray:
    if method == "sobol":
        from SALib.sample import sobol as sobol_sample

        return sobol_sample.sample(problem, n, calc_second_order=False, seed=seed)
    from SALib.sample import morris as morris_sample

    return morris_sample.sample(problem, n, num_levels=num_levels, seed=seed)


def analyze(method: str, problem: dict, x: np.ndarray, y: np.ndarray, seed: int, conf_level: float = 0.95,
            num_levels: int = 4) -> dict:
    """Column name -> ``(D,)`` array (:data:`COLUMNS`)."""
    y = np.asarray(y, np.float64)
    if method == "sobol":
        from SALib.analyze import sobol as sobol_analyze

        r = sobol_analyze.analyze(problem, y, calc_second_order=False, conf_level=conf_level, seed=seed)
    else:
        from SALib.analyze import morris as morris_analyze

        r = morris_analyze.analyze(problem, x, y, conf_level=conf_level, num_levels=num_levels, seed=seed)
    return {c: np.asarray(r[c], np.float64) for c in COLUMNS[method]}


def table(method: str, names, indices: dict):
    """pandas DataFrame: one row per (outcome, parameter)."""
    import pandas as pd

    rows = []
    for outcome, cols in indices.items():
        for j, name in enumerate(names):
            rows.append({"outcome": outcome, "param": name, **{c: float(cols[c][j]) for c in COLUMNS[method]}})
    return pd.DataFrame(rows)


def markdown(df, method: str) -> str:
    cols = ["outcome", "param", *COLUMNS[method]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join([r["outcome"], r["param"]] + [f"{r[c]:.4g}" for c in cols[2:]]) + " |")
    return "\n".join(lines) + "\n"


def figure(method: str, names, indices: dict, out_dir):
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    n = len(indices)
    fig, axes = plt.subplots(1, n, figsize=(max(4.5, 1.1 * len(names) + 2) * n, 3.8), squeeze=False)
    xs = np.arange(len(names))
    w = 0.38
    for ax, (outcome, cols) in zip(axes[0], indices.items()):
        if method == "sobol":
            ax.bar(xs - w / 2, cols["S1"], w, yerr=cols["S1_conf"], capsize=3, label="S1 (first order)")
            ax.bar(xs + w / 2, cols["ST"], w, yerr=cols["ST_conf"], capsize=3, label="ST (total)")
            ax.set_ylabel("Sobol index (1)")
        else:
            ax.bar(xs - w / 2, cols["mu_star"], w, yerr=cols["mu_star_conf"], capsize=3, label="mu*")
            ax.bar(xs + w / 2, cols["sigma"], w, label="sigma")
            # SALib's effects are per unit of the parameter's normalised range: in the outcome's unit
            ax.set_ylabel("elementary effect (unit of the outcome)")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(xs, names, rotation=30, ha="right")
        ax.set_title(outcome)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / "figures" / "sensitivity.png")]


# The unit of every key a sensitivity summary can hold (sim.io's naming rule): Sobol indices are
# dimensionless; Morris' elementary effects (mu, mu_star, sigma) are in the unit of the outcome named.
OUTCOME_UNITS = {
    **CORE_OUTCOMES, "method": TEXT, "samples": COUNT, "params": MAPPING, "outcomes": TEXT, "points": COUNT,
    "replicates_per_point": COUNT, "engine_calls": COUNT, "failed_point": COUNT, "S1 *": DIMENSIONLESS,
    "S1_conf *": DIMENSIONLESS, "ST *": DIMENSIONLESS, "ST_conf *": DIMENSIONLESS, "mu_star *": OF_NAMED,
    "mu_star_conf *": OF_NAMED, "sigma *": OF_NAMED, "mu *": OF_NAMED,
}


@register("sensitivity")
def run_sensitivity(cfg: dict) -> RunOutput:
    cfg, sub, built, bounds, outcomes, opts = study_setup(cfg, "sensitivity")
    method = opts.get("method", "sobol")
    if method not in METHODS:
        raise ConfigError("sensitivity.method", method, "one of " + ", ".join(METHODS))
    n = _int("sensitivity", opts, "samples")
    # checked whatever the method: a bad value must not wait until someone switches to morris
    levels = _int("sensitivity", opts, "num_levels", 2) if method == "morris" or "num_levels" in opts else 4
    conf = opts.get("conf_level", 0.95)
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 < conf < 1:
        raise ConfigError("sensitivity.conf_level", conf, "a number in (0, 1)")
    names = list(bounds)
    problem = {"num_vars": len(names), "names": names, "bounds": [list(bounds[k]) for k in names]}
    R = _int("sensitivity", opts, "replicates_per_point")
    seed = int(cfg.get("seed", 0))
    x = sample(method, problem, n, seed, levels)
    res = run_points(cfg, sub, built, bounds, x, outcomes, opts, "sensitivity")
    summary = {"status": "ok", "substrate": sub.name, "method": method, "samples": n,
               "params": {k: list(v) for k, v in bounds.items()}, "outcomes": outcomes,
               **cost_summary(res, x.shape[0], R)}
    ds = st.to_dataset(res, {"substrate": sub.name, "method": method})
    if res.error is not None:
        summary.update(failure(res, names))
        return RunOutput(ds, summary, built, res, figures=lambda out_dir: [])
    indices = {o: analyze(method, problem, x, res.outcomes[o], seed, float(conf), levels) for o in outcomes}
    for o, cols in indices.items():
        for c, v in cols.items():
            ds[f"{c}__{st.outcome_variable(o)}"] = ("param", v)
            for name, value in zip(names, v):
                summary[f"{c} {name} {o}"] = float(value)
    ds = ds.assign_coords(param=names)
    df = table(method, names, indices)
    md = markdown(df, method)

    def files(out_dir):
        from pathlib import Path

        from sim.io import write_text

        write_text(Path(out_dir) / "sensitivity.csv", df.to_csv(index=False))
        write_text(Path(out_dir) / "sensitivity.md", md)

    report = (f"{method} sensitivity of {sub.name}: {x.shape[0]} points x {R} replicates, {res.calls} engine call(s), "
              f"wall {res.wall_s:.2f} s, compile {res.compile_s:.2f} s\n" + md)
    return RunOutput(ds, summary, built, res, figures=lambda out_dir: figure(method, names, indices, out_dir),
                     files=files, report=report)
