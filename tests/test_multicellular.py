"""The multicellular stage: differentiation theta, its adaptation, and division of labour.

- the trade-off factors are normalised (a generalist keeps the substrate's capacities; alpha does
  not matter at theta = 1/2, bitwise) and convex / concave as documented;
- with adaptation happening (imitation and gradient), the JAX engine reproduces the plain-Python
  reference (the ``backend=mesa`` physics) to 1e-9, a run is deterministic for its seed, and the
  carrier is conserved while moves are paid for;
- the phase diagram's directions (Michod 2006; Rueffler et al. 2012): a convex trade-off with cheap
  transport specialises and out-produces the best tissue of generalists; a concave one does not
  pay (ring and complete graph); costly transport removes the gain;
- an imposed pattern is what it says (producer spacing on a ring); bad settings are refused by key.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from sim.api import prepare
from sim.core import differentiation as dif
from sim.core import division, engine
from sim.core.config import compose
from sim.errors import ConfigError
from sim.experiments import multicellular as mc

TISSUE = ["experiment=tissue", "substrate=generic", "topology=ring", "topology.n_cells=8", "dt=0.02", "record_every=50"]


def test_trade_off_factors_are_normalised_and_curved():
    assert dif.production_factor(0.5, 3.0) == 1.0 and dif.work_factor(0.5, 0.3) == 1.0
    for alpha, pays in ((2.0, True), (0.5, False)):
        specialists = dif.production_factor(1.0, alpha) + dif.work_factor(1.0, alpha)  # one cell each side
        assert (specialists > 2.0) == pays
    assert dif.production_factor(0.0, 2.0) == 0.0 and dif.work_factor(1.0, 2.0) == 0.0


def test_alpha_is_irrelevant_for_generalists_bitwise():
    runs = []
    for alpha in (0.5, 3.0):
        cfg, sub, built = prepare(compose(TISSUE + ["steps=200", f"differentiation.alpha={alpha}"]))
        assert "adaptation" not in sub.process_names  # a fixed rule adds no process
        runs.append(engine.run(sub, built.state, built.params, seed=0, steps=200, record_every=50, replicates=2))
    for a, b in zip(jax.tree_util.tree_leaves(runs[0].state), jax.tree_util.tree_leaves(runs[1].state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module", params=["imitation", "gradient"])
def adaptive_run(request):
    cfg, sub, built = prepare(compose(TISSUE + [
        "steps=400", f"differentiation={request.param}", "differentiation.alpha=2", "differentiation.rate=0.5",
        "differentiation.noise=0.2", "differentiation.switch_cost=0.05", "substrate.transport.loss_fraction=0.2"]))
    res = engine.run(sub, built.state, built.params, seed=built.seed, steps=400, record_every=50, replicates=2)
    return request.param, sub, built, res


def test_engine_reproduces_the_reference_with_adaptation(adaptive_run):
    rule, sub, built, res = adaptive_run
    assert res.error is None
    for r in range(2):
        ref = sub.reference(built, r)
        for _ in range(400):
            ref.step()
        mine = jax.device_get(engine.take(res.state, r))
        assert float(np.sum(mine.diff.switched)) > 0.3, "adaptation must actually move theta"
        for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(ref.state())):
            np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-9, atol=1e-12)


def test_adaptive_run_is_deterministic_and_conserves_the_carrier(adaptive_run):
    rule, sub, built, res = adaptive_run
    again = engine.run(sub, built.state, built.params, seed=built.seed, steps=400, record_every=50, replicates=2)
    for a, b in zip(jax.tree_util.tree_leaves(res.state), jax.tree_util.tree_leaves(again.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    s0, s1, led = built.state.cells, res.state.cells, res.state.ledger
    carrier0 = np.sum(s0.a + s0.d)
    np.testing.assert_allclose(np.sum(np.asarray(s1.a) + np.asarray(s1.d), -1), carrier0, rtol=1e-12)
    # the charged pool changes only by production, spending, moves paid for and charge lost in transit
    change = np.sum(np.asarray(s1.a), -1) - np.sum(s0.a)
    books = np.sum(np.asarray(led.produced) - np.asarray(led.spent) - np.asarray(led.switching)
                   - np.asarray(led.lost), -1)
    np.testing.assert_allclose(change, books, rtol=1e-9, atol=1e-9)
    assert np.all(np.asarray(led.switching).sum(-1) > 0)
    np.testing.assert_allclose(np.asarray(led.switching), np.asarray(res.state.diff.switch_paid), rtol=1e-12)


def test_imposed_pattern_spacing():
    cfg, sub, built = prepare(compose(["experiment=tissue", "substrate=generic", "topology=ring", "topology.n_cells=12",
                                       "differentiation.pattern_period=4"]))
    theta = np.asarray(built.state.diff.theta)
    assert list(theta[:5]) == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert list(division.ring_gaps(theta)) == [3, 3, 3]
    assert division.specialization_index(theta) == pytest.approx(0.25 * 0.75 / 0.25)
    assert division.distance_to_producer(theta, built.graph) == pytest.approx((1 + 2 + 1) / 3)


PHASE = {"alphas": [0.5, 3.0], "losses": [0.0, 0.6], "generalist_thetas": [0.3, 0.5, 0.7], "replicates": 2,
         "n_cells": 12}


@pytest.fixture(scope="module")
def phase():
    """One batched call per topology of the experiment's own function (tiny: 12 cells, 200 time units)."""
    cfg = compose(["experiment=multicellular", "steps=10000", "record_every=500"])
    from sim.api import as_plain, substrate_of

    cfg = as_plain(cfg)
    sub = substrate_of(cfg)
    out = {}
    for kind in ("ring", "complete"):
        built, rows, per_row, res = mc.run_topology(sub, cfg, kind, PHASE)
        assert res.error is None
        out[kind] = mc.reduce(rows, per_row, PHASE)
    return out


def test_convex_trade_off_with_cheap_transport_specialises_and_pays(phase):
    r = phase["ring"]  # index [alpha, loss]: alpha 3, no loss
    assert r["specialization_index"][1, 0] > 0.2
    assert r["gain"][1, 0] > 1.15, r["gain"]
    assert r["producer_fraction"][1, 0] > 0.1 and r["worker_fraction"][1, 0] > 0.1


def test_concave_trade_off_favours_generalists(phase):
    for kind in ("ring", "complete"):
        assert phase[kind]["gain"][0, 0] < 1.0, (kind, phase[kind]["gain"])


def test_costly_transport_removes_the_gain(phase):
    for kind in ("ring", "complete"):
        g = phase[kind]["gain"]
        assert g[1, 1] < g[1, 0] and g[1, 1] < 1.05, (kind, g)


def test_bad_differentiation_settings_are_refused_by_key():
    for override, key in (("differentiation.rule=swarm", "differentiation.rule"),
                          ("differentiation.alpha=0", "differentiation.alpha"),
                          ("differentiation.noise=2", "differentiation.noise"),
                          ("differentiation.pattern_period=1", "differentiation.pattern_period"),
                          ("differentiation.initial=blue", "differentiation.initial")):
        with pytest.raises(ConfigError) as exc:
            prepare(compose(["experiment=tissue", "substrate=generic", "topology=ring", "topology.n_cells=4", override]))
        assert key in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        prepare(compose(["experiment=serving", "differentiation=imitation"]))
    assert "differentiation.rule" in str(exc.value) and "llm" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        mc.read_options({"multicellular": dict(PHASE, topologies=["ring"], alphas=[-1])})
    assert "multicellular.alphas" in str(exc.value)


def test_specialised_collectives_lose_more_under_targeted_failure():
    from sim.api import as_plain, substrate_of
    from sim.experiments import robustness as rb

    cfg = as_plain(compose(["experiment=robustness", "topology.n_cells=12", "steps=6000", "record_every=250",
                            "robustness.replicates=2"]))
    opts = rb.read_options(cfg)
    built, rows, times, rate, res, first = rb.run_collectives(substrate_of(cfg), cfg, opts)
    assert res.error is None
    o = rb.outcomes(rows, times, rate, first * float(cfg["dt"]), opts)
    loss = {(c, f): np.mean([o["loss"][i] for i, (cc, ff, _) in enumerate(rows) if (cc, ff) == (c, f)])
            for c in rb.COLLECTIVES for f in rb.FAILURES}
    assert loss[("specialised", "none")] == 0.0 and loss[("generalist", "none")] == 0.0
    assert loss[("specialised", "random")] > 0.1 and loss[("generalist", "random")] > 0.0
    assert loss[("specialised", "targeted")] > loss[("generalist", "targeted")] + 0.1, loss
    assert loss[("specialised", "targeted")] >= loss[("specialised", "random")] - 0.02, loss
    # generalists have equal thetas: targeted failure kills the same cells as random failure
    assert loss[("generalist", "targeted")] == pytest.approx(loss[("generalist", "random")], abs=1e-12)
    with pytest.raises(ConfigError, match="robustness.kill_fraction"):
        rb.read_options({"robustness": dict(cfg["robustness"], kill_fraction=1.5)})


def test_biology_differentiates_in_both_backends():
    """Biology: theta is the share of a cell's protein budget in producers versus the specialised work
    kinds (contraction, biosynthesis for export); with adaptation the engine reproduces the reference,
    the ATP paid for moves is booked (currency balance and energy ledger), and nothing else changes."""
    cfg, sub, built = prepare(compose(["experiment=tissue", "substrate=bio", "topology=ring", "topology.n_cells=4", "dt=0.01",
                                       "differentiation=gradient", "differentiation.alpha=2",
                                       "differentiation.rate=2", "differentiation.noise=0.3",
                                       "differentiation.switch_cost=0.05", "steps=300", "record_every=100"]))
    assert list(np.asarray(built.params.c_specialised)) == [0, 0, 0, 1, 1]  # actomyosin, other_biosynthesis
    res = engine.run(sub, built.state, built.params, seed=built.seed, steps=300, record_every=100, replicates=1)
    ref = sub.reference(built, 0)
    for _ in range(300):
        ref.step()
    mine = jax.device_get(engine.take(res.state, 0))
    assert float(np.sum(mine.ledger.switching)) > 0 and float(np.sum(mine.diff.switched)) > 0.3
    for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(ref.state())):
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-9, atol=1e-12)
    summary = sub.summarize(built, res, cfg)
    assert summary["conservation_error"] < 1e-9 and summary["switching_molecules"] > 0
    # output (specialised work) is the work of the specialised kinds
    np.testing.assert_allclose(np.asarray(mine.ledger.output),
                               np.asarray(mine.ledger.work)[:, 3:].sum(-1), rtol=1e-12)
    with pytest.raises(ConfigError, match="substrate.consumers.kinds.actomyosin.specialised"):
        prepare(compose(["experiment=tissue", "substrate=bio", "topology=ring", "topology.n_cells=2",
                         "substrate.consumers.kinds.actomyosin.specialised=3"]))


def test_experiments_write_their_run_folders(tmp_path):
    """End to end through the command line: tables, dataset, figures, and the one-line run report."""
    from _support import run_child

    for name, extra, files in (
            ("robustness", ["topology.n_cells=8", "steps=2000", "robustness.replicates=1"],
             ["robustness.parquet", "figures/robustness.png"]),
            ("multicellular", ["multicellular.topologies=[ring]", "multicellular.n_cells=6", "steps=1000",
                               "record_every=250", "multicellular.alphas=[3]", "multicellular.losses=[0]",
                               "multicellular.generalist_thetas=[0.5]", "multicellular.replicates=1"],
             ["multicellular.parquet", "figures/phase_diagram.png"])):
        out = tmp_path / name
        res = run_child(["-m", "sim", f"experiment={name}", *extra, f"hydra.run.dir={out}"], timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        assert f"run: {out} (ok;" in res.stdout
        for f in ["results.nc", "summary.json", *files]:
            assert (out / f).is_file(), f
