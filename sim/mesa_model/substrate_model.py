"""``SubstrateModel``: any registered substrate as a ``mesa.Model``, its agents generated from the
substrate's entity specs (:class:`sim.core.substrate.EntitySpec`), no agent classes written by hand.

- ``backend="jax"`` (default): ``step()`` calls the jitted ``substrate.step`` once and ``run(n)``
  advances ``n`` steps in one ``lax.scan``, with the engine's key of the replicate
  (``sim.rng.replicate_keys(seed, 1, replicate)[0]``) and the engine's reduction order.
- ``backend="mesa"``: the substrate's plain-Python reference stepper
  (``substrate.reference(built, replicate)``): ``step()`` calls its ``step()``, ``model.state`` is
  its ``state()``.

Agents: for every entity spec one ``FixedAgent`` subclass is generated (once per substrate and
spec, :func:`agent_class`) whose public attributes are read-only descriptors over the model's
current host (numpy) state: ``state.<block>.<path>[cell]`` for the compartment entity (block
``"cells"``, or ``""`` with paths from the state root) and ``state.<block>.<path>[cell, slot]``
for an entity on ``(cells, slots)`` arrays. An entity with an ``alive`` path exposes ``alive``.
The compartment agents sit on a Mesa ``Network`` built from ``built.graph`` (``model.space``);
every other agent is fixed to its compartment's Network cell (``agent.cell``) and knows its
compartment agent (``agent.host``), cell index and slot; a compartment agent lists its slot agents
per entity (``agent.members[entity name]``).

Data: a ``DataCollector`` with one model reporter per recorded quantity of ``substrate.records``
that is a scalar per cell (the sum over cells of ``substrate.observe(state)[name]``) and, with
``collect_agents``, agent reporters of the compartment entity's attributes.

Both backends expose ``model.state`` (the engine's numpy PyTree), ``model.steps_taken`` and
``model.observation`` (``substrate.observe`` of the current state, numpy).
"""

from __future__ import annotations

import functools
import inspect
import re

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
from mesa.agent import AgentSet
from mesa.datacollection import DataCollector
from mesa.discrete_space import FixedAgent, Network

from sim.core.substrate import EntitySpec, Substrate
from sim.mesa_model.dual import BACKENDS, DualBackendModel, resolve_run

COMPARTMENT_BLOCKS = ("", "cells")  # an entity on these blocks is the compartment (one agent per cell)


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


def _python(value):
    """A numpy scalar as the Python bool/int/float; an array row as a numpy array (a copy)."""
    if np.ndim(value) == 0:
        return np.asarray(value).item()
    return np.array(value)


class StateAttribute:
    """A read-only agent attribute: ``model.state.<path>`` at the agent's index ``_at``."""

    def __init__(self, path: tuple[str, ...], doc: str = ""):
        self.path = tuple(path)
        self.__doc__ = doc or f"``state.{'.'.join(self.path)}`` at this agent's index (read-only)."

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, agent, owner=None):
        if agent is None:
            return self
        return _python(agent.model._array(self.path)[agent._at])

    def __set__(self, agent, value):
        raise AttributeError(f"{self.name} is read from model.state")


# ---------------------------------------------------------------------------- agent classes
class SubstrateAgent(FixedAgent):
    """Base of the generated agents: ``index``/``cell_index`` (compartment), ``slot`` (None for the
    compartment), ``host`` (the compartment agent), ``cell`` (the Mesa Network cell)."""

    source_substrate: Substrate | None = None  # the substrate whose entity spec made the class
    entity_spec: EntitySpec | None = None
    attribute_names: tuple[str, ...] = ()

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
        """This agent's public attributes (the entity's, and ``alive``) as a dict."""
        return {name: getattr(self, name) for name in type(self).attribute_names}

    def __repr__(self) -> str:
        where = f"cell={self.cell_index}" + ("" if self.slot is None else f", slot={self.slot}")
        return f"{type(self).__name__}({where})"


class CompartmentAgent(SubstrateAgent):
    """A compartment (cell, model instance): one node of the graph, fixed to its Network cell."""

    def __init__(self, model, cell_index: int, cell):
        super().__init__(model, cell_index, None, cell, host=None)
        self.host = self
        self.members: dict[str, list] = {}  # entity name -> this compartment's agents, slot order

    @property
    def index(self) -> int:
        return self.cell_index

    @property
    def neighbours(self) -> list:
        """Compartment agents on the adjacent nodes of the Network space."""
        kind = type(self)
        return [a for c in self.cell.neighborhood for a in c.agents if type(a) is kind]


class SlotAgent(SubstrateAgent):
    """An agent in slot ``slot`` of its compartment (``cell_index * slots + slot`` is ``slot_id``)."""

    def __init__(self, model, cell_index: int, slot: int | None, n_slots: int, cell, host=None):
        super().__init__(model, cell_index, slot, cell, host)
        self.slot_id = self.cell_index * int(n_slots) + (self.slot or 0)


_RESERVED = {"model", "unique_id", "pos", "cell", "host", "index", "cell_index", "slot", "slot_id",
             "members", "attributes", "neighbours", "source_substrate", "entity_spec", "attribute_names"}
_CLASSES: dict = {}  # (substrate, spec) -> generated class (a substrate hashes by identity)


def class_name(spec: EntitySpec) -> str:
    """``"decode_stream"`` -> ``"DecodeStreamAgent"``."""
    words = [w for w in re.split(r"[^0-9A-Za-z]+", spec.name) if w]
    return "".join(w[:1].upper() + w[1:] for w in words) + "Agent" if words else "EntityAgent"


def is_compartment(spec: EntitySpec) -> bool:
    return spec.block in COMPARTMENT_BLOCKS


def agent_class(substrate: Substrate, spec: EntitySpec) -> type:
    """The agent class of ``spec`` (generated once per substrate and spec): a ``FixedAgent`` with a
    read-only :class:`StateAttribute` for each ``(attribute, field path)`` of the spec, and
    ``alive`` when the spec has an alive path."""
    cls = _CLASSES.get((substrate, spec))
    if cls is not None:
        return cls
    block = _split(spec.block)
    attrs: dict[str, tuple[str, ...]] = {}
    for name, path in spec.attributes:
        if not name.isidentifier() or name.startswith("_") or name in _RESERVED or hasattr(FixedAgent, name):
            raise ValueError(f"entity {spec.name!r} of substrate {substrate.name!r}: attribute {name!r} "
                             "is not a usable agent attribute name (reserved or not an identifier)")
        if name in attrs:
            raise ValueError(f"entity {spec.name!r}: attribute {name!r} given twice")
        attrs[name] = block + _split(path)
    if spec.alive is not None:
        alive = block + _split(spec.alive)
        if "alive" in attrs and attrs["alive"] != alive:
            raise ValueError(f"entity {spec.name!r}: attribute 'alive' reads {'.'.join(attrs['alive'])} "
                             f"but the alive path is {'.'.join(alive)}")
        attrs["alive"] = alive
    namespace = {name: StateAttribute(path) for name, path in attrs.items()}
    namespace.update(
        __module__=__name__,
        __doc__=(f"{spec.name} of substrate {substrate.name!r} (generated from its EntitySpec): "
                 + ", ".join(f"``{n}`` = state.{'.'.join(p)}" for n, p in attrs.items())),
        source_substrate=substrate,
        entity_spec=spec,
        attribute_names=tuple(attrs),
    )
    base = CompartmentAgent if is_compartment(spec) else SlotAgent
    cls = type(class_name(spec), (base,), namespace)
    _CLASSES[(substrate, spec)] = cls
    return cls


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
class SubstrateModel(DualBackendModel):
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
        shuffle: kept for the API of the substrate-specific models; the generic reference backend
            steps the whole reference stepper at once, so there is no agent order to shuffle.
        collect_agents: also collect the compartment agents' attributes.
    """

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
        from sim import substrates
        from sim.api import as_plain, substrate_of

        if (cfg is None) == (built is None):
            raise TypeError("SubstrateModel needs exactly one of a config or built= (with substrate=)")
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
            raise TypeError("SubstrateModel(built=...) needs substrate= (the Substrate that built it)")
        backend, replicate = resolve_run(backend, replicate)
        if backend == "mesa" and substrate.reference is None:
            raise ValueError(f"substrate {substrate.name!r} has no reference stepper (backend='mesa')")

        self.substrate = substrate
        self.built = built
        self.cfg = cfg
        self._init_run(built, backend, replicate, shuffle, collect_every)
        self._obs = None  # substrate.observe of the current state (numpy), built lazily
        self.n_cells = _n_cells(built)

        # the space: the compartments' graph (no edges when the substrate has none)
        graph = self.graph if self.graph is not None else nx.empty_graph(self.n_cells)
        nodes = list(graph.nodes)
        self.space = network_space(graph, self.random)
        self.nodes = [i if i in graph else nodes[i] for i in range(self.n_cells)]

        # agents: the compartment entity first (hosts), then one agent per (cell, slot) of the others
        specs = tuple(substrate.entities)
        self.agent_classes: dict[str, type] = {s.name: agent_class(substrate, s) for s in specs}
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

        # stepping
        self._ref = None
        if self.backend == "jax":
            self._dev_params = jax.tree_util.tree_map(jnp.asarray, built.params)
            self._dev_state = jax.tree_util.tree_map(jnp.asarray, self._initial)
        else:
            self._ref = substrate.reference(built, self.replicate)

        # data
        self.record_reporters = tuple(q.name for q in substrate.records if not q.extra_dims)
        model_reporters = {name: functools.partial(_record_total, name=name) for name in self.record_reporters}
        agent_reporters = None
        if collect_agents and self.compartment_entity is not None:
            cls = self.agent_classes[self.compartment_entity.name]
            agent_reporters = {cls: {name: name for name in cls.attribute_names}}
        self.datacollector = DataCollector(model_reporters=model_reporters, agenttype_reporters=agent_reporters)
        if self.collect_every > 0:
            self.datacollector.collect(self)

    # ------------------------------------------------------------------------ access
    def agents_of(self, entity: str) -> AgentSet:
        """The agents of an entity (by its spec's name) as an ``AgentSet`` (empty if it has none)."""
        cls = self.agent_classes[entity]
        try:
            return self.agents_by_type[cls]
        except KeyError:
            return AgentSet([], random=self.random)

    def _array(self, path: tuple[str, ...]):
        return resolve(self.state, path)

    @property
    def observation(self) -> dict:
        """``substrate.observe`` of the current state (numpy arrays, leading axis: cells)."""
        if self._obs is None or self._obs[0] is not self.state:
            self._obs = (self.state, jax.device_get(_observe_jit(self.substrate)(self.state)))
        return self._obs[1]

    # ------------------------------------------------------------------------ stepping
    def _kernel_step(self):
        return self.substrate.step

    def _reference_step(self) -> None:
        self._ref.step()
        self._t += 1

    def _export_reference(self):
        return jax.tree_util.tree_map(np.asarray, self._ref.state())


def _record_total(model: SubstrateModel, name: str):
    """Model reporter: the sum over cells of record ``name`` of the current state."""
    return _total(model.observation[name])


__all__ = ["SubstrateModel", "StateAttribute", "SubstrateAgent", "CompartmentAgent", "SlotAgent",
           "agent_class", "network_space", "BACKENDS"]
