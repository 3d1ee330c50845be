"""``experiment=homeostasis``: heart-like energy homeostasis, feedback-only against parallel activation,
with and without the phosphocreatine buffer.

In the heart, ATP, phosphocreatine (PCr), Pi and dG of ATP hydrolysis stay nearly constant over a
several-fold range of work (31P NMR of the paced in-vivo heart, Balaban et al. 1986). ADP/Pi
feedback alone cannot do that: to make more ATP the producers need more ADP and Pi, so ATP, PCr
and |dG| fall as work rises. Parallel ("each-step") activation, in which the activator of work
(Ca2+) activates ATP supply as well (Korzeniewski 1998, 2017), explains the stability. This
experiment measures both regimes on the biology engine: one single cell per (buffer, activation,
work rate), every point of a buffer setting in one batched engine call, run to steady state:

- work rate ``W`` = ``params.demand_scale`` (x the preset's resting demand), ``homeostasis.work``;
- regimes: ``supply.parallel_activation`` = 0 (feedback only) and ``homeostasis.activation`` (1:
  producer capacity x W);
- buffer: none, and creatine kinase with ``homeostasis.creatine_total_mm`` of creatine;
- heart-like supply: capacity x ``homeostasis.supply_scale`` (the heart's oxidative capacity is
  several times its resting use; chosen 2: ~4.7x the resting ATP flux);
- the deterministic part only: no producer failure, biogenesis or wear, protein synthesis without
  termination (its demand is then the Michaelis-Menten law), so each point has one steady state,
  which ``sim.analysis.supply_demand`` also finds independently (``max_rel_diff_engine_vs_root``).

Writes ``results.nc`` (dims buffer, activation, work: atp, adp (free), pcr, pi, dg_atp,
energy_charge, flux, and the independent roots), ``summary.json`` (the relative change of each
quantity between the lowest and the highest work rate, per regime) and
``figures/homeostasis.png`` (ATP, PCr, Pi and dG against work rate).
"""

from __future__ import annotations

import copy
import dataclasses

import jax
import numpy as np
import xarray as xr

from sim.analysis import supply_demand as sd
from sim.api import RunOutput, prepare
from sim.core import engine
from sim.core.config import get, num
from sim.errors import ConfigError
from sim.experiments import register
from sim.io import CORE_OUTCOMES, DIMENSIONLESS
from sim.substrates.bio.kernels.thermo import dg_atp_kj, energy_charge_of
from sim.substrates.bio.state import ADP, ATP, PI

QUANTITIES = ("atp", "adp", "pcr", "pi", "dg_atp", "energy_charge", "flux")


def options(cfg: dict) -> dict:
    """The ``homeostasis`` section, checked (one ConfigError naming the key)."""
    work = get(cfg, "homeostasis.work")
    if (not isinstance(work, (list, tuple)) or len(work) < 2
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in work)):
        raise ConfigError("homeostasis.work", work, "a list of at least 2 work rates > 0 (x resting demand)")
    return {
        "work": tuple(float(w) for w in work),
        "activation": num(cfg, "homeostasis.activation", 0, 2, strict=True),
        "creatine_total_mm": num(cfg, "homeostasis.creatine_total_mm", 0, 1000, strict=True),
        "supply_scale": num(cfg, "homeostasis.supply_scale", 0, strict=True),
        "settle_s": num(cfg, "homeostasis.settle_s", 0, strict=True),
    }


def deterministic(model, supply_scale: float):
    """The model with failure, biogenesis and wear off, chains without termination, the supply scaled."""
    p = model.params
    zero = lambda x: np.zeros_like(np.asarray(x))  # noqa: E731
    params = dataclasses.replace(
        p, hazard0=zero(p.hazard0), birth_rate=zero(p.birth_rate), p_damage=zero(p.p_damage),
        chain_p_stop=zero(p.chain_p_stop), supply_scale=np.asarray(supply_scale, np.asarray(p.supply_scale).dtype),
    )
    return dataclasses.replace(model, params=params)


def heart_models(cfg: dict, opt: dict) -> dict:
    """{creatine (mM): built single-cell model}: without the buffer and with it."""
    out = {}
    for creatine in (0.0, opt["creatine_total_mm"]):
        c = copy.deepcopy(cfg)
        c["substrate"].setdefault("buffer", {})["creatine_total_mm"] = creatine
        c["topology"] = {"kind": "single"}
        out[creatine] = deterministic(prepare(c)[2], opt["supply_scale"])
    return out


def engine_steady_states(model, works, activations, settle_steps: int) -> dict:
    """Engine steady states of every (activation, work) point in one batched call; arrays (A, W)."""
    grid = [(a, w) for a in activations for w in works]
    base = model.params
    plist = [dataclasses.replace(base, parallel_activation=np.asarray(a, np.float64), demand_scale=np.asarray(w, np.float64))
             for a, w in grid]
    params = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *plist)
    from sim.substrates.bio import SUBSTRATE as BIO

    window = max(settle_steps // 10, 1)
    r1 = engine.run(BIO, model.state, params, seed=model.seed, steps=settle_steps - window, record_every=settle_steps - window,
                    replicates=len(grid), batched_params=True)
    if r1.error is not None:
        raise RuntimeError(f"homeostasis: {r1.error}")
    r2 = engine.run(BIO, r1.state, params, seed=model.seed, steps=window, record_every=window, replicates=len(grid),
                    batched_params=True, start_step=settle_steps - window)
    if r2.error is not None:
        raise RuntimeError(f"homeostasis: {r2.error}")
    span = window * float(np.asarray(base.dt))
    flux = (np.asarray(r2.state.ledger.spent).sum(-1) - np.asarray(r1.state.ledger.spent).sum(-1))[:, 0] / span
    pools = np.asarray(r2.state.cells.pools)[:, 0, :]
    pcr = np.asarray(r2.state.cells.pcr)[:, 0]
    p = base
    out = {
        "atp": pools[:, ATP], "adp": pools[:, ADP], "pcr": pcr, "pi": pools[:, PI],
        "dg_atp": dg_atp_kj(pools[:, ATP], pools[:, ADP], pools[:, PI], float(p.dg0_kj), float(p.temperature_k), xp=np),
        "energy_charge": energy_charge_of(pools, p, xp=np), "flux": flux,
    }
    return {k: np.asarray(v, float).reshape(len(activations), len(works)) for k, v in out.items()}


def root_steady_states(model, works, activations) -> dict:
    """The independent roots (``sim.analysis.supply_demand``) of the same points; arrays (A, W)."""
    out = {k: np.zeros((len(activations), len(works))) for k in QUANTITIES}
    for i, a in enumerate(activations):
        for j, w in enumerate(works):
            ss = sd.solve_steady_state(sd.cell_from_model(model, parallel_activation=a, demand_scale=w))
            for k, v in (("atp", ss.atp), ("adp", ss.adp), ("pcr", ss.pcr), ("pi", ss.pi), ("dg_atp", ss.dg_kj),
                         ("energy_charge", ss.energy_charge), ("flux", ss.flux)):
                out[k][i, j] = v
    return out


# The unit of every key the homeostasis summary can hold (sim.io's naming rule): work rates are
# multiples of the resting demand (params.demand_scale), changes relative.
OUTCOME_UNITS = {
    **CORE_OUTCOMES, "work_min": DIMENSIONLESS, "work_max": DIMENSIONLESS, "settle_s": "s",
    "supply_scale": DIMENSIONLESS, "creatine_total_mm": "mM", "activation": DIMENSIONLESS,
    "*_rel_change": DIMENSIONLESS, "*_atp_rest_mm": "mM", "max_rel_diff_engine_vs_root": DIMENSIONLESS,
}


@register("homeostasis")
def run_homeostasis(cfg: dict) -> RunOutput:
    opt = options(cfg)
    models = heart_models(cfg, opt)
    works, activations = opt["work"], (0.0, opt["activation"])
    dt = float(cfg["dt"])
    settle = max(int(round(opt["settle_s"] / dt)), 10)
    buffers = tuple(models)
    sim_, root = {}, {}
    for c, m in models.items():
        sim_[c] = engine_steady_states(m, works, activations, settle)
        root[c] = root_steady_states(m, works, activations)
    coords = {"buffer_creatine_mm": list(buffers), "activation": list(activations), "work": list(works)}
    dims = ("buffer_creatine_mm", "activation", "work")
    units = {"atp": "mM", "adp": "mM", "pcr": "mM", "pi": "mM", "dg_atp": "kJ/mol", "energy_charge": "1", "flux": "mM/s"}
    data = {}
    for k in QUANTITIES:
        data[k] = (dims, np.stack([sim_[c][k] for c in buffers]), {"units": units[k]})
        data[f"{k}_root"] = (dims, np.stack([root[c][k] for c in buffers]), {"units": units[k], "long_name": "independent root"})
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(experiment="homeostasis", supply_scale=opt["supply_scale"], settle_s=settle * dt,
                    note="adp is the free ADP; energy charge of the total pools (bound ADP and AMP included)")
    summary = {"status": "ok", "work_min": works[0], "work_max": works[-1], "settle_s": settle * dt,
               "supply_scale": opt["supply_scale"], "creatine_total_mm": opt["creatine_total_mm"],
               "activation": opt["activation"]}
    worst = 0.0
    for c in buffers:
        for i, a in enumerate(activations):
            tag = f"{'parallel' if a > 0 else 'feedback'}_{'buffer' if c > 0 else 'nobuffer'}"
            for k in ("atp", "pcr", "pi", "dg_atp", "flux"):
                x = sim_[c][k][i]
                summary[f"{tag}_{k}_rel_change"] = float(x[-1] / x[0] - 1.0) if x[0] != 0 else float("nan")
            summary[f"{tag}_atp_rest_mm"] = float(sim_[c]["atp"][i, 0])
            for k in ("atp", "pi", "flux"):
                worst = max(worst, float(np.max(np.abs(sim_[c][k][i] / root[c][k][i] - 1.0))))
    summary["max_rel_diff_engine_vs_root"] = worst
    result = type("HomeostasisResult", (), {"error": None})()  # every engine call was checked above
    return RunOutput(ds, summary, models[buffers[0]], result, figures=lambda out_dir: homeostasis_figures(ds, out_dir))


def homeostasis_figures(ds, out_dir):
    """ATP, PCr, Pi and dG against work rate, one line per regime."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    panels = (("atp", "ATP (mM)"), ("pcr", "PCr (mM)"), ("pi", "Pi (mM)"), ("dg_atp", "dG ATP hydrolysis (kJ/mol)"))
    for ax, (k, label) in zip(axes, panels):
        for c in ds["buffer_creatine_mm"].values:
            for a in ds["activation"].values:
                y = ds[k].sel(buffer_creatine_mm=c, activation=a)
                style = "-" if a > 0 else "--"
                color = "C0" if c > 0 else "C3"
                name = f"{'parallel activation' if a > 0 else 'feedback only'}, {'PCr buffer' if c > 0 else 'no buffer'}"
                if k == "pcr" and c == 0:
                    continue
                ax.plot(ds["work"].values, y.values, style, color=color, marker="o", ms=3, label=name)
        ax.set(xlabel="work rate (x resting demand)", ylabel=label)
    axes[0].legend(fontsize=7)
    fig.suptitle("heart-like homeostasis: feedback only vs parallel activation (Korzeniewski), with / without PCr")
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / "figures" / "homeostasis.png")]
