"""The biology substrate as a value: cells (mM pools of glucose, ATP, ADP, AMP, Pi), mitochondria and
glycolysis as producers, organelle processes as consumers, ribosome cohorts as chains, gap junctions.

The equations are the kernels of :mod:`sim.substrates.bio.kernels` (process order in ``sim.substrates.bio.kernels.step``), the
initial state and parameters come from ``conf/substrate/bio.yaml`` through
:func:`sim.substrates.bio.build.build`, and the results (dataset, summary in molecules) from
:mod:`sim.substrates.bio.results`. The guard's invariant: every pool finite and non-negative.

Several competing carriers (``carriers.n > 1``, e.g. ``carriers=nucleotides``: ATP, GTP, UTP,
CTP; :mod:`sim.core.carriers`): the ATP pool is split over nucleoside triphosphates held per cell
(``State.carriers.held``, mM) that share one phosphate potential (ADP, AMP and Pi stay shared;
dG and the energy charge use the total). The kernels make, spend and move the carriers
(:mod:`sim.substrates.bio.kernels.metabolism`, ``.transport``), the kinases, biogenesis and
differentiation moves change them pro rata, and the core appends ``carrier_upkeep`` (storage
decay, background conversion, settled by :func:`settle`) and ``carrier_strategy`` (imitation; the
payoff is the cell's work rate). With one carrier (the default) none of this is traced: the
program is the one-currency program.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from sim.core.substrate import EntitySpec, Quantity, Substrate
from sim.core.ops import rowsum
from sim.core import carriers as car
from sim.core import differentiation as dif
from sim.pytree import replace
from sim.substrates.bio.kernels.adenylate import creatine_known
from sim.substrates.bio.kernels.fate import pay_for_move
from sim.substrates.bio.kernels.step import PROCESSES
from sim.substrates.bio.kernels.thermo import dg_atp_kj, energy_charge
from sim.substrates.bio.state import ADP, AMP, ATP, PI, SPECIES
from sim.substrates.bio.rules import RULES

RECORDS = (
    Quantity("pools", "mM", "free (exchanging) pool concentration", ("species",)),
    Quantity("pcr", "mM", "phosphocreatine (0 without the creatine kinase buffer)"),
    Quantity("alive", "1", "cell alive"),
    Quantity("stress", "s", "time spent with maintenance below threshold"),
    Quantity("n_producers", "1", "producers alive"),
    Quantity("health_mean", "1", "mean health of living producers"),
    Quantity("produced", "mM", "cumulative currency made"),
    Quantity("spent", "mM", "cumulative currency spent"),
    Quantity("work", "work units", "cumulative work (sum over kinds)"),
    Quantity("transported_out", "mM", "cumulative currency sent over junctions"),
    Quantity("failures", "1", "cumulative producer failures"),
    Quantity("births", "1", "cumulative producer births"),
    Quantity("output", "work units", "cumulative specialised work (the specialised consumer kinds)"),
    Quantity("substrate_used", "mM", "cumulative glucose used by producers"),
    Quantity("theta", "1", "differentiation: share of the protein budget in producers (1/2 generalist)"),
)


def observe(state) -> dict:
    """What is recorded at each record point (per cell)."""
    prod, led = state.producers, state.ledger
    n_alive = jnp.sum(prod.alive, axis=1)
    health = rowsum(jnp.where(prod.alive, prod.health, 0.0)) / jnp.maximum(n_alive, 1)
    return {
        "pools": state.cells.pools,
        "pcr": state.cells.pcr,
        "alive": state.cells.alive,
        "stress": state.cells.stress,
        "n_producers": n_alive.astype(jnp.int32),
        "health_mean": health,
        "produced": led.produced,
        "spent": rowsum(led.spent) + led.repair_spent + led.birth_spent + led.switching,
        "work": rowsum(led.work),
        "transported_out": led.transported_out,
        "failures": led.failures,
        "births": led.births,
        "output": led.output,
        "substrate_used": led.substrate_used,
        "theta": state.diff.theta,
        **(car.observe(state.carriers) if car.active(state.carriers) else {}),
    }


def invariants(obs: dict, previous: dict | None = None) -> dict:
    """Every pool finite and non-negative, one entry per species (``(..., cells)`` masks); with
    several carriers every carrier's holding too (``held``, the values: their sum)."""
    pools = np.asarray(obs["pools"])
    out = {}
    for s, name in enumerate(SPECIES):
        x = pools[..., s]
        with np.errstate(invalid="ignore"):
            out[name] = (~np.isfinite(x) | (x < 0), x)
    if "held" in obs:
        x = np.asarray(obs["held"])
        with np.errstate(invalid="ignore"):
            out["held"] = (np.any(~np.isfinite(x) | (x < 0), axis=-1), x.sum(-1))
    return out


def step_check(state):
    """Traced, after every step: any pool NaN/Inf or negative (the records' invariant, every step)."""
    pools = state.cells.pools
    bad = jnp.any(~jnp.isfinite(pools) | (pools < 0))
    if car.active(state.carriers):  # static
        held = state.carriers.held
        bad = bad | jnp.any(~jnp.isfinite(held) | (held < 0))
    return bad


def build(cfg: dict):
    """Config -> :class:`sim.substrates.bio.build.Model` (validated, stability-checked, cast if float32)."""
    from sim.config.validate import check_stability
    from sim.core.engine import cast
    from sim.substrates.bio.build import build as build_preset

    model = build_preset(cfg, dtype=np.float64)
    check_stability(model, cfg)
    if cfg.get("precision", "float64") == "float32":
        import warnings

        with warnings.catch_warnings(), np.errstate(over="ignore"):  # an overflow is refused just below
            warnings.simplefilter("ignore", RuntimeWarning)
            narrow = dataclasses.replace(model, state=cast(model.state, np.float32), params=cast(model.params, np.float32))
        _refuse_overflow(model, narrow)
        model = narrow
    return model


def _refuse_overflow(wide, narrow) -> None:
    """A finite float64 value that float32 cannot hold is a config error (not a NaN at step 0)."""
    import jax

    from sim.errors import ConfigError

    for part in ("state", "params"):
        w = jax.tree_util.tree_flatten_with_path(getattr(wide, part))[0]
        n = jax.tree_util.tree_leaves(getattr(narrow, part))
        for (path, a), b in zip(w, n):
            a, b = np.asarray(a), np.asarray(b)
            if np.issubdtype(a.dtype, np.floating) and (np.isfinite(a) & ~np.isfinite(b)).any():
                where = part + jax.tree_util.keystr(path)
                raise ConfigError("precision", "float32", f"float64: {where} = {float(np.max(np.abs(a))):.3g} "
                                  "does not fit in float32 (|x| <= 3.4e38)")


def validate(cfg: dict) -> None:
    from sim.config.validate import validate as validate_config

    validate_config(cfg)


def to_dataset(model, result, cfg: dict):
    from sim.substrates.bio.results import to_dataset as bio_dataset

    ds = bio_dataset(model, result, cfg)
    rec = result.records
    if "held" in rec:  # several carriers: the carrier each cell makes and what it holds of each
        import xarray as xr

        ds = ds.assign_coords(carrier=car.carrier_names(car.read_config(cfg)))
        for q in car.records("mM"):
            ds[q.name] = xr.Variable(("replicate", "time", "cell") + q.extra_dims, rec[q.name],
                                     {"units": q.unit, "long_name": q.long_name})
    return ds


def summarize(model, result, cfg: dict) -> dict:
    from sim.substrates.bio.results import summarize as bio_summary

    out = bio_summary(model, result, model.state)
    rec = result.records
    if "held" in rec:  # several carriers
        st = result.state
        from sim.io import carrier_outcomes  # the carriers' charge in molecules, their time in s
        from sim.substrates.bio.results import molecules_per_mm_of

        raw = car.summary(st.carriers, rec, np.asarray(result.times), car.carrier_names(car.read_config(cfg)),
                          np.asarray(st.cells.alive))
        out.update(carrier_outcomes(raw, amount_scale=molecules_per_mm_of(model.params), amount_ending="_molecules",
                                    time_ending="_s"))
        err = _currency_balance(model, result)
        out.update(conservation_error_currency=err, conservation_error=max(err, out["conservation_error_adenine"]))
    return out


def _currency_balance(model, result) -> float:
    """The per-cell ATP balance of :func:`sim.substrates.bio.results.summarize` with the charge the
    carriers dissipated (storage decay, conversion and production losses: ATP -> ADP + Pi without
    a ledger line of ``Ledger``) taken out: dATP = produced - spent + AK + CK + in - out - those."""
    st, led, cs = result.state, result.state.ledger, result.state.carriers
    f = lambda x: np.asarray(x, np.float64)  # noqa: E731
    pools, pools0 = f(st.cells.pools), f(model.state.cells.pools)[None]
    spent_all = f(led.spent).sum(-1) + f(led.repair_spent) + f(led.birth_spent) + f(led.switching)
    produced = f(led.produced)
    dissipated = f(cs.decayed) + f(cs.conversion_lost) + f(cs.production_lost)
    booked = (produced - spent_all + f(led.ak_atp) + f(led.ck_atp) + f(led.transported_in) - f(led.transported_out)
              - dissipated)
    scale = np.maximum(produced + spent_all + pools0[..., ATP], 1e-300)
    return float(np.max(np.abs(pools[..., ATP] - pools0[..., ATP] - booked) / scale))


def figures(ds, out_dir):
    from sim.substrates.bio.results import figures as bio_figures

    return bio_figures(ds, out_dir)


def settle(state, params, held, dissipated):
    """Carrier hook (:func:`sim.core.carriers.upkeep`): the ATP pool becomes ``held`` (C, K) mM
    summed over carriers; ``dissipated`` (C,) mM of charge (storage decay, conversion losses) is
    hydrolysed, NTP -> NDP + Pi into the shared ADP and Pi, releasing |dG_ATP| per mol as heat
    (booked like biogenesis: hydrolysis energy and heat up, stored energy down)."""
    pools = state.cells.pools
    abs_dg = jnp.abs(dg_atp_kj(pools[:, ATP], pools[:, ADP], pools[:, PI], params.dg0_kj, params.temperature_k))
    energy = dissipated * abs_dg * params.volume_l
    new_pools = pools.at[:, ATP].set(jnp.sum(held, axis=1)).at[:, ADP].add(dissipated).at[:, PI].add(dissipated)
    led = state.ledger
    led = replace(led, heat_j=led.heat_j + energy, hydrolysis_energy_j=led.hydrolysis_energy_j + energy,
                  stored_energy_j=led.stored_energy_j - energy)
    return replace(state, cells=replace(state.cells, pools=new_pools), ledger=led,
                   carriers=replace(state.carriers, held=held))


def reference(model, replicate: int = 0):
    from sim.substrates.bio.reference import ReferenceBio

    return ReferenceBio(model, replicate=replicate)


def _pool(i: int):
    return lambda state, built: state.cells.pools[:, i]


def _energy_charge(state, built):
    """Energy charge of the total pools (free + the parameters' bound ADP and AMP), as the summary."""
    pools, q = np.asarray(state.cells.pools), built.params
    return energy_charge(pools[:, ATP], pools[:, ADP], pools[:, AMP], xp=np,
                         adp_bound=float(np.asarray(q.adp_bound)), amp_bound=float(np.asarray(q.amp_bound)))


def _chains_active(state, built):
    ch = state.chains
    return np.zeros(np.shape(state.cells.alive), int) if ch is None else np.sum(ch.active, axis=1)


def _proteins_completed(state, built):
    led = state.chain_ledger
    return np.zeros(np.shape(state.cells.alive)) if led is None else led.delivered


def _cell_ledger(state, built):
    """Per cell: its cumulative accounts (``sim.substrates.bio.state.Ledger``) as a dict."""
    led = state.ledger
    columns = {f.name: np.asarray(getattr(led, f.name)) for f in dataclasses.fields(led)}
    rows = np.empty(np.shape(state.cells.alive), object)
    for i in range(rows.shape[0]):
        rows[i] = {name: x[i].tolist() for name, x in columns.items()}
    return rows


def _kind_names(block: str, kinds: str):
    return lambda state, built: np.asarray(getattr(built, kinds), dtype=object)[getattr(state, block).kind]


ENTITIES = (
    EntitySpec("cell", "", (("alive", "cells.alive"), ("stress", "cells.stress"), ("theta", "diff.theta"),
                            ("maintenance", "cells.maintenance"), ("carrier", "carriers.make")),
               # mM: produced/spent (consumers, repair, biogenesis, differentiation moves); work units
               records=(("n_producers", "n_producers"), ("produced", "produced"), ("spent", "spent"),
                        ("work", "work")),
               # mM: the free pools (a row in the order of SPECIES) and each species' column
               derived=(("pools", lambda state, built: state.cells.pools),)
               + tuple((name, _pool(i)) for i, name in enumerate(SPECIES))
               + (("energy_charge", _energy_charge), ("n_active_chains", _chains_active),
                  ("proteins_completed", _proteins_completed), ("ledger", _cell_ledger))),
    EntitySpec("producer", "producers", (("kind", "kind"), ("vmax", "vmax"), ("health", "health"),
                                         ("alive", "alive")), alive="alive",
               derived=(("kind_name", _kind_names("producers", "producer_kinds")),)),
    EntitySpec("consumer", "consumers", (("kind", "kind"), ("vmax", "vmax"), ("km", "km"), ("tier", "tier"),
                                         ("value", "value")),
               # mM of ATP hydrolysed by this consumer; work = value x spent
               derived=(("spent", lambda state, built: state.ledger.spent),
                        ("work", lambda state, built: state.ledger.work),
                        ("kind_name", _kind_names("consumers", "consumer_kinds")))),
    EntitySpec("chain", "chains", (("active", "active"), ("length", "length"), ("made", "made"),
                                   ("tool_wait", "tool_wait")), alive="active"),
)

SUBSTRATE = Substrate(
    name="bio",
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
    params_axes=lambda params: 0,  # a batched study stacks every leaf (edges included)
    step_check=step_check,
    known=creatine_known,
    entities=ENTITIES,
    compartment="cell",
    currency="ATP",
    description="cells on ATP: glucose -> ATP in mitochondria/glycolysis, organelles spend it (mM, s, kJ/mol)",
    differentiation=dif.Hooks(work=lambda s: s.ledger.output, charged=lambda s: s.cells.pools[:, ATP],
                              pay=pay_for_move, alive=lambda s: s.cells.alive),
    # the carriers' payoff: the cell's work rate (every consumer kind, value x ATP spent), as the
    # generic substrate's; a cell whose consumers cannot use the currency it holds does less work
    carriers=car.Hooks(work=lambda s: rowsum(s.ledger.work), settle=settle, alive=lambda s: s.cells.alive,
                       unit="mM"),
)
