"""Build the initial state and parameters of a tissue from the composed config.

This is the one place the config becomes numbers, and both backends start from its output, so
the Mesa reference and the JAX engine begin from identical states. Cell-to-cell heterogeneity is
drawn here from ``numpy.random.default_rng([seed, 0x5EED])`` (shared, not re-drawn per backend).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from sim.constants import FARADAY_C_PER_MOL
from sim.core import carriers as car
from sim.core import differentiation as dif
from sim.core.config import get, num
from sim.errors import ConfigError
from sim.core import chains as ck
from sim.substrates.bio.kernels.thermo import adenylate_equilibrium, ak_ck_equilibrium
from sim.substrates.bio.kernels.translation import no_chain_params
from sim.substrates.bio.params import Edges, Params
from sim.substrates.bio.rules import MAX_MM
from sim.substrates.bio.state import ADP, AMP, ATP, N_SPECIES, SPECIES, Cells, Consumers, Ledger, Producers, State
from sim.topology import build_graph, edge_arrays, file_inputs


@dataclasses.dataclass
class Model:
    """Everything a backend needs: initial state, params, the graph and labels."""

    state: State
    params: Params
    graph: nx.Graph
    producer_kinds: tuple[str, ...]
    consumer_kinds: tuple[str, ...]
    work_units: tuple[str, ...]
    substrate: dict
    seed: int

    @property
    def n_cells(self) -> int:
        return int(self.state.cells.alive.shape[0])


def _get(sub, dotted):
    return get({"substrate": sub}, f"substrate.{dotted}")


def _num(sub, dotted, minimum=None, maximum=None, strict_min=False):
    """A number of the substrate section (``substrate.<dotted>``), through the one config reader."""
    return num({"substrate": sub}, f"substrate.{dotted}", minimum, maximum, strict=strict_min)


def _opt_num(sub, dotted, default, minimum=None, maximum=None, strict_min=False):
    """Like :func:`_num` for a key of the optional mechanisms (bound pools, creatine buffer,
    parallel activation): absent means ``default`` (the mechanism off), present is checked."""
    if _get_or_none(sub, dotted) is None:
        return default
    return _num(sub, dotted, minimum, maximum, strict_min)


def _get_or_none(sub, dotted):
    return get({"substrate": sub}, f"substrate.{dotted}", None)


def _dg0(sub) -> float:
    """dG0' of ATP hydrolysis: negative (hydrolysis releases energy; the preset's -30.5 kJ/mol). A
    positive value would make producers charge ATP against the gradient."""
    v = _num(sub, "thermo.dg0_kj_per_mol")
    if not v < 0:
        raise ConfigError("substrate.thermo.dg0_kj_per_mol", v,
                          "a negative standard free energy (kJ/mol): ATP hydrolysis releases energy")
    return v


def _ceiling_kj(kind_cfg, prefix):
    c = kind_cfg.get("ceiling_kj_per_mol")
    if c == "pmf":
        try:
            n_h = _num(kind_cfg, "n_h", 0, strict_min=True) if "n_h" in kind_cfg else None
        except ConfigError as exc:  # _num names keys under `substrate.`: this one is the kind's
            raise ConfigError(f"{prefix}.n_h", exc.value, exc.allowed) from None
        dp = kind_cfg.get("delta_p_v")
        if n_h is None or not isinstance(dp, (int, float)) or dp <= 0:
            raise ConfigError(f"{prefix}.delta_p_v", dp, "a positive proton-motive force in V with n_h > 0")
        return n_h * FARADAY_C_PER_MOL * float(dp) * 1e-3
    if isinstance(c, bool) or not isinstance(c, (int, float)) or c <= 0:
        raise ConfigError(f"{prefix}.ceiling_kj_per_mol", c, "a positive number (kJ/mol) or 'pmf'")
    return float(c)


def _k_ck(sub) -> float:
    """Apparent creatine kinase constant [ATP][Cr]/([ADP][PCr]) = K_ref [H+] (Lawson & Veech 1979:
    K_ref = 1.66e9 /M at 38 C, ionic strength 0.25, 1 mM free Mg2+; 166 at pH 7.0)."""
    k_ref = _opt_num(sub, "buffer.ck_keq_per_molar", 1.66e9, 0, strict_min=True)
    ph = _opt_num(sub, "buffer.ph", 7.0, 0, 14, strict_min=True)
    return k_ref * 10.0 ** (-ph)


def _buffer_at_equilibrium(state, params):
    """Initial phosphocreatine at equilibrium with the initial adenylates (with the final params,
    so ``params.creatine_total`` overrides start at equilibrium too). Only creatine moves: the
    adenylates keep the configured energy charge; without creatine PCr stays 0."""
    c = np.asarray(params.creatine_total)
    if not np.any(c > 0):
        return state
    pools = state.cells.pools
    a, d = pools[:, ATP], pools[:, ADP]
    r = a / np.maximum(d, 1e-300)
    pcr = np.where(d > 0, c * r / (r + np.asarray(params.k_ck)), c).astype(pools.dtype)
    # the pools' high-energy phosphate now includes PCr: one equilibrium pass leaves them unchanged
    a1, d1, m1, p1 = ak_ck_equilibrium(a, d, pools[:, AMP], pcr, c, np.asarray(params.k_ak), np.asarray(params.k_ck), xp=np)
    pools = pools.copy()
    pools[:, ATP], pools[:, ADP], pools[:, AMP] = a1, d1, m1
    return dataclasses.replace(state, cells=dataclasses.replace(state.cells, pools=pools, pcr=np.asarray(p1, pools.dtype)))


def _lognormal_mult(rng, cv, n):
    if cv <= 0:
        return np.ones(n)
    sigma2 = math.log1p(cv * cv)
    return rng.lognormal(-0.5 * sigma2, math.sqrt(sigma2), n)


def _chains(sub, ckinds, dtype):
    """``substrate.chains`` -> (slots per cell, Params chain fields); absent or ``consumer: null``:
    no chains (the consumer kind keeps its Michaelis-Menten law)."""
    ch = sub.get("chains")
    if ch is None:
        return 0, no_chain_params(dtype)
    if not isinstance(ch, dict):
        raise ConfigError("substrate.chains", ch, "a mapping (the chains section of the substrate preset)")
    kind = ch.get("consumer")
    if kind is None:
        return 0, no_chain_params(dtype)
    if kind not in ckinds:
        raise ConfigError("substrate.chains.consumer", kind, "null or one of the consumer kinds " + ", ".join(ckinds))
    slots = _num(sub, "chains.slots_per_cell", 1)
    if not float(slots).is_integer():
        raise ConfigError("substrate.chains.slots_per_cell", slots, "an integer >= 1")
    mean_len = _num(sub, "chains.mean_length_aa", 1)
    p = lambda v: np.asarray(v, dtype)  # noqa: E731
    fields = dict(
        chain_kind=np.asarray(ckinds.index(kind), np.int32),
        chain_rate=p(_num(sub, "chains.elongation_aa_per_s", 0, strict_min=True)),
        chain_cost_per_unit=p(_num(sub, "chains.atp_per_aa", 0, strict_min=True)),
        chain_p_stop=p(1.0 / mean_len),
        chain_n_max=p(_num(sub, "chains.max_length_aa", 0, strict_min=True)),
        chain_init_rate=p(_num(sub, "chains.initiation_per_s", 0)),
        chain_init_cost=p(_num(sub, "chains.initiation_atp", 0)),
    )
    return int(slots), fields


def _floats_as(tree, dtype):
    """``tree`` with its floating leaves as ``dtype`` (integer and boolean leaves kept)."""
    return jax.tree_util.tree_map(lambda x: x if np.asarray(x).dtype.kind in "iub" else np.asarray(x, dtype), tree)


def build(cfg, dtype=np.float64) -> Model:
    """Config (with ``substrate``, ``topology``, ``seed``, ``dt``) -> :class:`Model`."""
    sub = cfg["substrate"]
    seed = int(cfg.get("seed", 0))
    dt = float(cfg["dt"])
    if not dt > 0:
        raise ConfigError("dt", cfg["dt"], "a time step > 0 (s)")
    # read only by the summary (results.py), after the run: refused here, before anything runs
    _opt_num(sub, "landauer_bits_per_unit", 1.0, 0, strict_min=True)
    graph = build_graph(cfg["topology"], seed=seed)
    n = graph.number_of_nodes()
    src, dst = edge_arrays(graph)
    # a graph file's edge weights (x conductance) and node demands (x the cell's demand): sim.topology
    inputs = file_inputs(graph, src, dst, substrate="bio", conductance_key="substrate.transport.conductance_per_s",
                         demand=True)
    rng = np.random.default_rng([seed, 0x5EED])

    # producers
    pk_cfg = _get(sub, "producers.kinds")
    pkinds = tuple(pk_cfg.keys())
    if not pkinds:
        raise ConfigError("substrate.producers.kinds", {}, "at least one producer kind")
    # slot counts are integers: int() would silently truncate 1.5
    cap = num({"substrate": sub}, "substrate.producers.capacity_per_cell", 1, integer=True)
    birth_kind = _get(sub, "producers.birth_kind")
    if birth_kind not in pkinds:
        raise ConfigError("substrate.producers.birth_kind", birth_kind, "one of " + ", ".join(pkinds))
    counts = {k: num({"substrate": sub}, f"substrate.producers.kinds.{k}.count", 0, integer=True) for k in pkinds}
    fixed = [k for k in pkinds if k != birth_kind]
    n_fixed = sum(counts[k] for k in fixed)
    if n_fixed + counts[birth_kind] > cap:
        raise ConfigError(
            "substrate.producers.capacity_per_cell", cap,
            f"at least the initial producers per cell ({n_fixed + counts[birth_kind]})",
        )
    slot_kind, slot_alive, slot_vmax = [], [], []
    for k in fixed:
        for _ in range(counts[k]):
            slot_kind.append(pkinds.index(k))
            slot_alive.append(True)
            slot_vmax.append(_num(sub, f"producers.kinds.{k}.vmax_mm_per_s", 0))
    for i in range(cap - n_fixed):
        slot_kind.append(pkinds.index(birth_kind))
        slot_alive.append(i < counts[birth_kind])
        slot_vmax.append(_num(sub, f"producers.kinds.{birth_kind}.vmax_mm_per_s", 0))

    def per_kind(name, **kw):
        return np.array([_num(sub, f"producers.kinds.{k}.{name}", **kw) for k in pkinds], dtype)

    ceilings = np.array(
        [_ceiling_kj(pk_cfg[k], f"substrate.producers.kinds.{k}") for k in pkinds], dtype
    )

    # consumers
    ck_cfg = _get(sub, "consumers.kinds")
    ckinds = tuple(ck_cfg.keys())
    if not ckinds:
        raise ConfigError("substrate.consumers.kinds", {}, "at least one consumer kind")
    total = _num(sub, "consumers.demand_total_mm_per_s", 0)
    shares = np.array([_num(sub, f"consumers.kinds.{k}.share", 0) for k in ckinds])
    if shares.sum() <= 0:
        raise ConfigError("substrate.consumers.kinds.*.share", shares.tolist(), "shares summing to > 0")
    tiers = []
    for k in ckinds:
        t = _get(sub, f"consumers.kinds.{k}.tier")
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= 2:
            raise ConfigError(f"substrate.consumers.kinds.{k}.tier", t, "an integer tier 0, 1 or 2")
        tiers.append(t)
    c_vmax = total * shares / shares.sum()
    specialised = []
    for k in ckinds:  # the kinds a cell gives up for producers as theta grows (differentiation)
        flag = ck_cfg[k].get("specialised", False)
        if not isinstance(flag, bool):
            raise ConfigError(f"substrate.consumers.kinds.{k}.specialised", flag, "true or false")
        specialised.append(1.0 if flag else 0.0)
    reserve = _get(sub, "consumers.tier_reserve_mm")
    if (
        not isinstance(reserve, (list, tuple))
        or len(reserve) != 3
        or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 0 for r in reserve)
    ):
        raise ConfigError("substrate.consumers.tier_reserve_mm", reserve, "a list of 3 numbers >= 0 (mM, tiers 0, 1, 2)")
    c_km = np.array([_num(sub, f"consumers.kinds.{k}.km_mm", 0, strict_min=True) for k in ckinds])
    c_value = np.array([_num(sub, f"consumers.kinds.{k}.value", 0) for k in ckinds])
    work_units = tuple(str(ck_cfg[k].get("work_unit", "units")) for k in ckinds)

    # initial pools: adenylates at AK equilibrium for the given energy charge
    n_ad = _num(sub, "initial.adenine_total_mm", 0, MAX_MM, strict_min=True)
    ec = _num(sub, "initial.energy_charge", 0, 1)
    k_ak = _num(sub, "thermo.k_ak", 0, strict_min=True)
    e = 2 * n_ad * ec
    a0, d0, m0 = adenylate_equilibrium(np.float64(e / 2), np.float64(0.0), np.float64(n_ad - e / 2), k_ak, xp=np)
    pools = np.zeros((n, N_SPECIES), dtype)
    pools[:] = [
        _num(sub, "initial.glucose_mm", 0, MAX_MM), float(a0), float(d0), float(m0), _num(sub, "initial.pi_mm", 0, MAX_MM)
    ]

    uptake = _num(sub, "supply.uptake_per_s", 0) * _lognormal_mult(rng, _num(sub, "supply.uptake_cv", 0), n)
    demand_mult = _lognormal_mult(rng, _num(sub, "consumers.demand_cv", 0), n) * inputs.demand
    zeros_c = np.zeros(n, dtype)
    birth_ec_set = _num(sub, "producers.birth_set_energy_charge", 0, 1)
    cells = Cells(
        pools=pools,
        alive=np.ones(n, bool),
        stress=zeros_c.copy(),
        uptake=uptake.astype(dtype),
        demand_mult=demand_mult.astype(dtype),
        maintenance=np.ones(n, dtype),
        # the energy-stress sensor starts unstressed, at its set point (a cell adapted to rest)
        ec_slow=np.full(n, birth_ec_set, dtype),
        pcr=zeros_c.copy(),  # set at creatine kinase equilibrium below, once the params are final
    )
    producers = Producers(
        kind=np.tile(np.array(slot_kind, np.int32), (n, 1)),
        vmax=np.tile(np.array(slot_vmax, dtype), (n, 1)),
        health=np.ones((n, cap), dtype),
        alive=np.tile(np.array(slot_alive, bool), (n, 1)),
    )
    nk = len(ckinds)
    consumers = Consumers(
        kind=np.tile(np.arange(nk, dtype=np.int32), (n, 1)),
        vmax=np.tile(c_vmax.astype(dtype), (n, 1)),
        km=np.tile(c_km.astype(dtype), (n, 1)),
        tier=np.tile(np.array(tiers, np.int32), (n, 1)),
        value=np.tile(c_value.astype(dtype), (n, 1)),
    )
    zk = np.zeros((n, nk), dtype)
    ledger = Ledger(
        produced=zeros_c.copy(), spent=zk.copy(), repair_spent=zeros_c.copy(), birth_spent=zeros_c.copy(),
        work=zk.copy(), substrate_used=zeros_c.copy(), substrate_uptake=zeros_c.copy(),
        transported_in=zeros_c.copy(), transported_out=zeros_c.copy(), lost=np.zeros((n, N_SPECIES), dtype),
        ak_atp=zeros_c.copy(), ck_atp=zeros_c.copy(), substrate_energy_j=zeros_c.copy(), stored_energy_j=zeros_c.copy(),
        heat_j=zeros_c.copy(), hydrolysis_energy_j=zeros_c.copy(), failures=np.zeros(n, np.int32),
        births=np.zeros(n, np.int32), repair_health=zeros_c.copy(), output=zeros_c.copy(), switching=zeros_c.copy(),
    )
    n_slots, chain_fields = _chains(sub, ckinds, dtype)
    chains, chain_ledger = ck.empty(n, n_slots, dtype)
    # every cohort is translating at t = 0 (termination is memoryless: no start-up transient but
    # the few slots that wait for their next initiation)
    chains = dataclasses.replace(chains, active=np.ones((n, n_slots), bool))
    diff_opts = dif.read_config(cfg)
    carrier_opts = car.read_config(cfg)
    diff = jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), dif.init_state(diff_opts, n, seed))
    state = State(cells=cells, producers=producers, consumers=consumers, ledger=ledger, step=np.int32(0),
                  chains=chains, chain_ledger=chain_ledger, diff=diff)

    tr = sub["transport"]
    g = _num(sub, "transport.conductance_per_s", 0)
    loss = _num(sub, "transport.loss_fraction", 0, 1)
    if loss >= 1:
        raise ConfigError("substrate.transport.loss_fraction", loss, "a fraction in [0, 1)")
    perm = np.array([_num(sub, f"transport.permeability.{s}", 0) for s in SPECIES], dtype)
    del tr
    edges = Edges(
        src=src, dst=dst, conductance=(g * inputs.weight).astype(dtype), loss=np.full(src.shape, loss, dtype)
    )
    p = lambda v: np.asarray(v, dtype)  # noqa: E731
    params = Params(
        dt=p(dt),
        temperature_k=p(_num(sub, "temperature_k", 0, strict_min=True)),
        volume_l=p(_num(sub, "volume_l", 0, strict_min=True)),
        dg0_kj=p(_dg0(sub)),
        k_ak=p(k_ak),
        adp_bound=p(_opt_num(sub, "bound.adp_mm", 0.0, 0, MAX_MM)),
        amp_bound=p(_opt_num(sub, "bound.amp_mm", 0.0, 0, MAX_MM)),
        creatine_total=p(_opt_num(sub, "buffer.creatine_total_mm", 0.0, 0, MAX_MM)),
        k_ck=p(_k_ck(sub)),
        external_substrate=p(_num(sub, "supply.external_glucose_mm", 0, MAX_MM)),
        supply_scale=p(1.0),
        demand_scale=p(1.0),
        uptake_scale=p(1.0),
        parallel_activation=p(_opt_num(sub, "supply.parallel_activation", 0.0, 0, 2)),
        p_yield=per_kind("yield", minimum=0, strict_min=True),
        p_substrate_dg_kj=per_kind("substrate_dg_kj_per_mol"),
        p_ceiling_kj=ceilings,
        p_k_s=per_kind("k_glucose_mm", minimum=0, strict_min=True),
        p_k_adp=per_kind("k_adp_mm", minimum=0, strict_min=True),
        p_k_pi=per_kind("k_pi_mm", minimum=0, strict_min=True),
        p_damage=per_kind("damage_per_s", minimum=0),
        hazard0=p(_num(sub, "producers.hazard_per_s", 0)),
        hazard_beta=p(_num(sub, "producers.hazard_health_exponent", 0)),
        repair_rate=p(_num(sub, "producers.repair_per_s", 0)),
        repair_cost=p(_num(sub, "producers.repair_cost_mm", 0)),
        birth_rate=p(_num(sub, "producers.birth_per_s", 0)),
        birth_ec_set=p(birth_ec_set),
        birth_ec_span=p(_num(sub, "producers.birth_span_energy_charge", 0, 1, strict_min=True)),
        birth_tau=p(_num(sub, "producers.birth_sensor_tau_s", 0, strict_min=True)),
        birth_cost=p(_num(sub, "producers.birth_cost_mm", 0)),
        tier_reserve=np.asarray([float(r) for r in reserve], dtype),
        c_specialised=np.asarray(specialised, dtype),
        stress_threshold=p(_num(sub, "cell.stress_threshold", 0, 1)),
        stress_death_s=p(_num(sub, "cell.stress_death_s", 0, strict_min=True)),
        stress_recovery=p(_num(sub, "cell.stress_recovery_per_s", 0)),
        **chain_fields,
        permeability=perm,
        conductance_scale=p(1.0),
        edges=edges,
        diff=_floats_as(dif.init_params(diff_opts, src, dst, n), dtype),
        carriers=_floats_as(car.init_params(carrier_opts, src, dst, n), dtype),
    )
    overrides = cfg.get("params") or {}
    for name, value in overrides.items():
        if name not in {f.name for f in dataclasses.fields(Params)} or name in ("edges", "diff", "carriers"):
            raise ConfigError(f"params.{name}", value, "a scalar parameter name of sim.substrates.bio.params.Params")
        params = dataclasses.replace(params, **{name: p(value)})
    state = _buffer_at_equilibrium(state, params)
    # the charged pool is split over the carriers once the pools are final (creatine kinase
    # equilibrium moves ATP): each cell holds its ATP in the carrier it makes
    carriers = car.init_state(carrier_opts, state.cells.pools[:, ATP], seed)
    state = dataclasses.replace(state, carriers=_floats_as(carriers, dtype))
    return Model(
        state=state, params=params, graph=graph, producer_kinds=pkinds, consumer_kinds=ckinds,
        work_units=work_units, substrate=dict(sub), seed=seed,
    )


def to_device(tree):
    """numpy PyTree -> jax arrays (keeps dtypes)."""
    import jax

    return jax.tree_util.tree_map(jnp.asarray, tree)
