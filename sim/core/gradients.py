"""Gradients of outcomes with respect to continuous parameters: local sensitivities and calibration.

A :class:`Differentiable` is a pure function from a parameter vector ``x`` (values in the
parameters' own units, in the order of ``names``) to outcomes: ``x`` is placed into the
substrate's parameter PyTree (:meth:`Differentiable.params_at`), the run is ``lax.scan`` over
``substrate.step`` (:func:`sim.core.engine.scan_records`: the engine's own scan, without the host
loop, the guard or any host callback), and the records are reduced to outcomes. It can be
``jax.jit``-ed, ``jax.grad``-ed (one outcome), ``jax.jacfwd``-ed and ``jax.vmap``-ed over points::

    import jax
    from sim.core.config import compose
    from sim.core import gradients as gr

    cfg = compose(["experiment=tissue", "topology=ring", "topology.n_cells=3", "steps=300"])
    m = gr.differentiable(cfg, ["supply_scale", "p_k_adp.mitochondrion"],
                          ["mean_last:energy_charge", "mean_last:production_rate"], events="off")
    y = m.outcomes(m.x0)                        # (2,) energy charge (1), ATP made (mM/s)
    J = jax.jacfwd(m.outcomes)(m.x0)            # (2, 2): d outcome / d parameter
    table = m.sensitivities()                   # the same, with elasticities (x / y) dy/dx

Which configurations. Only runs without random events have a gradient: a producer failure or
birth is a discrete draw (``u < 1 - exp(-rate dt)``), so the outcome is a step function of every
parameter and of the event rates themselves. :func:`differentiable` therefore refuses (one
:class:`~sim.errors.ConfigError` per key, naming the key, its value and what is allowed) a config
whose events are on (:data:`RULES`: biology's producer failures ``hazard_per_s``, biogenesis
``birth_per_s`` and ribosome chains ``chains.consumer``; generic's ``hazard`` and ``birth_rate``;
any ``differentiation.rule`` but ``fixed``, competing carriers whose ``carriers.rule`` is not
``fixed``), unless ``events="off"``, which sets the substrate's events to 0 / null and says so
(:attr:`Differentiable.switched_off`; the adaptation rules are part of the model and are never
switched off). LLM serving is refused: its requests arrive by random draws and are admitted whole
into integer KV blocks, so it has no useful gradient (use ``experiment=sensitivity``). Cell death in
biology (a cell whose maintenance stays below ``stress_threshold`` for ``stress_death_s``) is
deterministic but a threshold: a run in which a cell dies is piecewise smooth only;
:meth:`Differentiable.events` reports deaths at a point.

Which parameters (:func:`allowed_parameters`). Floating scalar fields of the substrate's
``Params`` (``supply_scale``, ``demand_scale``, ``k_ak``, ``external_substrate``, ... for biology;
``supply_scale``, ``k_discharged``, ``yield_``, ... for generic), and for biology one entry of a
per-kind vector by ``field.label``: ``p_k_adp.mitochondrion`` (mM, the ADP affinity of one
producer kind; every ``p_*`` field by producer kind), ``permeability.atp`` (by species),
``tier_reserve.1`` (by tier). Not: ``dt`` (it sets the record times), the rates and set points of
the random events, the chains' parameters, cell death's threshold parameters and flags.

Outcomes: ``"<reducer>:<quantity>"`` with the reducers of :mod:`sim.core.study` (``mean_last``:
the last 20% of records, ``total_last``, ``final``, ``mean``), over time and then cells.
Quantities (:func:`quantities`): every floating per-cell record of the substrate, and derived ones:
biology ``energy_charge`` (1, of the total pools, bound ADP and AMP included, as
:mod:`sim.core.study`), ``atp``, ``adp``, ``amp``, ``glucose``, ``pi`` (mM, free pools),
``production_rate`` (mM/s: ATP made per second over each record interval, the ATP turnover flux),
``spending_rate`` (mM/s), ``work_rate`` (work units/s), ``substrate_rate`` (mM glucose/s),
``turnover_time`` (s: free ATP / spending rate); generic ``production_rate``, ``spending_rate``,
``work_rate``, ``substrate_rate`` (per unit time) and ``turnover_time`` (A / spending rate).

Units: ``x`` in each parameter's own unit (:attr:`Parameter.unit`); outcomes in their quantity's
unit. Transforms for fitting (:meth:`Differentiable.to_unconstrained`): ``theta = log(x)`` for a
positive parameter, ``log(-x)`` for a negative one (standard free energies), so a fit in ``theta``
keeps each parameter's sign.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sim.core import engine
from sim.core import study as st
from sim.errors import ConfigError

REFUSED = {  # substrate name -> why it has no gradient
    "llm": ("LLM serving has discrete queues: requests arrive by random draws and are admitted whole into "
            "integer KV blocks, so its outcomes are step functions of its parameters with no useful gradient "
            "(use experiment=sensitivity for it)"),
}


# ------------------------------------------------------------------------------ per-substrate rules


@dataclasses.dataclass(frozen=True)
class Event:
    """A random event of a substrate and how to switch it off.

    ``key``: the config key that sets it (dotted from the config root); ``field``: the ``Params``
    field holding its rate (the event is on when it is > 0), or None when ``active(built)`` decides;
    ``off``: the value of ``key`` that switches it off."""

    key: str
    what: str
    field: str | None = None
    off: object = 0.0
    active: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Derived:
    """A quantity computed from records: ``fn(current, previous, params, span_s)`` -> ``(..., cells)``,
    ``current``/``previous``: the records at this and the previous record point (``(T, C, ...)``),
    ``span_s``: the time between them (the substrate's time unit)."""

    unit: str
    long_name: str
    needs: tuple[str, ...]
    fn: Callable


@dataclasses.dataclass(frozen=True)
class Rules:
    """What the gradient path needs to know about a substrate (see the module docstring)."""

    events: tuple[Event, ...]
    excluded: Mapping[str, str]  # Params field -> why it is not a differentiable parameter
    negative: tuple[str, ...]  # fields whose values are negative (fitted as log(-x))
    vectors: Callable  # built -> {field: labels of its entries}
    derived: Callable  # () -> {name: Derived}
    units: Mapping[str, str]


def _safe_div(a, b):
    return jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)


def _rate(record: str):
    return lambda cur, prev, p, span: (cur[record] - prev[record]) / span


def _bio_derived() -> dict:
    from sim.substrates.bio.kernels.thermo import energy_charge_of
    from sim.substrates.bio.state import ATP, SPECIES

    def pool(s):
        i = SPECIES.index(s)
        return lambda cur, prev, p, span: cur["pools"][..., i]

    out = {
        "energy_charge": Derived("1", "energy charge (ATP + ADP/2)/(ATP + ADP + AMP) of the total pools, bound ADP "
                                 "and AMP included", ("pools",),
                                 lambda cur, prev, p, span: energy_charge_of(cur["pools"], p)),
        "production_rate": Derived("mM/s", "ATP made per second over each record interval (ATP turnover flux)",
                                   ("produced",), _rate("produced")),
        "spending_rate": Derived("mM/s", "ATP spent per second (consumers, repair, biogenesis, switching)",
                                 ("spent",), _rate("spent")),
        "work_rate": Derived("work units/s", "work per second, summed over consumer kinds", ("work",), _rate("work")),
        "substrate_rate": Derived("mM/s", "glucose used by producers per second", ("substrate_used",),
                                  _rate("substrate_used")),
        "turnover_time": Derived("s", "free ATP pool / ATP spending rate", ("pools", "spent"),
                                 lambda cur, prev, p, span: _safe_div(cur["pools"][..., ATP],
                                                                      _rate("spent")(cur, prev, p, span))),
    }
    names = {"glucose": "glucose", "atp": "atp", "adp": "adp", "amp": "amp", "pi": "pi"}
    for name, species in names.items():
        out[name] = Derived("mM", f"free {species} pool", ("pools",), pool(species))
    return out


def _generic_derived() -> dict:
    return {
        "production_rate": Derived("1/time", "currency made per unit time over each record interval (turnover flux)",
                                   ("produced",), _rate("produced")),
        "spending_rate": Derived("1/time", "currency spent per unit time", ("spent",), _rate("spent")),
        "work_rate": Derived("1/time", "work per unit time", ("work",), _rate("work")),
        "substrate_rate": Derived("1/time", "substrate used per unit time", ("substrate_used",),
                                  _rate("substrate_used")),
        "turnover_time": Derived("time", "charged pool A / spending rate", ("a", "spent"),
                                 lambda cur, prev, p, span: _safe_div(cur["a"], _rate("spent")(cur, prev, p, span))),
    }


def _bio_vectors(built) -> dict:
    from sim.substrates.bio.state import SPECIES

    kinds = tuple(built.producer_kinds)
    out = {f: kinds for f in ("p_yield", "p_substrate_dg_kj", "p_ceiling_kj", "p_k_s", "p_k_adp", "p_k_pi", "p_damage")}
    out["permeability"] = tuple(SPECIES)
    out["tier_reserve"] = tuple(str(t) for t in range(int(np.shape(built.params.tier_reserve)[0])))
    return out


_EVENT_PARAMS = "a parameter of the random producer failures / biogenesis (off on the gradient path)"
_CHAIN_PARAMS = "a parameter of the ribosome chains (random initiation and termination; off on the gradient path)"
_DEATH_PARAMS = "a parameter of cell death, a threshold event (zero gradient almost everywhere)"
_DT = "the time step: it sets the record times"

BIO_UNITS = {
    "temperature_k": "K", "volume_l": "L", "dg0_kj": "kJ/mol", "k_ak": "1", "adp_bound": "mM", "amp_bound": "mM",
    "creatine_total": "mM", "k_ck": "1", "external_substrate": "mM", "supply_scale": "1", "demand_scale": "1",
    "uptake_scale": "1", "parallel_activation": "1", "p_yield": "ATP/glucose", "p_substrate_dg_kj": "kJ/mol",
    "p_ceiling_kj": "kJ/mol", "p_k_s": "mM", "p_k_adp": "mM", "p_k_pi": "mM", "p_damage": "1/s",
    "repair_rate": "1/s", "repair_cost": "mM", "tier_reserve": "mM", "permeability": "1", "conductance_scale": "1",
}
GENERIC_UNITS = {"supply_scale": "1", "demand_scale": "1", "uptake_scale": "1", "conductance_scale": "1",
                 "external": "1", "exchange_rate": "1/time", "k_substrate": "1", "k_discharged": "1", "yield_": "1"}

RULES = {
    "bio": Rules(
        events=(
            Event("substrate.producers.hazard_per_s", "producer failures (a random draw per producer and step)",
                  "hazard0"),
            Event("substrate.producers.birth_per_s", "producer biogenesis (a random draw per cell and step)",
                  "birth_rate"),
            Event("substrate.chains.consumer", "ribosome chains (random initiation and termination per slot)",
                  None, None, active=lambda built: np.shape(built.state.chains.active)[-1] > 0),
        ),
        excluded={"dt": _DT, **{f: _EVENT_PARAMS for f in ("hazard0", "hazard_beta", "birth_rate", "birth_ec_set",
                                                           "birth_ec_span", "birth_tau", "birth_cost")},
                  **{f: _CHAIN_PARAMS for f in ("chain_rate", "chain_cost_per_unit", "chain_p_stop", "chain_n_max",
                                                "chain_init_rate", "chain_init_cost")},
                  **{f: _DEATH_PARAMS for f in ("stress_threshold", "stress_death_s", "stress_recovery")},
                  "c_specialised": "a flag (1: specialised consumer kind), not a continuous parameter"},
        negative=("dg0_kj", "p_substrate_dg_kj"),
        vectors=_bio_vectors,
        derived=_bio_derived,
        units=BIO_UNITS,
    ),
    "generic": Rules(
        events=(
            Event("substrate.producers.hazard", "producer failures (a random draw per producer and step)", "hazard"),
            Event("substrate.producers.birth_rate", "producer births (a random draw per cell and step)", "birth_rate"),
        ),
        excluded={"dt": _DT, "hazard": _EVENT_PARAMS, "birth_rate": _EVENT_PARAMS},
        negative=(),
        vectors=lambda built: {},
        derived=_generic_derived,
        units=GENERIC_UNITS,
    ),
}


def rules_of(name: str) -> Rules:
    """The :class:`Rules` of substrate ``name``; ConfigError for LLM serving and unknown substrates."""
    if name in REFUSED:
        raise ConfigError("substrate", name, "a substrate with continuous parameters (" + ", ".join(sorted(RULES))
                          + "): " + REFUSED[name])
    if name not in RULES:
        raise ConfigError("substrate", name, "one of " + ", ".join(sorted(RULES)) + " (the substrates whose random "
                          "events and continuous parameters sim.core.gradients knows)")
    return RULES[name]


# ------------------------------------------------------------------------------ events


def _cfg_value(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(cfg: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = cfg
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def events_on(cfg: dict, substrate_name: str, built) -> list[tuple[str, object, object, str]]:
    """``(key, value, off value, what)`` of every random event a built config has switched on."""
    from sim.core.differentiation import read_config

    out = []
    overrides = cfg.get("params") or {}
    for ev in rules_of(substrate_name).events:
        if ev.field is not None:
            if float(np.max(np.asarray(getattr(built.params, ev.field)))) > 0:
                key = f"params.{ev.field}" if ev.field in overrides else ev.key
                out.append((key, _cfg_value(cfg, key), ev.off, ev.what))
        elif ev.active(built):
            out.append((ev.key, _cfg_value(cfg, ev.key), ev.off, ev.what))
    rule = read_config(cfg)["rule"]
    if rule != "fixed":
        out.append(("differentiation.rule", rule, "fixed",
                    "adaptation of theta (random imitation / exploration draws)"))
    carriers = cfg.get("carriers") if isinstance(cfg.get("carriers"), dict) else {}
    if (carriers.get("n") or 1) > 1 and carriers.get("rule", "fixed") != "fixed":  # sim.core.carriers
        out.append(("carriers.rule", carriers.get("rule"), "fixed", "strategy revisions of the competing carriers"))
    return out


MODEL_EVENTS = ("differentiation.rule", "carriers.rule")  # random adaptation: refused, never switched off


def _refusal(key, value, off, what, hint: str) -> ConfigError:
    shown = "null" if off is None else repr(off)
    return ConfigError(key, value, f"{shown} on the gradient path: random events ({what}) make outcomes step "
                       f"functions of the parameters, with no gradient ({hint})")


# ------------------------------------------------------------------------------ parameters and quantities


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One differentiable parameter: ``name`` (``field`` or ``field.label``), the ``Params`` field,
    the entry ``index`` of a vector field (None: a scalar), the configured ``value`` and its
    ``unit``; ``sign`` +1 (positive: fitted as log x) or -1 (negative: fitted as log(-x))."""

    name: str
    field: str
    index: int | None
    value: float
    unit: str
    sign: int


def allowed_parameters(substrate_name: str, built) -> dict[str, tuple[str, int | None]]:
    """Name -> (field, index) of every differentiable parameter of a built config."""
    rules = rules_of(substrate_name)
    out: dict = {}
    vectors = rules.vectors(built)
    for f in dataclasses.fields(built.params):
        if f.name in rules.excluded:
            continue
        v = getattr(built.params, f.name)
        if v is None or dataclasses.is_dataclass(v):
            continue
        a = np.asarray(v)
        if not np.issubdtype(a.dtype, np.floating):
            continue
        if a.ndim == 0:
            out[f.name] = (f.name, None)
        elif a.ndim == 1 and f.name in vectors and len(vectors[f.name]) == a.shape[0]:
            for i, label in enumerate(vectors[f.name]):
                out[f"{f.name}.{label}"] = (f.name, i)
    return out


def resolve_parameters(substrate_name: str, built, names: Sequence[str], key: str = "params",
                       values: Mapping | None = None) -> tuple[Parameter, ...]:
    """:class:`Parameter` of each name; one ConfigError per bad name (key ``<key>.<name>`` with the
    given value when ``values`` is a mapping of them, else ``key`` with the name)."""
    from sim.config.validate import ConfigErrors

    rules = rules_of(substrate_name)
    allowed = allowed_parameters(substrate_name, built)
    listing = ", ".join(allowed)
    out, problems = [], []
    if not names:
        raise ConfigError(key, list(names), f"at least one parameter of substrate {substrate_name}: {listing}")
    for name in names:
        k, v = (f"{key}.{name}", values[name]) if values is not None else (key, name)
        if not isinstance(name, str) or name not in allowed:
            why = rules.excluded.get(str(name).split(".")[0]) if isinstance(name, str) else None
            head = f"not {name} ({why}); " if why else ""
            problems.append(ConfigError(k, v, f"{head}a continuous parameter of substrate {substrate_name}: {listing}"))
            continue
        field, index = allowed[name]
        a = np.asarray(getattr(built.params, field), np.float64)
        value = float(a if index is None else a[index])
        sign = -1 if field in rules.negative else 1
        out.append(Parameter(name, field, index, value, rules.units.get(field, "1"), sign))
    if len(set(names)) != len(names):
        problems.append(ConfigError(key, list(names), "each parameter named once"))
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigErrors(problems)
    return tuple(out)


def quantities(substrate, built) -> dict[str, tuple[str, str, tuple[str, ...], Callable | None]]:
    """Name -> (unit, long name, records needed, derived fn or None) of every quantity an outcome
    may name: the floating per-cell records of the substrate, then the derived ones."""
    shapes = jax.eval_shape(substrate.observe, jax.tree_util.tree_map(jnp.asarray, built.state))
    n = built.n_cells
    out = {}
    for q in substrate.records:
        s = shapes.get(q.name)
        if s is not None and s.shape == (n,) and jnp.issubdtype(s.dtype, jnp.floating):
            out[q.name] = (q.unit, q.long_name, (q.name,), None)
    for name, d in rules_of(substrate.name).derived().items():
        out[name] = (d.unit, d.long_name, d.needs, d.fn)
    return out


def parse_outcome(text, table: dict, substrate_name: str, key: str = "outcomes") -> tuple[str, str]:
    """``"reducer:quantity"`` -> (reducer, quantity); ConfigError naming what is allowed."""
    if not isinstance(text, str) or text.count(":") != 1:
        raise ConfigError(key, text, f"'<reducer>:<quantity>', reducer one of {', '.join(st.REDUCERS)}")
    reducer, quantity = text.split(":")
    if reducer not in st.REDUCERS:
        raise ConfigError(key, text, f"a reducer in {', '.join(st.REDUCERS)}")
    if quantity not in table:
        raise ConfigError(key, text, f"a differentiable quantity of substrate {substrate_name}: {', '.join(table)}")
    return reducer, quantity


def reduce(values, reducer: str):
    """``(time, cell)`` -> a scalar, as :func:`sim.core.study.reduce_outcome` for one replicate."""
    n_t = values.shape[0]
    if reducer in ("mean_last", "total_last"):
        window = values[n_t - max(1, int(math.ceil(st.LAST_FRACTION * n_t))):]
    elif reducer == "final":
        window = values[-1:]
    else:
        window = values
    flat = window.reshape(window.shape[0], -1)
    return flat.sum(axis=1).mean() if reducer == "total_last" else flat.mean()


# ------------------------------------------------------------------------------ the differentiable run


@dataclasses.dataclass(frozen=True, eq=False)
class Differentiable:
    """A pure parameter-vector -> outcomes map of one configuration (see the module docstring).

    ``parameters``: the :class:`Parameter` of each entry of ``x``; ``outcomes``: outcome texts;
    ``steps`` steps with a record every ``record_every``; ``switched_off``: ``(key, old value, new
    value)`` of the random events set off by ``events="off"``. Every method taking ``x`` is pure and
    traceable (jit, grad, jacfwd, vmap)."""

    substrate: object
    built: object
    parameters: tuple
    outcome_texts: tuple
    steps: int
    record_every: int
    table: dict
    switched_off: tuple = ()

    def __post_init__(self):
        to_jax = lambda t: jax.tree_util.tree_map(jnp.asarray, t)  # noqa: E731
        object.__setattr__(self, "_state0", to_jax(self.built.state))
        object.__setattr__(self, "_params0", to_jax(self.built.params))
        from sim.rng import replicate_keys

        object.__setattr__(self, "_key", replicate_keys(self.built.seed, 1)[0])
        object.__setattr__(self, "_parsed", tuple(parse_outcome(o, self.table, self.substrate.name)
                                                  for o in self.outcome_texts))

    # -- the parameter vector

    @property
    def parsed(self) -> tuple[tuple[str, str], ...]:
        """(reducer, quantity) of each outcome."""
        return self._parsed

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @property
    def x0(self) -> np.ndarray:
        """The configured values (float64), in the order of :attr:`names`."""
        return np.array([p.value for p in self.parameters], np.float64)

    @property
    def dt(self) -> float:
        return float(np.asarray(self.built.params.dt).reshape(-1)[0])

    @property
    def times(self) -> np.ndarray:
        """Time of each record (the substrate's time unit: s for biology)."""
        n = self.steps // self.record_every
        return np.arange(1, n + 1) * self.record_every * self.dt

    def to_unconstrained(self, x):
        """``theta``: log(x) for a positive parameter, log(-x) for a negative one."""
        sign = jnp.array([p.sign for p in self.parameters], jnp.result_type(float))
        return jnp.log(sign * jnp.asarray(x))

    def from_unconstrained(self, theta):
        sign = jnp.array([p.sign for p in self.parameters], jnp.result_type(float))
        return sign * jnp.exp(jnp.asarray(theta))

    def params_at(self, x):
        """The parameter PyTree with the entries of ``x`` placed (scalars broadcast, vector entries set)."""
        params = self._params0
        changes: dict = {}
        for j, p in enumerate(self.parameters):
            cur = changes.get(p.field, getattr(params, p.field))
            v = jnp.asarray(x[j]).astype(cur.dtype)
            changes[p.field] = jnp.broadcast_to(v, cur.shape) if p.index is None else cur.at[p.index].set(v)
        return dataclasses.replace(params, **changes)

    # -- the run

    def run(self, x, names: Sequence[str] | None = None):
        """(final state, quantity -> ``(records, cells)`` values at :attr:`times`) at ``x`` (traced;
        ``names``: which quantities, by default those of the outcomes)."""
        names = tuple(names) if names is not None else tuple(dict.fromkeys(q for _, q in self._parsed))
        for n in names:
            if n not in self.table:
                raise ConfigError("quantity", n, f"a differentiable quantity of substrate {self.substrate.name}: "
                                  + ", ".join(self.table))
        needed = tuple(dict.fromkeys(r for n in names for r in self.table[n][2]))
        params = self.params_at(x)

        def observe(s):
            obs = self.substrate.observe(s)
            return {k: obs[k] for k in needed}

        n_records = self.steps // self.record_every
        final, rec = engine.scan_records(self.substrate.step, observe, self._state0, params, self._key,
                                         n_records, self.record_every)
        start = observe(self._state0)
        prev = {k: jnp.concatenate([start[k][None], rec[k][:-1]], axis=0) for k in needed}
        span = params.dt * self.record_every
        out = {}
        for n in names:
            fn = self.table[n][3]
            out[n] = rec[n] if fn is None else fn(rec, prev, params, span)
        return final, out

    def trajectory(self, x, names: Sequence[str] | None = None) -> dict:
        """Quantity -> ``(records, cells)`` values at :attr:`times` (see :meth:`run`)."""
        return self.run(x, names)[1]

    def outcomes_of(self, traj: dict):
        """``(n_outcomes,)`` outcome values of a :meth:`trajectory`."""
        return jnp.stack([reduce(traj[q], r) for r, q in self._parsed])

    def outcomes(self, x):
        """``(n_outcomes,)`` outcome values at ``x`` (pure: jit / grad / jacfwd / vmap)."""
        return self.outcomes_of(self.trajectory(x))

    __call__ = outcomes

    def series_of(self, traj: dict, quantity: str, times):
        """The cell mean of ``quantity`` of a :meth:`trajectory` at ``times`` (linear interpolation
        between records; ``times`` within :attr:`times`)."""
        return jnp.interp(jnp.asarray(times), jnp.asarray(self.times), traj[quantity].mean(axis=1))

    def series(self, x, quantity: str, times):
        """The cell mean of ``quantity`` at ``times`` (see :meth:`series_of`)."""
        return self.series_of(self.trajectory(x, (quantity,)), quantity, times)

    def cells_died(self, final_state):
        """Cells alive at the start and dead in ``final_state`` (traced): biology's stress death, a
        deterministic threshold event; a gradient through a run with deaths is that of a piecewise
        function."""
        alive0 = jnp.asarray(self.built.state.cells.alive)
        return jnp.sum(alive0 & ~final_state.cells.alive)

    def events(self, x) -> dict:
        """Deterministic discrete events of the run at ``x`` (host-side): cells that died."""
        died = jax.jit(lambda x: self.cells_died(self.run(x, ())[0]))(jnp.asarray(x, jnp.float64))
        return {"cells": int(np.size(self.built.state.cells.alive)), "cells_died": int(died)}

    # -- derivatives

    def jacobian(self, x=None):
        """``(n_outcomes, n_params)`` d outcome / d parameter (forward mode: cheap for a few parameters)."""
        x = self.x0 if x is None else x
        return jax.jacfwd(self.outcomes)(jnp.asarray(x, jnp.float64))

    def value_and_jacobian(self, x):
        """(outcomes, jacobian) at ``x`` from one forward-mode pass (traced)."""
        def both(x):
            y = self.outcomes(x)
            return y, y

        jac, y = jax.jacfwd(both, has_aux=True)(jnp.asarray(x, jnp.float64))
        return y, jac

    @functools.cached_property
    def compiled(self):
        """Jitted ``outcomes`` and ``value_and_jacobian`` of this configuration (compiled on first use)."""
        return {"outcomes": jax.jit(self.outcomes), "value_and_jacobian": jax.jit(self.value_and_jacobian)}

    def sensitivities(self, x=None):
        """pandas DataFrame, one row per (outcome, parameter): the value of both, the derivative and the
        elasticity ``(x / y) dy/dx`` (dimensionless: % change of the outcome per % of the parameter)."""
        import pandas as pd

        x = self.x0 if x is None else np.asarray(x, np.float64)
        y, jac = (np.asarray(a) for a in self.compiled["value_and_jacobian"](x))
        rows = []
        for i, o in enumerate(self.outcome_texts):
            unit = self.table[self._parsed[i][1]][0]
            for j, p in enumerate(self.parameters):
                el = jac[i, j] * x[j] / y[i] if y[i] != 0 else float("nan")
                rows.append({"outcome": o, "outcome_unit": unit, "param": p.name, "param_unit": p.unit,
                             "value": float(y[i]), "x": float(x[j]), "derivative": float(jac[i, j]),
                             "elasticity": float(el)})
        return pd.DataFrame(rows)


def differentiable(cfg, params: Sequence[str] | Mapping, outcomes: Sequence[str] = (), *, events: str = "refuse",
                   steps: int | None = None, record_every: int | None = None, key: str = "gradients",
                   hint: str = "set it so, or pass events='off'") -> Differentiable:
    """Validate and build ``cfg`` (a composed config) and return its :class:`Differentiable`.

    ``params``: parameter names (or a mapping name -> anything: its keys, refusals naming
    ``<key>.params.<name>``); ``outcomes``: ``"<reducer>:<quantity>"`` texts; ``events``: ``refuse``
    (default: a config with random events is a ConfigError) or ``off`` (switch them off, see
    :attr:`Differentiable.switched_off`). ``steps`` / ``record_every``: default the config's."""
    from sim.api import as_plain, prepare, substrate_of
    from sim.config.validate import ConfigErrors

    if events not in ("refuse", "off"):
        raise ConfigError(f"{key}.events", events, "refuse or off")
    cfg = as_plain(cfg)
    name = substrate_of(cfg).name
    rules_of(name)  # LLM and unknown substrates refused before anything is built
    cfg, sub, built = prepare(cfg)
    found = events_on(cfg, name, built)
    switched = []
    if found and events == "off":
        keep = [f for f in found if f[0] in MODEL_EVENTS]
        if not keep:
            import copy

            cfg = copy.deepcopy(cfg)
            for k, value, off, _ in found:
                _set(cfg, k, off)
                switched.append((k, value, off))
            cfg, sub, built = prepare(cfg)
            found = events_on(cfg, name, built)
        else:
            found = keep
    if found:
        problems = [_refusal(k, v, off, what, hint if k not in MODEL_EVENTS else
                             "the adaptation is part of the model and is never switched off")
                    for k, v, off, what in found]
        raise problems[0] if len(problems) == 1 else ConfigErrors(problems)
    is_map = isinstance(params, Mapping)
    parameters = resolve_parameters(name, built, list(params), key=f"{key}.params", values=params if is_map else None)
    table = quantities(sub, built)
    for o in outcomes:
        parse_outcome(o, table, name, key=f"{key}.outcomes")
    steps = int(cfg["steps"]) if steps is None else int(steps)
    every = int(cfg["record_every"]) if record_every is None else int(record_every)
    if steps < 1 or every < 1 or steps % every:
        raise ConfigError("steps", steps, f"a positive multiple of record_every={every}")
    return Differentiable(sub, built, parameters, tuple(outcomes), steps, every, table, tuple(switched))


def local_sensitivities(cfg, params: Sequence[str], outcomes: Sequence[str], **kw):
    """The :meth:`Differentiable.sensitivities` table of ``cfg`` at its configured parameter values."""
    return differentiable(cfg, params, outcomes, **kw).sensitivities()
