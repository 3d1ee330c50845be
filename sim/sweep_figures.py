"""Figures of a sweep table (``summary.parquet``): each outcome against each swept parameter.

What is drawn (:func:`draw`), from the jobs that finished ``ok``:

* for every numeric swept parameter ``x``: ``figures/sweep_<x>.png``, one panel per outcome, one line
  per combination of the other swept parameters (e.g. one per ``topology``), the mean over the jobs
  that differ only in ``seed`` / ``first_replicate`` with a band of +-1 standard deviation where
  there are two or more such jobs, and a legend;
* for every pair of numeric swept parameters: ``figures/sweep_<a>__<b>.png``, a heatmap of the mean
  of each outcome (one panel per outcome and combination of the other swept parameters);
* when no swept parameter is numeric (e.g. only ``topology``): ``figures/sweep.png``, the mean and
  standard deviation of each outcome per value.

``seed`` and ``first_replicate`` are where a sweep puts more replicates, so they are pooled into the
band rather than drawn as parameters (unless nothing else was swept). Each job's ``summary.json``
already averages that job's own replicates, so the band measures the spread between jobs (seeds,
ensemble slices), not within one. Outcomes are the numeric (and boolean, drawn as the fraction true)
columns that vary between the jobs, without the bookkeeping ones (times, replicate counts);
non-finite values are left out of the means. Failed jobs are not drawn; each figure's title says
how many there were and which overrides all jobs shared.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sim.sweep import OVERRIDE_PREFIX  # noqa: E402

REPLICATE_KEYS = ("seed", "first_replicate")  # swept to add replicates: pooled, not drawn as axes
NOT_OUTCOMES = frozenset({"job", "wall_s", "compile_s", "total_s", "first_chunk_s", "seed", "replicates", "first_replicate"})
COLS = 4  # panels per row
LOG_SPAN = 50.0  # a positive parameter spanning this factor or more gets a log axis


@dataclasses.dataclass
class Plan:
    """What a table's figures show."""

    numeric: list[str]  # numeric swept parameters (axes, heatmap axes)
    categorical: list[str]  # other swept parameters (one line per value)
    pooled: list[str]  # replicate keys pooled into the band
    outcomes: list[str]
    fixed: dict  # overrides every job shared
    n_jobs: int
    n_failed: int


def _col(key: str) -> str:
    return OVERRIDE_PREFIX + key


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def plan(table: pd.DataFrame, swept=None) -> Plan:
    """Split the swept parameters (``swept``: override keys; default: the override columns that take
    more than one value) into numeric axes, categories and pooled replicate keys; pick the outcomes."""
    overrides = [c[len(OVERRIDE_PREFIX):] for c in table.columns if c.startswith(OVERRIDE_PREFIX)]
    if swept is None:
        swept = [k for k in overrides if table[_col(k)].dropna().astype(str).nunique() > 1]
    swept = [k for k in swept if _col(k) in table.columns]
    ok = table[table["status"] == "ok"] if "status" in table.columns else table
    pooled = [k for k in swept if k in REPLICATE_KEYS]
    params = [k for k in swept if k not in REPLICATE_KEYS] or pooled[:1]  # only seeds swept: seed is the axis
    pooled = [k for k in pooled if k not in params]
    numeric = [k for k in params if _is_numeric(table[_col(k)])]
    categorical = [k for k in params if k not in numeric]
    outcomes = []
    for name in table.columns:
        if name.startswith(OVERRIDE_PREFIX) or name in NOT_OUTCOMES:
            continue
        col = ok[name]
        if not (_is_numeric(col) or pd.api.types.is_bool_dtype(col)):
            continue
        values = col.astype("float64").to_numpy()
        values = values[np.isfinite(values)]
        # (equal to round-off, e.g. a ratio set by parameters, is not an outcome of the sweep)
        if values.size and not np.allclose(values, values[0], rtol=1e-9, atol=0.0):
            outcomes.append(name)
    fixed = {}
    for k in overrides:
        if k not in swept:
            vals = table[_col(k)].dropna().unique()
            if len(vals) == 1:
                fixed[k] = vals[0]
    failed = int((table["status"] != "ok").sum()) if "status" in table.columns else 0
    return Plan(numeric, categorical, pooled, outcomes, fixed, len(table), failed)


def _label(keys, values) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values))


def _stats(ok: pd.DataFrame, by: list[str], outcome: str) -> pd.DataFrame:
    """Mean, standard deviation and count of the finite values of ``outcome`` per ``by`` group."""
    y = ok[outcome].astype("float64")
    y = y.where(np.isfinite(y))
    cols = [_col(k) for k in by]
    frame = ok[cols].copy()
    frame["_y"] = y.to_numpy()
    g = frame.groupby(cols, dropna=False, sort=True)["_y"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()})
    return out.reset_index()


def _title(p: Plan, what: str, spread: str = "band: +-1 s.d.") -> str:
    parts = [what]
    if p.pooled:
        parts.append(f"{spread} over " + ", ".join(p.pooled))
    if p.n_failed:
        parts.append(f"{p.n_failed} of {p.n_jobs} jobs failed (not drawn)")
    if p.fixed:
        parts.append("fixed: " + " ".join(f"{k}={v}" for k, v in p.fixed.items()))
    return "\n".join(textwrap.wrap("; ".join(parts), 150))


def _finish(fig, title: str) -> None:
    """Title and layout: tight_layout ignores a suptitle, so the panels are kept below it."""
    h = fig.get_figheight()
    fig.suptitle(title, fontsize=9, y=1 - 0.08 / h, va="top")
    top = 0.15 * (title.count("\n") + 1) / h  # inches of title (tight_layout adds its own pad), as a fraction
    fig.tight_layout(rect=(0, 0, 1, 1 - top))


def _grid(n: int, cols: int | None = None, width: float = 4.2, height: float = 3.3):
    cols = min(COLS, n) if cols is None else cols
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.6), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _log_axis(values) -> bool:
    v = np.asarray(values, dtype="float64")
    v = v[np.isfinite(v)]
    return bool(v.size > 1 and (v > 0).all() and v.max() / v.min() >= LOG_SPAN)


def line_figure(ok: pd.DataFrame, p: Plan, x: str):
    """Every outcome against numeric parameter ``x``: one line per combination of the other swept
    parameters, mean with a +-1 s.d. band."""
    others = [k for k in p.numeric if k != x] + p.categorical
    fig, axes = _grid(len(p.outcomes))
    xs = ok[_col(x)].astype("float64")
    for ax, outcome in zip(axes, p.outcomes):
        st = _stats(ok, others + [x], outcome)
        groups = st.groupby([_col(k) for k in others], dropna=False, sort=True) if others else [((), st)]
        for i, (values, g) in enumerate(groups):
            values = values if isinstance(values, tuple) else (values,)
            g = g.sort_values(_col(x))
            gx, mean, std = g[_col(x)].astype("float64").to_numpy(), g["mean"].to_numpy(), g["std"].to_numpy()
            n = int(g["n"].max()) if len(g) else 0
            label = _label(others, values) if others else "mean" + (" over " + ", ".join(p.pooled) if p.pooled else "")
            label += f" (n={n})" if n > 1 else ""
            (line,) = ax.plot(gx, mean, "o-", ms=3.5, lw=1.2, color=f"C{i % 10}", label=label)
            band = np.isfinite(std)
            if band.any():
                ax.fill_between(gx[band], (mean - std)[band], (mean + std)[band], color=line.get_color(), alpha=0.2,
                                lw=0)
        ax.set_xlabel(x)
        ax.set_ylabel(outcome)
        ax.set_title(outcome, fontsize=9)
        if _log_axis(xs):
            ax.set_xscale("log")
    if axes:
        axes[0].legend(fontsize=7, title=("one line per " + ", ".join(others)) if others else None, title_fontsize=7)
    _finish(fig, _title(p, f"outcomes against {x}"))
    return fig


def heatmap_figure(ok: pd.DataFrame, p: Plan, a: str, b: str):
    """The mean of every outcome over the grid of numeric parameters ``a`` (x) and ``b`` (y): one panel
    per outcome and combination of the other swept parameters (blank: no job finished ok there)."""
    others = [k for k in p.numeric if k not in (a, b)] + p.categorical
    combos = [()]
    if others:
        combos = list(ok[[_col(k) for k in others]].drop_duplicates().itertuples(index=False, name=None))
        combos.sort(key=lambda t: tuple(str(v) for v in t))
    xa = np.sort(ok[_col(a)].astype("float64").dropna().unique())
    yb = np.sort(ok[_col(b)].astype("float64").dropna().unique())
    n = len(p.outcomes) * len(combos)
    # a row per combination when the outcomes fit in one; else row after row of COLS panels
    fig, axes = _grid(n, len(p.outcomes) if len(p.outcomes) <= COLS + 1 else None)
    it = iter(axes)
    for combo in combos:
        sub = ok
        for k, v in zip(others, combo):
            sub = sub[sub[_col(k)] == v]
        for outcome in p.outcomes:
            ax = next(it)
            st = _stats(sub, [a, b], outcome)
            grid = np.full((len(yb), len(xa)), np.nan)
            for _, r in st.iterrows():
                i = int(np.searchsorted(yb, float(r[_col(b)])))
                j = int(np.searchsorted(xa, float(r[_col(a)])))
                grid[i, j] = r["mean"]
            im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label(outcome, fontsize=7)
            ax.set_xticks(range(len(xa)), [f"{v:g}" for v in xa], fontsize=7, rotation=45 if len(xa) > 6 else 0)
            ax.set_yticks(range(len(yb)), [f"{v:g}" for v in yb], fontsize=7)
            ax.set_xlabel(a)
            ax.set_ylabel(b)
            ax.set_title(outcome + (f"\n{_label(others, combo)}" if others else ""), fontsize=8)
    _finish(fig, _title(p, f"mean of each outcome over {a} x {b}", "mean"))
    return fig


def category_figure(ok: pd.DataFrame, p: Plan):
    """Mean and standard deviation of every outcome per value of the (non-numeric) swept parameters."""
    keys = p.categorical
    fig, axes = _grid(len(p.outcomes))
    if not keys:  # nothing swept (a one-job sweep): all jobs are one point
        ok = ok.assign(**{_col("jobs"): "all"})
        keys = ["jobs"]
    for ax, outcome in zip(axes, p.outcomes):
        st = _stats(ok, keys, outcome)
        # (one key: the axis label names it, the ticks need only its values)
        labels = [_label(keys, r) if len(keys) > 1 else str(r[0])
                  for r in st[[_col(k) for k in keys]].itertuples(index=False)]
        xs = np.arange(len(st))
        ax.errorbar(xs, st["mean"], yerr=st["std"].where(np.isfinite(st["std"])), fmt="o", capsize=3,
                    label="mean +- 1 s.d." if p.pooled else "mean")
        tilt = len(xs) > 3  # (long "key=value" labels overlap when level)
        ax.set_xticks(xs, labels, fontsize=7, rotation=30 if tilt else 0, ha="right" if tilt else "center")
        ax.set_xlabel(", ".join(keys))
        ax.set_ylabel(outcome)
        ax.set_title(outcome, fontsize=9)
    if axes:
        axes[0].legend(fontsize=7)
    _finish(fig, _title(p, "outcomes per " + ", ".join(keys), "error bars: +-1 s.d."))
    return fig


def _name(*keys: str) -> str:
    return "__".join(k.replace("/", "_") for k in keys)


def draw(table: pd.DataFrame, swept=None) -> list[tuple[str, object]]:
    """``[(file name, matplotlib Figure), ...]`` of the sweep ``table`` (see the module docstring);
    [] when no job finished ok or no outcome varies. The caller closes the figures (or
    :func:`write_figures` saves and closes them)."""
    p = plan(table, swept)
    ok = table[table["status"] == "ok"] if "status" in table.columns else table
    if ok.empty or not p.outcomes:
        return []
    out = []
    for x in p.numeric:
        out.append((f"sweep_{_name(x)}.png", line_figure(ok, p, x)))
    for i, a in enumerate(p.numeric):
        for b in p.numeric[i + 1:]:
            out.append((f"sweep_{_name(a, b)}.png", heatmap_figure(ok, p, a, b)))
    if not p.numeric:
        out.append(("sweep.png", category_figure(ok, p)))
    return out


def write_figures(table: pd.DataFrame, out_dir, swept=None) -> list[Path]:
    """Draw the figures of the sweep ``table`` into ``out_dir/figures/`` (atomically); their paths."""
    from sim.plot import _save

    folder = Path(out_dir) / "figures"
    paths = []
    for name, fig in draw(table, swept):
        paths.append(_save(fig, folder / name))
    return paths


