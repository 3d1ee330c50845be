"""The JAX engine and the plain-Python Mesa reference backend agree (float64, 1e-9 relative).

A 30-cell small-world tissue (bio preset with test overrides that make producers fail, wear and
get repaired, biogenesis happen, junctions leak, and some cells starve and die) is run for 300
steps on both backends of ``sim.CurrencyModel``; every pool, health, alive mask and ledger field
is compared, and each kind of event is asserted to have happened. Protein synthesis runs as
chains (ribosome cohorts, ``ChainAgent`` s on the Mesa side): their slots (active, length, made)
and ledgers are compared too, and chains must have initiated, elongated, slowed as ATP fell
(starving cells) and terminated during the run. Also: the DataCollector,
``AgentSet.select/groupby/agg`` and agents' alive flags on both backends, agent-order
independence of the reference (``shuffle_do`` vs ``do``), and replicate keys.
"""

from __future__ import annotations


import jax
import numpy as np
import pytest

from _support import bio_substrate

import sim  # noqa: F401  (switches on float64)
from sim.errors import ConfigError
from sim.mesa_model import CellAgent, ChainAgent, ConsumerAgent, CurrencyModel, ProducerAgent
from sim.substrates.bio.build import build

STEPS = 300
HALF = STEPS // 2
RTOL = 1e-9


def make_cfg(**top):
    sub = bio_substrate()
    prod = sub["producers"]
    prod["hazard_per_s"] = 0.05  # failures: ~300 over the run
    prod["birth_per_s"] = 0.5  # biogenesis into freed slots
    prod["kinds"]["mitochondrion"]["damage_per_s"] = 0.05  # wear, hence repair
    sub["consumers"]["demand_total_mm_per_s"] = 1.0
    sub["consumers"]["demand_cv"] = 1.0  # some cells demand far more than they can make ...
    sub["supply"]["uptake_cv"] = 1.0  # ... or take up
    sub["cell"]["stress_death_s"] = 2.0  # ... and starve to death within the run
    sub["cell"]["stress_threshold"] = 0.95  # pumps below 95% of their saturated rate stress the cell
    sub["transport"]["loss_fraction"] = 0.05  # leaky junctions exercise the `lost` ledger
    sub["transport"]["permeability"]["amp"] = 0.5
    cfg = dict(
        substrate=sub,
        topology=dict(kind="small_world", n_cells=30, k=4, p=0.1),
        seed=0,
        dt=0.05,
    )
    cfg.update(top)
    return cfg


def leaves(state):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(state)}


def max_rel_diff(a, b) -> float:
    """Largest elementwise |a-b| / max(|a|, |b|) over all float fields (0 where equal)."""
    worst = 0.0
    la, lb = leaves(a), leaves(b)
    for k, x in la.items():
        y = lb[k]
        if x.dtype.kind == "f" and x.size:
            d = np.abs(x - y)
            scale = np.maximum(np.abs(x), np.abs(y))
            r = np.where(d > 0, d / np.where(scale > 0, scale, 1.0), 0.0)
            worst = max(worst, float(r.max()))
    return worst


def assert_states_agree(a, b, rtol=RTOL):
    la, lb = leaves(a), leaves(b)
    assert la.keys() == lb.keys()
    for k, x in la.items():
        y = lb[k]
        assert x.shape == y.shape and x.dtype == y.dtype, k
        if x.dtype.kind == "f":
            # relative per element; the floor (1e-12 of the field's scale) only matters for
            # entries that are zero up to round-off (e.g. net ledgers near a sign change)
            floor = 1e-12 * max(float(np.abs(x).max(initial=0.0)), float(np.abs(y).max(initial=0.0)))
            np.testing.assert_allclose(x, y, rtol=rtol, atol=floor, err_msg=k)
        else:
            np.testing.assert_array_equal(x, y, err_msg=k)


def producer_flags(model):
    return np.array([p.alive for p in model.agents_by_type[ProducerAgent]])


@pytest.fixture(scope="module")
def runs():
    cfg = make_cfg()
    # reference: agent by agent, one Mesa step() at a time, DataCollector every step
    ref = CurrencyModel(dict(cfg, backend="mesa"))
    flags = [producer_flags(ref)]
    for _ in range(HALF):
        ref.step()
        flags.append(producer_flags(ref))
    ref_half = ref.state
    for _ in range(HALF):
        ref.step()
        flags.append(producer_flags(ref))
    # engine: one scan call (run) for the first half, jitted single steps for the second
    eng = CurrencyModel(cfg)  # backend "jax" is the default
    eng.run(HALF)
    eng_half = eng.state
    for _ in range(HALF):
        eng.step()
    return dict(cfg=cfg, ref=ref, eng=eng, ref_half=ref_half, eng_half=eng_half, flags=np.array(flags))


def test_backends_agree_to_1e_9(runs):
    ref, eng = runs["ref"], runs["eng"]
    assert ref.backend == "mesa" and eng.backend == "jax"
    assert int(ref.state.step) == int(eng.state.step) == STEPS
    assert_states_agree(runs["ref_half"], runs["eng_half"])
    assert_states_agree(ref.state, eng.state)
    worst = max_rel_diff(ref.state, eng.state)
    print(f"max relative difference JAX vs Mesa after {STEPS} steps: {worst:.3e}")
    assert worst < RTOL


def test_events_happened(runs):
    s = runs["ref"].state
    led = s.ledger
    assert led.failures.sum() > 0, "no producer failed"
    assert led.births.sum() > 0, "no producer was made"
    assert led.birth_spent.sum() > 0
    assert led.repair_health.sum() > 0, "no repair"
    assert led.repair_spent.sum() > 0
    assert (~s.cells.alive).sum() >= 1, "no cell died"
    assert s.cells.alive.sum() >= 1, "every cell died (the comparison would be trivial)"
    assert led.lost.sum() > 0 and led.transported_out.sum() > 0
    # the same events on the engine (already implied by the exact comparison of masks/counts)
    e = runs["eng"].state
    np.testing.assert_array_equal(e.ledger.failures, led.failures)
    np.testing.assert_array_equal(e.ledger.births, led.births)
    np.testing.assert_array_equal(e.cells.alive, s.cells.alive)
    # dead cells keep no living producers
    assert not s.producers.alive[~s.cells.alive].any()


def test_chains_ran_and_agree(runs):
    ref, eng = runs["ref"].state, runs["eng"].state
    led, ch = ref.chain_ledger, ref.chains
    assert ch.active.shape == (30, 8)
    assert led.initiated.sum() > 0, "no chain initiated"
    assert led.units.sum() > 0 and led.elongation_spent.sum() > 0, "no chain elongated"
    assert led.delivered.sum() > 0 and led.delivered_units.sum() > 0, "no chain terminated"
    assert led.init_spent.sum() > 0
    # the chains' ATP is what the protein-synthesis ledger line booked
    k = runs["ref"].consumer_kinds.index("protein_synthesis")
    np.testing.assert_allclose(led.spent, ref.ledger.spent[:, k], rtol=1e-12, atol=1e-15)
    # cells that starved slowed their chains (ATP towards the tier-1 reserve, tier-1 rationing)
    # before they died; the chains of dead cells are frozen
    alive = ref.cells.alive
    per_chain = led.units / 8 / (STEPS * runs["cfg"]["dt"])  # aa/s per slot, cell average
    assert per_chain[alive].max() <= 5.0
    assert per_chain[~alive].min() < 0.5 * per_chain[alive].min()
    # JAX and Mesa: the same chains, to 1e-9 relative (counts exactly)
    for name in ("active", "tool_wait"):
        np.testing.assert_array_equal(getattr(ref.chains, name), getattr(eng.chains, name), err_msg=name)
    for name in ("length", "made"):
        np.testing.assert_allclose(getattr(ref.chains, name), getattr(eng.chains, name), rtol=RTOL, err_msg=name)
    for name in ("initiated", "delivered", "tool_calls", "compressions"):
        np.testing.assert_array_equal(getattr(led, name), getattr(eng.chain_ledger, name), err_msg=name)
    assert_states_agree(ref.chain_ledger, eng.chain_ledger)


@pytest.mark.parametrize("which", ["ref", "eng"])
def test_chain_agents_mirror_the_state(runs, which):
    model = runs[which]
    s = model.state
    chains = list(model.agents_by_type[ChainAgent])
    assert len(chains) == model.n_cells * model.n_chain_slots == s.chains.active.size
    assert [c.slot_id for c in chains] == list(range(len(chains)))  # the id its draws are keyed by
    np.testing.assert_array_equal([c.active for c in chains], s.chains.active.ravel())
    np.testing.assert_array_equal([c.length for c in chains], s.chains.length.ravel())
    np.testing.assert_array_equal([c.made for c in chains], s.chains.made.ravel())
    cells = list(model.agents_by_type[CellAgent])
    assert all(len(c.members["chain"]) == 8 and all(ch.host is c for ch in c.members["chain"]) for c in cells)
    assert [c.n_active_chains for c in cells] == s.chains.active.sum(axis=1).tolist()
    assert sum(c.proteins_completed for c in cells) == pytest.approx(float(s.chain_ledger.delivered.sum()))
    active = model.agents_by_type[ChainAgent].select(lambda c: c.active)
    assert len(active) == int(s.chains.active.sum())
    df = model.datacollector.get_model_vars_dataframe()
    assert df["n_active_chains"].iloc[-1] == int(s.chains.active.sum())
    assert df["proteins_completed"].iloc[-1] == float(s.chain_ledger.delivered.sum()) > 0


def test_same_as_engine_run(runs):
    """CurrencyModel's JAX backend is the engine's replicate 0 (same key, same kernels)."""
    from sim.core import engine
    from sim.substrates.bio import SUBSTRATE as BIO

    m = build(runs["cfg"])
    r = engine.run(BIO, m.state, m.params, seed=m.seed, steps=STEPS, record_every=STEPS, replicates=1)
    final = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], r.state)
    assert_states_agree(final, runs["eng"].state)


def test_agent_order_does_not_matter(runs):
    shuffled = CurrencyModel(dict(runs["cfg"], backend="mesa"), shuffle=True, collect_every=0)
    shuffled.run(STEPS)
    a, b = leaves(shuffled.state), leaves(runs["ref"].state)
    for k in a:  # bit-for-bit: each agent only reads what no agent writes in the same phase
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_producer_agents_mirror_the_mask(runs):
    flags = runs["flags"]  # (steps + 1, C * P) public `alive` of each producer agent, by pid
    died = (flags[:-1] & ~flags[1:]).sum()
    born = (~flags[:-1] & flags[1:]).sum()
    assert died > 0 and born > 0
    assert born <= runs["ref"].state.ledger.births.sum()
    for model in (runs["ref"], runs["eng"]):
        prods = list(model.agents_by_type[ProducerAgent])
        p_slots = model.n_producer_slots
        assert [p.slot_id for p in prods] == list(range(model.n_cells * p_slots))
        assert all(p.slot_id == p.cell_index * p_slots + p.slot for p in prods)
        mask = model.state.producers.alive
        np.testing.assert_array_equal(producer_flags(model), mask.ravel())
        health = np.array([p.health for p in prods]).reshape(mask.shape)
        np.testing.assert_array_equal(health, model.state.producers.health)
        cells = list(model.agents_by_type[CellAgent])
        np.testing.assert_array_equal([c.alive for c in cells], model.state.cells.alive)
        assert [c.n_producers for c in cells] == mask.sum(axis=1).tolist()
    np.testing.assert_array_equal(flags[-1], runs["eng"].state.producers.alive.ravel())


@pytest.mark.parametrize("which", ["ref", "eng"])
def test_select_groupby_agg(runs, which):
    model = runs[which]
    s = model.state
    prods = model.agents_by_type[ProducerAgent]
    cells = model.agents_by_type[CellAgent]
    assert len(prods.select(lambda p: p.alive)) == int(s.producers.alive.sum())
    counts = prods.groupby("alive").count()
    assert counts[True] == int(s.producers.alive.sum())
    assert counts[False] == s.producers.alive.size - counts[True]
    by_cell = cells.groupby("alive").count()
    assert by_cell.get(False, 0) == int((~s.cells.alive).sum()) >= 1
    assert cells.agg("atp", sum) == pytest.approx(float(s.cells.pools[:, 1].sum()), rel=1e-12)
    kinds = prods.select(lambda p: p.alive).groupby("kind_name").count()
    assert set(kinds) <= set(model.producer_kinds)
    tier0 = model.agents_by_type[ConsumerAgent].select(lambda c: c.tier == 0)
    assert len(tier0) == int((s.consumers.tier == 0).sum())


@pytest.mark.parametrize("which", ["ref", "eng"])
def test_datacollector(runs, which):
    model = runs[which]
    df = model.datacollector.get_model_vars_dataframe()
    # collected at construction and after every collecting call (steps, or once per run())
    expected = 1 + STEPS if which == "ref" else 1 + 1 + HALF
    assert len(df) == expected
    for col in ("mean_energy_charge", "total_atp", "n_alive_cells", "n_alive_producers"):
        assert col in df.columns
    last = df.iloc[-1]
    s = model.state
    assert last["n_alive_cells"] == int(s.cells.alive.sum())
    assert last["n_alive_producers"] == int(s.producers.alive.sum())
    assert last["total_atp"] == pytest.approx(float(s.cells.pools[:, 1].sum()), rel=1e-12)
    assert df["n_alive_cells"].iloc[0] == 30 and df["n_alive_cells"].iloc[-1] < 30
    cells_df = model.datacollector.get_agenttype_vars_dataframe(CellAgent)
    assert len(cells_df) == expected * model.n_cells
    assert {"atp", "energy_charge", "alive"} <= set(cells_df.columns)
    prod_df = model.datacollector.get_agenttype_vars_dataframe(ProducerAgent)
    assert len(prod_df) == expected * model.n_cells * model.n_producer_slots
    assert int(prod_df["alive"].iloc[-model.n_cells * model.n_producer_slots :].sum()) == int(
        s.producers.alive.sum()
    )
    assert model.steps == STEPS


def test_backends_agree_on_the_model_vars(runs):
    a = runs["ref"].datacollector.get_model_vars_dataframe().iloc[-1]
    b = runs["eng"].datacollector.get_model_vars_dataframe().iloc[-1]
    np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=RTOL)


def test_replicates_use_the_engine_keys(runs):
    cfg = dict(runs["cfg"], replicate=1)
    ref = CurrencyModel(dict(cfg, backend="mesa"), collect_every=0)
    eng = CurrencyModel(model=build(cfg), replicate=1, collect_every=0)
    ref.run(HALF)
    eng.run(HALF)  # same shape and length as the fixture's run: no recompilation
    assert_states_agree(ref.state, eng.state)
    # a different replicate draws different numbers
    assert not np.array_equal(ref.state.ledger.failures, runs["ref_half"].ledger.failures)


def test_space_and_construction(runs):
    model = runs["ref"]
    assert len(model.space.all_cells) == model.n_cells
    graph = model.graph
    for c in model.agents_by_type[CellAgent]:
        assert c.cell.coordinate == c.index
        assert sorted(n.index for n in c.neighbours) == sorted(graph.neighbors(c.index))
        assert all(p.cell is c.cell for p in c.members["producer"]) and all(k.cell is c.cell for k in c.members["consumer"])
    with pytest.raises(ConfigError, match="backend"):
        CurrencyModel(dict(make_cfg(), backend="torch"))
    with pytest.raises(TypeError):  # a config and a built model: which one? (neither: the shipped tissue)
        CurrencyModel(make_cfg(), model=build(make_cfg()))
    m = CurrencyModel(model=build(make_cfg()), backend="mesa", collect_every=0)
    assert m.backend == "mesa" and m.replicate == 0 and m.state.step == 0


def test_a_variant_substrate_runs_with_the_same_agent_classes():
    """A config asking for adaptation runs the adaptive biology substrate on both backends (the
    engine's process and the reference's phase), with the agents of the one generated CellAgent."""
    cfg = sim.load_config(["experiment=tissue", "topology=ring", "topology.n_cells=6", "differentiation=imitation"])
    m = CurrencyModel(cfg, backend="mesa", collect_every=0)
    assert "adaptation" in m.substrate.process_names and m.substrate is not CurrencyModel(
        model=m.preset, collect_every=0).substrate
    assert "adaptation" in [p.name for p in m._ref.phases]
    m.run(3)
    assert len(m.agents_by_type[CellAgent]) == 6 and m.steps_taken == 3
