"""Mesa agents of a tissue: cells (graph nodes) and the producers, consumers and chains they host.

Public attributes (``atp``, ``energy_charge``, ``alive``, ``health``, ...) are read-only
properties taken from ``model.state``, the numpy copy of the current state, so inspection,
``AgentSet.select/groupby/agg`` and a ``DataCollector`` work the same on both backends.

For the reference backend (``backend="mesa"``) every agent also keeps its own state as plain
Python numbers (attributes with a leading underscore) and steps it with the methods below, which
are the equations of ``sim/kernels`` written agent by agent, operation for operation in the same
order (so float64 results agree with the JAX engine to round-off). A cell runs the rate laws of
its own organelles; the model calls the phases on all cells in the order of
``sim.kernels.step.PROCESSES``. Transport is split into a compute phase (reads neighbours'
pools, writes the fluxes of the junctions the cell owns) and an apply phase (sums the fluxes of
its junctions), so results do not depend on the order in which agents are called.

Chains (ribosome cohorts doing protein synthesis, ``sim.kernels.chains`` and
``sim.kernels.translation``) are :class:`ChainAgent` s hosted by their cell: in the consumption
phase the cell asks each of its chains for its quote (``ChainAgent.quote``), serves the sum in the
tier of the consumer kind the chains realise, and steps them with the share granted
(:func:`step_chain_agents`, the per-cell form of ``sim.kernels.chains.chain_step_reference``).
"""

from __future__ import annotations

from math import exp, expm1, inf, log, log1p, sqrt

import numpy as np
from mesa.discrete_space import FixedAgent

from sim.constants import R_J_PER_MOL_K
from sim.kernels.chains import elongation_cost
from sim.kernels.thermo import TINY_MM
from sim.state import ADP, AMP, ATP, GLC, N_SPECIES, PI

_S = tuple(range(N_SPECIES))


class _Constants:
    """Model parameters as plain Python floats, cached once per model (never numpy in the hot path)."""

    def __init__(self, params):
        f = float
        self.dt = f(params.dt)
        self.rt = R_J_PER_MOL_K * f(params.temperature_k) * 1e-3  # sim.kernels.thermo.rt_kj
        self.volume = f(params.volume_l)
        self.dg0 = f(params.dg0_kj)
        self.one_m_4k = 1.0 - 4.0 * f(params.k_ak)
        self.ext = f(params.external_substrate)
        self.supply_scale = f(params.supply_scale)
        self.demand_scale = f(params.demand_scale)
        self.uptake_scale = f(params.uptake_scale)
        self.p_yield = [f(x) for x in np.asarray(params.p_yield)]
        self.p_abs_sdg = [abs(f(x)) for x in np.asarray(params.p_substrate_dg_kj)]
        self.p_ceiling = [f(x) for x in np.asarray(params.p_ceiling_kj)]
        self.p_k_s = [f(x) for x in np.asarray(params.p_k_s)]
        self.p_k_adp = [f(x) for x in np.asarray(params.p_k_adp)]
        self.p_k_pi = [f(x) for x in np.asarray(params.p_k_pi)]
        self.p_damage = [f(x) for x in np.asarray(params.p_damage)]
        self.n_pkinds = len(self.p_yield)
        self.hazard0 = f(params.hazard0)
        self.hazard_beta = f(params.hazard_beta)
        self.repair_rate = f(params.repair_rate)
        self.repair_cost = f(params.repair_cost)
        self.birth_p = -expm1(-f(params.birth_rate) * self.dt)
        self.birth_min_ec = f(params.birth_min_ec)
        self.birth_cost = f(params.birth_cost)
        self.stress_threshold = f(params.stress_threshold)
        self.stress_death_s = f(params.stress_death_s)
        self.stress_recovery_dt = f(params.stress_recovery) * self.dt
        self.permeability = [f(x) for x in np.asarray(params.permeability)]
        self.tier_reserve = [f(x) for x in np.asarray(params.tier_reserve)]
        self.conductance_scale = f(params.conductance_scale)
        self.chain_kind = int(np.asarray(params.chain_kind))
        self.chain_rate = f(params.chain_rate)
        self.chain_cost_per_unit = f(params.chain_cost_per_unit)
        self.chain_log_keep = log1p(-f(params.chain_p_stop))  # ln(1 - p_stop)
        self.chain_n_max = f(params.chain_n_max)
        self.chain_init_rate = f(params.chain_init_rate)
        self.chain_init_cost = f(params.chain_init_cost)


class ChainStep:
    """One cell's chain parameters for one step, as plain floats (``sim.kernels.chains.ChainParams``
    with the rate already times dt and the per-unit probabilities as logs)."""

    __slots__ = ("rate_dt", "c0", "c1", "log_keep_stop", "n_max", "l0", "p_init", "init_cost",
                 "p_tool", "log_keep_tool", "tool_steps", "r_tool", "mem_threshold", "mem_factor", "mem_cost")

    def __init__(self, rate_dt, c0, c1=0.0, p_stop=0.0, n_max=inf, l0=0.0, p_init=0.0, init_cost=0.0,
                 p_tool=0.0, tool_steps=1, r_tool=0.0, mem_threshold=0.0, mem_factor=2.0, mem_cost=0.0,
                 log_keep_stop=None):
        self.rate_dt, self.c0, self.c1 = rate_dt, c0, c1
        self.log_keep_stop = log1p(-p_stop) if log_keep_stop is None else log_keep_stop
        self.n_max, self.l0, self.p_init, self.init_cost = n_max, l0, p_init, init_cost
        self.p_tool = p_tool
        self.log_keep_tool = log1p(-p_tool) if p_tool > 0 else 0.0
        self.tool_steps, self.r_tool = int(tool_steps), r_tool
        self.mem_threshold, self.mem_factor, self.mem_cost = mem_threshold, mem_factor, mem_cost


CHAIN_LEDGER_FIELDS = ("spent", "elongation_spent", "init_spent", "memory_spent", "units", "initiated", "delivered",
                       "delivered_units", "tool_calls", "tool_units", "compressions", "units_removed")


def chain_quote(chains, P: ChainStep, u_init) -> float:
    """Currency the chains of one cell would spend this step with no budget (``chain_demand``)."""
    el = init = mem = 0.0
    for ch in chains:
        m, i, e = ch.quote(P, u_init[ch.chain_id])
        el += e
        init += i
        mem += m
    return el + init + mem


def step_chain_agents(chains, P: ChainStep, led: dict, u_init, u_stop, u_tool=None, budget=inf):
    """One step of one cell's chain agents (``sim.kernels.chains.chain_step_reference`` for a cell):
    tools return, memory compressions and initiations are paid in slot order while their cumulative
    cost fits the ``budget``; every elongating chain then slows by the same factor if the rest is
    short; termination and tool calls. Updates ``led`` (``CHAIN_LEDGER_FIELDS``); returns
    ``(spent, units)`` of this step."""
    left = budget
    run_mem = mem_sum = 0.0
    tool_units = removed = 0.0
    comps = 0
    for ch in chains:  # 1 tools return, 2 memory module
        tool_units += ch.tool_return(P)
        cost = ch.memory_cost(P)
        if cost is not None:
            run_mem += cost
            if run_mem <= left:
                removed += ch.compress(P)
                mem_sum += cost
                comps += 1
    left -= mem_sum
    run_init = init_sum = 0.0
    started = 0
    for ch in chains:  # 3 initiation
        if ch.wants_start(P, u_init[ch.chain_id]):
            run_init += P.init_cost
            if run_init <= left:
                ch.start(P)
                init_sum += P.init_cost
                started += 1
    left -= init_sum
    demand = 0.0
    for ch in chains:  # 4 elongation demand
        demand += ch.elongation_quote(P)
    phi = 1.0
    avail = left if left > 0.0 else 0.0
    if demand > avail:
        phi = avail / demand if demand > 0 else 1.0
    units = el_sum = delivered_units = 0.0
    delivered = calls = 0
    for ch in chains:  # 4 elongate, 5 terminate, 6 tool calls
        ut = None if u_tool is None else u_tool[ch.chain_id]
        d, cost, done_units, called = ch.elongate(P, phi, u_stop[ch.chain_id], ut)
        units += d
        el_sum += cost
        if done_units is not None:
            delivered += 1
            delivered_units += done_units
        calls += called
    spent = el_sum + init_sum + mem_sum
    led["spent"] += spent
    led["elongation_spent"] += el_sum
    led["init_spent"] += init_sum
    led["memory_spent"] += mem_sum
    led["units"] += units
    led["initiated"] += started
    led["delivered"] += delivered
    led["delivered_units"] += delivered_units
    led["tool_calls"] += calls
    led["tool_units"] += tool_units
    led["compressions"] += comps
    led["units_removed"] += removed
    return spent, units


class CellAgent(FixedAgent):
    """A cell / model instance: one node of the tissue graph, fixed to its Network cell."""

    def __init__(self, model, index: int, cell):
        super().__init__(model)
        self.index = int(index)
        self.cell = cell
        self.producers: list[ProducerAgent] = []  # slot order
        self.consumers: list[ConsumerAgent] = []  # slot order
        self.chains: list[ChainAgent] = []  # slot order

    def __repr__(self) -> str:
        return f"CellAgent(index={self.index})"

    # ------------------------------------------------------------------ inspection (both backends)
    @property
    def pools(self) -> np.ndarray:
        """Concentrations (mM) in the order of ``sim.state.SPECIES``."""
        return np.array(self.model.state.cells.pools[self.index])

    @property
    def glucose(self) -> float:
        return float(self.model.state.cells.pools[self.index, GLC])

    @property
    def atp(self) -> float:
        return float(self.model.state.cells.pools[self.index, ATP])

    @property
    def adp(self) -> float:
        return float(self.model.state.cells.pools[self.index, ADP])

    @property
    def amp(self) -> float:
        return float(self.model.state.cells.pools[self.index, AMP])

    @property
    def pi(self) -> float:
        return float(self.model.state.cells.pools[self.index, PI])

    @property
    def energy_charge(self) -> float:
        p = self.model.state.cells.pools[self.index]
        a, d, m = float(p[ATP]), float(p[ADP]), float(p[AMP])
        total = a + d + m
        return (a + 0.5 * d) / total if total > 0 else 0.0

    @property
    def alive(self) -> bool:
        return bool(self.model.state.cells.alive[self.index])

    @property
    def stress(self) -> float:
        return float(self.model.state.cells.stress[self.index])

    @property
    def maintenance(self) -> float:
        return float(self.model.state.cells.maintenance[self.index])

    @property
    def theta(self) -> float:
        return float(self.model.state.cells.theta[self.index])

    @property
    def n_producers(self) -> int:
        return int(np.sum(self.model.state.producers.alive[self.index]))

    @property
    def ledger(self) -> dict:
        """This cell's cumulative accounts (see ``sim.state.Ledger``)."""
        led = self.model.state.ledger
        out = {}
        for name in led.__dataclass_fields__:
            v = getattr(led, name)[self.index]
            out[name] = v.tolist() if np.ndim(v) else v.item()
        return out

    @property
    def produced(self) -> float:
        return float(self.model.state.ledger.produced[self.index])

    @property
    def spent(self) -> float:
        """ATP spent by consumers, repair and biogenesis (mM)."""
        led = self.model.state.ledger
        i = self.index
        return float(np.sum(led.spent[i]) + led.repair_spent[i] + led.birth_spent[i])

    @property
    def work(self) -> float:
        return float(np.sum(self.model.state.ledger.work[self.index]))

    @property
    def n_active_chains(self) -> int:
        ch = self.model.state.chains
        return int(np.sum(ch.active[self.index])) if ch is not None else 0

    @property
    def proteins_completed(self) -> float:
        """Chains finished in this cell (each a protein per ribosome of the cohort)."""
        led = self.model.state.chain_ledger
        return float(led.delivered[self.index]) if led is not None else 0.0

    @property
    def neighbours(self) -> list[CellAgent]:
        """Cell agents on the adjacent nodes of the Network space."""
        return [a for c in self.cell.neighborhood for a in c.agents if isinstance(a, CellAgent)]

    # ------------------------------------------------------------------ reference backend: set-up
    def _ref_init(self, state, q: _Constants) -> None:
        i = self.index
        cells, led = state.cells, state.ledger
        self._q = q
        self._pools = [float(x) for x in cells.pools[i]]
        self._alive = bool(cells.alive[i])
        self._stress = float(cells.stress[i])
        self._maintenance = float(cells.maintenance[i])
        self._uptake_rate = float(cells.uptake[i])
        self._produced = float(led.produced[i])
        self._repair_spent = float(led.repair_spent[i])
        self._birth_spent = float(led.birth_spent[i])
        self._substrate_used = float(led.substrate_used[i])
        self._substrate_uptake = float(led.substrate_uptake[i])
        self._transported_in = float(led.transported_in[i])
        self._transported_out = float(led.transported_out[i])
        self._lost = [float(x) for x in led.lost[i]]
        self._ak_atp = float(led.ak_atp[i])
        self._substrate_energy_j = float(led.substrate_energy_j[i])
        self._stored_energy_j = float(led.stored_energy_j[i])
        self._heat_j = float(led.heat_j[i])
        self._hydrolysis_energy_j = float(led.hydrolysis_energy_j[i])
        self._failures = int(led.failures[i])
        self._births = int(led.births[i])
        self._repair_health = float(led.repair_health[i])
        # consumers grouped by priority tier (served 0, 1, 2; an empty tier changes nothing)
        tiers = sorted({c.tier for c in self.consumers})
        self._living = [p for p in self.producers if p._alive]
        self._tiers = [[c for c in self.consumers if c.tier == t] for t in tiers]
        self._tier0 = [c for c in self.consumers if c.tier == 0]
        # chains: the consumer they realise and their per-run constants (sim.kernels.translation)
        self._chain_c = None
        if self.chains:
            self._chain_c = next((c for c in self.consumers if c.kind == q.chain_kind), None)
        if self._chain_c is not None:
            cc = self._chain_c
            cc._chain = True
            r_max = q.chain_rate
            self._chain_c0 = cc._vmax_eff / (len(self.chains) * r_max) if r_max > 0 else 0.0
            self._cohort = self._chain_c0 / q.chain_cost_per_unit
            self._chain_init_cost = q.chain_init_cost * self._cohort
            self._chain_led = {f: float(getattr(state.chain_ledger, f)[i]) for f in CHAIN_LEDGER_FIELDS}
        elif self.chains:
            self._chain_led = {f: float(getattr(state.chain_ledger, f)[i]) for f in CHAIN_LEDGER_FIELDS}
        # saturated tier-0 demand of a living cell (constant during a run)
        sat0 = 0.0
        for c in self._tier0:
            sat0 += c._vmax_eff
        self._saturated0 = sat0
        self._out_edges = []  # [(dst CellAgent, (g p_s) per species)] for junctions this cell owns
        self._out_keep = []  # (keep, leak) per owned junction
        self._in_edges = []  # [(src CellAgent, index in its _flux, keep, leak)]
        self._flux = []

    # ------------------------------------------------------------------ reference backend: phases
    def chain_step_params(self, a: float) -> ChainStep:
        """This step's chain parameters from the step-start ATP ``a``: elongation and initiation
        at ``A'/(K + A')`` of their maxima, ``A' = max(A - reserve of the tier, 0)``."""
        q = self._q
        cc = self._chain_c
        ap = a - cc._reserve
        ap = ap if ap > 0.0 else 0.0
        sat = ap / (cc.km + ap)
        return ChainStep(
            rate_dt=(q.chain_rate * sat) * q.dt, c0=self._chain_c0, n_max=q.chain_n_max,
            p_init=-expm1(-(q.chain_init_rate * sat) * q.dt), init_cost=self._chain_init_cost,
            log_keep_stop=q.chain_log_keep,
        )

    def metabolise(self, chain_draws=None) -> None:
        """Uptake, production, tiered consumption (chains included), repair and damage on the
        step-start state; ``chain_draws`` = (u_init, u_stop) indexed by chain id."""
        q = self._q
        if not self._alive:
            self._maintenance = 1.0  # no tier-0 demand; every flux of a dead cell is zero
            return
        dt = q.dt
        pools = self._pools
        s, a, d, pi = pools[GLC], pools[ATP], pools[ADP], pools[PI]
        rt = q.rt
        abs_dg = self._abs_dg()

        uptake = q.uptake_scale * self._uptake_rate * (q.ext - s) * dt
        if uptake < -s:
            uptake = -s

        # saturation and thermodynamic-brake factors per producer kind (shared by the cell's
        # organelles of that kind)
        factors = []
        for k in range(q.n_pkinds):
            x = (abs_dg - q.p_ceiling[k]) / rt
            br = 1.0 - exp(x) if x < 0.0 else 0.0
            factors.append(
                (s / (q.p_k_s[k] + s), d / (q.p_k_adp[k] + d), pi / (q.p_k_pi[k] + pi), br)
            )
        sum_j = 0.0
        sum_jg = 0.0
        living = self._living  # living producers in slot order (a dead one adds exact zeros)
        p_yield = q.p_yield
        for p in living:
            j = p.desired_rate(factors)
            sum_j += j
            sum_jg += j / p_yield[p._kind]
        want_atp = sum_j * dt
        want_glc = sum_jg * dt
        if want_atp > 0:
            lim_d = d / want_atp
            lim_p = pi / want_atp
            lim = lim_d if lim_d < lim_p else lim_p
            lim_s = s / want_glc if want_glc > 0 else 0.0
            if lim_s < lim:
                lim = lim_s
            f_prod = lim if lim < 1.0 else 1.0
        else:
            f_prod = 0.0
        made = 0.0
        glc_used = 0.0
        sub_e = 0.0
        p_abs_sdg = q.p_abs_sdg
        for p in living:
            m = p.make(f_prod)
            made += m
            g = m / p_yield[p._kind]
            glc_used += g
            sub_e += g * p_abs_sdg[p._kind]
        substrate_energy = sub_e * q.volume

        # consumption by priority tier, limited by the ATP present at the start of the step; the
        # chains quote their demand in place of the consumer they realise (served in its tier)
        cc = self._chain_c
        if cc is not None:
            cp = self.chain_step_params(a)
            chain_want = chain_quote(self.chains, cp, chain_draws[0])
            cc._want = chain_want
        rest = a
        for group in self._tiers:
            want = 0.0
            for c in group:
                want += c.demand(a)
            frac = (rest / want if want > 0 else 0.0) if want > rest else 1.0
            for c in group:
                c.serve(frac)
            rest = rest - frac * want
            if rest < 0.0:
                rest = 0.0
        if cc is not None:  # the chains elongate with the share granted
            share = cc._served
            budget = share if share < chain_want else inf
            spent_ch, units = step_chain_agents(self.chains, cp, self._chain_led, chain_draws[0], chain_draws[1],
                                                None, budget)
            cc.settle(spent_ch, units * self._cohort)
        tier0 = 0.0
        for c in self._tier0:
            tier0 += c._served
        sat0 = self._saturated0
        if sat0 > 0:
            den = sat0 * dt
            self._maintenance = tier0 / den if den > 0 else 0.0
        else:
            self._maintenance = 1.0

        # repair of damaged producers, served after all consumers
        want_h = 0.0
        for p in living:
            want_h += p._want_h
        repair_cost = q.repair_cost * want_h
        f_rep = (rest / repair_cost if repair_cost > 0 else 0.0) if repair_cost > rest else 1.0
        repair_spent = repair_cost * f_rep
        repaired = 0.0
        for p in living:
            repaired += p.repair_and_wear(f_rep)

        spent = 0.0
        for c in self.consumers:
            spent += c._served
        spent_total = spent + repair_spent
        x = s + (uptake - glc_used)
        pools[GLC] = x if x > 0.0 else 0.0
        x = a + (made - spent_total)
        pools[ATP] = x if x > 0.0 else 0.0
        x = d + (spent_total - made)
        pools[ADP] = x if x > 0.0 else 0.0
        x = pi + (spent_total - made)
        pools[PI] = x if x > 0.0 else 0.0

        hydrolysis = spent_total * abs_dg * q.volume
        stored = made * abs_dg * q.volume
        self._produced += made
        self._repair_spent += repair_spent
        self._substrate_used += glc_used
        self._substrate_uptake += uptake
        self._substrate_energy_j += substrate_energy
        self._stored_energy_j += stored - hydrolysis
        self._heat_j += (substrate_energy - stored) + hydrolysis
        self._hydrolysis_energy_j += hydrolysis
        self._repair_health += repaired

    def transport_compute(self) -> None:
        """Signed flux (src -> dst) per species over each junction this cell owns (src < dst)."""
        flux = self._flux
        if not self._alive:
            for k in range(len(flux)):
                flux[k] = None  # closed junctions
            return
        p0, p1, p2, p3, p4 = self._pools
        for k, (nb, gp) in enumerate(self._out_edges):
            if nb._alive:
                q = nb._pools
                flux[k] = (
                    gp[0] * (p0 - q[0]),
                    gp[1] * (p1 - q[1]),
                    gp[2] * (p2 - q[2]),
                    gp[3] * (p3 - q[3]),
                    gp[4] * (p4 - q[4]),
                )
            else:
                flux[k] = None

    def transport_apply(self) -> None:
        """Add the fluxes of this cell's junctions (those it owns, then those it receives)."""
        if not self._alive:
            return  # every junction of a dead cell is closed
        d_own = [0.0] * N_SPECIES
        lost_own = [0.0] * N_SPECIES
        in_own = out_own = 0.0
        for (keep, leak), flux in zip(self._out_keep, self._flux):
            if flux is None:
                continue
            for s in _S:
                j = flux[s]
                if j > 0.0:  # sent to the neighbour
                    d_own[s] += -j
                    lost_own[s] += leak * j
                elif j < 0.0:  # received from the neighbour
                    d_own[s] += keep * -j
            j = flux[ATP]
            if j > 0.0:
                out_own += j
            elif j < 0.0:
                in_own += keep * -j
        d_in = [0.0] * N_SPECIES
        lost_in = [0.0] * N_SPECIES
        in_in = out_in = 0.0
        for src, k, keep, leak in self._in_edges:
            flux = src._flux[k]
            if flux is None:
                continue
            for s in _S:
                j = flux[s]
                if j > 0.0:  # received from the owner
                    d_in[s] += keep * j
                elif j < 0.0:  # sent to the owner
                    d_in[s] += j
                    lost_in[s] += leak * -j
            j = flux[ATP]
            if j > 0.0:
                in_in += keep * j
            elif j < 0.0:
                out_in += -j
        pools = self._pools
        lost = self._lost
        for s in _S:
            x = pools[s] + (d_own[s] + d_in[s])
            pools[s] = x if x > 0.0 else 0.0
            lost[s] += lost_own[s] + lost_in[s]
        self._transported_in += in_own + in_in
        self._transported_out += out_own + out_in

    def adenylate_kinase(self) -> None:
        """2 ADP <-> ATP + AMP to equilibrium (sim.kernels.thermo.adenylate_equilibrium)."""
        if not self._alive:
            return
        pools = self._pools
        a0, d0, m0 = pools[ATP], pools[ADP], pools[AMP]
        n = a0 + d0 + m0
        e = 2.0 * a0 + d0
        if e < 0.0:
            e = 0.0
        n2 = 2.0 * n
        if e > n2:
            e = n2
        c = e * (n2 - e)
        disc = n * n - self._q.one_m_4k * c
        if disc < 0.0:
            disc = 0.0
        denom = n + sqrt(disc)
        d = c / denom if denom > 0 else 0.0
        a = 0.5 * (e - d)
        m = n - a - d
        pools[ATP] = a
        pools[ADP] = d
        pools[AMP] = m if m > 0.0 else 0.0
        self._ak_atp += a - a0

    def producer_failure(self, draws) -> None:
        """Each living producer fails with its own draw (``draws`` is indexed by producer id)."""
        fails = 0
        for p in self._living:
            if p.maybe_fail(draws[p.pid]):
                fails += 1
        if fails:
            self._failures += fails
            self._living = [p for p in self._living if p._alive]

    def _abs_dg(self) -> float:
        """|dG_ATP| in kJ/mol at the current pools (sim.kernels.thermo.dg_atp_kj)."""
        q, pools = self._q, self._pools
        a, d, pi = pools[ATP], pools[ADP], pools[PI]
        ratio = ((d if d > TINY_MM else TINY_MM) * 1e-3) * ((pi if pi > TINY_MM else TINY_MM) * 1e-3)
        ratio = ratio / ((a if a > TINY_MM else TINY_MM) * 1e-3)
        return abs(q.dg0 + q.rt * log(ratio))

    def biogenesis(self, draws) -> None:
        """A new producer in the first free slot, paid in ATP (-> ADP + Pi)."""
        if not self._alive:
            return
        q = self._q
        pools = self._pools
        a, d, m = pools[ATP], pools[ADP], pools[AMP]
        total = a + d + m
        ec = (a + 0.5 * d) / total if total > 0 else 0.0
        if not (ec > q.birth_min_ec and a >= q.birth_cost and draws[self.index] < q.birth_p):
            return
        for p in self.producers:
            if not p._alive:
                p.revive()
                self._living = [p for p in self.producers if p._alive]
                cost = q.birth_cost
                energy = cost * self._abs_dg() * q.volume  # hydrolysed ATP: released, ends as heat
                self._heat_j += energy
                self._hydrolysis_energy_j += energy
                self._stored_energy_j -= energy
                pools[ATP] = a + -cost
                pools[ADP] = d + cost
                pools[PI] = pools[PI] + cost
                self._births += 1
                self._birth_spent += cost
                return

    def stress_and_death(self) -> None:
        """Accumulate stress while maintenance is short; die at the threshold."""
        if not self._alive:
            return
        q = self._q
        if self._maintenance < q.stress_threshold:
            stress = self._stress + q.dt
        else:
            stress = self._stress - q.stress_recovery_dt
            if stress < 0.0:
                stress = 0.0
        self._stress = stress
        if stress >= q.stress_death_s:
            self._alive = False
            for p in self._living:
                p._alive = False
            self._living = []


class ProducerAgent(FixedAgent):
    """A producer (mitochondrion / GPU) in a fixed slot of its cell; ``alive`` mirrors the mask.

    ``pid = cell_index * slots + slot`` is its global id (the id its random draws are keyed by).
    """

    def __init__(self, model, host: CellAgent, slot: int, n_slots: int):
        super().__init__(model)
        self.host = host
        self.cell_index = host.index
        self.slot = int(slot)
        self.pid = host.index * int(n_slots) + self.slot
        self.cell = host.cell

    def __repr__(self) -> str:
        return f"ProducerAgent(cell={self.cell_index}, slot={self.slot})"

    @property
    def kind(self) -> int:
        return int(self.model.state.producers.kind[self.cell_index, self.slot])

    @property
    def kind_name(self) -> str:
        return self.model.producer_kinds[self.kind]

    @property
    def vmax(self) -> float:
        return float(self.model.state.producers.vmax[self.cell_index, self.slot])

    @property
    def health(self) -> float:
        return float(self.model.state.producers.health[self.cell_index, self.slot])

    @property
    def alive(self) -> bool:
        return bool(self.model.state.producers.alive[self.cell_index, self.slot])

    # ------------------------------------------------------------------ reference backend
    def _ref_init(self, state, q: _Constants) -> None:
        i, s = self.cell_index, self.slot
        prod = state.producers
        self._q = q
        self._kind = int(prod.kind[i, s])
        self._vmax = float(prod.vmax[i, s])
        self._ss_vmax = q.supply_scale * self._vmax
        self._vmax_dt = self._vmax * q.dt
        self._health = float(prod.health[i, s])
        self._alive = bool(prod.alive[i, s])
        self._j = 0.0
        self._made = 0.0
        self._want_h = 0.0

    # A living producer of a living cell, on the step-start state (called by its cell):
    def desired_rate(self, factors) -> float:
        """J = V h S/(K_S+S) D/(K_D+D) Pi/(K_P+Pi) brake (mM/s); also the repair it wants."""
        fs, fd, fp, br = factors[self._kind]
        q = self._q
        h = self._health
        j = self._ss_vmax * h * fs * fd * fp * br
        self._j = j
        self._want_h = q.repair_rate * (1.0 - h) * q.dt
        return j

    def make(self, f_prod: float) -> float:
        """ATP made this step (mM) once the cell has applied its limiter ``f_prod``."""
        m = self._j * self._q.dt * f_prod
        self._made = m
        return m

    def repair_and_wear(self, f_rep: float) -> float:
        """Repair (share ``f_rep`` of what was wanted) and wear from this step's load."""
        q = self._q
        rh = self._want_h * f_rep
        vdt = self._vmax_dt
        load = self._made / vdt if vdt > 0 else 0.0
        h = self._health + rh - q.p_damage[self._kind] * load * q.dt
        self._health = 0.0 if h < 0.0 else (1.0 if h > 1.0 else h)
        return rh

    def maybe_fail(self, u: float) -> bool:
        q = self._q
        hazard = q.hazard0 * exp(q.hazard_beta * (1.0 - self._health))
        if u < -expm1(-hazard * q.dt):
            self._alive = False
            return True
        return False

    def revive(self) -> None:
        self._alive = True
        self._health = 1.0


class ConsumerAgent(FixedAgent):
    """A consumer (organelle / tool) in a fixed slot of its cell."""

    def __init__(self, model, host: CellAgent, slot: int, n_slots: int):
        super().__init__(model)
        self.host = host
        self.cell_index = host.index
        self.slot = int(slot)
        self.cid = host.index * int(n_slots) + self.slot
        self.cell = host.cell
        cons = model._initial.consumers
        i, s = self.cell_index, self.slot
        # static attributes (consumers neither die nor change in a run)
        self.kind = int(cons.kind[i, s])
        self.tier = int(cons.tier[i, s])
        self.km = float(cons.km[i, s])
        self.vmax = float(cons.vmax[i, s])
        self.value = float(cons.value[i, s])

    def __repr__(self) -> str:
        return f"ConsumerAgent(cell={self.cell_index}, slot={self.slot})"

    @property
    def kind_name(self) -> str:
        return self.model.consumer_kinds[self.kind]

    @property
    def spent(self) -> float:
        return float(self.model.state.ledger.spent[self.cell_index, self.slot])

    @property
    def work(self) -> float:
        return float(self.model.state.ledger.work[self.cell_index, self.slot])

    # ------------------------------------------------------------------ reference backend
    def _ref_init(self, state, q: _Constants) -> None:
        i, s = self.cell_index, self.slot
        self._q = q
        self._vmax_eff = q.demand_scale * float(state.cells.demand_mult[i]) * self.vmax
        self._reserve = q.tier_reserve[int(state.consumers.tier[i, s])]
        self._spent = float(state.ledger.spent[i, s])
        self._work = float(state.ledger.work[i, s])
        self._want = 0.0
        self._served = 0.0
        self._chain = False  # realised by its cell's chains (set by the cell)

    def demand(self, atp: float) -> float:
        """ATP wanted this step: V A'/(K + A') dt (mM), A' = max(A - reserve of the tier, 0);
        for the consumer the chains realise, the chains' quote (set by the cell)."""
        if self._chain:
            return self._want
        a = max(atp - self._reserve, 0.0)
        w = self._vmax_eff * a / (self.km + a) * self._q.dt
        self._want = w
        return w

    def serve(self, frac: float) -> None:
        served = self._want * frac
        self._served = served
        if self._chain:  # the share granted to the chains; booked by settle()
            return
        self._spent += served
        self._work += served * self.value

    def settle(self, spent: float, work: float) -> None:
        """Book what the chains spent (ATP, mM) and made (amino acids, mM) on this ledger line."""
        self._served = spent
        self._spent += spent
        self._work += work


class ChainAgent(FixedAgent):
    """A chain slot of a cell: a cohort of ribosomes translating one protein each, in lockstep
    (biology), or a decode stream. ``chain_id = cell_index * slots + slot`` keys its draws.

    Public attributes (``active``, ``length``, ``made``, ``tool_wait``) are read from
    ``model.state.chains`` on both backends; the reference backend steps the underscored copies
    with the methods below (the slot-wise operations of ``sim.kernels.chains.chain_step``)."""

    def __init__(self, model, host, slot: int, n_slots: int):
        super().__init__(model)
        self.host = host
        self.cell_index = host.index if host is not None else 0
        self.slot = int(slot)
        self.chain_id = self.cell_index * int(n_slots) + self.slot
        if getattr(host, "cell", None) is not None:
            self.cell = host.cell

    def __repr__(self) -> str:
        return f"ChainAgent(cell={self.cell_index}, slot={self.slot})"

    @property
    def active(self) -> bool:
        return bool(self.model.state.chains.active[self.cell_index, self.slot])

    @property
    def length(self) -> float:
        """Units held (residues of the nascent protein)."""
        return float(self.model.state.chains.length[self.cell_index, self.slot])

    @property
    def made(self) -> float:
        return float(self.model.state.chains.made[self.cell_index, self.slot])

    @property
    def tool_wait(self) -> int:
        return int(self.model.state.chains.tool_wait[self.cell_index, self.slot])

    # ------------------------------------------------------------------ reference backend
    def _ref_init(self, chains, i: int, s: int) -> None:
        self._active = bool(chains.active[i, s])
        self._length = float(chains.length[i, s])
        self._made = float(chains.made[i, s])
        self._wait = int(chains.tool_wait[i, s])
        self._grow = False
        self._delta = 0.0

    def quote(self, P: ChainStep, u_init: float):
        """(memory, initiation, elongation) cost of this step with no budget; changes nothing."""
        active, length, made, wait = self._active, self._length, self._made, self._wait
        if active and wait > 0:
            wait -= 1
            if wait == 0:
                length += P.r_tool
        mem = 0.0
        if active and P.mem_threshold > 0 and length > P.mem_threshold:
            mem = P.mem_cost * length
            length = length / P.mem_factor
        init = 0.0
        if not active and u_init < P.p_init:
            active, length, made, init = True, P.l0, 0.0, P.init_cost
        el = 0.0
        if active and wait == 0:
            d = min(P.rate_dt, P.n_max - made)
            el = elongation_cost(P.c0, P.c1, length, d if d > 0.0 else 0.0)
        return mem, init, el

    def tool_return(self, P: ChainStep) -> float:
        if self._active and self._wait > 0:
            self._wait -= 1
            if self._wait == 0:
                self._length += P.r_tool
                return P.r_tool
        return 0.0

    def memory_cost(self, P: ChainStep):
        """Cost of compressing this chain now (None: not a candidate)."""
        if self._active and P.mem_threshold > 0 and self._length > P.mem_threshold:
            return P.mem_cost * self._length
        return None

    def compress(self, P: ChainStep) -> float:
        new = self._length / P.mem_factor
        removed = self._length - new
        self._length = new
        return removed

    def wants_start(self, P: ChainStep, u: float) -> bool:
        return not self._active and u < P.p_init

    def start(self, P: ChainStep) -> None:
        self._active, self._length, self._made = True, P.l0, 0.0

    def elongation_quote(self, P: ChainStep) -> float:
        grow = self._active and self._wait == 0
        d = 0.0
        if grow:
            d = min(P.rate_dt, P.n_max - self._made)
            d = d if d > 0.0 else 0.0
        self._grow, self._delta = grow, d
        return elongation_cost(P.c0, P.c1, self._length, d)

    def elongate(self, P: ChainStep, phi: float, u_stop: float, u_tool):
        """Grow by ``phi`` of the quoted units; terminate or call a tool. Returns (units, cost,
        units delivered or None, tool calls)."""
        d = self._delta * phi
        cost = elongation_cost(P.c0, P.c1, self._length, d)
        self._length += d
        self._made += d
        stop = self._grow and d > 0 and u_stop < -expm1(d * P.log_keep_stop)
        done = self._active and (self._made >= P.n_max or stop)
        called = 0
        if done:
            delivered = self._made
            self._active, self._length, self._made, self._wait = False, 0.0, 0.0, 0
            return d, cost, delivered, 0
        if self._grow and d > 0 and P.p_tool > 0 and u_tool < -expm1(d * P.log_keep_tool):
            self._wait = P.tool_steps
            called = 1
        return d, cost, None, called


__all__ = ["CellAgent", "ProducerAgent", "ConsumerAgent", "ChainAgent", "ChainStep", "step_chain_agents"]
