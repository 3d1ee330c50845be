"""The analogy table as text (markdown, printed), as data (csv, parquet) and as a figure.

``entries`` are :func:`sim.experiments.analogy_rows.table`'s: one per row, with a
:class:`~sim.experiments.analogy_rows.Spread` per side and the verdict.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from sim.experiments import analogy_rows as rows

SIDE_NAMES = {"bio": "biology", "llm": "LLM"}


def _num(x: float, key: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.3f}" if "exponent" in key else f"{x:.4g}"


def cell(entry: dict, side: str, replicates: int) -> str:
    """``mean [low, high]`` (the 95% interval of the mean), with ``n=`` when fewer replicates
    than the side ran counted (replicates without a new steady state are left out)."""
    r, s = entry["row"], entry[side]
    key = r.key
    if r.label(side) == rows.DEFINITION:
        return f"{_num(s.mean, key)} (by definition)"
    if s.exact:
        return f"{_num(s.mean, key)} (exact)"
    if s.n == 0:
        return "not measured (no replicate reached a new steady state)"
    if s.n == 1:
        return f"{_num(s.mean, key)} (n=1, no interval)"
    text = f"{_num(s.mean, key)} [{_num(s.low, key)}, {_num(s.high, key)}]"
    return text + (f" n={s.n}" if s.n != replicates else "")


def verdict_cell(entry: dict) -> str:
    v = entry["verdict"]
    if not entry["row"].compared:
        return "not compared"
    if not math.isfinite(entry["factor"]):
        return v
    return f"{v}: {_num(entry['factor'])} [{_num(entry['factor_low'])}, {_num(entry['factor_high'])}]"


HEADER = ["quantity", "label", "biology", "LLM", "verdict (LLM / biology)", "units", "definition"]


def table_rows(entries: list[dict], summary: dict) -> list[list[str]]:
    out = []
    for e in entries:
        r = e["row"]
        definition = r.definition + (f" ({r.why})" if r.why else "")
        out.append([r.name, r.row_label, cell(e, "bio", summary["bio_replicates"]),
                    cell(e, "llm", summary["llm_replicates"]), verdict_cell(e), r.units, definition])
    return out


def table_markdown(entries: list[dict], summary: dict) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    conf = f"{rows.CONFIDENCE:.0%}"
    head = list(HEADER)
    head[2] = f"biology: mean [{conf} CI] (n = {summary['bio_replicates']})"
    head[3] = f"LLM: mean [{conf} CI] (n = {summary['llm_replicates']})"
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---", "---:", "---:", "---", "---", "---"]) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in table_rows(entries, summary)]
    title = (f"Structural analogy, measured: {summary['bio_cells']} cells / model instances "
             f"({summary['topology']}, {summary['edges']} edges), {summary['model']} on {summary['gpu']}, demand step "
             f"x{summary['step_factor']:g} at t = {summary['step_time_s']:g} s; currency ATP / token, carrier "
             f"{summary['bio_carrier']} / {summary['llm_carrier']}")
    k = summary["alike_factor"]
    notes = [
        f"Labels: emergent = a result of the dynamics; set by parameters = fixed (up to sampling) by configured "
        f"constants, named in the definition; by definition = true by construction. Verdicts only for rows emergent "
        f"on both sides: the ratio LLM / biology with its {conf} interval (delta method on the log ratio); alike = "
        f"the interval within a factor {k:g} of 1, differs = wholly outside it, undecided = neither.",
        f"Not rows, true by construction: the fraction of the input energy dissipated (1 on both sides at steady "
        f"state) and the carrier balance (conserved by the code; measured error biology "
        f"{summary['bio_carrier_balance_error']:.2g}, LLM {summary['llm_carrier_balance_error']:.2g}).",
    ]
    if summary.get("llm_cascade_long_extrapolated"):
        notes.append(f"The LLM long-chain exponent is fitted beyond the model's {summary['llm_max_context_tokens']:.0f}-"
                     "token context window: the architecture extrapolated, not a servable context.")
    if "bio_relaxation_reference_s" in summary:
        notes.append(f"Biology relaxation time, deterministic reference: {summary['bio_relaxation_reference_s']:.4g} s "
                     "(the single cell as an ODE with producer wear, same protocol and windows; the replicate "
                     "estimate differs from it by the explicit step's first-order error and sampling).")
    return title + "\n\n" + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def records(entries: list[dict]) -> list[dict]:
    """One flat record per row (numbers as numbers): the csv and parquet table."""
    out = []
    for e in entries:
        r = e["row"]
        rec = {"key": r.key, "quantity": r.name, "label": r.row_label, "units": r.units}
        for side in rows.SIDES:
            s = e[side]
            rec.update({f"{side}_label": r.label(side), f"{side}_mean": s.mean, f"{side}_std": s.std,
                        f"{side}_ci_low": s.low, f"{side}_ci_high": s.high, f"{side}_n": s.n,
                        f"{side}_exact": s.exact})
        rec.update(verdict=e["verdict"], factor=e["factor"], factor_low=e["factor_low"],
                   factor_high=e["factor_high"], definition=r.definition, why=r.why)
        out.append(rec)
    return out


def table_csv(entries: list[dict]) -> str:
    recs = records(entries)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(recs[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(recs)
    return buf.getvalue()


def write_tables(entries: list[dict], md: str, csv_text: str, out_dir) -> list:
    """analogy_table.md, .csv and .parquet in the run folder (atomically)."""
    import pandas as pd

    from sim.io import write_parquet, write_text

    out_dir = Path(out_dir)
    write_text(out_dir / "analogy_table.md", md)
    write_text(out_dir / "analogy_table.csv", csv_text)
    write_parquet(out_dir / "analogy_table.parquet", pd.DataFrame(records(entries)))
    return [out_dir / f"analogy_table.{ext}" for ext in ("md", "csv", "parquet")]


# ---- the figure ------------------------------------------------------------------------------------


def _band(x: np.ndarray):
    """Mean over replicates (axis 0) and its CONFIDENCE t-interval at every time."""
    from scipy import stats

    n = x.shape[0]
    mean = x.mean(0)
    half = stats.t.ppf(0.5 + rows.CONFIDENCE / 2, n - 1) * x.std(0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def _response_panel(ax, ds, entries, summary, side):
    t = ds[f"time_{side}"].values - summary["step_time_s"]
    x = ds[f"{side}_charged_fraction"].values  # (R, T)
    for r in x:
        ax.plot(t, r, color="0.75", lw=0.4)
    mean, lo, hi = _band(x)
    conf = f"{rows.CONFIDENCE:.0%}"
    ax.fill_between(t, lo, hi, color="C0", alpha=0.3, lw=0, label=f"{conf} interval of the mean")
    ax.plot(t, mean, color="C0", lw=1, label=f"mean of {x.shape[0]} replicates")
    ax.axvline(0.0, color="k", lw=0.5, ls=":")
    tau = next(e[side] for e in entries if e["row"].key == "relaxation_s")
    if math.isfinite(tau.mean):
        ax.axvline(tau.mean, color="C3", lw=0.8, ls="--", label=f"63% relaxation {tau.mean:.3g} s (n={tau.n})")
        if math.isfinite(tau.low):
            ax.axvspan(tau.low, tau.high, color="C3", alpha=0.15, lw=0)
    ax.set(xlabel="time from the demand step (s)", ylabel="charged currency / carrier (1)",
           title=f"{SIDE_NAMES[side]}: demand x{summary['step_factor']:g} ({'ATP' if side == 'bio' else 'occupied KV'})")
    ax.legend(fontsize=7)


def _verdict_panel(ax, entries, summary):
    compared = [e for e in entries if e["row"].compared]
    k = summary["alike_factor"]
    ax.axvspan(1 / k, k, color="C2", alpha=0.15, lw=0, label=f"alike: within x{k:g}")
    ax.axvline(1.0, color="k", lw=0.5, ls=":")
    for i, e in enumerate(compared):
        f = e["factor"]
        if math.isfinite(f) and f > 0:
            err = [[f - e["factor_low"]], [e["factor_high"] - f]] if math.isfinite(e["factor_low"]) else None
            ax.errorbar([f], [i], xerr=err, fmt="o", color="C0", ms=4, capsize=3)
            ax.annotate(e["verdict"], (f, i), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=7)
        else:
            ax.annotate(e["verdict"], (1.0, i), ha="center", va="center", fontsize=7, color="C3")
    ax.set_xscale("log")
    ax.set_yticks(range(len(compared)), [e["row"].name for e in compared], fontsize=7)
    ax.set(xlabel=f"LLM / biology, mean and {rows.CONFIDENCE:.0%} interval (1)", title="emergent rows: verdicts")
    ax.legend(fontsize=7)


def _cascade_panel(ax, ds, summary, entries):
    def exponent(key, side):
        return next(e[side].mean for e in entries if e["row"].key == key)

    lb, cb = ds["length_bio"].values, ds["cascade_bio_cost"].values
    ll, cl = ds["length_llm"].values, ds["cascade_llm_cost"].values
    ax.loglog(lb, cb / cb[0] * lb[0], "o-", label=f"biology, ATP (slope {exponent('cascade_exponent_long', 'bio'):.3f})")
    ax.loglog(ll, cl / cl[0] * ll[0], "s-", ms=3,
              label=f"LLM decode FLOPs (slope {exponent('cascade_exponent_short', 'llm'):.2f} short, "
                    f"{exponent('cascade_exponent_long', 'llm'):.2f} long)")
    ax.loglog(ll, ll, "k:", lw=0.8, label="slope 1")
    if summary.get("llm_cascade_long_extrapolated"):
        ax.axvline(summary["llm_max_context_tokens"], color="C3", lw=0.6, ls="--", label="LLM context window")
    # cost / (the shortest chain's cost per unit): a cost counted in units of length
    ax.set(xlabel="chain length (aa or tokens)", ylabel="cost per chain / cost per unit of the shortest (aa or tokens)",
           title="cascade: cost vs length (set by parameters)")
    ax.legend(fontsize=7)


def analogy_figure(ds, entries: list[dict], summary: dict, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    fig, ax = plt.subplots(2, 2, figsize=(14, 9))
    _response_panel(ax[0, 0], ds, entries, summary, "bio")
    _response_panel(ax[0, 1], ds, entries, summary, "llm")
    _verdict_panel(ax[1, 0], entries, summary)
    _cascade_panel(ax[1, 1], ds, summary, entries)
    fig.tight_layout()
    return _save(fig, Path(out_dir) / "figures" / "analogy.png")
