"""The generic substrate as a value: a dimensionless economy of ONE currency (``substrate=generic``).

Per cell a substrate pool S fed from outside, a charged currency pool A and a discharged carrier
pool D; producers turn D back into A using substrate, consumers spend A (-> D) for work, junctions
exchange A and D between cells. The equations are in :mod:`sim.substrates.generic.kernels`, their
plain-Python float64 reference in :mod:`sim.substrates.generic.reference`, the parameters in
``conf/substrate/generic.yaml``. Every quantity is dimensionless (unit "1"); time is in units of
the config's ``dt`` x steps.

Config refusals (:func:`validate`, before anything is built; every problem at once, one
:class:`~sim.errors.ConfigError` each, collected in :class:`sim.config.validate.ConfigErrors`):
the generic checks of :func:`sim.config.validate.validate` (types, steps, seed, params >= 0, keys
not in ``conf/substrate/generic.yaml`` refused by name), then the generic preset's own numbers
(:data:`NUMBERS`, :data:`KIND_NUMBERS`: missing, non-numeric, non-finite or out of range; integer
counts and tiers; ``producers.count <= producers.slots``), then ``params.<name>`` other than
:data:`PARAM_NAMES` (the biology parameters the generic checks accept mean nothing here). A key the
generic checks named already is not named twice. :func:`build` also refuses a ``dt`` the explicit
step cannot take: ``dt g c max_degree < 1`` (transport sends less than a cell holds) and
``dt max(s V_cell / K_D, s V_cell / (Y K_S), k_in u) <= 0.5`` with V_cell = sum over a cell's slots
of V h (production, with every slot alive, and supply take at most half of D and S in a step), so no pool goes negative without a clamp; consumption is rationed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from sim import network_figure
from sim.core import carriers as car
from sim.core import differentiation as dif
from sim.core.substrate import Built, EntitySpec, Quantity, Rule, Substrate
from sim.errors import ConfigError
from sim.substrates.generic.kernels import PROCESSES, pay, settle
from sim.substrates.generic.state import N_TIERS, Cells, Consumers, Edges, Ledger, Params, Producers, State

PARAM_NAMES = ("supply_scale", "demand_scale", "uptake_scale", "conductance_scale")
LEDGER = tuple(f.name for f in dataclasses.fields(Ledger))
POOLS = ("s", "a", "d")  # records (and cell fields) of the pools S, A, D
DECREASED = " (decreased)"  # suffix of a cumulative ledger that went down; its value is the change

# ------------------------------------------------------------------------------ config

def _rule(lo, strict: bool = False, hi=None, integer: bool = False) -> Rule:
    """A range of the generic preset, refused in one wording whatever is wrong with the value."""
    allowed = ("an integer" if integer else "a finite number") + f" {'>' if strict else '>='} {lo}"
    allowed += f" and <= {hi}" if hi is not None else ""
    return Rule(minimum=lo, maximum=hi, strict=strict, integer=integer, allowed=allowed)


# (key under ``substrate``, its rule): read by :func:`read_substrate` and, as the substrate's
# ``config_rules`` (:data:`RULES`), checked by ``sim.config.validate.validate``
NUMBERS = (
    ("initial.substrate", _rule(0)),
    ("initial.carrier", _rule(0)),
    ("initial.charged_fraction", _rule(0, hi=1)),
    ("supply.external", _rule(0)),
    ("supply.exchange_rate", _rule(0)),
    ("producers.slots", _rule(1, integer=True)),
    ("producers.count", _rule(0, integer=True)),
    ("producers.capacity", _rule(0)),
    ("producers.health", _rule(0, hi=1)),
    ("producers.k_substrate", _rule(0, strict=True)),
    ("producers.k_discharged", _rule(0, strict=True)),
    ("producers.yield", _rule(0, strict=True)),
    ("producers.hazard", _rule(0)),
    ("producers.birth_rate", _rule(0)),
    ("transport.conductance", _rule(0)),
    ("transport.loss_fraction", _rule(0, hi=1)),
)
KIND_NUMBERS = (  # each consumers.kinds.<kind>
    ("count", _rule(0, integer=True)),
    ("tier", _rule(0, hi=N_TIERS - 1, integer=True)),
    ("capacity", _rule(0)),
    ("affinity", _rule(0, strict=True)),
    ("value", _rule(0)),
)
RULES = NUMBERS + tuple((f"consumers.kinds.*.{key}", rule) for key, rule in KIND_NUMBERS)


def _number(node, key: str, rule: Rule, prefix: str):
    """(value, None) or (None, ConfigError) for ``node[key]`` (dotted) under ``rule``."""
    v = node
    for part in key.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    dotted = f"{prefix}.{key}"
    if v is None:
        return None, ConfigError(dotted, v, f"{rule.allowed} (missing from the config)")
    problem = rule.problem(dotted, v)
    if problem is not None:
        return None, problem
    return (int(v) if rule.integer else float(v)), None


def read_substrate(sub) -> tuple[dict, list, list[ConfigError]]:
    """(numbers by key, [(kind, numbers)] of the consumer kinds, every problem) of a generic preset."""
    values, kinds, problems = {}, [], []
    if not isinstance(sub, dict):
        return values, kinds, [ConfigError("substrate", sub, "the generic substrate preset (a mapping)")]
    for key, rule in NUMBERS:
        values[key], problem = _number(sub, key, rule, "substrate")
        problems += [problem] if problem else []
    slots, count = values.get("producers.slots"), values.get("producers.count")
    if slots is not None and count is not None and count > slots:
        problems.append(ConfigError("substrate.producers.count", count, f"an integer <= producers.slots={slots}"))
    table = (sub.get("consumers") or {}).get("kinds") if isinstance(sub.get("consumers"), dict) else None
    if not isinstance(table, dict) or not all(isinstance(k, dict) for k in table.values()):
        problems.append(ConfigError("substrate.consumers.kinds", table, "a mapping of kind name -> {count, tier, "
                                    "capacity, affinity, value}"))
        return values, kinds, problems
    for name, kcfg in table.items():
        numbers = {}
        for key, rule in KIND_NUMBERS:
            numbers[key], problem = _number(kcfg, key, rule, f"substrate.consumers.kinds.{name}")
            problems += [problem] if problem else []
        kinds.append((name, numbers))
    return values, kinds, problems


def validate(cfg: dict) -> None:
    """Every problem of a generic run config at once (see the module docstring)."""
    from sim.config.validate import ConfigErrors, problems_of
    from sim.config.validate import validate as validate_config

    problems = []
    try:
        validate_config(cfg)
    except ConfigError as exc:
        problems += problems_of(exc)
    named = {p.key for p in problems}
    problems += [p for p in read_substrate(cfg.get("substrate"))[2] if p.key not in named]
    params = cfg.get("params")
    for name, value in (params.items() if isinstance(params, dict) else ()):
        if name not in PARAM_NAMES and f"params.{name}" not in named:
            problems.append(ConfigError(f"params.{name}", value, "a parameter of the generic substrate: "
                                        + ", ".join(PARAM_NAMES)))
    if problems:
        raise ConfigErrors(problems)


def check_stability(built: Built) -> None:
    """Refuse a ``dt`` the explicit step cannot take (see the module docstring)."""
    from sim.config.validate import ConfigErrors

    p, s = built.params, built.state
    dt, problems = float(p.dt), []
    g = np.asarray(p.edges.conductance) * float(p.conductance_scale)
    if g.size:
        deg = np.bincount(np.concatenate([p.edges.src, p.edges.dst]), minlength=built.n_cells).max()
        courant = dt * g.max() * deg
        if not courant < 1.0:
            problems.append(ConfigError("dt", dt, f"dt * conductance * max_degree < 1 for stable transport (it is "
                                        f"{courant:.3g}); lower dt or substrate.transport.conductance"))
    v = float(np.max(np.sum(s.producers.vmax * s.producers.health, axis=1)))  # every slot alive (births)
    v *= float(p.supply_scale) * float(np.max(dif.production_factor(np.asarray(getattr(built, "theta_max", 1.0)), np.asarray(p.diff.alpha))))
    rate = max(v / float(p.k_discharged), v / (float(p.yield_) * float(p.k_substrate)),
               float(p.exchange_rate) * float(p.uptake_scale))
    if not dt * rate <= 0.5:
        problems.append(ConfigError("dt", dt, f"dt <= {0.5 / rate:.3g} (half the fastest pool relaxation time, "
                                    f"1/{rate:.3g}) for a stable explicit step"))
    if problems:
        raise ConfigErrors(problems)


def build(cfg: dict) -> Built:
    """Config (``substrate``, ``topology``, ``dt``, ``seed``, ``params``) -> :class:`Built` (numpy)."""
    from sim.config.validate import ConfigErrors
    from sim.core.engine import cast
    from sim.topology import build_graph, edge_arrays, file_inputs

    values, kinds, problems = read_substrate(cfg.get("substrate"))
    if problems:
        raise ConfigErrors(problems)
    v = values
    seed = int(cfg.get("seed", 0))
    graph = build_graph(cfg["topology"], seed=seed)
    n, slots = graph.number_of_nodes(), v["producers.slots"]
    src, dst = edge_arrays(graph)
    # a graph file's edge weights (x conductance) and node demands (x the cell's consumer capacity)
    inputs = file_inputs(graph, src, dst, substrate="generic", conductance_key="substrate.transport.conductance",
                         demand=True)
    full = lambda x, shape=(n,): np.full(shape, x, np.float64)  # noqa: E731
    carrier, fraction = v["initial.carrier"], v["initial.charged_fraction"]
    cells = Cells(alive=np.ones(n, bool), s=full(v["initial.substrate"]), a=full(carrier * fraction),
                  d=full(carrier - carrier * fraction))
    producers = Producers(alive=np.broadcast_to(np.arange(slots) < v["producers.count"], (n, slots)).copy(),
                          vmax=full(v["producers.capacity"], (n, slots)), health=full(v["producers.health"], (n, slots)))
    row = lambda key, dtype=np.float64: np.tile(np.array([k[key] for _, k in kinds for _ in range(k["count"])],  # noqa: E731
                                                          dtype).reshape(1, -1), (n, 1))
    consumers = Consumers(vmax=row("capacity") * inputs.demand[:, None], km=row("affinity"), tier=row("tier", np.int32),
                          value=row("value"))
    ledger = Ledger(**{name: full(0.0) for name in LEDGER})
    opts = dif.read_config(cfg)
    diff = dif.init_state(opts, n, seed)
    copts = car.read_config(cfg)
    carriers = car.init_state(copts, cells.a, seed)
    state = State(cells=cells, producers=producers, consumers=consumers, ledger=ledger, diff=diff, carriers=carriers,
                  step=np.int32(0))
    scales = cfg.get("params") or {}
    f = np.float64
    edges = Edges(src=src, dst=dst, conductance=full(v["transport.conductance"], src.shape) * inputs.weight,
                  loss=full(v["transport.loss_fraction"], src.shape))
    params = Params(dt=f(cfg["dt"]), **{k: f(scales.get(k, 1.0)) for k in PARAM_NAMES},
                    external=f(v["supply.external"]), exchange_rate=f(v["supply.exchange_rate"]),
                    k_substrate=f(v["producers.k_substrate"]), k_discharged=f(v["producers.k_discharged"]),
                    yield_=f(v["producers.yield"]), hazard=f(v["producers.hazard"]),
                    birth_rate=f(v["producers.birth_rate"]), edges=edges, diff=dif.init_params(opts, src, dst, n),
                    carriers=car.init_params(copts, src, dst, n))
    built = Built(state=state, params=params, graph=graph, seed=seed)
    # the largest theta a cell can reach: stability is checked for the fastest producer possible
    theta_max = built.theta_max = 1.0 if opts["rule"] != "fixed" else float(np.max(diff.theta, initial=0.5))
    check_stability(built)
    if cfg.get("precision", "float64") == "float32":
        built = Built(cast(state, np.float32), cast(params, np.float32), graph, seed)
        built.theta_max = theta_max
    return built


# ------------------------------------------------------------------------------ records and guard

RECORDS = (
    Quantity("s", "1", "substrate pool S"),
    Quantity("a", "1", "charged currency pool A"),
    Quantity("d", "1", "discharged carrier pool D"),
    Quantity("charged_fraction", "1", "A / (A + D)"),
    Quantity("alive", "1", "cell alive"),
    Quantity("producers_alive", "1", "producers alive"),
    Quantity("produced", "1", "cumulative currency made"),
    Quantity("spent", "1", "cumulative currency spent"),
    Quantity("work", "1", "cumulative work (value x spent)"),
    Quantity("output", "1", "cumulative specialised work (value x spent of the work tier)"),
    Quantity("transported_out", "1", "cumulative charged currency sent over junctions"),
    Quantity("lost", "1", "cumulative charge dissipated in transit (A arriving as D)"),
    Quantity("substrate_used", "1", "cumulative substrate used by producers"),
    Quantity("failures", "1", "cumulative producer failures"),
    Quantity("births", "1", "cumulative producer births"),
    Quantity("switching", "1", "cumulative currency spent changing theta"),
    Quantity("theta", "1", "differentiation: share of capacity making currency (0 worker, 1/2 generalist, 1 producer)"),
)


def observe(state) -> dict:
    """Per-cell record at each record point."""
    c, led = state.cells, state.ledger
    total = c.a + c.d
    return {
        "s": c.s, "a": c.a, "d": c.d,
        "charged_fraction": jnp.where(total > 0, c.a / jnp.where(total > 0, total, 1.0), 0.0),
        "alive": c.alive, "producers_alive": jnp.sum(state.producers.alive, axis=1).astype(jnp.int32),
        **{name: getattr(led, name) for name in LEDGER},
        "theta": state.diff.theta,
        **(car.observe(state.carriers) if car.active(state.carriers) else {}),
    }


def invariants(obs: dict, previous: dict | None = None) -> dict:
    """Pools and ledgers finite and >= 0, the charged fraction finite; with ``previous``, every
    cumulative ledger non-decreasing (``<name> (decreased)``, value: the change)."""
    out = {}
    with np.errstate(invalid="ignore"):
        for name in POOLS + LEDGER + ("charged_fraction",):
            x = np.asarray(obs[name])
            out[name] = (~np.isfinite(x) | ((x < 0) if name != "charged_fraction" else False), x)
        if "held" in obs:  # several carriers: every carrier's holding finite and >= 0
            x = np.asarray(obs["held"])
            out["held"] = (np.any(~np.isfinite(x) | (x < 0), axis=-1), x.sum(-1))
        if previous is not None:
            for name in LEDGER:
                change = np.asarray(obs[name]) - np.asarray(previous[name])
                out[name + DECREASED] = (change < 0, change)
    return out


# ------------------------------------------------------------------------------ results


def to_dataset(built, result, cfg: dict):
    from sim.substrates.generic.results import to_dataset as generic_dataset

    return generic_dataset(built, result, cfg)


def summarize(built, result, cfg: dict) -> dict:
    from sim.substrates.generic.results import summarize as generic_summary

    return generic_summary(built, result, cfg)


def figures(ds, out_dir):
    """``figures/generic.png``: the pools and the charged fraction (mean over cells) over time, mean
    over replicates with a min-max band; ``network.png`` (:mod:`sim.network_figure`) of the tissue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    (Path(out_dir) / "figures").mkdir(parents=True, exist_ok=True)
    t = ds["time"].values
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, names, ylabel in ((ax[0], POOLS, "pool, mean over cells (1)"),
                                (ax[1], ("charged_fraction",), "charged fraction A / (A + D) (1)")):
        for name in names:
            x = ds[name].mean("cell")
            line, = axis.plot(t, x.mean("replicate"), label=ds[name].attrs["long_name"])
            axis.fill_between(t, x.min("replicate"), x.max("replicate"), color=line.get_color(), alpha=0.25, lw=0)
        axis.set(xlabel="time (1)", ylabel=ylabel)
        axis.legend(fontsize=8)
    ax[0].set_title("pools (mean over cells; band: replicates)")
    ax[1].set(title="charged fraction A / (A + D)", ylim=(0, 1.02))
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / "figures" / "generic.png")] + network_figure.network_figures(ds, out_dir)


def reference(built, replicate: int = 0):
    from sim.substrates.generic.reference import ReferenceGeneric

    return ReferenceGeneric(built, replicate=replicate)


ENTITIES = (
    EntitySpec("cell", "", (("alive", "cells.alive"), ("substrate", "cells.s"), ("charged", "cells.a"),
                            ("discharged", "cells.d"), ("theta", "diff.theta"), ("payoff", "diff.payoff"),
                            ("carrier", "carriers.make"))),
    EntitySpec("producer", "producers", (("vmax", "vmax"), ("health", "health"), ("alive", "alive")), alive="alive"),
    EntitySpec("consumer", "consumers", (("vmax", "vmax"), ("km", "km"), ("tier", "tier"), ("value", "value"))),
)

def step_check(state):
    """Traced, after every step: any pool (S, A, D) NaN/Inf or negative."""
    c = state.cells
    pools = jnp.stack([c.s, c.a, c.d])
    return jnp.any(~jnp.isfinite(pools) | (pools < 0))


SUBSTRATE = Substrate(
    name="generic",
    build=build,
    processes=PROCESSES,
    observe=observe,
    records=RECORDS,
    invariants=invariants,
    to_dataset=to_dataset,
    summarize=summarize,
    validate=validate,
    config_rules=RULES,
    reference=reference,
    figures=figures,
    demand_knob="demand_scale",
    params_axes=lambda params: 0,
    step_check=step_check,
    entities=ENTITIES,
    compartment="cell",
    currency="currency",
    description="one dimensionless currency: producers recharge D -> A from substrate, consumers spend A for work",
    differentiation=dif.Hooks(work=lambda s: s.ledger.output, charged=lambda s: s.cells.a, pay=pay,
                              alive=lambda s: s.cells.alive),
    carriers=car.Hooks(work=lambda s: s.ledger.work, settle=settle, alive=lambda s: s.cells.alive),
)
