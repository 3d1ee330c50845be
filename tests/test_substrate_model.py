"""The one Mesa layer: ``SubstrateModel`` runs any registered substrate on agents generated from its
entity specs. For biology (plain, and with the adaptation and carrier processes), LLM serving, the
generic economy and a toy substrate defined here, the JAX backend (jitted ``substrate.step``: one
``run()`` scan, then single steps) and the reference backend (``substrate.reference``, stepped phase
by phase through the compartment agents where it declares phases) agree on every state leaf to 1e-9
relative after 30 steps; the agents exist in the right numbers and mirror the state (fields,
records, derived values); a shuffled agent order changes no bit; AgentSet queries and the
DataCollector work."""

from __future__ import annotations

import networkx as nx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim  # noqa: F401  (float64)
from _support import TISSUE
from sim import rng, substrates
from sim.core.substrate import Built, EntitySpec, Quantity, Substrate
from sim.errors import ConfigError
from sim.substrates.llm.build import compose
from sim.mesa_model import SubstrateModel, agent_class
from sim.mesa_model.substrate_model import CompartmentAgent, SlotAgent, resolve
from sim.pytree import pytree_dataclass, replace

STEPS, HALF = 30, 15
RTOL = 1e-9


# ---------------------------------------------------------------------------- a user's substrate
@pytree_dataclass
class ToyCells:
    alive: object  # (C,) bool
    stock: object  # (C,) currency held


@pytree_dataclass
class ToySlots:
    active: object  # (C, S) bool: spent in the last step
    tokens: object  # (C, S) currency spent by this slot so far


@pytree_dataclass
class ToyState:
    cells: ToyCells
    slots: ToySlots
    step: object


@pytree_dataclass
class ToyParams:
    rate: object
    cost: object
    p: object
    dt: object


TOY_PURPOSE = 7


def _produce(state, params, key):
    c = state.cells
    return replace(state, cells=replace(c, stock=jnp.where(c.alive, c.stock + params.rate * params.dt, c.stock)))


def _spend(state, params, key):
    c, s = state.cells, state.slots
    n, k = s.tokens.shape
    u = rng.uniforms(key, state.step, TOY_PURPOSE, jnp.arange(n * k, dtype=jnp.uint32)).reshape(n, k)
    active = (u < params.p) & c.alive[:, None]
    spent = jnp.where(active, params.cost, 0.0)
    stock = c.stock - jnp.sum(spent, axis=1)
    return replace(state, cells=ToyCells(alive=c.alive & (stock > 0), stock=stock),
                   slots=ToySlots(active=active, tokens=s.tokens + spent))


def _toy_build(cfg):
    sub = cfg["substrate"]
    n, k = int(sub["n_cells"]), int(sub["slots"])
    state = ToyState(
        cells=ToyCells(alive=np.ones(n, bool), stock=np.linspace(1.0, 2.0, n)),
        slots=ToySlots(active=np.zeros((n, k), bool), tokens=np.zeros((n, k))),
        step=np.int32(0),
    )
    params = ToyParams(rate=np.float64(0.5), cost=np.float64(0.3), p=np.float64(0.4), dt=np.float64(1.0))
    return Built(state, params, nx.path_graph(n), int(cfg.get("seed", 0)))


def _toy_validate(cfg):
    sub = cfg["substrate"]
    for name in ("n_cells", "slots"):
        if not isinstance(sub.get(name), int) or sub[name] < 1:
            raise ConfigError(f"substrate.{name}", sub.get(name), "an integer >= 1")


class ToyReference:
    """The toy's plain numpy stepper (the engine's draws, one vectorised call per step)."""

    def __init__(self, built, replicate=0):
        s = jax.tree_util.tree_map(np.array, built.state)
        self.p = jax.tree_util.tree_map(float, built.params)
        self.key = rng.replicate_keys(built.seed, 1, replicate)[0]
        self.alive, self.stock = s.cells.alive, s.cells.stock
        self.active, self.tokens = s.slots.active, s.slots.tokens
        self.t = int(s.step)

    def step(self):
        p = self.p
        self.stock = np.where(self.alive, self.stock + p.rate * p.dt, self.stock)
        n, k = self.tokens.shape
        u = np.asarray(rng.uniforms(self.key, self.t, TOY_PURPOSE, jnp.arange(n * k, dtype=jnp.uint32))).reshape(n, k)
        self.active = (u < p.p) & self.alive[:, None]
        spent = np.where(self.active, p.cost, 0.0)
        self.stock = self.stock - spent.sum(axis=1)
        self.alive = self.alive & (self.stock > 0)
        self.tokens = self.tokens + spent
        self.t += 1

    def state(self):
        return ToyState(ToyCells(self.alive.copy(), self.stock.copy()),
                        ToySlots(self.active.copy(), self.tokens.copy()), np.int32(self.t))


def _toy_observe(state):
    return {"stock": state.cells.stock, "alive": state.cells.alive,
            "spent": jnp.sum(state.slots.tokens, axis=1), "slot_tokens": state.slots.tokens}


TOY = Substrate(
    name="toy_mesa",
    build=_toy_build,
    processes=(("produce", _produce), ("spend", _spend)),
    observe=_toy_observe,
    records=(Quantity("stock", "u", "currency held"), Quantity("alive", "1", "site alive"),
             Quantity("spent", "u", "cumulative currency spent"),
             Quantity("slot_tokens", "u", "spent per slot", ("slot",))),
    invariants=lambda obs, previous=None: {},
    to_dataset=lambda built, result, cfg: None,
    summarize=lambda built, result, cfg: {},
    validate=_toy_validate,
    reference=ToyReference,
    # the compartment on block "" (paths from the state root), slots on (cells, slots) arrays
    entities=(EntitySpec("site", "", (("alive", "cells.alive"), ("stock", "cells.stock"))),
              EntitySpec("spender", "slots", (("tokens", "tokens"), ("active", "active")), alive="active")),
    compartment="site",
)
TOY_CFG = {"substrate": {"name": "toy_mesa", "n_cells": 4, "slots": 3}, "seed": 5}

CONFIGS = {
    "bio": [TISSUE, "substrate=bio", "topology=ring", "topology.n_cells=3"],
    "llm": [TISSUE, "substrate=llm", "topology=ring", "topology.n_cells=2", "substrate.chain_slots=8",
            "substrate.queue_slots=16"],
    "generic": [TISSUE, "substrate=generic", "topology=ring", "topology.n_cells=3"],
    # differentiation with its adaptation process (the substrate's adaptive variant): theta moves
    "generic_adaptive": [TISSUE, "substrate=generic", "topology=ring", "topology.n_cells=4", "differentiation=imitation",
                         "differentiation.alpha=2", "differentiation.rate=5", "differentiation.noise=0.3"],
    # several competing carriers with strategy imitation (the carrier processes of sim.core.carriers)
    "generic_carriers": [TISSUE, "substrate=generic_tissue", "topology=ring", "topology.n_cells=4",
                         "carriers=competing", "carriers.rate=5", "carriers.mutation=0.3", "carriers.storage=[0.1,0.2,0.4]",
                         "carriers.conversion_rate=1", "differentiation.pattern_period=2", "differentiation.alpha=2"],
    # biology with both appended processes: the reference's whole-tissue phases (adaptation, carrier
    # upkeep and strategy) between and after its per-cell phases through the cell agents
    "bio_carriers": [TISSUE, "substrate=bio", "topology=ring", "topology.n_cells=4", "carriers=nucleotides",
                     "carriers.rate=20", "carriers.mutation=0.3", "differentiation=imitation",
                     "differentiation.rate=5", "differentiation.noise=0.3"],
    "toy_mesa": None,  # TOY_CFG, registered by the fixture
}


@pytest.fixture(scope="module")
def toy_registered():
    substrates.register(TOY, replace=True)
    yield TOY
    substrates.unregister(TOY.name)


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, toy_registered):
    name = request.param
    cfg = TOY_CFG if CONFIGS[name] is None else compose(CONFIGS[name])
    # JAX: one run() (a lax.scan) for the first half, jitted single steps for the second
    jx = SubstrateModel(cfg, backend="jax")
    jx.run(HALF)
    for _ in range(STEPS - HALF):
        jx.step()
    # reference: one step() at a time, collecting every step
    ms = SubstrateModel(cfg, backend="mesa")
    for _ in range(STEPS):
        ms.step()
    return name, jx, ms


def _worst(a, b) -> float:
    """Max relative difference over the float leaves (entries equal in both count as 0)."""
    worst = 0.0
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if np.issubdtype(x.dtype, np.floating) and x.size:
            scale = np.maximum(np.abs(x), np.abs(y))
            rel = np.where(x == y, 0.0, np.abs(x - y) / np.where(scale > 0, scale, 1.0))
            worst = max(worst, float(rel.max()))
    return worst


# ---------------------------------------------------------------------------- the backends agree
def test_backends_agree(pair):
    name, jx, ms = pair
    assert jx.backend == "jax" and ms.backend == "mesa"
    assert jx.substrate is ms.substrate
    assert jx.substrate.name == name.removesuffix("_adaptive").removesuffix("_carriers")
    if name.endswith("_carriers"):
        assert "carrier_strategy" in jx.substrate.process_names
        assert float(np.sum(np.asarray(ms.state.carriers.switches))) > 0  # strategies moved
        for model in (jx, ms):  # the cell agents read the carrier they make from the state
            np.testing.assert_array_equal([a.carrier for a in model.agents_of("cell")],
                                          np.asarray(model.state.carriers.make))
    if name.endswith("_adaptive"):
        assert "adaptation" in jx.substrate.process_names
        assert float(np.sum(np.asarray(ms.state.diff.switched))) > 0  # theta moved
        for model in (jx, ms):  # the cell agents read theta from the state
            np.testing.assert_array_equal([a.theta for a in model.agents_of("cell")],
                                          np.asarray(model.state.diff.theta))
    assert jx.steps_taken == ms.steps_taken == STEPS
    assert int(jx.state.step) == int(ms.state.step) == STEPS
    assert jx.steps == ms.steps == STEPS  # Mesa's own step count, run() included
    assert jax.tree_util.tree_structure(jx.state) == jax.tree_util.tree_structure(ms.state)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(jx.state), jax.tree_util.tree_leaves(ms.state),
                            strict=True):
        key = jax.tree_util.keystr(path)
        assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray), key  # numpy on both backends
        assert x.shape == y.shape and x.dtype == y.dtype, key
        if np.issubdtype(x.dtype, np.floating):
            scale = float(max(np.abs(x).max(initial=0.0), np.abs(y).max(initial=0.0), 1e-300))
            np.testing.assert_allclose(x, y, rtol=RTOL, atol=1e-15 * scale, err_msg=f"{name} {key}")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f"{name} {key}")
    worst = _worst(jx.state, ms.state)
    print(f"{name}: max relative difference JAX vs reference after {STEPS} steps: {worst:.3e}")
    assert worst < RTOL
    # the state moved (the comparison is not of two initial states)
    moved = [not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree_util.tree_leaves(jx.state), jax.tree_util.tree_leaves(jx._initial))]
    assert sum(moved) >= 2


def test_same_as_engine_run(toy_registered):
    """The JAX backend of replicate r is the engine's replicate r (same key, same step)."""
    from sim.core import engine

    built = TOY.build(TOY_CFG)
    model = SubstrateModel(substrate=TOY, built=built, replicate=1, collect_every=0)
    model.run(STEPS)
    r = engine.run(TOY, built.state, built.params, seed=built.seed, steps=STEPS, record_every=STEPS,
                   replicates=2)
    assert r.error is None
    final = jax.tree_util.tree_map(lambda x: np.asarray(x)[1], r.state)
    assert _worst(final, model.state) < 1e-12
    np.testing.assert_array_equal(final.slots.active, model.state.slots.active)


# ---------------------------------------------------------------------------- the agents
@pytest.mark.parametrize("which", ["jax", "mesa"])
def test_agents_mirror_the_state(pair, which):
    name, jx, ms = pair
    model = jx if which == "jax" else ms
    s, sub, n = model.state, model.substrate, model.n_cells
    assert model.compartment_entity is not None and model.compartment_entity.block in ("", "cells")
    assert set(model.agent_classes) == {e.name for e in sub.entities}
    total = 0
    for spec in sub.entities:
        cls = model.agent_classes[spec.name]
        assert cls is agent_class(sub, spec)  # generated once per (substrate, spec)
        assert cls.entity_spec is spec and cls.substrate_name == sub.name
        expected_attrs = [a for a, _ in spec.attributes] + (["alive"] if spec.alive and "alive" not in
                                                            dict(spec.attributes) else [])
        assert list(cls.attribute_names) == expected_attrs
        agents = model.agents_of(spec.name)
        assert len(agents) == len(model.agents_of_entity[spec.name])
        block = tuple(p for p in spec.block.split(".") if p)
        if spec is model.compartment_entity:
            assert issubclass(cls, CompartmentAgent)
            assert len(agents) == n
            assert [a.index for a in agents] == list(range(n))
        else:
            assert issubclass(cls, SlotAgent)
            first = resolve(s, block + (spec.attributes[0][1],))
            slots = first.shape[1] if first.ndim > 1 else 1  # (cells,) arrays: one agent per cell
            assert model.n_slots[spec.name] == (first.shape[1] if first.ndim > 1 else None)
            assert len(agents) == n * slots
            assert [a.slot_id for a in agents] == list(range(n * slots))
            hosts = model.compartment_agents
            for a in agents:
                assert a.host is hosts[a.cell_index] and a.cell is a.host.cell
                assert a in a.host.members[spec.name]
            assert all(len(h.members[spec.name]) == slots for h in hosts)
        total += len(agents)
        for attr, path in spec.attributes:
            want = np.asarray(resolve(s, block + tuple(path.split("."))))
            got = np.array([getattr(a, attr) for a in agents])
            np.testing.assert_array_equal(got.reshape(want.shape), want, err_msg=f"{spec.name}.{attr}")
        # records: the cell's value of substrate.observe; derived: fn(state, built) at the agent's index
        obs = jax.device_get(sub.observe(s))
        for attr, record in spec.records:
            want = np.asarray(obs[record])[[a.cell_index for a in agents]]
            np.testing.assert_allclose([getattr(a, attr) for a in agents], want, rtol=1e-12, err_msg=f"{spec.name}.{attr}")
        for attr, fn in spec.derived:
            want = np.asarray(fn(s, model.built))
            got = [getattr(a, attr) for a in agents]
            assert [np.asarray(g).tolist() for g in got] == [np.asarray(want[a._at]).tolist() for a in agents], attr
        assert set(agents[0].attributes) == set(cls.attribute_names + cls.record_names + cls.derived_names)
        if spec.alive is not None:
            mask = np.asarray(resolve(s, block + (spec.alive,)))
            np.testing.assert_array_equal(np.array([a.alive for a in agents]).reshape(mask.shape), mask)
        with pytest.raises(AttributeError):
            setattr(agents[0], cls.attribute_names[0], 0)
    assert len(model.agents) == total
    # the cell agents' alive is the state's mask
    cells = model.agents_of(model.compartment_entity.name)
    np.testing.assert_array_equal(cells.get("alive"), np.asarray(s.cells.alive))
    assert type(cells[0].alive) is bool


def test_agents_follow_the_steps(pair):
    """The descriptors read the current state: a cell attribute changes as the model steps."""
    name, jx, _ = pair
    cfg = TOY_CFG if CONFIGS[name] is None else compose(CONFIGS[name])
    model = SubstrateModel(cfg, backend="mesa", collect_every=0)
    spec = model.compartment_entity
    attr = next(a for a, _ in spec.attributes if a != "alive")
    model.run(3)
    after = model.agents_of(spec.name).get(attr)
    block = tuple(p for p in spec.block.split(".") if p)
    path = dict(spec.attributes)[attr]
    np.testing.assert_array_equal(after, np.asarray(resolve(model.state, block + tuple(path.split(".")))))
    assert model.steps_taken == 3 and model.steps == 3
    assert len(model.datacollector.get_model_vars_dataframe()) == 0  # collect_every=0


@pytest.mark.parametrize("which", ["jax", "mesa"])
def test_select_groupby(pair, which):
    _, jx, ms = pair
    model = jx if which == "jax" else ms
    s = model.state
    cells = model.agents_of(model.compartment_entity.name)
    alive = np.asarray(s.cells.alive)
    assert len(cells.select(lambda a: a.alive)) == int(alive.sum())
    counts = cells.groupby("alive").count()
    assert counts.get(True, 0) == int(alive.sum()) and counts.get(False, 0) == int((~alive).sum())
    for spec in model.substrate.entities:
        if spec.alive is None or spec is model.compartment_entity:
            continue
        agents = model.agents_of(spec.name)
        mask = np.asarray(resolve(s, tuple(p for p in spec.block.split(".") if p) + (spec.alive,)))
        assert len(agents.select(lambda a: a.alive)) == int(mask.sum())
        by = agents.groupby("alive").count()
        assert by.get(True, 0) == int(mask.sum()) and by.get(False, 0) == mask.size - int(mask.sum())
        per_cell = agents.groupby("cell_index").count()
        assert per_cell == {c: mask.shape[1] for c in range(model.n_cells)}
        assert sum(by.values()) == len(agents)


# ---------------------------------------------------------------------------- reference phases
@pytest.mark.parametrize("name", ["bio_carriers", "llm"])
def test_reference_phases_run_through_the_compartment_agents(name):
    """A reference that declares its step as phases (biology, LLM serving) is stepped through the
    compartment agents: each is bound to its per-cell object and has one method per per-cell phase;
    in index order or shuffled anew in every phase, the state is the serial reference's bit for bit."""
    cfg = compose(CONFIGS[name])
    in_order = SubstrateModel(cfg, backend="mesa", collect_every=0)
    shuffled = SubstrateModel(cfg, backend="mesa", shuffle=True, collect_every=0)
    ref = in_order.substrate.reference(in_order.built, 0)
    for _ in range(12):
        ref.step()
    in_order.run(12)
    shuffled.run(6)
    for _ in range(6):
        shuffled.step()
    cls = in_order.agent_classes[in_order.compartment_entity.name]
    per_cell = [p.name for p in ref.phases if p.cell is not None]
    assert len(per_cell) >= 5 and all(callable(getattr(cls, p)) for p in per_cell)
    assert [p.name for p in in_order._phases] == [p.name for p in ref.phases]
    assert all(a.reference_cell is in_order._ref.cells[a.index] for a in in_order.compartment_agents)
    assert shuffled.random.random() != in_order.random.random()  # shuffle_do drew from the model's rng
    for (path, x), y, z in zip(jax.tree_util.tree_leaves_with_path(ref.state()), jax.tree_util.tree_leaves(in_order.state),
                               jax.tree_util.tree_leaves(shuffled.state), strict=True):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=f"{name} in order {jax.tree_util.keystr(path)}")
        np.testing.assert_array_equal(np.asarray(z), np.asarray(x), err_msg=f"{name} shuffled {jax.tree_util.keystr(path)}")
    assert in_order.steps_taken == shuffled.steps_taken == int(in_order.state.step) == 12


def test_a_reference_without_phases_is_stepped_whole(toy_registered):
    model = SubstrateModel(TOY_CFG, backend="mesa", shuffle=True, collect_every=0)
    model.run(4)
    assert model._phases == () and all(a.reference_cell is None for a in model.compartment_agents)
    assert model.steps_taken == int(model.state.step) == 4


# ---------------------------------------------------------------------------- data and space
@pytest.mark.parametrize("which", ["jax", "mesa"])
def test_datacollector(pair, which):
    _, jx, ms = pair
    model = jx if which == "jax" else ms
    sub = model.substrate
    df = model.datacollector.get_model_vars_dataframe()
    # collected at construction and after every collecting call (steps, or once per run())
    assert len(df) == (1 + 1 + (STEPS - HALF) if which == "jax" else 1 + STEPS)
    scalar = [q.name for q in sub.records if not q.extra_dims]
    assert list(df.columns) == scalar == list(model.record_reporters)
    assert all(q.name not in df.columns for q in sub.records if q.extra_dims)
    obs = jax.device_get(sub.observe(model.state))
    last = df.iloc[-1]
    for k in scalar:
        assert last[k] == pytest.approx(float(np.asarray(obs[k]).sum()), rel=1e-12, abs=1e-12), k
    if "alive" in scalar:
        assert df["alive"].iloc[0] == model.n_cells
    cls = model.agent_classes[model.compartment_entity.name]
    agents_df = model.datacollector.get_agenttype_vars_dataframe(cls)
    assert list(agents_df.columns) == list(cls.attribute_names)
    assert len(agents_df) == len(df) * model.n_cells


def test_model_vars_agree(pair):
    _, jx, ms = pair
    a = jx.datacollector.get_model_vars_dataframe().iloc[-1].to_numpy(float)
    b = ms.datacollector.get_model_vars_dataframe().iloc[-1].to_numpy(float)
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-12)


def test_space(pair):
    _, jx, ms = pair
    for model in (jx, ms):
        graph = model.graph
        assert len(model.space.all_cells) == model.n_cells
        for c in model.compartment_agents:
            assert c.cell.coordinate == c.index
            assert sorted(n.index for n in c.neighbours) == sorted(graph.neighbors(c.index))
    # the two models generated the same classes (once per substrate and spec)
    assert jx.agent_classes == ms.agent_classes


def test_construction_errors(toy_registered):
    with pytest.raises(TypeError):
        SubstrateModel()
    with pytest.raises(TypeError):
        SubstrateModel(built=TOY.build(TOY_CFG))  # which substrate built it?
    with pytest.raises(ConfigError, match="backend"):
        SubstrateModel(TOY_CFG, backend="torch")
    with pytest.raises(ConfigError, match="replicate"):
        SubstrateModel(TOY_CFG, replicate=-1)
    with pytest.raises(ConfigError, match="n_cells"):
        SubstrateModel({"substrate": {"name": "toy_mesa", "n_cells": 0, "slots": 2}})
    with pytest.raises(ConfigError, match="substrate"):
        SubstrateModel({"substrate": {"name": "no_such_substrate"}})
    bad = EntitySpec("bad", "slots", (("model", "tokens"),))
    with pytest.raises(ValueError, match="model"):
        agent_class(TOY, bad)


def test_built_and_replicates(toy_registered):
    """``substrate=`` and ``built=`` instead of a config; another replicate draws other numbers and
    both backends agree on it."""
    built = TOY.build(TOY_CFG)
    a = SubstrateModel(substrate="toy_mesa", built=built, replicate=2, collect_every=0)
    b = SubstrateModel(substrate=TOY, built=built, backend="mesa", replicate=2, collect_every=0)
    c = SubstrateModel(substrate=TOY, built=built, collect_every=0)
    from omegaconf import OmegaConf

    d = SubstrateModel(OmegaConf.create(dict(TOY_CFG, backend="mesa", replicate=2)), collect_every=0)
    assert d.backend == "mesa" and d.replicate == 2
    for m in (a, b, c, d):
        m.run(10)
    assert a.replicate == b.replicate == 2
    assert _worst(a.state, b.state) < RTOL
    np.testing.assert_array_equal(a.state.slots.active, b.state.slots.active)
    assert not np.array_equal(a.state.slots.tokens, c.state.slots.tokens)
    assert _worst(d.state, b.state) == 0.0
