"""A substrate is a value: everything the core needs to run one kind of currency economy.

The engine, the numerical guard, checkpoints, the run path (``sim.api``), the command line and
the Mesa layer are written once over this interface; biology (``sim.substrates.bio``), LLM serving
(``sim.substrates.llm``) and the dimensionless generic economy (``sim.substrates.generic``) are
values of it, and so is any substrate a user writes (see ``tests/test_toy_substrate.py``).
Compare brax's pipelines or gymnax's environments: a named bundle of pure functions over
separate state and parameter PyTrees.

What a substrate provides (all pure or host-side functions; none reads module state at trace time):

``build(cfg) -> Built``
    the initial (unbatched) state, the parameters, the graph and the seed from a plain config
    dict; raises :class:`sim.errors.ConfigError` for bad values.
``processes``
    the ordered ``(name, process)`` pairs of one step, each ``(state, params, key) -> state``. The
    step is their composition followed by ``state.step + 1``; the guard replays them one by one to
    name the process where a value went bad.
``observe(state) -> dict``
    what is recorded at a record point, per compartment (leading axis: cells); ``records`` lists
    the names, units and extra dimensions (:class:`Quantity`).
``invariants(obs, previous) -> dict``
    quantity name -> ``(bad mask, values)``, each of shape ``(..., n_cells)``, for one
    observation or a stack of them; ``previous`` is the observation one record (or one process)
    earlier, so monotone ledgers can be checked (None: not checked). NaN/Inf and negative amounts
    belong here; the guard stops a run at the first chunk with a bad entry and names step,
    replicate, compartment, quantity and process.
``to_dataset(built, result, cfg)`` / ``summarize(built, result, cfg)`` / ``figures(ds, out_dir)``
    the results of a run (``result`` is a :class:`sim.core.engine.RunResult`).
``reference(built, replicate) -> stepper``
    the plain-Python float64 reference: an object with ``step()`` and ``state()`` (the engine's
    state as a numpy PyTree) that the JAX engine must reproduce.
``validate(cfg)``
    config rules beyond the generic ones, every problem at once (``sim.config.validate``).
``config_rules``
    what each number of the substrate's config section means: ``(pattern, Rule)`` pairs, the
    pattern a dotted key under ``substrate`` with ``*`` for one name chosen by the user (a kind),
    e.g. ``("producers.kinds.*.yield", Rule(minimum=0, strict=True))``; the first matching pattern
    applies. :func:`sim.config.validate.validate` refuses every number (or list of numbers) outside
    its rule before anything is built; ``tests/test_refusals_rules.py`` requires a rule for every
    number of every shipped preset, so a new key cannot go unchecked by accident.
``demand_knob``
    the name of the parameter field a demand step multiplies (``demand_scale`` for biology,
    ``arrival_scale`` for LLM serving): the analogy experiment turns it without knowing the
    substrate.
``step_check(state) -> bool`` (optional)
    a cheap, traced check of one replicate's state run after EVERY step inside the scan (e.g. any
    pool NaN or negative); the first failing step is carried to the record, so a bad value that
    later steps smooth away before the record is still caught and replayed. None: records only.
``params_axes(params)``
    ``in_axes`` of the parameter PyTree when a run evaluates one parameter point per replicate.
``entities``
    what the Mesa layer builds agents from (:class:`EntitySpec`). A reference stepper that also
    declares its step as ``phases`` over per-cell ``cells`` (:mod:`sim.core.phases`) is run by the
    Mesa layer phase by phase through its compartment agents.
``compartment``
    what a cell is called in messages ("cell", "model instance").
``differentiation`` (optional)
    a :class:`sim.core.differentiation.Hooks` (work ledger, charged currency, how to pay, alive):
    the substrate then carries ``state.diff`` / ``params.diff``, scales its production and
    specialised work by ``theta`` and gets the adaptation process of the core for free.
``carriers`` (optional)
    a :class:`sim.core.carriers.Hooks` (work ledger, how to settle the charged pool, alive): the
    substrate then carries ``state.carriers`` / ``params.carriers``, splits its charged pool over
    ``carriers.n`` competing carriers in its production, consumption and transport kernels, and
    gets the core's upkeep (storage decay, conversion) and strategy processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Quantity:
    """One recorded quantity: name, unit, meaning and the dimensions after ``(replicate, time, cell)``."""

    name: str
    unit: str
    long_name: str
    extra_dims: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class EntitySpec:
    """An agent kind of the Mesa layer: which state block it reads and what it exposes.

    ``block``: attribute path of its arrays in the state: ``(n_cells, slots)`` arrays give one agent
    per slot, ``(n_cells,)`` arrays one agent per cell (``""`` or ``"cells"``: the compartment
    itself). Read-only public attributes, all taken from the current host state:

    - ``attributes``: name -> field path below the block (e.g. ``("health", "health")``);
    - ``records``: name -> a record of ``Substrate.observe`` (per cell: a slot agent reads its
      cell's value), so an agent shows what a run records, computed as the run computes it;
    - ``derived``: name -> ``fn(state, built) -> array`` indexed like the entity's arrays (cell, or
      cell and slot), for values that are neither (a pool's column, the energy charge from the
      parameters, a kind's name from ``built``); numpy in, computed once per state for all agents.
    """

    name: str
    block: str
    attributes: tuple[tuple[str, str], ...]
    alive: str | None = None  # field path of its alive mask (None: always there)
    records: tuple[tuple[str, str], ...] = ()
    derived: tuple[tuple[str, Callable], ...] = ()


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one number of a substrate's config may be: the keyword arguments of
    :func:`sim.core.config.num` (the one config reader, which does the checking), ``optional``
    (null allowed: a mechanism left off) and ``allowed``, the refusal's text where the substrate
    has its own words for it (otherwise :func:`~sim.core.config.num`'s). A list of numbers is
    checked element by element."""

    minimum: float | None = None
    maximum: float | None = None
    strict: bool = False  # minimum excluded
    integer: bool = False
    what: str = "a number"
    optional: bool = False
    allowed: str | None = None

    def num_kwargs(self) -> dict:
        return dict(minimum=self.minimum, maximum=self.maximum, strict=self.strict, integer=self.integer,
                    what=self.what)

    def problem(self, key: str, value):
        """None if ``value`` (at dotted ``key``) keeps the rule, else the :class:`~sim.errors.ConfigError`."""
        from sim.core.config import num
        from sim.errors import ConfigError

        if value is None and self.optional:
            return None
        try:
            for v in (value if isinstance(value, (list, tuple)) else [value]):
                num({"v": v}, "v", **self.num_kwargs())
        except ConfigError as exc:
            return ConfigError(key, value, self.allowed or exc.allowed)
        return None


def rule_for(rules, key: str) -> Rule | None:
    """The rule of the first pattern of ``rules`` matching the dotted ``key`` (relative to the
    substrate section; ``*`` matches one part), None when no pattern does."""
    parts = key.split(".")
    for pattern, rule in rules:
        pat = pattern.split(".")
        if len(pat) == len(parts) and all(p in ("*", k) for p, k in zip(pat, parts)):
            return rule
    return None


@dataclasses.dataclass(frozen=True, eq=False)
class Substrate:
    """A currency economy the core can run. Hashing is by identity: a substrate is a program, so a
    changed copy (``dataclasses.replace(sub, processes=...)``) is compiled afresh."""

    name: str
    build: Callable
    processes: tuple
    observe: Callable
    records: tuple[Quantity, ...]
    invariants: Callable
    to_dataset: Callable
    summarize: Callable
    validate: Callable = lambda cfg: None
    reference: Callable | None = None
    figures: Callable | None = None
    demand_knob: str | None = None
    params_axes: Callable = lambda params: 0
    step_check: Callable | None = None
    entities: tuple[EntitySpec, ...] = ()
    compartment: str = "cell"
    currency: str = "currency"
    description: str = ""
    differentiation: object = None  # sim.core.differentiation.Hooks: theta, adaptation (None: not offered)
    carriers: object = None  # sim.core.carriers.Hooks: several competing carriers (None: one currency only)
    config_rules: tuple = ()  # ((pattern, Rule), ...): the meaning of each number of its config section
    # ((name, value), ...) read from the concrete parameters before a chunk is traced: what its
    # processes may take as known while tracing (sim.core.known; part of every executable key)
    known: Callable = lambda params: ()

    @property
    def record_fields(self) -> tuple[str, ...]:
        return tuple(q.name for q in self.records)

    @property
    def process_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.processes)

    def step(self, state, params, key):
        """One time step: every process in order, then the step counter."""
        import jax  # a substrate value is importable without JAX; its step is traced with it

        for name, process in self.processes:
            # the process's name in every kernel's metadata (op_name): profiles and
            # bench/bench_step_work.py's `where` attribute work to processes by it; no effect on values
            with jax.named_scope(name):
                state = process(state, params, key)
        return dataclasses.replace(state, step=state.step + 1)

    def __repr__(self) -> str:
        return f"Substrate({self.name!r}, processes={list(self.process_names)})"


@dataclasses.dataclass
class Built:
    """What ``Substrate.build`` returns at least: the initial state, the parameters, the graph and
    the seed (substrates return richer objects with these attributes)."""

    state: object
    params: object
    graph: object
    seed: int

    @property
    def n_cells(self) -> int:
        import numpy as np

        return int(np.shape(self.state.cells.alive)[0])
