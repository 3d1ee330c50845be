"""The figures a run writes are ones a scientist would publish: the builders in
``sim/substrates/bio/results.py`` and ``sim/substrates/llm/results.py`` are called on small
datasets (synthetic, with the edge cases: constant counts, no transport, a nearly empty KV cache;
and the real dataset layout of a built biology tissue) and their matplotlib objects are read:
labels, legends, y-limits, what is drawn where.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from sim.constants import AVOGADRO_PER_MOL  # noqa: E402
from sim.substrates.bio import results as bio  # noqa: E402
from sim.substrates.llm import results as llm_results  # noqa: E402

SPECIES = ["glucose", "atp", "adp", "amp", "pi"]
KINDS = ["na_k_pump", "ca_pump", "protein_synthesis"]
VOLUME_L = 2e-12


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def ring(n_c):
    """``edge_src``, ``edge_dst`` attributes of a ring of ``n_c`` cells (as ``sim.network_figure.edge_attributes``)."""
    import networkx as nx

    from sim.network_figure import edge_attributes

    return edge_attributes(nx.cycle_graph(n_c))


def bio_dataset(*, n_rep=3, n_t=30, n_c=5, transported=True, constant_counts=True, seed=0, edges=False):
    """A biology tissue dataset with the variables and attributes of ``bio.results.to_dataset``
    (``edges``: with the graph of a ring, so ``network.png`` is drawn too)."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, n_t + 1) * 0.2
    rc = ("replicate", "time", "cell")
    shape = (n_rep, n_t, n_c)
    base = np.array([4.0, 3.8, 0.18, 0.004, 4.2])
    pools = base * (1 + 0.01 * rng.normal(size=shape + (5,)))
    ec = 0.92 + 0.005 * (1 - np.exp(-t / 1.0))[None, :, None] + 0.001 * rng.normal(size=shape)
    dg = -52.5 + 0.05 * rng.normal(size=shape)
    rate = 1.0 + 0.05 * rng.random((n_rep, 1, n_c))
    produced = rate * t[None, :, None]
    spent = 0.99 * produced
    moved = (0.001 * produced) if transported else np.zeros(shape)
    alive = np.ones(shape, np.int8)
    n_prod = np.full(shape, 6, np.int32) if constant_counts else 6 + (rng.random(shape) < t[None, :, None] / 10)
    by_kind = np.stack([spent[:, -1] * f for f in (0.5, 0.2, 0.3)], axis=-1)
    ds = xr.Dataset(
        {"pools": (rc + ("species",), pools, {"units": "mM"}),
         "energy_charge": (rc, ec, {"units": "1"}), "dg_atp": (rc, dg, {"units": "kJ/mol"}),
         "alive": (rc, alive, {"units": "1"}), "n_producers": (rc, n_prod.astype(np.int32), {"units": "1"}),
         "produced": (rc, produced, {"units": "mM"}), "spent": (rc, spent, {"units": "mM"}),
         "transported_out": (rc, moved, {"units": "mM"}), "work": (rc, 2.0 * spent, {"units": "work units"}),
         "spent_by_kind": (("replicate", "cell", "consumer_kind"), by_kind, {"units": "mM"})},
        coords={"replicate": np.arange(n_rep), "time": t, "cell": np.arange(n_c), "species": SPECIES,
                "consumer_kind": KINDS})
    ds.attrs.update(substrate="bio", currency="ATP", volume_l=VOLUME_L, **(ring(n_c) if edges else {}))
    return ds


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from sim.core.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="test"):
        return compose(config_name="config", overrides=list(overrides))


def _legend_texts(ax):
    legend = ax.get_legend()
    assert legend is not None, ax.get_title()
    return [t.get_text() for t in legend.get_texts()]


def _bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


# ------------------------------------------------------------------------------ biology


def test_energy_charge_axis_is_fitted_to_the_data_with_a_replicate_band():
    ds = bio_dataset()
    fig = bio.pools_figure(ds)
    ax = fig.axes[1]
    lo, hi = ax.get_ylim()
    ec = ds["energy_charge"]
    assert 0.85 < lo < float(ec.min()) and float(ec.max()) < hi < 0.97  # not 0-1: the data fill the panel
    assert hi - lo >= bio.MIN_EC_SPAN
    texts = _legend_texts(ax)
    assert any("min-max over 3 replicates" in s for s in texts) and "10-90% of cells" in texts
    assert len(_bands(ax)) == 2
    assert "energy charge" in ax.get_ylabel() and ax.get_xlabel() == "time (s)"
    # dG panel: fitted too, unit in the label
    assert "kJ/mol" in fig.axes[2].get_ylabel()
    assert fig.axes[2].get_ylim()[1] < 0
    # pools span three decades: a log axis, every species in the legend
    assert fig.axes[0].get_yscale() == "log" and _legend_texts(fig.axes[0]) == SPECIES


def test_fitted_limits_keep_a_minimum_span_and_the_unit_interval():
    assert bio.fitted_limits(0.9, 0.9, min_span=0.02) == pytest.approx((0.8884, 0.9116))
    lo, hi = bio.fitted_limits(0.97, 0.999, min_span=0.02, floor=0.0, ceil=1.0)
    assert hi == 1.0 and lo < 0.97
    assert bio.count_limits(30, 30) == (0.0, pytest.approx(34.5))  # a constant 30: 0-34.5, never 28.5-31.5


def test_ledger_is_in_the_unit_of_summary_json_cumulative_and_shows_transport():
    ds = bio_dataset()
    fig = bio.ledger_figure(ds)
    made, moved, bars = fig.axes
    k = VOLUME_L * 1e-3 * AVOGADRO_PER_MOL  # summary.json's mM -> molecules (bio.results.summarize)
    assert bio.molecules_per_mm(ds) == pytest.approx(k)
    assert "ATP molecules" in made.get_ylabel() and "cumulative" in made.get_ylabel()
    produced_line = next(line for line in made.get_lines() if line.get_label() == "produced")
    # the last point is summary.json's currency_produced_molecules: tissue total, mean over replicates, molecules
    expected = float(ds["produced"].isel(time=-1).sum("cell").mean("replicate")) * k
    assert produced_line.get_ydata()[-1] == pytest.approx(expected, rel=1e-12)
    # transport on its own axis: visibly not flat zero there
    y = moved.get_lines()[0].get_ydata()
    lo, hi = moved.get_ylim()
    assert y.max() > 0 and (y.max() - y.min()) > 0.5 * (hi - lo)
    assert "ATP molecules" in moved.get_ylabel()
    # bars: cumulative, labelled by kind, in molecules, spread over replicates
    assert "cumulative" in bars.get_title() and "ATP molecules" in bars.get_ylabel()
    assert [t.get_text() for t in bars.get_xticklabels()] == KINDS
    heights = [p.get_height() for p in bars.patches]
    assert heights == pytest.approx(list(ds["spent_by_kind"].sum("cell").mean("replicate").values * k))


def test_ledger_drops_the_transport_panel_when_nothing_moved():
    fig = bio.ledger_figure(bio_dataset(transported=False))
    assert len(fig.axes) == 2 and "moved" not in " ".join(a.get_title() for a in fig.axes)


def test_fate_has_legends_colours_whole_number_axes_and_no_window_around_a_constant():
    ds = bio_dataset(constant_counts=True)
    fig = bio.fate_figure(ds)
    cells, producers = fig.axes
    for ax in (cells, producers):
        assert _legend_texts(ax)
        ticks = ax.get_yticks()
        assert np.allclose(ticks, np.round(ticks))  # whole numbers only
    assert cells.get_lines()[0].get_color() != producers.get_lines()[0].get_color()
    total = ds.sizes["cell"] * 6  # a constant count of producers: the axis starts at 0
    assert producers.get_ylim()[0] == 0 and producers.get_ylim()[1] > total
    assert cells.get_ylim()[0] == 0 and cells.get_ylim()[1] > ds.sizes["cell"]
    moving = bio.fate_figure(bio_dataset(constant_counts=False)).axes[1]
    lo, hi = moving.get_ylim()
    assert lo > 0 and np.allclose(moving.get_yticks(), np.round(moving.get_yticks()))


def test_bio_figures_write_three_pngs(tmp_path):
    paths = bio.figures(bio_dataset(n_rep=1), tmp_path)  # one replicate: lines without bands
    assert sorted(p.name for p in paths) == ["fate.png", "ledger.png", "pools_energy_charge.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_the_network_figure_joins_the_run_figures_when_the_dataset_holds_the_graph(tmp_path):
    paths = bio.figures(bio_dataset(n_rep=2, edges=True), tmp_path)
    assert [p.name for p in paths] == ["pools_energy_charge.png", "ledger.png", "fate.png", "network.png"]
    llm_paths = llm_results.figures(serving_dataset(n_c=3, edges=True), tmp_path / "llm")
    assert [p.name for p in llm_paths] == ["serving.png", "network.png"]
    one = llm_results.figures(serving_dataset(n_c=1, edges=True), tmp_path / "one")  # one instance: no network
    assert [p.name for p in one] == ["serving.png"]


@pytest.fixture(scope="module")
def built_tissue():
    """A real biology dataset layout: the probe dataset of a built 4-cell tissue (no compiling)."""
    from omegaconf import OmegaConf

    from sim import api

    cfg = OmegaConf.to_container(_compose("experiment=tissue", "topology=ring", "topology.n_cells=4"), resolve=True)
    cfg, sub, built = api.prepare(cfg)
    return api.probe_dataset(sub, built, cfg)


def test_bio_figures_draw_the_datasets_the_run_makes(built_tissue):
    ds = built_tissue
    assert {"pools", "energy_charge", "dg_atp", "alive", "n_producers", "produced", "spent", "transported_out",
            "spent_by_kind"} <= set(ds.data_vars) and "volume_l" in ds.attrs
    for make in (bio.pools_figure, bio.ledger_figure, bio.fate_figure):
        fig = make(ds)
        assert all(ax.get_xlabel() or ax.get_ylabel() for ax in fig.axes)


# ------------------------------------------------------------------------------ LLM serving


def serving_dataset(*, n_rep=2, n_t=20, n_c=2, kv_fraction=0.03, limit=12.0, edges=False):
    t = np.arange(1, n_t + 1) * 0.5
    rc = ("replicate", "time", "cell")
    shape = (n_rep, n_t, n_c)
    rng = np.random.default_rng(1)
    cap = 4.5e5
    batch = np.minimum(t, 8)[None, :, None] + rng.integers(0, 2, shape)
    arrived = np.cumsum(rng.poisson(2.0, shape), axis=1).astype(float)
    completed = np.maximum(arrived - batch, 0)
    data = {
        "batch": batch, "queue_len": np.zeros(shape), "in_system": batch,
        "kv_occupied": kv_fraction * cap * batch / batch.max(), "kv_capacity": np.full(shape, cap),
        "arrived": arrived, "completed": completed, "tokens_out": np.cumsum(rng.poisson(400, shape), axis=1) * 1.0,
    }
    ds = xr.Dataset({k: (rc, v) for k, v in data.items()}, coords={"time": t})
    ds["time"].attrs["units"] = "s"
    ds.attrs.update(substrate="llm", kv_capacity_tokens=cap, stability_limit_req_per_s=limit,
                    **(ring(n_c) if edges else {}))
    return ds


def test_serving_has_no_lines_drawn_over_each_other():
    fig = llm_results.serving_figure(serving_dataset())
    requests = fig.axes[0]
    # queued (empty here) and in a chain are stacked areas; one outline for the total
    assert len(requests.get_lines()) == 1 and len(_bands(requests)) == 2
    assert {"queued", "in a chain (decoding or on a tool)", "in system (sum)"} <= set(_legend_texts(requests))
    for ax in fig.axes:
        ys = [tuple(np.round(line.get_ydata(), 12)) for line in ax.get_lines() if len(line.get_xdata()) > 2]
        assert len(ys) == len(set(ys)), ax.get_title()


def test_serving_kv_axis_fits_the_occupancy_and_names_the_capacity():
    ds = serving_dataset(kv_fraction=0.03)
    kv = llm_results.serving_figure(ds).axes[1]
    lo, hi = kv.get_ylim()
    assert lo == 0 and 3.0 < hi <= 10.0 and "% of capacity" in kv.get_ylabel()  # 3% peak: not a 0-100 axis
    assert any("capacity 100%" in t.get_text() for t in kv.texts)
    full = llm_results.serving_figure(serving_dataset(kv_fraction=0.95)).axes[1]
    assert any(np.allclose(line.get_ydata(), 100.0) for line in full.get_lines())  # in view: drawn
    assert full.get_ylim()[1] == pytest.approx(105.0)


def test_serving_draws_the_stability_limit_against_the_request_rates():
    ds = serving_dataset(limit=12.0, n_c=2)
    rates = llm_results.serving_figure(ds).axes[2]
    limit = [line for line in rates.get_lines() if "stability limit" in line.get_label()]
    assert len(limit) == 1 and np.allclose(limit[0].get_ydata(), 24.0)  # per instance x 2 instances
    assert rates.get_ylim()[1] > 24.0
    assert {"arrivals", "completions"} <= set(_legend_texts(rates))


@pytest.fixture(scope="module")
def llm_calculator():
    from omegaconf import OmegaConf

    from sim.experiments.roofline import calculator_config
    from sim.substrates.llm.build import build_llm

    def build(context, batch):
        cfg = OmegaConf.to_container(_compose("experiment=roofline", f"context={context}", f"batch={batch}"),
                                     resolve=True)
        ecfg, b, c, state = calculator_config(cfg)
        return build_llm(ecfg), b, c, state

    return build


def test_roofline_marks_the_ridge_point(llm_calculator):
    llm, batch, context, state = llm_calculator(128, 32)
    ridge = llm_results.ridge_batch(llm, context, state)
    assert ridge is not None and 1 < ridge < llm.kv_capacity // context
    from sim.substrates.llm import specs

    at = specs.roofline_point(llm.model, llm.gpu, ridge, context, llm.n_gpus, state)
    assert at["arithmetic_intensity_flop_per_byte"] == pytest.approx(at["ridge_flop_per_byte"], rel=1e-9)
    fig = llm_results.roofline_figure(llm, batch, context, state)
    for ax in fig.axes[:2]:
        marks = [line for line in ax.get_lines() if line.get_label().startswith("ridge")]
        assert len(marks) == 1 and marks[0].get_xdata()[0] == pytest.approx(ridge)
    point = [line for line in fig.axes[2].get_lines() if line.get_label().startswith("ridge point")]
    ridge_i = llm.gpu.achieved_flops / llm.gpu.achieved_bandwidth
    assert len(point) == 1 and point[0].get_xdata()[0] == pytest.approx(ridge_i)
    assert fig.axes[2].get_xlabel() == "arithmetic intensity (FLOP/byte)"


def test_roofline_says_when_a_long_context_is_memory_bound_at_every_batch(llm_calculator):
    llm, batch, context, state = llm_calculator(2048, 32)
    assert llm_results.ridge_batch(llm, context, state) is None
    fig = llm_results.roofline_figure(llm, batch, context, state)
    assert any("memory-bound at every batch" in t.get_text() for t in fig.axes[0].texts)
    assert not [line for line in fig.axes[0].get_lines() if line.get_label().startswith("ridge")]
    assert math.isfinite(fig.axes[2].get_ylim()[1])
