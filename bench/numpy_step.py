"""A plain, vectorised **numpy** step of the biology tissue: the second baseline of ``make bench``.

This is what a user would write instead of the JAX engine: the same equations, one numpy
expression per array operation, no JAX in the arithmetic. It is written from the documented
equations of ``sim/substrates/bio/kernels/*.py`` and mirrors them **process by process** (one
function per entry of ``sim.substrates.bio.kernels.step.PROCESSES``, same order, same operation
order inside each, so a change to a kernel has one obvious place to be mirrored here):

1 ``metabolism`` (uptake, production with the thermodynamic brake, consumption served tier by
tier with the ribosome-cohort chains quoting in their tier, repair, damage; ``metabolism.py``,
``translation.py``, ``sim/core/chains.py``) -> 2 ``transport`` (``transport.py``; the segment sum
is ``np.bincount`` per column) -> 3 ``adenylate_kinase`` (``thermo.adenylate_equilibrium``) ->
4 ``producer_failure`` -> 5 ``producer_biogenesis`` -> 6 ``cell_stress`` (``fate.py``) -> step + 1.

Random draws. ``draws="threefry"`` (default) reproduces the engine's stream exactly: ``sim.rng``
derives every draw as ``fold_in(fold_in(fold_in(key, step), purpose), id)`` with JAX's
Threefry-2x32 (20 rounds), and its two output words become a 53-bit uniform; :func:`threefry2x32`
is that hash in numpy (checked bit for bit against ``jax.random`` in
``tests/test_numpy_baseline.py``), so failures, births, initiations and terminations happen at the
same steps as in the engine and the whole state agrees to ~1e-13. ``draws="pcg64"`` takes the
uniforms from ``numpy.random.Generator.random`` instead (what a numpy user would do: a different
but equally distributed stream, much cheaper than a counter-based hash); it cannot be compared
number for number with the engine, only timed.

Scope: the biology preset as shipped (chains without tool calls or memory modules, ``c1 = 0``: a
cost per amino acid constant in the length, ``l0 = 0``; no chain may be waiting on a tool, which
:meth:`NumpyTissue.__init__` checks). Of the optional mechanisms being added to the kernels, parallel
activation (``Params.parallel_activation``) and bound ADP/AMP (``Params.adp_bound``/``amp_bound``, in
the energy charge) are mirrored when the parameters exist, and so is differentiation with a fixed
theta (``State.diff``: the capacity factors and the ``output`` ledger); the creatine kinase buffer
(``creatine_total > 0``) and a moving theta are not, and are refused. The chains' one draw per slot is computed once per step and
serves initiation and termination (``sim.core.chains``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sim.constants import R_J_PER_MOL_K
from sim.core import rare_events  # the one-draw-per-cell failure sampler, called with numpy arrays
from sim.substrates.bio.state import ADP, AMP, ATP, GLC, PI

N_TIERS = 3  # sim.substrates.bio.kernels.metabolism.N_TIERS
TINY_MM = 1e-12  # sim.substrates.bio.kernels.thermo.TINY_MM
# sim.rng purposes and sim.core.chains purposes (never renumbered there)
PRODUCER_FAILURE_CELL, PRODUCER_BIRTH, CHAIN_DRAW = 3, 2, 44

_U32 = np.uint32
_ROT = ((13, 15, 26, 6), (17, 29, 16, 24))


# ------------------------------------------------------------------------------------- random draws
def threefry2x32(k0, k1, x0, x1):
    """JAX's Threefry-2x32 block (20 rounds, key injection every 4) on uint32 arrays."""
    k0, k1 = _U32(k0), _U32(k1)
    ks = (k0, k1, _U32(k0 ^ k1 ^ _U32(0x1BD11BDA)))
    x0 = np.add(np.asarray(x0, _U32), ks[0], dtype=_U32)
    x1 = np.add(np.asarray(x1, _U32), ks[1], dtype=_U32)
    tmp = np.empty_like(x1)
    for i in range(5):
        for r in _ROT[i % 2]:
            np.add(x0, x1, out=x0)
            np.left_shift(x1, _U32(r), out=tmp)
            np.right_shift(x1, _U32(32 - r), out=x1)
            np.bitwise_or(x1, tmp, out=x1)
            np.bitwise_xor(x1, x0, out=x1)
        np.add(x0, ks[(i + 1) % 3], out=x0)
        np.add(x1, _U32(ks[(i + 2) % 3] + _U32(i + 1)), out=x1)
    return x0, x1


def fold_in(key, data):
    """``jax.random.fold_in`` of a Threefry key (two uint32 words) with uint32 ``data`` (any shape)."""
    data = np.asarray(data, _U32)
    y0, y1 = threefry2x32(key[0], key[1], np.zeros(data.shape or (1,), _U32), data.reshape(data.shape or (1,)))
    return (y0, y1) if data.shape else (y0[0], y1[0])


def key_words(key) -> tuple[int, int]:
    """The two uint32 words of a JAX Threefry key (raw ``uint32[2]`` or a typed key) as ints."""
    try:
        import jax

        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
    except (ImportError, AttributeError):
        pass
    w = np.asarray(key, _U32).reshape(2)
    return int(w[0]), int(w[1])


class ThreefryDraws:
    """The engine's uniforms (``sim.rng.uniforms``) for one replicate key, in numpy."""

    def __init__(self, key):
        self.key = tuple(_U32(w) for w in key_words(key))
        self._ids: dict[int, np.ndarray] = {}

    def __call__(self, step: int, purpose: int, n: int) -> np.ndarray:
        ids = self._ids.get(n)
        if ids is None:
            ids = self._ids[n] = np.arange(n, dtype=_U32)
        k = fold_in(self.key, _U32(step))
        k = fold_in(k, _U32(purpose))
        w0, w1 = threefry2x32(k[0], k[1], np.zeros(n, _U32), ids)
        # sim.rng._words_to_uniform (float64): 27 + 26 bits
        return ((w0 >> _U32(5)).astype(np.float64) * 67108864.0 + (w1 >> _U32(6))) * (1.0 / 9007199254740992.0)


class PCG64Draws:
    """Uniforms from ``numpy.random.Generator`` (another stream with the same distribution)."""

    def __init__(self, seed: int = 0):
        self.gen = np.random.default_rng(seed)

    def __call__(self, step: int, purpose: int, n: int) -> np.ndarray:
        return self.gen.random(n)


# ------------------------------------------------------------------------------------- helpers
def safe_div(a, b):
    """a / b where b > 0, else 0 (``metabolism._safe_div``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)


def rowsum(x):
    """Sum over the per-cell slot axis (axis 1). ``einsum`` rather than ``x.sum(axis=1)``: numpy's
    reduction over a short last axis is ~4x slower than einsum's loop on (10,000, 16) arrays."""
    if x.dtype == bool:
        return np.count_nonzero(x, axis=1)
    return np.einsum("ij->i", x)


def rt_kj(temperature_k):
    return R_J_PER_MOL_K * temperature_k * 1e-3


def dg_atp_kj(atp, adp, pi, dg0_kj, temperature_k):
    """dG = dG0' + RT ln([ADP][Pi]/[ATP]) in M (``thermo.dg_atp_kj``)."""
    ratio = (np.maximum(adp, TINY_MM) * 1e-3) * (np.maximum(pi, TINY_MM) * 1e-3)
    ratio = ratio / (np.maximum(atp, TINY_MM) * 1e-3)
    return dg0_kj + rt_kj(temperature_k) * np.log(ratio)


def energy_charge(atp, adp, amp, adp_bound=0.0, amp_bound=0.0):
    """Energy charge of the total pools (free + bound ADP and AMP; ``thermo.energy_charge``)."""
    adp = adp + adp_bound
    total = atp + adp + (amp + amp_bound)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (atp + 0.5 * adp) / np.where(total > 0, total, 1.0), 0.0)


def adenylate_equilibrium(atp, adp, amp, k_ak):
    """Closed-form adenylate-kinase equilibrium (``thermo.adenylate_equilibrium``)."""
    n = atp + adp + amp
    e = np.clip(2.0 * atp + adp, 0.0, 2.0 * n)
    c = e * (2.0 * n - e)
    disc = np.maximum(n * n - (1.0 - 4.0 * k_ak) * c, 0.0)
    denom = n + np.sqrt(disc)
    d = safe_div(c, denom)
    a = 0.5 * (e - d)
    m = np.maximum(n - a - d, 0.0)
    return a, d, m


# ------------------------------------------------------------------------------------- the tissue
_LEDGER = ("produced", "spent", "repair_spent", "birth_spent", "work", "substrate_used", "substrate_uptake",
           "transported_in", "transported_out", "lost", "ak_atp", "substrate_energy_j", "stored_energy_j",
           "heat_j", "hydrolysis_energy_j", "failures", "births", "repair_health")
_CHAIN_LEDGER = ("spent", "elongation_spent", "init_spent", "units", "initiated", "delivered", "delivered_units")


class NumpyTissue:
    """One replicate of a biology tissue stepped in numpy (mutable arrays, updated in place).

    ``state`` and ``params``: the built ``State`` / ``Params`` (numpy or JAX arrays, unbatched);
    ``key``: the replicate's key (``sim.rng.replicate_keys(seed, 1, r)[0]``) for ``draws="threefry"``,
    or ``draws="pcg64"`` with ``seed``."""

    def __init__(self, state, params, key=None, draws: str = "threefry", seed: int = 0):
        g = lambda x: np.array(x, copy=True)  # noqa: E731
        f = lambda x: float(np.asarray(x))  # noqa: E731
        import jax  # only to copy the template PyTree to host arrays

        self._template = jax.tree_util.tree_map(np.asarray, jax.device_get(state))
        c = state.cells
        self.pools, self.alive, self.uptake = g(c.pools).astype(np.float64), g(c.alive), g(c.uptake)
        self.demand_mult, self.maintenance = g(c.demand_mult), g(c.maintenance)
        self.stress, self.ec_slow = g(c.stress), g(c.ec_slow)
        pr = state.producers
        self.p_kind, self.p_vmax, self.health, self.p_alive = g(pr.kind), g(pr.vmax), g(pr.health), g(pr.alive)
        co = state.consumers
        self.c_kind, self.c_vmax, self.c_km, self.c_tier, self.c_value = (g(co.kind), g(co.vmax), g(co.km),
                                                                           g(co.tier), g(co.value))
        self.led = {k: g(getattr(state.ledger, k)) for k in _LEDGER}
        ch = state.chains
        self.has_chains = ch is not None and np.shape(ch.active)[-1] > 0
        if self.has_chains:
            self.ch_active, self.ch_length, self.ch_made = g(ch.active), g(ch.length), g(ch.made)
            if np.any(np.asarray(ch.tool_wait) != 0):
                raise ValueError("numpy baseline: chains waiting on tools are not modelled (biology has no tools)")
            self.ch_led = {k: g(getattr(state.chain_ledger, k)) for k in _CHAIN_LEDGER}
        self.step_no = int(np.asarray(state.step))

        p = params
        self.dt, self.temperature_k, self.volume_l, self.dg0_kj = f(p.dt), f(p.temperature_k), f(p.volume_l), f(p.dg0_kj)
        self.k_ak, self.external_substrate = f(p.k_ak), f(p.external_substrate)
        self.supply_scale, self.demand_scale, self.uptake_scale = f(p.supply_scale), f(p.demand_scale), f(p.uptake_scale)
        self.p_yield, self.p_substrate_dg_kj = g(p.p_yield), g(p.p_substrate_dg_kj)
        self.p_ceiling_kj, self.p_k_s, self.p_k_adp, self.p_k_pi = g(p.p_ceiling_kj), g(p.p_k_s), g(p.p_k_adp), g(p.p_k_pi)
        self.p_damage = g(p.p_damage)
        for name in ("hazard0", "hazard_beta", "repair_rate", "repair_cost", "birth_rate", "birth_ec_set",
                     "birth_ec_span", "birth_tau", "birth_cost", "stress_threshold", "stress_death_s",
                     "stress_recovery", "conductance_scale", "chain_rate", "chain_cost_per_unit", "chain_p_stop",
                     "chain_n_max", "chain_init_rate", "chain_init_cost"):
            setattr(self, name, f(getattr(p, name)))
        self.chain_kind = int(np.asarray(p.chain_kind))
        # optional mechanisms being added to the kernels (absent or off: the arithmetic above is exact)
        opt = lambda name: float(np.asarray(getattr(p, name, 0.0)))  # noqa: E731
        self.parallel_activation, self.adp_bound, self.amp_bound = (opt("parallel_activation"), opt("adp_bound"),
                                                                    opt("amp_bound"))
        if opt("creatine_total") > 0:
            raise NotImplementedError("numpy baseline: the creatine kinase buffer (creatine_total > 0) is not mirrored")
        # differentiation (sim.core.differentiation), when the state carries it: theta fixed in a run
        # (rule "fixed"); production x (2 theta)^alpha, specialised consumers x (2 (1 - theta))^alpha,
        # and their work booked as ``ledger.output``
        diff = getattr(state, "diff", None)
        n_cells = self.pools.shape[0]
        self.prod_factor = np.ones((n_cells, 1))
        self.work_factor = np.ones_like(self.c_vmax)
        self.specialised = None
        if diff is not None:
            dp = p.diff
            if int(np.asarray(dp.rule)) != 0:
                raise NotImplementedError("numpy baseline: differentiation with a moving theta is not mirrored")
            theta, alpha = np.asarray(diff.theta, np.float64), float(np.asarray(dp.alpha))
            self.specialised = np.asarray(p.c_specialised)[self.c_kind] > 0
            self.prod_factor = ((2.0 * theta) ** alpha)[:, None]
            self.work_factor = np.where(self.specialised, ((2.0 * (1.0 - theta)) ** alpha)[:, None], 1.0)
            if "output" in {f.name for f in dataclasses.fields(state.ledger)}:
                self.led["output"] = g(state.ledger.output)
        self.tier_reserve, self.permeability = g(p.tier_reserve), g(p.permeability)
        e = p.edges
        self.src, self.dst = g(e.src).astype(np.intp), g(e.dst).astype(np.intp)
        self.g_edge, self.e_loss = g(e.conductance), g(e.loss)
        self._idx = np.concatenate([self.src, self.dst])

        # per-slot lookups of per-kind vectors (``metabolism.per_slot``); kinds never change in a run
        self.inv_yield_slot = (1.0 / self.p_yield)[self.p_kind]
        self.abs_sub_dg_slot = np.abs(self.p_substrate_dg_kj)[self.p_kind]
        self.reserve_slot = self.tier_reserve[self.c_tier]
        # supply_scale x parallel activation demand_scale ** a (capacity.supply_activation; 1 when a = 0)
        # (C, 1): supply_scale x parallel activation x the differentiation factor (capacity.producer_scale)
        self.p_scale = (self.supply_scale * self.demand_scale ** self.parallel_activation) * self.prod_factor
        n_kinds = self.p_yield.shape[0]
        self._kind_flat = np.arange(self.p_kind.shape[0])[:, None] * n_kinds + self.p_kind
        if draws not in ("threefry", "pcg64"):
            raise ValueError(f"draws={draws!r}: 'threefry' or 'pcg64'")
        self.draw = ThreefryDraws(key) if draws == "threefry" else PCG64Draws(seed)

    # ------------------------------------------------------------------ 1 metabolism
    def _chain_params(self, a, is_chain, vmax_c):
        """``translation.chain_params`` (no tools, no memory module, c1 = 0, l0 = 0)."""
        n_slots = self.ch_active.shape[1]
        ap = np.maximum(a[:, None] - self.reserve_slot, 0.0)
        sat = rowsum(np.where(is_chain, ap / (self.c_km + ap), 0.0))
        v = rowsum(np.where(is_chain, vmax_c, 0.0))
        r_max = self.chain_rate
        c0 = v / (n_slots * r_max) if r_max > 0 else np.zeros_like(v)
        cohort = c0 / self.chain_cost_per_unit
        rate = np.where(self.alive, r_max * sat, 0.0)
        init_rate = np.where(self.alive, self.chain_init_rate * sat, 0.0)
        init_cost = self.chain_init_cost * cohort
        return rate, c0, init_rate, init_cost, cohort

    def _chain_quote(self, rate, c0, init_rate, init_cost, u):
        """``chains.chain_demand``: what the chains would spend this step without a budget."""
        start = ~self.ch_active & (u < -np.expm1(-init_rate[:, None] * self.dt))
        active = self.ch_active | start
        made = np.where(start, 0.0, self.ch_made)
        delta = np.where(active, np.minimum((rate * self.dt)[:, None], self.chain_n_max - made), 0.0)
        delta = np.maximum(delta, 0.0)
        return rowsum(c0[:, None] * delta) + rowsum(np.where(start, init_cost[:, None], 0.0))

    def _chain_step(self, rate, c0, init_rate, init_cost, u, budget):
        """``chains.chain_step`` with a budget (c1 = 0: cost ``c0`` per unit); returns (spent, units).
        ``u``: the one draw per slot (initiation, then what is left of it for termination)."""
        dt = self.dt
        p_init = -np.expm1(-init_rate[:, None] * dt)
        start = ~self.ch_active & (u < p_init)
        init_c = np.where(start, init_cost[:, None], 0.0)
        start = start & (np.cumsum(init_c, axis=1) <= budget[:, None])
        init_c = np.where(start, init_cost[:, None], 0.0)
        budget = budget - rowsum(init_c)
        active = self.ch_active | start
        with np.errstate(invalid="ignore", divide="ignore"):
            u = np.where(start, u / np.where(p_init > 0, p_init, 1.0), u)
        length = np.where(start, 0.0, self.ch_length)
        made = np.where(start, 0.0, self.ch_made)
        grow = active  # no tool waits
        delta = np.where(grow, np.minimum((rate * dt)[:, None], self.chain_n_max - made), 0.0)
        delta = np.maximum(delta, 0.0)
        demand = rowsum(c0[:, None] * delta)
        avail = np.maximum(budget, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            phi = np.where(demand > avail, avail / np.where(demand > 0, demand, 1.0), 1.0)
        delta = delta * phi[:, None]
        el_cost = c0[:, None] * delta
        length = length + delta
        made = made + delta
        stop = grow & (delta > 0) & (u < -np.expm1(delta * math.log1p(-self.chain_p_stop)))
        done = active & ((made >= self.chain_n_max) | stop)
        delivered_units = np.where(done, made, 0.0)
        self.ch_active = active & ~done
        self.ch_length = np.where(done, 0.0, length)
        self.ch_made = np.where(done, 0.0, made)
        spent_el, spent_init = rowsum(el_cost), rowsum(init_c)
        spent = spent_el + spent_init
        units = rowsum(delta)
        cl = self.ch_led
        cl["spent"] += spent
        cl["elongation_spent"] += spent_el
        cl["init_spent"] += spent_init
        cl["units"] += units
        cl["initiated"] += rowsum(start)
        cl["delivered"] += rowsum(done)
        cl["delivered_units"] += rowsum(delivered_units)
        return spent, units

    def metabolism(self):
        dt = self.dt
        pools, alive = self.pools, self.alive
        s, a, d, pi = pools[:, GLC], pools[:, ATP], pools[:, ADP], pools[:, PI]
        dg = dg_atp_kj(a, d, pi, self.dg0_kj, self.temperature_k)
        abs_dg = np.abs(dg)

        uptake = np.where(alive, self.uptake_scale * self.uptake * (self.external_substrate - s) * dt, 0.0)
        uptake = np.maximum(uptake, -s)

        # production: J_p = V_p h_p S/(K_S+S) D/(K_D+D) Pi/(K_P+Pi) brake_p(dG)
        br = np.maximum(0.0, 1.0 - np.exp((abs_dg[:, None] - self.p_ceiling_kj[None, :]) / rt_kj(self.temperature_k)))
        kf = ((s[:, None] / (self.p_k_s + s[:, None])) * (d[:, None] / (self.p_k_adp + d[:, None]))
              * (pi[:, None] / (self.p_k_pi + pi[:, None])) * br)
        rf = self.p_scale * kf  # rate per unit capacity and health of each kind (metabolism.rate_factors)
        factor = rf.ravel().take(self._kind_flat)  # per_slot: rf[c, kind[c, p]]
        on = self.p_alive & alive[:, None]
        j = self.p_vmax * self.health  # V h factor, zero where off
        j *= factor
        np.copyto(j, 0.0, where=~on)
        want_atp = rowsum(j) * dt
        glc_rate = j * self.inv_yield_slot
        want_glc = rowsum(glc_rate) * dt
        limit = np.minimum(np.minimum(safe_div(d, want_atp), safe_div(pi, want_atp)), safe_div(s, want_glc))
        f_prod = np.where(want_atp > 0, np.minimum(1.0, limit), 0.0)
        made_p = j * dt
        made_p *= f_prod[:, None]
        made = rowsum(made_p)
        glc_p = np.multiply(made_p, self.inv_yield_slot, out=glc_rate)
        glc_used = rowsum(glc_p)
        substrate_energy = rowsum(np.multiply(glc_p, self.abs_sub_dg_slot, out=glc_p)) * self.volume_l

        # consumption: u_j = V_j A'/(K_j + A'), A' = max(A - R_tier, 0), served tier by tier
        ap = np.maximum(a[:, None] - self.reserve_slot, 0.0)
        vmax_c = self.demand_scale * self.demand_mult[:, None] * self.c_vmax * self.work_factor
        u = np.where(alive[:, None], vmax_c * ap / (self.c_km + ap), 0.0)
        saturated0 = rowsum(np.where(alive[:, None] & (self.c_tier == 0), vmax_c, 0.0))
        want = u * dt
        if self.has_chains:
            is_chain = self.c_kind == self.chain_kind
            rate, c0, init_rate, init_cost, cohort = self._chain_params(a, is_chain, vmax_c)
            u_chain = self.draw(self.step_no, CHAIN_DRAW, self.ch_active.size).reshape(self.ch_active.shape)
            chain_want = self._chain_quote(rate, c0, init_rate, init_cost, u_chain)
            want = np.where(is_chain, chain_want[:, None], want)
        served = np.zeros_like(want)
        rest = a
        tier = self.c_tier
        for t in range(N_TIERS):
            in_t = tier == t
            want_t = rowsum(np.where(in_t, want, 0.0))
            frac = np.where(want_t > rest, safe_div(rest, want_t), 1.0)
            served = np.where(in_t, want * frac[:, None], served)
            rest = np.maximum(rest - frac * want_t, 0.0)
        work = served * self.c_value
        if self.has_chains:
            share = rowsum(np.where(is_chain, served, 0.0))
            budget = np.where(share < chain_want, share, np.inf)
            chain_spent, units = self._chain_step(rate, c0, init_rate, init_cost, u_chain, budget)
            served = np.where(is_chain, chain_spent[:, None], served)
            work = np.where(is_chain, (units * cohort)[:, None], work)
        tier0 = rowsum(np.where(tier == 0, served, 0.0))
        self.maintenance = np.where(saturated0 > 0, safe_div(tier0, saturated0 * dt), 1.0)

        # repair after all consumers
        repair_want_h = 1.0 - self.health  # repair_rate (1 - h) dt on living producers
        repair_want_h *= self.repair_rate
        repair_want_h *= dt
        np.copyto(repair_want_h, 0.0, where=~self.p_alive)
        repair_cost = self.repair_cost * rowsum(repair_want_h)
        f_rep = np.where(repair_cost > rest, safe_div(rest, repair_cost), 1.0)
        repair_spent = repair_cost * f_rep
        repair_health = rowsum(repair_want_h) * f_rep

        spent_total = rowsum(served) + repair_spent
        new = pools.copy()
        new[:, GLC] += uptake - glc_used
        new[:, ATP] += made - spent_total
        new[:, ADP] += spent_total - made
        new[:, PI] += spent_total - made
        self.pools = np.maximum(new, 0.0)

        hydrolysis_energy = spent_total * abs_dg * self.volume_l
        stored_energy = made * abs_dg * self.volume_l
        L = self.led
        L["produced"] += made
        L["spent"] += served
        L["repair_spent"] += repair_spent
        L["work"] += work
        L["substrate_used"] += glc_used
        L["substrate_uptake"] += uptake
        L["substrate_energy_j"] += substrate_energy
        L["stored_energy_j"] += stored_energy - hydrolysis_energy
        L["heat_j"] += (substrate_energy - stored_energy) + hydrolysis_energy
        L["hydrolysis_energy_j"] += hydrolysis_energy
        L["repair_health"] += repair_health
        if "output" in L:
            L["output"] += rowsum(np.where(self.specialised, work, 0.0))
        # repair and wear: h + r dt f_rep (1 - h) - damage load dt with the load j f_prod / V =
        # rf h f_prod, as h (1 - wear) + mend (1 - h) (metabolism.health_update)
        wear = (self.p_damage * rf) * (f_prod * dt)[:, None]
        mend = (self.repair_rate * dt) * f_rep
        health = self.health * (1.0 - wear.ravel().take(self._kind_flat))
        health += mend[:, None] * (1.0 - self.health)
        np.clip(health, 0.0, 1.0, out=health)
        np.copyto(self.health, health, where=self.p_alive)

    # ------------------------------------------------------------------ 2 transport
    def transport(self):
        n = self.pools.shape[0]
        pools, src, dst = self.pools, self.src, self.dst
        open_ = self.alive[src] & self.alive[dst]
        g = np.where(open_, self.g_edge * self.conductance_scale * self.dt, 0.0)
        j = g[:, None] * self.permeability[None, :] * (pools[src] - pools[dst])
        fwd = np.maximum(j, 0.0)
        back = np.maximum(-j, 0.0)
        keep = (1.0 - self.e_loss)[:, None]
        leak = 1.0 - keep
        at_src = np.concatenate([keep * back - fwd, fwd[:, ATP, None], keep[:, 0, None] * back[:, ATP, None], leak * fwd], axis=1)
        at_dst = np.concatenate([keep * fwd - back, back[:, ATP, None], keep[:, 0, None] * fwd[:, ATP, None], leak * back], axis=1)
        both = np.concatenate([at_src, at_dst])
        booked = np.stack([np.bincount(self._idx, weights=both[:, k], minlength=n) for k in range(both.shape[1])], axis=1)
        s = pools.shape[1]
        L = self.led
        L["transported_in"] += booked[:, s + 1]
        L["transported_out"] += booked[:, s]
        L["lost"] += booked[:, s + 2:]
        self.pools = pools + booked[:, :s]

    # ------------------------------------------------------------------ 3 adenylate kinase
    def adenylate_kinase(self):
        pools, alive = self.pools, self.alive
        a, d, m = adenylate_equilibrium(pools[:, ATP], pools[:, ADP], pools[:, AMP], self.k_ak)
        a = a * alive + pools[:, ATP] * ~alive
        d = d * alive + pools[:, ADP] * ~alive
        m = m * alive + pools[:, AMP] * ~alive
        self.led["ak_atp"] += a - pools[:, ATP]
        new = pools.copy()
        new[:, ATP], new[:, ADP], new[:, AMP] = a, d, m
        self.pools = new

    # ------------------------------------------------------------------ 4 producer failure
    def producer_failure(self):
        # one draw per cell; the bound rules out almost every cell, the few candidates are resolved
        # exactly by the same sampler as the engine's (sim.core.rare_events.pattern, numpy arithmetic)
        c, p = self.p_alive.shape
        u = self.draw(self.step_no, PRODUCER_FAILURE_CELL, c)
        h_min = np.where(self.p_alive, self.health, 1.0).min(axis=1)
        bound = rare_events.bound_probability(p * self.hazard0 * np.exp(self.hazard_beta * (1.0 - h_min)), self.dt, xp=np)
        rows = np.nonzero(u < bound)[0]
        if rows.size == 0:
            return
        alive = self.p_alive[rows]
        rates = np.where(alive, self.hazard0 * np.exp(self.hazard_beta * (1.0 - self.health[rows])), 0.0)
        fails = rare_events.pattern(u[rows], rates, self.dt, xp=np)
        self.led["failures"][rows] += fails.sum(axis=1)
        self.p_alive[rows] = alive & ~fails

    # ------------------------------------------------------------------ 5 biogenesis
    def producer_biogenesis(self):
        pools, alive = self.pools, self.alive
        c, p = self.p_alive.shape
        u = self.draw(self.step_no, PRODUCER_BIRTH, c)
        ec = energy_charge(pools[:, ATP], pools[:, ADP], pools[:, AMP], self.adp_bound, self.amp_bound)
        alpha = -math.expm1(-self.dt / self.birth_tau)
        ec_slow = np.where(alive, self.ec_slow + alpha * (ec - self.ec_slow), self.ec_slow)
        stress = np.clip((self.birth_ec_set - ec_slow) / self.birth_ec_span, 0.0, 1.0)
        p_birth = -np.expm1(-(self.birth_rate * stress) * self.dt)
        free = ~self.p_alive
        born = alive & free.any(axis=1) & (pools[:, ATP] >= self.birth_cost) & (u < p_birth)
        slot = np.argmax(free, axis=1)
        new_mask = born[:, None] & (np.arange(p)[None, :] == slot[:, None])
        cost = np.where(born, self.birth_cost, 0.0)
        abs_dg = np.abs(dg_atp_kj(pools[:, ATP], pools[:, ADP], pools[:, PI], self.dg0_kj, self.temperature_k))
        energy = cost * abs_dg * self.volume_l
        new = pools.copy()
        new[:, ATP] += -cost
        new[:, ADP] += cost
        new[:, PI] += cost
        L = self.led
        L["births"] += born
        L["birth_spent"] += cost
        L["heat_j"] += energy
        L["hydrolysis_energy_j"] += energy
        L["stored_energy_j"] -= energy
        self.p_alive = self.p_alive | new_mask
        self.health = np.where(new_mask, 1.0, self.health)
        self.pools, self.ec_slow = new, ec_slow

    # ------------------------------------------------------------------ 6 cell stress and death
    def cell_stress(self):
        alive = self.alive
        stressed = self.maintenance < self.stress_threshold
        stress = np.where(stressed, self.stress + self.dt, np.maximum(self.stress - self.stress_recovery * self.dt, 0.0))
        self.stress = np.where(alive, stress, self.stress)
        self.alive = alive & ~(alive & (self.stress >= self.stress_death_s))
        self.p_alive = self.p_alive & self.alive[:, None]

    # ------------------------------------------------------------------ the step
    PROCESSES = ("metabolism", "transport", "adenylate_kinase", "producer_failure", "producer_biogenesis",
                 "cell_stress")

    def step(self):
        self.metabolism()
        self.transport()
        self.adenylate_kinase()
        self.producer_failure()
        self.producer_biogenesis()
        self.cell_stress()
        self.step_no += 1

    def run(self, n: int):
        for _ in range(int(n)):
            self.step()
        return self

    def state(self):
        """The current state as the engine's numpy ``State`` (fields the step never changes are the
        initial ones)."""
        t = self._template
        r = dataclasses.replace
        cells = r(t.cells, pools=self.pools, alive=self.alive, stress=self.stress, maintenance=self.maintenance,
                  ec_slow=self.ec_slow)
        prod = r(t.producers, kind=self.p_kind, vmax=self.p_vmax, health=self.health, alive=self.p_alive)
        led_t = t.ledger
        led = r(led_t, **{k: np.asarray(v, np.asarray(getattr(led_t, k)).dtype) for k, v in self.led.items()})
        kw = {}
        if self.has_chains:
            kw["chains"] = r(t.chains, active=self.ch_active, length=self.ch_length, made=self.ch_made)
            cl_t = t.chain_ledger
            kw["chain_ledger"] = r(cl_t, **{k: np.asarray(v, np.asarray(getattr(cl_t, k)).dtype)
                                            for k, v in self.ch_led.items()})
        return r(t, cells=cells, producers=prod, ledger=led, step=np.asarray(self.step_no, np.asarray(t.step).dtype),
                 **kw)
