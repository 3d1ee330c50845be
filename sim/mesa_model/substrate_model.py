"""The one Mesa layer: ``SubstrateModel`` runs any registered substrate as a ``mesa.Model`` on agents
generated from the substrate's entity specs (:class:`sim.core.substrate.EntitySpec`).

Stepping, on two backends with the same numbers:

- ``backend="jax"`` (default): ``step()`` calls the jitted ``substrate.step`` once and ``run(n)``
  advances ``n`` steps in one ``lax.scan``, with the engine's key of the replicate
  (``sim.rng.replicate_keys(seed, 1, replicate)[0]``) and the reduction order the engine would
  trace with in this process (:func:`sim.determinism.current`).
- ``backend="mesa"``: the substrate's plain-Python float64 reference
  (``substrate.reference(built, replicate)``). When the reference declares its step as ``phases``
  over per-cell ``cells`` (:mod:`sim.core.phases`: biology, LLM serving), every compartment agent
  is bound to its per-cell object (``agent.reference_cell``) and each per-cell phase is called on
  all compartment agents through ``AgentSet.do``, or ``shuffle_do`` with ``shuffle=True`` (the same
  numbers, bit for bit: no cell reads in a phase what another writes in it); the whole-tissue
  phases (draws that every cell shares, routing, imitation, the clock) run between them. A
  reference without phases is stepped whole.

Agents: for every entity spec one ``FixedAgent`` subclass is generated (once per substrate name
and spec, :func:`agent_class`) whose public attributes are read-only descriptors over the model's
current host (numpy) state: the spec's ``attributes`` (``state.<block>.<path>`` at the agent's
cell, or cell and slot; block ``""`` reads paths from the state root), its ``records``
(``substrate.observe(state)[name]`` at the agent's cell) and its ``derived`` values
(``fn(state, built)`` at the agent's index, computed once per state for all agents). An entity
with an ``alive`` path exposes ``alive``. The compartment agents sit on a Mesa ``Network`` built
from ``built.graph`` (``model.space``); every other agent is fixed to its compartment's Network
cell (``agent.cell``) and knows its compartment agent (``agent.host``), cell index and slot
(``None`` for an entity with one agent per cell); a compartment agent lists its agents per entity
(``agent.members[entity name]``, slot order). On the reference backend a compartment class also
has one method per per-cell phase (``agent.metabolism(draws)``, ...), delegating to the
reference's per-cell step of its bound object.

Data: a ``DataCollector`` with one model reporter per recorded quantity of ``substrate.records``
that is a scalar per cell (the sum over cells of ``substrate.observe(state)[name]``) and, with
``collect_agents``, agent reporters of the compartment entity's state attributes; a subclass sets
:attr:`SubstrateModel.MODEL_REPORTERS` / :attr:`SubstrateModel.AGENT_REPORTERS` instead.

Both backends expose ``model.state`` (the engine's numpy PyTree), ``model.steps_taken`` and
``model.observation`` (``substrate.observe`` of the current state, numpy).
"""

from __future__ import annotations

import functools
import inspect
import re

import jax
import jax.numpy as jnp
import mesa
import networkx as nx
import numpy as np
from mesa.agent import AgentSet
from mesa.datacollection import DataCollector
from mesa.discrete_space import FixedAgent, Network

from sim.core.substrate import EntitySpec, Substrate
from sim.errors import ConfigError

BACKENDS = ("jax", "mesa")
COMPARTMENT_BLOCKS = ("", "cells")  # an entity on these blocks is the compartment (one agent per cell)


# ---------------------------------------------------------------------------- the JAX backend's step
def _traced(kernel_step, fixed_order: bool):
    """``kernel_step`` traced inside :func:`sim.core.ops.reduction_order` ``(fixed_order)`` (as the
    engine traces its chunks), so the JAX backend is the engine's arithmetic."""
    from sim.core import ops

    def step(state, params, key):
        with ops.reduction_order(fixed_order):
            return kernel_step(state, params, key)

    return step


@functools.lru_cache(maxsize=64)
def jit_step(kernel_step, fixed_order: bool = False):
    return jax.jit(_traced(kernel_step, fixed_order))


@functools.lru_cache(maxsize=64)
def jit_scan(kernel_step, n: int, fixed_order: bool = False):
    step = _traced(kernel_step, fixed_order)

    def run(state, params, key):
        def body(s, _):
            return step(s, params, key), None

        state, _ = jax.lax.scan(body, state, None, length=n)
        return state

    return jax.jit(run)


def resolve_run(backend, replicate, cfg: dict | None = None) -> tuple[str, int]:
    """(backend, replicate) from the arguments, else the (plain) config, else ("jax", 0); checked."""
    if cfg is not None:
        backend = backend if backend is not None else cfg.get("backend", "jax")
        replicate = replicate if replicate is not None else cfg.get("replicate", 0)
    backend = "jax" if backend is None else backend
    if backend not in BACKENDS:
        raise ConfigError("backend", backend, "one of " + ", ".join(BACKENDS))
    replicate = 0 if replicate is None else replicate
    if isinstance(replicate, bool) or not isinstance(replicate, (int, np.integer)) or replicate < 0:
        raise ConfigError("replicate", replicate, "an integer >= 0")
    return backend, int(replicate)


# ---------------------------------------------------------------------------- the space
def network_space(graph, random):
    """A Mesa ``Network`` over ``graph`` with unbounded cells (no spring layout where Mesa has one)."""
    kwargs = {"capacity": None, "random": random}
    if "layout" in inspect.signature(Network).parameters:
        kwargs["layout"] = None  # Mesa >= 3.5: no spring layout (minutes at 10k nodes)
    return Network(graph, **kwargs)


# ---------------------------------------------------------------------------- state paths
def _split(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split(".") if p)


def resolve(tree, path: tuple[str, ...]):
    """``tree.<p0>.<p1>...`` (None if a part on the way is None: e.g. a preset without chains)."""
    for part in path:
        if tree is None:
            return None
        tree = getattr(tree, part)
    return tree


# numpy scalar type -> the Python type an agent attribute returns: a dict lookup and a call are
# ~10x cheaper than ``.item()``, and a DataCollector reads every attribute of every agent
_SCALARS = {t: py for py, types in (
    (bool, (np.bool_,)),
    (int, (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)),
    (float, (np.float16, np.float32, np.float64, np.longdouble)),
    (str, (np.str_,)),
) for t in types}


def _python(value):
    """A numpy scalar as the Python bool/int/float/str; an array row as a numpy array (a copy)."""
    convert = _SCALARS.get(type(value))
    if convert is not None:
        return convert(value)
    if np.ndim(value) == 0:
        return np.asarray(value).item()
    return np.array(value)


class StateAttribute:
    """A read-only agent attribute: ``model.state.<path>`` at the agent's index ``_at`` (None when
    a part of the path is absent from this state, e.g. a preset without chains)."""

    def __init__(self, path: tuple[str, ...], doc: str = ""):
        self.path = tuple(path)
        self.__doc__ = doc or f"``state.{'.'.join(self.path)}`` at this agent's index (read-only)."

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, agent, owner=None):
        if agent is None:
            return self
        model = agent.model
        x = model._host if model._host is not None else model.state
        for part in self.path:
            x = getattr(x, part)
            if x is None:
                return None
        x = x[agent._at]
        convert = _SCALARS.get(type(x))
        return convert(x) if convert is not None else _python(x)

    def __set__(self, agent, value):
        raise AttributeError(f"{self.name} is read from model.state")


class RecordAttribute(StateAttribute):
    """A read-only agent attribute: record ``record`` of ``substrate.observe`` at the agent's cell."""

    def __init__(self, record: str):
        self.record = record
        self.__doc__ = f"record ``{record}`` of ``substrate.observe(model.state)`` at this agent's cell (read-only)."

    def __get__(self, agent, owner=None):
        if agent is None:
            return self
        return _python(agent.model.observation[self.record][agent.cell_index])


class DerivedAttribute(StateAttribute):
    """A read-only agent attribute: ``fn(model.state, model.built)`` at the agent's index, computed
    once per state for every agent of the model (DataCollectors read it agent by agent)."""

    def __init__(self, fn):
        self.fn = fn
        doc = (getattr(fn, "__doc__", None) or "").strip()
        self.__doc__ = doc or "computed from ``model.state`` at this agent's index (read-only)."

    def __get__(self, agent, owner=None):
        if agent is None:
            return self
        x = agent.model._derived(self)[agent._at]
        convert = _SCALARS.get(type(x))
        return convert(x) if convert is not None else _python(x)


# ---------------------------------------------------------------------------- agent classes
class SubstrateAgent(FixedAgent):
    """Base of the generated agents: ``cell_index`` (its compartment), ``slot`` (None for the
    compartment and for an entity with one agent per cell), ``host`` (the compartment agent),
    ``cell`` (the Mesa Network cell)."""

    substrate_name: str | None = None  # the substrate whose entity spec made the class
    entity_spec: EntitySpec | None = None
    attribute_names: tuple[str, ...] = ()  # the spec's state attributes (and alive): collected by default
    record_names: tuple[str, ...] = ()
    derived_names: tuple[str, ...] = ()

    def __init__(self, model, cell_index: int, slot: int | None, cell, host=None):
        super().__init__(model)
        self.cell_index = int(cell_index)
        self.slot = None if slot is None else int(slot)
        self._at = (self.cell_index,) if slot is None else (self.cell_index, self.slot)
        self.host = host
        if cell is not None:
            self.cell = cell

    @property
    def attributes(self) -> dict:
        """This agent's public attributes (state, records, derived and ``alive``) as a dict."""
        cls = type(self)
        return {name: getattr(self, name) for name in cls.attribute_names + cls.record_names + cls.derived_names}

    def __repr__(self) -> str:
        where = f"cell={self.cell_index}" + ("" if self.slot is None else f", slot={self.slot}")
        return f"{type(self).__name__}({where})"


class CompartmentAgent(SubstrateAgent):
    """A compartment (cell, model instance): one node of the graph, fixed to its Network cell.

    ``reference_cell``: on the reference backend of a substrate whose reference declares phases,
    the reference's per-cell object this agent steps (None otherwise)."""

    def __init__(self, model, cell_index: int, cell):
        super().__init__(model, cell_index, None, cell, host=None)
        self.host = self
        self.members: dict[str, list] = {}  # entity name -> this compartment's agents, slot order
        self.reference_cell = None
        self._phase_out = None  # the last per-cell phase's result (a gathered phase reads it)

    @property
    def index(self) -> int:
        return self.cell_index

    @property
    def neighbours(self) -> list:
        """Compartment agents on the adjacent nodes of the Network space."""
        kind = type(self)
        return [a for c in self.cell.neighborhood for a in c.agents if type(a) is kind]


class SlotAgent(SubstrateAgent):
    """An agent in slot ``slot`` of its compartment: ``slot_id = cell_index * slots + slot`` (the id
    its random draws are keyed by); with one agent per cell, ``slot`` is None and ``slot_id`` the
    cell index."""

    def __init__(self, model, cell_index: int, slot: int | None, n_slots: int, cell, host=None):
        super().__init__(model, cell_index, slot, cell, host)
        self.slot_id = self.cell_index * int(n_slots) + (self.slot or 0)


_RESERVED = {"model", "unique_id", "pos", "cell", "host", "index", "cell_index", "slot", "slot_id",
             "members", "attributes", "neighbours", "substrate_name", "entity_spec", "attribute_names",
             "record_names", "derived_names", "reference_cell"}
_CLASSES: dict = {}  # (substrate name, spec) -> generated class


def class_name(spec: EntitySpec) -> str:
    """``"decode_stream"`` -> ``"DecodeStreamAgent"``."""
    words = [w for w in re.split(r"[^0-9A-Za-z]+", spec.name) if w]
    return "".join(w[:1].upper() + w[1:] for w in words) + "Agent" if words else "EntityAgent"


def is_compartment(spec: EntitySpec) -> bool:
    return spec.block in COMPARTMENT_BLOCKS


def _check_name(substrate: Substrate, spec: EntitySpec, name: str, taken) -> None:
    if not name.isidentifier() or name.startswith("_") or name in _RESERVED or hasattr(FixedAgent, name):
        raise ValueError(f"entity {spec.name!r} of substrate {substrate.name!r}: attribute {name!r} "
                         "is not a usable agent attribute name (reserved or not an identifier)")
    if name in taken:
        raise ValueError(f"entity {spec.name!r}: attribute {name!r} given twice")


def agent_class(substrate: Substrate, spec: EntitySpec) -> type:
    """The agent class of ``spec``: a ``FixedAgent`` with a read-only descriptor per attribute,
    record and derived value of the spec, and ``alive`` when the spec has an alive path.

    Generated once per substrate name and spec: the variants of a substrate (its adaptive and
    carrier forms, ``sim.api.substrate_of``) share the class, so ``model.agents_by_type[cls]``
    finds the agents of any of them."""
    cls = _CLASSES.get((substrate.name, spec))
    if cls is not None:
        return cls
    block = _split(spec.block)
    namespace: dict = {}
    state_attrs: dict[str, tuple[str, ...]] = {}
    for name, path in spec.attributes:
        _check_name(substrate, spec, name, namespace)
        state_attrs[name] = block + _split(path)
        namespace[name] = StateAttribute(state_attrs[name])
    if spec.alive is not None:
        alive = block + _split(spec.alive)
        if "alive" in state_attrs and state_attrs["alive"] != alive:
            raise ValueError(f"entity {spec.name!r}: attribute 'alive' reads {'.'.join(state_attrs['alive'])} "
                             f"but the alive path is {'.'.join(alive)}")
        state_attrs["alive"] = alive
        namespace["alive"] = StateAttribute(alive)
    for name, record in spec.records:
        _check_name(substrate, spec, name, namespace)
        namespace[name] = RecordAttribute(record)
    for name, fn in spec.derived:
        _check_name(substrate, spec, name, namespace)
        if not callable(fn):
            raise ValueError(f"entity {spec.name!r}: derived attribute {name!r} is not a function (state, built)")
        namespace[name] = DerivedAttribute(fn)
    doc = ", ".join([f"``{n}`` = state.{'.'.join(p)}" for n, p in state_attrs.items()]
                    + [f"``{n}`` = observe()[{r!r}]" for n, r in spec.records]
                    + [f"``{n}`` (derived)" for n, _ in spec.derived])
    namespace.update(
        __module__=__name__,
        __doc__=f"{spec.name} of substrate {substrate.name!r} (generated from its EntitySpec): {doc}",
        substrate_name=substrate.name,
        entity_spec=spec,
        attribute_names=tuple(state_attrs),
        record_names=tuple(n for n, _ in spec.records),
        derived_names=tuple(n for n, _ in spec.derived),
    )
    base = CompartmentAgent if is_compartment(spec) else SlotAgent
    cls = type(class_name(spec), (base,), namespace)
    _CLASSES[(substrate.name, spec)] = cls
    return cls


def _phase_method(name: str):
    def phase(self, *draws):
        out = self.model._cell_phases[name](self.reference_cell, *draws)
        self._phase_out = out
        return out

    phase.__name__ = phase.__qualname__ = name
    phase.__doc__ = (f"Reference backend: phase {name!r} of this compartment (the reference's per-cell "
                     "step of ``reference_cell``, with this step's draws when the phase has any).")
    phase._phase = name
    return phase


def add_phase_methods(cls: type, phases) -> None:
    """Give the compartment class ``cls`` one method per per-cell phase (idempotent: the class is
    shared by every model of its substrate, and each method looks its step up on the model)."""
    for phase in phases:
        if phase.cell is None:
            continue
        existing = getattr(cls, phase.name, None)
        if existing is None:
            setattr(cls, phase.name, _phase_method(phase.name))
        elif getattr(existing, "_phase", None) != phase.name:
            raise ValueError(f"phase {phase.name!r} of the {cls.entity_spec.name} reference clashes with "
                             f"an attribute of {cls.__name__}")


def _entity_shape(spec: EntitySpec, state, n_cells: int) -> tuple[int, int | None] | None:
    """(cells, slots) of an entity's arrays in ``state`` (slots None: one agent per cell), or None
    when its block is absent from this state (e.g. chains switched off)."""
    block = _split(spec.block)
    paths = [p for _, p in spec.attributes] + ([spec.alive] if spec.alive else [])
    for path in paths:
        arr = resolve(state, block + _split(path))
        if arr is None:
            return None
        shape = np.shape(arr)
        if len(shape) == 0 or shape[0] != n_cells:
            raise ValueError(f"entity {spec.name!r}: state.{spec.block}.{path} has shape {shape}, "
                             f"not (cells={n_cells}, ...)")
        if is_compartment(spec) or len(shape) == 1:
            return n_cells, None
        return n_cells, int(shape[1])
    return (n_cells, None) if is_compartment(spec) else None


def _n_cells(built) -> int:
    n = getattr(built, "n_cells", None)
    if isinstance(n, (int, np.integer)):
        return int(n)
    return int(np.shape(built.state.cells.alive)[0])


@functools.lru_cache(maxsize=32)
def _observe_jit(substrate: Substrate):
    return jax.jit(substrate.observe)


def _total(value):
    """Sum over cells of a per-cell record, as a Python int (counts, masks) or float."""
    x = np.asarray(value)
    total = x.sum()
    return int(total) if x.dtype == bool or np.issubdtype(x.dtype, np.integer) else float(total)


# ---------------------------------------------------------------------------- the model
class SubstrateModel(mesa.Model):
    """A registered substrate on generated Mesa agents, stepped by the JAX engine or its reference.

    Args:
        cfg: a config (plain dict or DictConfig) naming the substrate (``cfg["substrate"]["name"]``);
            it is validated (``substrate.validate``) and built (``substrate.build``). Its ``backend``
            and ``replicate`` are the defaults of the arguments below.
        substrate: a :class:`~sim.core.substrate.Substrate` or a registered name (with ``built``, or
            to use instead of the one ``cfg`` names).
        built: what ``substrate.build`` returned (instead of ``cfg``).
        backend: "jax" (default) or "mesa" (the substrate's plain-Python reference stepper).
        replicate: the replicate of the seed's ensemble (its key; default 0).
        collect_every: ``step()`` collects data every this many steps (0: never); ``run(n)``
            collects once at its end; also collected once at construction when > 0.
        shuffle: reference backend: call the compartment agents in a random order in every
            per-cell phase (the numbers do not change; the order-independence tests check it).
            Without reference phases there is no agent order.
        collect_agents: also collect the agent reporters.
    """

    MODEL_REPORTERS: dict | None = None  # name -> fn(model); None: the sum over cells of each scalar record
    AGENT_REPORTERS: dict | None = None  # entity name -> {column: attribute}; None: the compartment's attributes

    def __init__(
        self,
        cfg=None,
        *,
        substrate=None,
        built=None,
        backend: str | None = None,
        replicate: int | None = None,
        collect_every: int = 1,
        shuffle: bool = False,
        collect_agents: bool = True,
    ):
        from sim import determinism, substrates
        from sim.api import as_plain, substrate_of
        from sim.rng import replicate_keys

        if (cfg is None) == (built is None):
            raise TypeError(f"{type(self).__name__} needs exactly one of a config or built= (with substrate=)")
        if isinstance(substrate, str):
            substrate = substrates.get(substrate)
        if substrate is not None and not isinstance(substrate, Substrate):
            raise TypeError(f"substrate= takes a Substrate or a registered name, not {type(substrate).__name__}")
        if cfg is not None:
            cfg = as_plain(cfg)
            substrate = substrate if substrate is not None else substrate_of(cfg)
            backend, replicate = resolve_run(backend, replicate, cfg)
            substrate.validate(cfg)
            built = substrate.build(cfg)
        elif substrate is None:
            raise TypeError(f"{type(self).__name__}(built=...) needs substrate= (the Substrate that built it)")
        backend, replicate = resolve_run(backend, replicate)
        if backend == "mesa" and substrate.reference is None:
            raise ValueError(f"substrate {substrate.name!r} has no reference stepper (backend='mesa')")

        super().__init__(rng=int(built.seed))
        self.substrate = substrate
        self.built = built
        self.preset = built  # the name the biology and LLM models have always used
        self.cfg = cfg
        self.backend = backend
        self.replicate = int(replicate)
        self.seed = int(built.seed)
        self.shuffle = bool(shuffle)
        self.collect_every = int(collect_every)
        self.graph = built.graph
        self.params = jax.tree_util.tree_map(np.asarray, built.params)
        self._initial = jax.tree_util.tree_map(np.asarray, jax.device_get(built.state))
        # the engine's key of this replicate: fold_in(PRNGKey(seed), replicate)
        self.key = replicate_keys(self.seed, 1, self.replicate)[0]
        # the reduction order the engine would trace with in this process (sim.determinism)
        self.fixed_order = bool(determinism.current().fixed_order_sums)
        self._host = None  # numpy copy of the current state (built lazily)
        self._skip = 0  # Mesa step() calls that only account for steps already taken by run()
        self._t = int(np.asarray(self._initial.step))
        self._obs = None  # substrate.observe of the current state (numpy), built lazily
        self._derived_of = (None, {})  # (state, {DerivedAttribute: array}) of the current state
        self.n_cells = _n_cells(built)

        # the space: the compartments' graph (no edges when the substrate has none)
        graph = self.graph if self.graph is not None else nx.empty_graph(self.n_cells)
        nodes = list(graph.nodes)
        self.space = network_space(graph, self.random)
        self.nodes = [i if i in graph else nodes[i] for i in range(self.n_cells)]
        self._make_agents()

        # stepping
        self._ref = None
        self._phases = ()
        if self.backend == "jax":
            self._dev_params = jax.tree_util.tree_map(jnp.asarray, built.params)
            self._dev_state = jax.tree_util.tree_map(jnp.asarray, self._initial)
        else:
            self._ref = substrate.reference(built, self.replicate)
            self._bind_phases()

        # data
        self.record_reporters = tuple(q.name for q in substrate.records if not q.extra_dims)
        self.datacollector = DataCollector(model_reporters=self._model_reporters(),
                                           agenttype_reporters=self._agent_reporters() if collect_agents else None)
        if self.collect_every > 0:
            self.datacollector.collect(self)

    def _make_agents(self) -> None:
        """The compartment entity's agents first (the hosts), then one per (cell, slot) of the others."""
        specs = tuple(self.substrate.entities)
        self.agent_classes: dict[str, type] = {s.name: agent_class(self.substrate, s) for s in specs}
        self.compartment_entity = next((s for s in specs if is_compartment(s)), None)
        self.agents_of_entity: dict[str, list] = {}
        hosts: list = [None] * self.n_cells
        if self.compartment_entity is not None:
            cls = self.agent_classes[self.compartment_entity.name]
            hosts = [cls(self, i, self.space[self.nodes[i]]) for i in range(self.n_cells)]
            self.agents_of_entity[self.compartment_entity.name] = hosts
        self.compartment_agents = [h for h in hosts if h is not None]
        self.n_slots: dict[str, int | None] = {}
        for spec in specs:
            if spec is self.compartment_entity:
                continue
            cls = self.agent_classes[spec.name]
            shape = _entity_shape(spec, self._initial, self.n_cells)
            slots = None if shape is None else shape[1]
            self.n_slots[spec.name] = slots
            if shape is None:
                made = []
            elif slots is None:
                made = [cls(self, c, None, 1, self.space[self.nodes[c]], hosts[c]) for c in range(self.n_cells)]
            else:
                made = [cls(self, c, s, slots, self.space[self.nodes[c]], hosts[c])
                        for c in range(self.n_cells) for s in range(slots)]
            self.agents_of_entity[spec.name] = made
            for h in self.compartment_agents:
                h.members[spec.name] = []
            for a in made:
                if a.host is not None:
                    a.host.members[spec.name].append(a)

    def _bind_phases(self) -> None:
        """Reference backend: bind each compartment agent to the reference's per-cell object and give
        the compartment class the per-cell phase methods (a reference without phases, or a
        substrate without a compartment entity, is stepped whole)."""
        phases = tuple(getattr(self._ref, "phases", None) or ())
        if not phases or self.compartment_entity is None:
            return
        cells = self._ref.cells
        if len(cells) != self.n_cells:
            raise ValueError(f"the {self.substrate.name} reference has {len(cells)} per-cell objects "
                             f"for {self.n_cells} compartments")
        add_phase_methods(self.agent_classes[self.compartment_entity.name], phases)
        for agent in self.compartment_agents:
            agent.reference_cell = cells[agent.cell_index]
        self._phases = phases
        self._cell_phases = {p.name: p.cell for p in phases if p.cell is not None}
        self._compartments = self.agents_of(self.compartment_entity.name)

    def _model_reporters(self) -> dict:
        if self.MODEL_REPORTERS is not None:
            return dict(self.MODEL_REPORTERS)
        return {name: functools.partial(_record_total, name=name) for name in self.record_reporters}

    def _agent_reporters(self) -> dict | None:
        if self.AGENT_REPORTERS is not None:
            return {self.agent_classes[e]: dict(cols) for e, cols in self.AGENT_REPORTERS.items()
                    if self.agents_of_entity.get(e)}
        if self.compartment_entity is None:
            return None
        cls = self.agent_classes[self.compartment_entity.name]
        return {cls: {name: name for name in cls.attribute_names}}

    # ------------------------------------------------------------------------ access
    def agents_of(self, entity: str) -> AgentSet:
        """The agents of an entity (by its spec's name) as an ``AgentSet`` (empty if it has none)."""
        cls = self.agent_classes[entity]
        try:
            return self.agents_by_type[cls]
        except KeyError:
            return AgentSet([], random=self.random)

    def _derived(self, attr: DerivedAttribute):
        """``attr.fn(state, built)`` of the current state as an array (computed once per state)."""
        state = self._host if self._host is not None else self.state
        of, values = self._derived_of
        if of is not state:
            values = {}
            self._derived_of = (state, values)
        value = values.get(attr)
        if value is None:
            value = values[attr] = np.asarray(attr.fn(state, self.built))
        return value

    @property
    def state(self):
        """The current state as the engine's numpy PyTree (same structure on both backends)."""
        if self._host is None:
            self._host = (jax.device_get(self._dev_state) if self.backend == "jax"
                          else jax.tree_util.tree_map(np.asarray, self._ref.state()))
        return self._host

    @property
    def observation(self) -> dict:
        """``substrate.observe`` of the current state (numpy arrays, leading axis: cells)."""
        if self._obs is None or self._obs[0] is not self.state:
            self._obs = (self.state, jax.device_get(_observe_jit(self.substrate)(self.state)))
        return self._obs[1]

    @property
    def steps_taken(self) -> int:
        """Engine steps taken (``state.step``), which is what the random draws are keyed by."""
        return self._t

    # ------------------------------------------------------------------------ stepping
    def step(self) -> None:
        """One time step dt (both backends)."""
        if self._skip:  # Mesa's own step accounting for steps run() already took
            self._skip -= 1
            return
        self._advance(1)
        if self.collect_every > 0 and self.steps_taken % self.collect_every == 0:
            self.datacollector.collect(self)

    def run(self, n: int) -> None:
        """Advance ``n`` steps (JAX: one ``lax.scan`` call), then collect data once."""
        n = int(n)
        if n <= 0:
            return
        self._advance(n)
        # let Mesa count the steps (model.steps, and model.time on Mesa >= 3.5) without redoing them
        self._skip = n
        if hasattr(self, "_default_schedule") and hasattr(self, "run_for"):
            self.run_for(n)
        else:
            for _ in range(n):
                self.step()
        self._skip = 0
        if self.collect_every > 0:
            self.datacollector.collect(self)

    def _advance(self, n: int) -> None:
        if self.backend == "jax":
            kernel = self.substrate.step
            fn = jit_step(kernel, self.fixed_order) if n == 1 else jit_scan(kernel, n, self.fixed_order)
            self._dev_state = fn(self._dev_state, self._dev_params, self.key)
            self._t += n
        else:
            for _ in range(n):
                self._reference_step()
        self._host = None

    def _reference_step(self) -> None:
        """One step of the reference: its phases through the compartment agents, or its whole step."""
        if not self._phases:
            self._ref.step()
            self._t += 1
            return
        cells = self._compartments
        do = cells.shuffle_do if self.shuffle else cells.do
        for phase in self._phases:
            if phase.cell is None:
                phase.tissue()
                continue
            if phase.draws is None:
                do(phase.name)
            else:
                do(phase.name, phase.draws())
            if phase.gather is not None:  # in compartment order, whatever order the agents ran in
                agents = self.compartment_agents
                phase.gather([a._phase_out for a in agents])
                for a in agents:
                    a._phase_out = None
        self._t += 1


def _record_total(model: SubstrateModel, name: str):
    """Model reporter: the sum over cells of record ``name`` of the current state."""
    return _total(model.observation[name])


__all__ = ["SubstrateModel", "StateAttribute", "RecordAttribute", "DerivedAttribute", "SubstrateAgent",
           "CompartmentAgent", "SlotAgent", "agent_class", "add_phase_methods", "network_space", "resolve_run",
           "BACKENDS"]
