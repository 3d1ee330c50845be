"""``experiment=multicellular``: when does a collective of specialists beat generalists?

A phase diagram of division of labour (issue 12): for every topology of ``multicellular.topologies``
and every point of ``multicellular.alphas`` (trade-off curvature) x ``multicellular.losses``
(transport cost: the fraction of the currency's charge dissipated when it crosses a junction),
``multicellular.replicates`` replicates of a tissue whose cells adapt their differentiation
``theta`` (``differentiation.rule``, :mod:`sim.core.differentiation`) are run next to tissues of
generalists at every uniform theta of ``multicellular.generalist_thetas`` (no adaptation). All of it
is ONE batched engine call per topology: every row is a (point, replicate) with its own
``diff.alpha``, ``edges.loss``, adaptation rate and initial theta, and the same compiled program.

Outcomes per point (mean and standard deviation over replicates; rates over the second half of the
run, when the adaptation has settled):

``specialization_index``   Var(theta) / (1/4) at the end (:mod:`sim.core.division`);
``producer_fraction``      share of cells with theta >= 3/4;
``output_rate``            specialised work (the substrate's ``output`` ledger) per cell per unit time;
``output_per_substrate``   specialised work per unit of substrate used (the tissue's efficiency);
``generalist_output_rate`` the best tissue of identical generalists (best uniform theta); identical
                           cells exchange nothing, so this is also the single cell holding the same
                           total resources (the "unicellular" comparison);
``gain``                   output_rate / generalist_output_rate: > 1 where the collective's division
                           of labour pays;
``distance_to_producer``   mean graph distance from a non-producer to the nearest producer (spacing).

Dimensionless axes shared by every substrate: ``specialization gain`` = 2^(alpha-1), what a pair of
full specialists holds over two generalists, and ``transport cost`` = the loss fraction relative to
the currency produced.

Writes ``results.nc`` (dimensions topology, alpha, loss), ``multicellular.parquet`` (one row per
point), ``summary.json`` and ``figures/phase_diagram.png``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np
import yaml

from sim.api import RunOutput, as_plain
from sim.core import division, engine
from sim.core import differentiation as dif
from sim.core.config import CONF_DIR
from sim.errors import ConfigError
from sim.experiments import register
from sim import substrates
from sim.rng import replicate_keys

SUBSTRATES = ("generic", "bio")  # those with differentiation hooks


def _floats(opts: dict, key: str, lo: float, hi: float | None, strict: bool = False) -> list[float]:
    v = opts.get(key)
    ok = isinstance(v, (list, tuple)) and len(v) > 0 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)
        and (x > lo if strict else x >= lo) and (hi is None or x <= hi) for x in v)
    if not ok:
        rng = f"{'>' if strict else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise ConfigError(f"multicellular.{key}", v, f"a non-empty list of numbers {rng}")
    return [float(x) for x in v]


def read_options(cfg: dict) -> dict:
    """The ``multicellular`` section, checked."""
    from sim.topology import KINDS

    opts = dict(cfg.get("multicellular") or {})
    out = {"alphas": _floats(opts, "alphas", 0.0, None, strict=True),
           "losses": _floats(opts, "losses", 0.0, 1.0),
           "generalist_thetas": _floats(opts, "generalist_thetas", 0.0, 1.0)}
    topo = opts.get("topologies")
    if not isinstance(topo, (list, tuple)) or not topo or any(t not in KINDS or t in ("file", "single") for t in topo):
        raise ConfigError("multicellular.topologies", topo, "a non-empty list of: " + ", ".join(
            k for k in KINDS if k not in ("file", "single")))
    out["topologies"] = list(topo)
    for key in ("replicates", "n_cells"):
        v = opts.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "replicates" else 4):
            raise ConfigError(f"multicellular.{key}", v, f"an integer >= {1 if key == 'replicates' else 4}")
        out[key] = v
    return out


def topology_cfg(kind: str, n: int) -> dict:
    """The shipped ``conf/topology/<kind>.yaml`` with ``n_cells = n``."""
    node = yaml.safe_load((CONF_DIR / "topology" / f"{kind}.yaml").read_text())
    node["n_cells"] = n
    return node


def set_path(tree, path: str, value):
    """``tree`` with the (dotted) field ``path`` replaced."""
    head, _, rest = path.partition(".")
    inner = set_path(getattr(tree, head), rest, value) if rest else value
    return dataclasses.replace(tree, **{head: inner})


def get_path(tree, path: str):
    for part in path.split("."):
        tree = getattr(tree, part)
    return tree


def batch_rows(tree, n_rows: int, changes: dict):
    """Every leaf of ``tree`` repeated along a new leading axis of ``n_rows``; the fields of
    ``changes`` (dotted path -> ``(n_rows,)`` values) set row by row (broadcast over each leaf)."""
    out = jax.tree_util.tree_map(lambda x: np.broadcast_to(np.asarray(x), (n_rows,) + np.shape(x)).copy(), tree)
    for path, values in changes.items():
        old = np.asarray(get_path(tree, path))
        v = np.asarray(values, old.dtype).reshape((n_rows,) + (1,) * old.ndim)
        out = set_path(out, path, np.broadcast_to(v, (n_rows,) + old.shape).copy())
    return out


def design(alphas, losses, thetas, replicates):
    """Rows of one batched call: (alpha, loss, adaptive?, initial theta or NaN, replicate), point-major."""
    rows = []
    for a in alphas:
        for loss in losses:
            for theta in [None] + list(thetas):
                for r in range(replicates):
                    rows.append((a, loss, theta is None, np.nan if theta is None else theta, r))
    return rows


def run_topology(sub, base_cfg: dict, kind: str, opts: dict):
    """One batched engine call: every (point, replicate) row of one topology; per-row outcomes."""
    cfg = dict(base_cfg, topology=topology_cfg(kind, opts["n_cells"]))
    built = sub.build(cfg)
    rows = design(opts["alphas"], opts["losses"], opts["generalist_thetas"], opts["replicates"])
    n_rows = len(rows)
    alpha = np.array([r[0] for r in rows])
    loss = np.array([r[1] for r in rows])
    adaptive = np.array([r[2] for r in rows])
    theta0 = np.asarray(built.state.diff.theta)
    init = np.array([theta0 if r[2] else np.full_like(theta0, r[3]) for r in rows])
    rate = np.where(adaptive, float(np.asarray(built.params.diff.rate)), 0.0)
    params = batch_rows(built.params, n_rows, {"diff.alpha": alpha, "edges.loss": loss, "diff.rate": rate})
    state = batch_rows(built.state, n_rows, {})
    state = set_path(state, "diff", dataclasses.replace(state.diff, theta=init, ref_theta=init.copy()))
    keys = replicate_keys(built.seed, opts["replicates"])[np.array([r[4] for r in rows])]
    steps, every = int(cfg["steps"]), int(cfg["record_every"])
    res = engine.run(sub, state, params, seed=built.seed, steps=steps, record_every=every, replicates=n_rows,
                     batched_params=True, keys=keys, chunk_records=int(cfg.get("chunk_records", 100)))
    if res.error is not None:
        return built, rows, None, res
    t = np.asarray(res.times)
    h = (len(t) - 1) // 2
    out, used = res.records["output"], res.records["substrate_used"]
    n = out.shape[-1]
    d_out = out[:, -1].sum(-1) - out[:, h].sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_row = {
            "output_rate": d_out / (t[-1] - t[h]) / n,
            "output_per_substrate": d_out / (used[:, -1].sum(-1) - used[:, h].sum(-1)),
        }
    theta = np.asarray(res.state.diff.theta)
    per_row["specialization_index"] = division.specialization_index(theta)
    per_row["producer_fraction"] = division.producer_fraction(theta)
    per_row["worker_fraction"] = division.worker_fraction(theta)
    per_row["switching_per_cell"] = np.asarray(res.state.ledger.switching).mean(-1) if hasattr(
        res.state.ledger, "switching") else np.zeros(n_rows)
    per_row["distance_to_producer"] = np.array([division.distance_to_producer(th, built.graph) for th in theta])
    per_row["theta"] = theta
    return built, rows, per_row, res


def reduce(rows, per_row, opts):
    """Per (alpha, loss): the adaptive tissue's outcomes (mean, std over replicates) and the best generalists."""
    A, L = len(opts["alphas"]), len(opts["losses"])
    R, G = opts["replicates"], len(opts["generalist_thetas"])
    shape = (A, L, 1 + G, R)
    out = {}
    for name in ("output_rate", "output_per_substrate", "specialization_index", "producer_fraction",
                 "worker_fraction", "switching_per_cell", "distance_to_producer"):
        x = per_row[name].reshape(shape)
        out[name] = x[:, :, 0].mean(-1)
        out[name + "_std"] = x[:, :, 0].std(-1)
    gen = per_row["output_rate"].reshape(shape)[:, :, 1:].mean(-1)  # (A, L, G) over replicates
    best = np.argmax(gen, axis=-1)
    out["generalist_output_rate"] = np.take_along_axis(gen, best[..., None], -1)[..., 0]
    out["generalist_theta"] = np.asarray(opts["generalist_thetas"])[best]
    gen_eff = per_row["output_per_substrate"].reshape(shape)[:, :, 1:].mean(-1)
    out["generalist_output_per_substrate"] = np.take_along_axis(gen_eff, best[..., None], -1)[..., 0]
    ad = per_row["output_rate"].reshape(shape)[:, :, 0]  # (A, L, R)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = ad / out["generalist_output_rate"][..., None]
    out["gain"], out["gain_std"] = g.mean(-1), g.std(-1)
    return out


def to_dataset(results: dict, opts: dict, attrs: dict):
    import xarray as xr

    coords = {"topology": list(results), "alpha": opts["alphas"], "loss": opts["losses"]}
    names = next(iter(results.values())).keys()
    data = {name: (("topology", "alpha", "loss"), np.stack([results[t][name] for t in results])) for name in names}
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    ds["specialization_gain"] = ("alpha", 2.0 ** (np.asarray(opts["alphas"]) - 1.0))
    ds["specialization_gain"].attrs["long_name"] = "2^(alpha-1): a pair of full specialists over two generalists"
    ds["loss"].attrs["long_name"] = "transport cost: fraction of the currency's charge dissipated per junction crossing"
    for name in ds.data_vars:
        if name.startswith(("output_rate", "generalist_output_rate")):
            ds[name].attrs["units"] = f"{attrs.get('currency_unit', '1')} of work per cell per {attrs.get('time_unit', '1')}"
    return ds


def figures(ds, out_dir) -> list[Path]:
    """``figures/phase_diagram.png``: specialization index and gain over (alpha, loss), one column per topology."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    (Path(out_dir) / "figures").mkdir(parents=True, exist_ok=True)
    tops = list(ds["topology"].values)
    fig, axes = plt.subplots(2, len(tops), figsize=(3.4 * len(tops) + 1, 6.4), squeeze=False)
    x = ds["specialization_gain"].values
    y = ds["loss"].values
    gmax = float(np.nanmax(np.abs(np.log2(ds["gain"].values)))) or 1.0
    for j, top in enumerate(tops):
        for i, (name, cmap, kw, label) in enumerate((
                ("specialization_index", "viridis", {"vmin": 0, "vmax": 1}, "specialization index"),
                ("gain", "RdBu", {"vmin": -gmax, "vmax": gmax}, "log2 gain over the best generalists"))):
            v = ds[name].sel(topology=top).values.T  # (loss, alpha)
            v = np.log2(v) if name == "gain" else v
            ax = axes[i, j]
            im = ax.imshow(v, origin="lower", aspect="auto", cmap=cmap, **kw)
            ax.set_xticks(range(len(x)), [f"{g:.2g}" for g in x])
            ax.set_yticks(range(len(y)), [f"{c:.2g}" for c in y])
            if name == "gain":
                for (a, b), val in np.ndenumerate(v):
                    ax.text(b, a, f"{2 ** val:.2f}", ha="center", va="center", fontsize=7)
            ax.set(xlabel="specialization gain 2^(alpha-1) (1)", ylabel="transport cost: loss fraction (1)",
                   title=f"{top}: {label}" if i == 0 else f"{top}: gain")
            fig.colorbar(im, ax=ax, fraction=0.046).set_label(f"{label} (1)")
    sub = ds.attrs.get("substrate", "")
    fig.suptitle(f"division of labour ({sub}; {ds.attrs.get('rule', '')} adaptation, "
                 f"{ds.attrs.get('replicates', '')} replicates per point)")
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / "figures" / "phase_diagram.png")]


def differentiating(cfg: dict):
    """(plain cfg, base substrate, differentiation options, substrate run) of an experiment on
    differentiation; refuses a substrate without it (shared by multicellular and robustness)."""
    from sim.api import substrate_of

    cfg = as_plain(cfg)
    base = substrates.get((cfg.get("substrate") or {}).get("name"))
    if base.differentiation is None:
        raise ConfigError("substrate", base.name, "a substrate with differentiation: " + ", ".join(SUBSTRATES))
    return cfg, base, dif.read_config(cfg), substrate_of(cfg)


@register("multicellular")
def run_multicellular(cfg: dict) -> RunOutput:
    cfg, base, dopts, sub = differentiating(cfg)
    opts = read_options(cfg)
    if dopts["rule"] == "fixed":
        raise ConfigError("differentiation.rule", "fixed", "imitation or gradient (the adaptive tissue of the "
                          "phase diagram; generalists are run beside it)")
    base.validate(dict(cfg, topology=topology_cfg(opts["topologies"][0], opts["n_cells"])))
    t0 = time.perf_counter()
    results, failures, wall, comp, last, res = {}, [], 0.0, 0.0, None, None
    for kind in opts["topologies"]:
        built, rows, per_row, res = run_topology(sub, cfg, kind, opts)
        wall, comp, last = wall + res.wall_s, comp + res.compile_s, built
        if per_row is None:
            failures.append(f"{kind}: {res.error}")
            break
        results[kind] = reduce(rows, per_row, opts)
    attrs = {"substrate": base.name, "rule": dopts["rule"], "replicates": opts["replicates"],
             "n_cells": opts["n_cells"], "steps": int(cfg["steps"]), "dt": float(cfg["dt"]), "seed": int(cfg["seed"]),
             "currency_unit": "mM" if base.name == "bio" else "1", "time_unit": "s" if base.name == "bio" else "1"}
    ds = to_dataset(results, opts, attrs) if results else None
    summary = {"status": "failed" if failures else "ok", "substrate": base.name, "rule": dopts["rule"],
               "topologies": list(results), "engine_calls": len(results) + len(failures),
               "rows_per_call": len(design(opts["alphas"], opts["losses"], opts["generalist_thetas"],
                                           opts["replicates"])),
               "wall_s": wall, "compile_s": comp, "total_s": time.perf_counter() - t0}
    if failures:
        summary["reason"] = "; ".join(failures)
    for kind, r in results.items():
        i = int(np.unravel_index(np.nanargmax(r["gain"]), r["gain"].shape)[0])
        j = int(np.unravel_index(np.nanargmax(r["gain"]), r["gain"].shape)[1])
        summary[f"{kind}_best_gain"] = float(r["gain"][i, j])
        summary[f"{kind}_best_gain_at"] = {"alpha": opts["alphas"][i], "loss": opts["losses"][j]}
        summary[f"{kind}_max_specialization_index"] = float(np.nanmax(r["specialization_index"]))

    def files(out_dir):
        from sim.io import write_parquet

        if ds is not None:
            write_parquet(Path(out_dir) / "multicellular.parquet", ds.to_dataframe().reset_index())

    lines = [f"multicellular ({base.name}, {dopts['rule']}): {len(results)} engine call(s) of "
             f"{summary['rows_per_call']} rows x {opts['n_cells']} cells, wall {wall:.1f} s, compile {comp:.1f} s",
             "gain of the adaptive tissue over the best generalists (rows alpha, columns loss):"]
    for kind, r in results.items():
        lines.append(f"  {kind}:")
        for i, a in enumerate(opts["alphas"]):
            cells = "  ".join(f"{g:5.2f} (SI {s:.2f})" for g, s in zip(r["gain"][i], r["specialization_index"][i]))
            lines.append(f"    alpha {a:4.2g}: {cells}")
    return RunOutput(ds, summary, last, res, figures=(lambda out_dir: figures(ds, out_dir)) if ds is not None
                     else (lambda out_dir: []), files=files, report="\n".join(lines))

