"""Every figure of every experiment keeps the contract of a figure a scientist would publish:

- every axis that carries numbers has a label ending in its unit, in parentheses or brackets
  (``time (s)``, ``energy charge (1)``: explicitly dimensionless); an axis of categories (consumer
  kinds, parameter names, table rows) needs none, a twin's hidden axis and an axis shared with a
  labelled one neither; a picture without axes (the network) is exempt, its colour bar is not;
- every colour bar is labelled with its unit;
- an axes with more than one line has a legend, or its lines are the ones a legend elsewhere in
  the figure names (one legend for the same regimes drawn in every panel).

The writers are called on small hand-made datasets with the layout each experiment writes (and,
for the substrates, on the probe dataset of a built tissue: the real variables, no compiling), with
``sim.plot._save`` replaced so the Figure objects are kept instead of written and closed. The
README's Gallery (``docs/gallery.py``, ``make figures``) is checked against the images in
``docs/figures/`` without running anything.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.category import StrCategoryFormatter  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from test_figures import _compose, bio_dataset, ring, serving_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UNIT = re.compile(r"(\([^()]+\)|\[[^\[\]]+\])\s*$")  # "... (unit)" or "... [unit]" at the end


# ------------------------------------------------------------------------------ the contract


def _number(text: str) -> bool:
    try:
        float(text.replace("\u2212", "-"))
        return True
    except ValueError:
        return False


def categorical(axis) -> bool:
    """An axis of named categories: string data, or tick labels that are words (a heatmap's tick
    labels "0.5", "2" are numbers: that axis needs its unit; "$10^{3}$" is a log axis's number)."""
    if isinstance(axis.get_major_formatter(), StrCategoryFormatter):
        return True
    texts = [t.get_text() for t in axis.get_ticklabels()]
    return any(t and not t.startswith("$") and not _number(t) for t in texts)


def _label(ax, letter: str) -> str:
    """The axis label, or that of an axes sharing the axis (subplots(sharey=True), label_outer)."""
    own = getattr(ax, f"get_{letter}label")()
    if own:
        return own
    shared = getattr(ax, f"get_shared_{letter}_axes")().get_siblings(ax)
    return next((getattr(a, f"get_{letter}label")() for a in shared if getattr(a, f"get_{letter}label")()), "")


def problems(fig, name: str) -> list[str]:
    """What breaks the contract (module docstring) in ``fig``; empty when nothing does."""
    named = set()
    for legend in [a.get_legend() for a in fig.axes] + list(fig.legends):
        if legend is not None:
            named |= {t.get_text() for t in legend.get_texts()}
    out = []
    for i, ax in enumerate(fig.axes):
        where = f"{name}, axes {i} ({ax.get_title() or 'untitled'!r})"
        cb = getattr(ax, "_colorbar", None)
        if cb is not None:
            label = (ax.yaxis if cb.orientation == "vertical" else ax.xaxis).get_label_text()
            if not UNIT.search(label):
                out.append(f"{where}: colour bar label {label!r} has no unit")
            continue
        if not ax.axison:  # a picture (the network), not a plot
            continue
        for letter in ("x", "y"):
            axis = getattr(ax, f"{letter}axis")
            if not axis.get_visible() or categorical(axis):
                continue
            label = _label(ax, letter)
            if not UNIT.search(label):
                out.append(f"{where}: {letter} label {label!r} has no unit in parentheses or brackets")
        caps = {id(c) for e in ax.containers if isinstance(e, ErrorbarContainer) for c in e.lines[1]}  # bar ends
        lines = [ln for ln in ax.get_lines()
                 if ln.get_visible() and len(np.atleast_1d(ln.get_xdata())) and id(ln) not in caps]
        if len(lines) > 1 and ax.get_legend() is None:
            labelled = {ln.get_label() for ln in lines if not ln.get_label().startswith("_")}
            if not labelled or not labelled <= named:
                out.append(f"{where}: {len(lines)} lines and no legend naming them")
    return out


@pytest.fixture
def drawn(monkeypatch):
    """The figures the writers hand to ``sim.plot._save`` (kept open, not written): [(file name, Figure)]."""
    import sim.plot

    kept = []

    def keep(fig, path):
        kept.append((Path(path).name, fig))
        return Path(path)

    monkeypatch.setattr(sim.plot, "_save", keep)
    yield kept
    plt.close("all")


def test_the_checker_catches_a_missing_unit_a_missing_legend_and_an_unlabelled_colour_bar():
    fig, ax = plt.subplots(1, 3)
    ax[0].plot([0, 1], [0, 1])
    ax[0].plot([0, 1], [1, 0])
    ax[0].set(xlabel="time", ylabel="energy charge (1)")
    ax[1].plot([0, 1], [0, 1], label="a")
    ax[1].plot([0, 1], [1, 0], label="b")
    ax[1].legend()
    ax[1].set(xlabel="time [s]", ylabel="pool (mM)")
    im = ax[2].imshow(np.eye(2))
    ax[2].set_xticks([0, 1], ["ring", "grid"])  # categories: no unit needed
    ax[2].set(ylabel="loss fraction (1)")
    fig.colorbar(im, ax=ax[2])
    found = problems(fig, "toy")
    assert any("axes 0" in p and "x label 'time'" in p for p in found)
    assert any("axes 0" in p and "no legend" in p for p in found)
    assert any("colour bar label ''" in p for p in found)
    assert len(found) == 3, found  # nothing on the labelled, legended panel or the axis of categories
    plt.close(fig)


# ------------------------------------------------------------------------------ the writers
#
# name -> callable(out_dir): calls one experiment's figure writer on a small dataset of the layout
# that experiment writes. The test below draws each and checks every figure it saved.

WRITERS = {}


def writer(name):
    def register(fn):
        WRITERS[name] = fn
        return fn

    return register


@writer("tissue_bio")
def _bio(out):
    from sim.substrates.bio import results as bio

    return bio.figures(bio_dataset(edges=True, n_c=6), out)


@writer("serving_llm")
def _serving(out):
    from sim.substrates.llm import results as llm_results

    return llm_results.figures(serving_dataset(n_c=4, edges=True), out)


def generic_dataset(n_rep=2, n_t=25, n_c=6):
    from sim.substrates.generic.spec import RECORDS

    rng = np.random.default_rng(2)
    t = np.arange(1, n_t + 1) * 0.5
    data = {}
    for q in RECORDS:
        x = rng.random((n_rep, n_t, n_c))
        if q.long_name.startswith("cumulative"):
            x = np.cumsum(x, axis=1)
        data[q.name] = (("replicate", "time", "cell"), x, {"units": q.unit, "long_name": q.long_name})
    data["alive"] = (("replicate", "time", "cell"), np.ones((n_rep, n_t, n_c), np.int8), {"units": "1"})
    ds = xr.Dataset(data, coords={"replicate": np.arange(n_rep), "time": t, "cell": np.arange(n_c)})
    ds["time"].attrs["units"] = "1"
    ds.attrs.update(substrate="generic", units="dimensionless", **ring(n_c))
    return ds


@writer("generic")
def _generic(out):
    from sim.substrates.generic.spec import figures

    return figures(generic_dataset(), out)


@writer("roofline")
def _roofline(out):
    from sim.experiments.roofline import calculator_config
    from sim.substrates.llm.build import build_llm
    from sim.substrates.llm.results import roofline_figures

    cfg = OmegaConf.to_container(_compose("experiment=roofline"), resolve=True)
    ecfg, batch, context, state = calculator_config(cfg)
    return roofline_figures(build_llm(ecfg), batch, context, state, out)


@writer("analogy")
def _analogy(out):
    from sim.experiments import analogy_rows as rows
    from sim.experiments.analogy_output import analogy_figure

    rng = np.random.default_rng(3)
    t = np.arange(0, 40, 0.5)
    step = 20.0
    rise = np.where(t > step, 1 - np.exp(-(t - step) / 3.0), 0.0)
    bio_cf = 0.95 - 0.2 * rise + 0.003 * rng.normal(size=(4, t.size))
    llm_cf = 0.03 + 0.07 * rise + 0.004 * rng.normal(size=(3, t.size))
    lb, ll = np.array([50.0, 400, 3200]), np.array([100.0, 1e4, 1e6])
    ds = xr.Dataset({"bio_charged_fraction": (("replicate_bio", "time_bio"), bio_cf),
                     "llm_charged_fraction": (("replicate_llm", "time_llm"), llm_cf),
                     "cascade_bio_cost": (("length_bio",), 4.0 * lb + 2.0),
                     "cascade_llm_cost": (("length_llm",), 1.6e10 * ll + 2.6e5 * ll ** 2)},
                    coords={"time_bio": t, "time_llm": t, "length_bio": lb, "length_llm": ll})
    entries = []
    for r in rows.ROWS:
        b, m = (rows.spread(rng.normal(mu, 0.05 * mu, size=n)) for mu, n in ((1.0, 4), (2.0, 3)))
        e = {"row": r, "bio": b, "llm": m}
        e.update(rows.verdict(b, m, 2.0) if r.compared else
                 {"verdict": "not compared", "factor": math.nan, "factor_low": math.nan, "factor_high": math.nan})
        entries.append(e)
    summary = {"step_time_s": step, "step_factor": 2.0, "alike_factor": 2.0, "llm_cascade_long_extrapolated": True,
               "llm_max_context_tokens": 8192}
    return [analogy_figure(ds, entries, summary, out)]


@writer("cascade")
def _cascade(out):
    from sim.experiments.cascade import cascade_figures, roofline_time
    from sim.substrates.llm import specs

    cfg = OmegaConf.to_container(_compose("experiment=cascade"), resolve=True)
    model, gpu = specs.model_spec(cfg), specs.gpu_spec(cfg)
    lb, ll = np.array([50.0, 400, 3200]), np.array([100.0, 1e3, 1e4, 1e5])
    c0, c1 = model.flops_per_token, model.flops_per_token_per_ctx
    series = np.array(["bio"] * 3 + ["llm"] * 4 + ["llm_tools"] * 4 + ["llm_memory"] * 4)
    length = np.concatenate([lb, ll, ll, ll])
    llm_cost = c0 * ll + 0.5 * c1 * ll ** 2
    cost = np.concatenate([4.0 * lb, llm_cost, 1.1 * llm_cost, np.minimum(llm_cost, 4 * c0 * ll)])
    turns = np.array([1.0, 2, 4, 8, 16])
    formula = 1000 * turns + 150 * turns * (turns - 1) / 2
    loops = {"turns": turns, "tokens_in": formula, "formula": formula, "tokens_in_memory": 0.6 * formula}
    summary = {"exponent_bio": 1.0, "exponent_loop": 1.6, "exponent_loop_memory": 1.0}
    return cascade_figures({"series": series, "length": length, "cost": cost}, loops, summary, model, gpu,
                           roofline_time(model, gpu, ll), out)


@writer("homeostasis")
def _homeostasis(out):
    from sim.experiments.homeostasis import homeostasis_figures

    work = np.array([1.0, 2.0, 3.0])
    dims = ("buffer_creatine_mm", "activation", "work")
    base = {"atp": 7.0, "pcr": 10.0, "pi": 2.0, "dg_atp": -58.0}
    data = {k: (dims, v * (1 - 0.05 * np.arange(12).reshape(2, 2, 3))) for k, v in base.items()}
    ds = xr.Dataset(data, coords={"buffer_creatine_mm": [0.0, 25.0], "activation": [0.0, 1.0], "work": work})
    return homeostasis_figures(ds, out)


@writer("multicellular")
def _multicellular(out):
    from sim.experiments import multicellular

    tops, alphas, losses = ["complete", "ring"], [0.5, 2.0, 3.0], [0.0, 0.6]
    shape = (len(tops), len(alphas), len(losses))
    rng = np.random.default_rng(4)
    dims = ("topology", "alpha", "loss")
    ds = xr.Dataset({"specialization_index": (dims, rng.random(shape)), "gain": (dims, 0.8 + 0.5 * rng.random(shape))},
                    coords={"topology": tops, "alpha": alphas, "loss": losses},
                    attrs={"substrate": "generic", "rule": "gradient", "replicates": 2})
    ds["specialization_gain"] = ("alpha", 2.0 ** (np.asarray(alphas) - 1.0))
    return multicellular.figures(ds, out)


@writer("robustness")
def _robustness(out):
    from sim.experiments import robustness

    colls, fails = list(robustness.COLLECTIVES), list(robustness.FAILURES)
    t = np.arange(1, 21) * 5.0
    rng = np.random.default_rng(5)
    shape = (len(colls), len(fails), 2)
    rate = 1.0 + 0.05 * rng.normal(size=shape + (t.size,))
    rate[:, 1:, :, t > 40] *= 0.7
    ds = xr.Dataset({"work_rate": (("collective", "failure", "replicate", "time"), rate),
                     "pre_rate": (("collective", "failure", "replicate"), np.ones(shape)),
                     "loss": (("collective", "failure", "replicate"), 0.2 * rng.random(shape))},
                    coords={"collective": colls, "failure": fails, "replicate": [0, 1], "time": t},
                    attrs={"substrate": "generic", "alpha": 3.0, "kill_fraction": 0.25, "fail_time": 40.0,
                           "rule": "gradient", "time_unit": "1"})
    return robustness.figures(ds, out)


@writer("standardization")
def _standardization(out):
    from sim.experiments import standardization

    tops, costs, spreads, ns = ["complete", "ring"], [0.0, 0.5, 0.9], [0.0, 2.0], [2, 3]  # two n: the third row
    t = np.arange(1, 11) * 10.0
    rng = np.random.default_rng(6)
    share = 1 / 3 + (2 / 3) * (1 - np.exp(-t / 40.0)) * rng.random((len(tops), len(ns), len(costs), len(spreads), 1))
    dims = ("topology", "n_carriers", "conversion_cost", "storage_spread")
    ds = xr.Dataset({"dominant_share_t": (dims + ("time",), share), "herfindahl": (dims, share[..., -1]),
                     "herfindahl_std": (dims, 0.05 * share[..., -1])},
                    coords={"topology": tops, "n_carriers": ns, "conversion_cost": costs, "storage_spread": spreads,
                            "time": t},
                    attrs={"time_unit": "1", "replicates": 2, "n_cells": 16})
    return standardization.figures(ds, out)


@writer("society")
def _society(out):
    from sim.experiments.society import ARRANGEMENTS, society_figures
    from sim.substrates.llm import society as so

    p = so.read_params(OmegaConf.to_container(_compose("experiment=society"), resolve=True))
    c, h, n = np.array([100.0, 1e3, 1e4]), np.array([0.0, 1e3, 1e4]), np.array(sorted({2, 4, p.n_instances}))
    rng = np.random.default_rng(7)
    ds = xr.Dataset({"specialization_gain_net": (("context_per_kind", "handoff_size", "n_instances"),
                                                 0.8 + rng.random((c.size, h.size, n.size))),
                     "alpha_effective": (("context_per_kind", "n_instances"), 1.0 + rng.random((c.size, n.size))),
                     "tokens_vs_chat": (("topology", "context_per_kind", "handoff_size"),
                                        1.0 + 10 * rng.random((len(ARRANGEMENTS), c.size, h.size)))},
                    coords={"topology": list(ARRANGEMENTS), "context_per_kind": c, "handoff_size": h, "n_instances": n})
    return society_figures(ds, {}, p, out)


@writer("sensitivity")
def _sensitivity(out):
    from sim.experiments.sensitivity import figure

    names = ["demand_scale", "supply_scale", "uptake_scale"]
    v = np.array([0.6, 0.3, 0.05])
    sobol = figure("sobol", names, {"mean_last:energy_charge": {"S1": v, "S1_conf": 0.1 * v, "ST": 1.1 * v,
                                                                "ST_conf": 0.1 * v}}, out)
    morris = figure("morris", names, {"mean_last:energy_charge": {"mu_star": v, "mu_star_conf": 0.1 * v,
                                                                  "sigma": 0.5 * v}}, out)
    return sobol + morris


@writer("calibrate")
def _calibrate(out):
    from sim.experiments.calibrate import figure

    history = [(i, 10.0 ** (2 - i), 10.0 ** (1 - i)) for i in range(8)]
    t = np.linspace(0.2, 10, 30)
    fit = 0.9 + 0.05 * np.exp(-t / 3)
    series = {"time": t, "data": fit + 0.002, "sigma": np.full(t.size, 0.01), "start": fit - 0.02, "fit": fit,
              "time_unit": "s", "quantity": "energy_charge", "unit": "1"}
    return figure(history, ["supply_scale"], out) + figure(history, ["supply_scale", "demand_scale"], out, series)


def _probe(*overrides):
    """The dataset ``to_dataset`` makes for this config (one record of ones; built, not compiled)."""
    from sim import api

    cfg, sub, built = api.prepare(OmegaConf.to_container(_compose(*overrides), resolve=True))
    return sub, api.probe_dataset(sub, built, cfg)


PROBES = {"bio": ("experiment=tissue", "topology=ring", "topology.n_cells=4"),
          "generic": ("experiment=tissue", "substrate=generic", "topology=ring", "topology.n_cells=4"),
          "llm": ("experiment=serving", "topology=ring", "topology.n_cells=3")}

for _name, _overrides in PROBES.items():
    def _probe_writer(out, _overrides=_overrides):
        sub, ds = _probe(*_overrides)
        return sub.figures(ds, out)

    WRITERS[f"probe_{_name}"] = _probe_writer


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_figure_has_units_on_its_axes_and_legends_for_its_lines(name, drawn, tmp_path):
    paths = WRITERS[name](tmp_path)
    assert drawn and len(paths) == len(drawn), name
    found = [p for file, fig in drawn for p in problems(fig, f"{name}/{file}")]
    assert not found, "\n".join(found)


def test_every_experiment_has_a_writer_here():
    """A new experiment (or substrate) gets its figures checked here too."""
    from sim import experiments, substrates

    # study draws no figures (its table is study.parquet); tissue and serving runs are drawn by their
    # substrate's figures (the probe_* writers)
    drawn_by_others = {"study", "tissue", "serving"}
    kinds = set(experiments.kinds()) - drawn_by_others
    assert kinds <= set(WRITERS), sorted(kinds - set(WRITERS))
    assert {f"probe_{s}" for s in substrates.names() if substrates.get(s).figures is not None} <= set(WRITERS)


# ------------------------------------------------------------------------------ the network


@pytest.mark.parametrize("substrate", sorted(PROBES))
def test_network_figure_draws_the_run_graph_from_results_attributes(substrate):
    from sim.network_figure import EDGE_DST, EDGE_SRC, network_figure

    _, ds = _probe(*PROBES[substrate])
    n = ds.sizes["cell"]
    src, dst = ds.attrs[EDGE_SRC], ds.attrs[EDGE_DST]
    ring_edges = sorted([(i, i + 1) for i in range(n - 1)] + [(0, n - 1)])  # src < dst, sorted
    assert src.dtype == np.int32 and list(zip(src.tolist(), dst.tolist())) == ring_edges
    fig = network_figure(ds)
    ax = next(a for a in fig.axes if getattr(a, "_colorbar", None) is None)
    nodes = [c for c in ax.collections if isinstance(c, PathCollection)]
    edges = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(nodes[0].get_offsets()) == n and len(edges[0].get_segments()) == src.size
    cbar = next(a for a in fig.axes if getattr(a, "_colorbar", None) is not None)
    unit = {"bio": "energy charge at the end (1)", "generic": "charged fraction A / (A + D) at the end (1)",
            "llm": "KV cache occupied at the end (% of capacity)"}[substrate]
    assert cbar.get_ylabel() == unit


def test_network_colour_is_the_end_state_and_area_the_work_done(tmp_path):
    from sim.network_figure import network_figure

    ds = bio_dataset(edges=True, n_c=6)
    ds["energy_charge"].values[:, -1, 2] = 0.5  # one cell in trouble at the end
    ds["alive"].values[:, -1, 4] = 0  # and one dead
    fig = network_figure(ds)
    ax = fig.axes[0]
    nodes = next(c for c in ax.collections if isinstance(c, PathCollection))
    colour = nodes.get_array()
    assert np.allclose(colour, ds["energy_charge"].isel(time=-1).mean("replicate").values)
    work = ds["work"].isel(time=-1).mean("replicate").values
    sizes = nodes.get_sizes()
    assert np.argmax(sizes) == np.argmax(work) and np.all(np.diff(sizes[np.argsort(work)]) >= 0)
    lo, hi = nodes.get_clim()
    assert lo < 0.5 < 0.9 < hi <= 1.0  # the colour scale fits the data, the cell in trouble included
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("molecules" in s for s in texts) and any("dead at the end" in s and "1 of 6" in s for s in texts)
    # no graph (a dataset written before results.nc kept it) or one compartment: no network figure
    assert network_figure(bio_dataset()) is None
    one = bio_dataset(n_c=1)
    one.attrs.update(edge_src=np.zeros(0, np.int32), edge_dst=np.zeros(0, np.int32))
    assert network_figure(one) is None


def test_network_attributes_survive_results_nc(tmp_path):
    """netCDF reads a one-element attribute back as a scalar: a two-cell graph still draws."""
    from sim.io import write_netcdf
    from sim.network_figure import edges_of, network_figure

    ds = bio_dataset(n_c=2, edges=True)
    ds.attrs.update(edge_src=np.array([0], np.int32), edge_dst=np.array([1], np.int32))
    write_netcdf(tmp_path / "results.nc", ds)
    back = xr.load_dataset(tmp_path / "results.nc")
    src, dst = edges_of(back)
    assert src.tolist() == [0] and dst.tolist() == [1]
    assert network_figure(back) is not None


# ------------------------------------------------------------------------------ the gallery


def _gallery():
    import sys

    if "docs_gallery" not in sys.modules:  # (dataclasses look their module up there)
        spec = importlib.util.spec_from_file_location("docs_gallery", ROOT / "docs" / "gallery.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["docs_gallery"] = module
        spec.loader.exec_module(module)
    return sys.modules["docs_gallery"]


def test_the_readme_gallery_shows_every_entry_with_its_command_and_image():
    gallery = _gallery()
    readme = (ROOT / "README.md").read_text()
    assert "make figures" in readme and "## Gallery" in readme
    names = {e.name for e in gallery.GALLERY}
    assert {n for n in WRITERS if not n.startswith("probe_")} <= names  # one entry per experiment drawn here
    for e in gallery.GALLERY:
        assert f"`{e.command}`" in readme, e.name
        for figure in e.figures:
            path = ROOT / "docs" / "figures" / e.target(figure)
            assert f"(docs/figures/{e.target(figure)})" in readme, path
            assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG", path
            assert path.stat().st_size < gallery.MAX_BYTES, (path, path.stat().st_size)
