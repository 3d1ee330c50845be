"""Plain-Python reference stepper of the biology engine: same equations, same draws, cell by cell.

Cells, their producers (mitochondria, glycolysis), consumers (ion pumps, biosynthesis, ...) and
chain slots (ribosome cohorts doing protein synthesis) are plain Python objects holding Python
floats; :class:`ReferenceBio` holds the parameters once (as Python floats) and steps them with the
equations of ``sim/substrates/bio/kernels`` written cell by cell, operation for operation in the same order, so
float64 results agree with the JAX engine to round-off. It is the physics of the Mesa reference
backend (``sim.mesa_model.CurrencyModel(backend="mesa")``), and works on its own too::

    ref = ReferenceBio(build(cfg), replicate=0)
    for _ in range(n):
        ref.step()
    ref.state()  # the engine's numpy ``sim.substrates.bio.state.State``

One method per process of ``sim.substrates.bio.kernels.step.PROCESSES`` (``metabolism``, ``transport``,
``adenylate_kinase``, ``producer_failure``, ``producer_biogenesis``, ``cell_stress``) steps every
cell; each has a per-cell variant (``metabolism_cell(cell, draws)``, ...) and, where the process is
random, a ``*_draws()`` method that makes the step's draws (one vectorised ``sim.rng.uniforms``
call per purpose, the engine's stream; each cell takes the numbers of its agents' ids). The step
is declared as ``ReferenceBio.phases`` (:mod:`sim.core.phases`): the per-cell variants, then the
whole-tissue adaptation and carrier processes and the clock. ``step()`` runs them cell by cell in
index order, the Mesa layer through ``AgentSet.do`` / ``shuffle_do`` on the cell agents bound to
``ReferenceBio.cells``. A per-cell method reads only its own cell, except transport, which is
split into a compute phase (reads the neighbours' pools, writes the fluxes of the junctions the
cell owns) and an apply phase (sums the fluxes of its junctions), so the results do not depend on
the order in which cells are called.

Chains (``sim.core.chains``, ``sim.substrates.bio.kernels.translation``): in the consumption of
:meth:`ReferenceBio.metabolism_cell` a cell asks its chains for their quote (:func:`chain_quote`),
serves it in the tier of the consumer kind the chains realise, and steps them with the share
granted (:func:`step_chains`, the per-cell form of ``sim.core.chains.chain_step``, also
usable with tools, memory compressions and budgets switched on).

Carriers (``carriers.n > 1``, ``sim.core.carriers``): :class:`sim.core.carriers.CarrierReference`
holds each cell's nucleoside triphosphates (``self.car.held[i]``, mM); the processes use them in
the order of the kernels (spendable ATP for the consumers, debit then credit in metabolism, every
carrier down its own gradient in transport, pro rata changes in the kinases, biogenesis and
differentiation moves), and :meth:`ReferenceBio.step` ends with ``carrier_upkeep`` and, with
``carriers.rule: imitation``, ``carrier_strategy``, as the engine's appended processes.
"""

from __future__ import annotations

import dataclasses
import math
from math import exp, expm1, inf, log, log1p, sqrt

import jax
import numpy as np

from sim import rng
from sim.constants import R_J_PER_MOL_K
from sim.core import chains as ck
from sim.core import rare_events
from sim.core.carriers import CarrierReference, reconcile_row
from sim.core.differentiation import AdaptationReference
from sim.core.phases import Phase, step_in_phases
from sim.core.chains import CHAIN_LEDGER_FIELDS, Chain, ChainStep, chain_quote, step_chains  # noqa: F401 (re-exported)
from sim.substrates.bio.kernels.thermo import MAX_LOG_STEP, N_NEWTON, TINY_MM
from sim.substrates.bio.state import ADP, AMP, ATP, GLC, N_SPECIES, PI, Ledger, State

_S = tuple(range(N_SPECIES))


# ---------------------------------------------------------------------------- random draws
def host_draws(key, step: int, purpose: int, n: int) -> list[float]:
    """The engine's draws for ids ``0..n-1`` at ``step`` as Python floats (one vectorised call)."""
    if n == 0:
        return []
    return rng.host_uniforms(key, step, purpose, n).tolist()


# ---------------------------------------------------------------------------- cells and organelles
class Producer:
    """A producer slot (``pid = cell * slots + slot`` keys its draws)."""

    __slots__ = ("pid", "kind", "vmax", "health", "alive", "j", "made", "want_h")

    def __repr__(self) -> str:
        return f"Producer({self.pid}, kind={self.kind}, health={self.health}, alive={self.alive})"


class Consumer:
    """A consumer slot; ``chain``: realised by its cell's chains (their quote is its demand)."""

    __slots__ = ("cid", "km", "value", "vmax_eff", "reserve", "spent", "work", "want", "served", "chain", "specialised")

    def __repr__(self) -> str:
        return f"Consumer({self.cid}, spent={self.spent}, work={self.work})"


# state (``sim.substrates.bio.state.Cells``) and ledger (``sim.substrates.bio.state.Ledger``) fields a Cell steps; the other
# fields of ``Cells`` are constant in a run and the consumer lines of the ledger live on Consumer
CELL_FIELDS = ("pools", "alive", "stress", "maintenance", "ec_slow", "pcr")
CELL_LEDGER_FIELDS = tuple(f.name for f in dataclasses.fields(Ledger) if f.name not in ("spent", "work"))


class Cell:
    """A cell: its state and ledger (attributes named as the fields of ``sim.substrates.bio.state.Cells`` and
    ``sim.substrates.bio.state.Ledger``), its organelles and chains in slot order, and per-run constants."""

    def __init__(self, index: int):
        self.index = index
        self.producers: list[Producer] = []
        self.consumers: list[Consumer] = []
        self.chains: list[Chain] = []
        self.living: list[Producer] = []  # living producers, slot order
        self.tiers: list[list[Consumer]] = []  # consumers by priority tier (served 0, 1, 2)
        self.tier0: list[Consumer] = []
        self.saturated0 = 0.0  # saturated tier-0 demand of a living cell (mM/s)
        self.chain_c: Consumer | None = None  # the consumer the chains realise
        self.chain_led: dict | None = None  # chain ledger (CHAIN_LEDGER_FIELDS)
        self.chain_c0 = self.cohort = self.chain_init_cost = 0.0
        self.out_edges = []  # [(dst Cell, (g p_s) per species, keep, leak)] junctions this cell owns
        self.in_edges = []  # [(src Cell, index in its flux, keep, leak)]
        self.flux = []  # this step's signed flux per owned junction (None: closed)
        self.kflux = []  # with several carriers: each carrier's signed flux per owned junction

    def __repr__(self) -> str:
        return f"Cell({self.index}, alive={self.alive}, pools={self.pools})"


# ---------------------------------------------------------------------------- the stepper
class ReferenceBio:
    """Steps one replicate of a biology model (``sim.substrates.bio.build.Model``) in plain Python.

    ``key``: the replicate's key (default ``sim.rng.replicate_keys(model.seed, 1, replicate)[0]``,
    the engine's). Parameters are attributes (Python floats; per-kind vectors as lists).
    """

    def __init__(self, model, replicate: int = 0, key=None):
        self.model = model
        self.key = key if key is not None else rng.replicate_keys(int(model.seed), 1, int(replicate))[0]
        params = jax.tree_util.tree_map(np.asarray, model.params)
        s = jax.tree_util.tree_map(np.asarray, jax.device_get(model.state))
        self._init = s
        self.step_count = int(s.step)
        self._read_params(params)
        n, n_p = s.producers.alive.shape
        n_k = s.consumers.kind.shape[1]
        n_ch = 0 if s.chains is None else int(s.chains.active.shape[1])
        self.n, self.n_producer_slots, self.n_consumer_slots, self.n_chain_slots = n, n_p, n_k, n_ch
        self.cells = [self._make_cell(s, i) for i in range(n)]
        # differentiation (sim.core.differentiation): theta scales producers and specialised consumers
        self.diff = AdaptationReference(s.diff, params.diff, self.key)
        # several carriers (sim.core.carriers): the ATP of cell i held as self.car.held[i]
        self.car = CarrierReference(s.carriers, params.carriers, self.key) if s.carriers is not None else None
        self.carriers_on = self.car is not None and self.car.on
        self.producers = [p for c in self.cells for p in c.producers]
        self.consumers = [k for c in self.cells for k in c.consumers]
        self.chains = [ch for c in self.cells for ch in c.chains]
        # junctions: each is owned by its src cell, which computes its flux
        e = params.edges
        cond, loss = e.conductance.tolist(), e.loss.tolist()
        for u, v, g_e, l_e in zip(e.src.tolist(), e.dst.tolist(), cond, loss):
            owner, other = self.cells[u], self.cells[v]
            g = g_e * self.conductance_scale * self.dt
            gp = tuple(g * perm for perm in self.permeability)
            keep = 1.0 - l_e
            leak = 1.0 - keep
            other.in_edges.append((owner, len(owner.out_edges), keep, leak))
            owner.out_edges.append((other, gp, keep, leak))
            owner.flux.append(None)
            owner.kflux.append(None)
        self.phases = self._make_phases()

    def _read_params(self, params) -> None:
        f = float

        def vec(x):
            return [f(v) for v in np.asarray(x)]

        self.dt = dt = f(params.dt)
        self.rt = R_J_PER_MOL_K * f(params.temperature_k) * 1e-3  # sim.substrates.bio.kernels.thermo.rt_kj
        self.volume = f(params.volume_l)
        self.dg0 = f(params.dg0_kj)
        self.k_ak = f(params.k_ak)
        self.one_m_4k = 1.0 - 4.0 * self.k_ak
        self.adp_bound = f(params.adp_bound)
        self.amp_bound = f(params.amp_bound)
        self.creatine_total = f(params.creatine_total)
        self.k_ck = f(params.k_ck)
        self.ext = f(params.external_substrate)
        self.supply_scale = f(params.supply_scale)
        self.demand_scale = f(params.demand_scale)
        self.uptake_scale = f(params.uptake_scale)
        # parallel activation of supply with demand (sim.substrates.bio.kernels.capacity.supply_activation)
        self.supply_activation = self.demand_scale ** f(params.parallel_activation)
        self.p_yield = vec(params.p_yield)
        self.p_abs_sdg = [abs(x) for x in vec(params.p_substrate_dg_kj)]
        self.p_ceiling = vec(params.p_ceiling_kj)
        self.p_k_s = vec(params.p_k_s)
        self.p_k_adp = vec(params.p_k_adp)
        self.p_k_pi = vec(params.p_k_pi)
        self.p_damage = vec(params.p_damage)
        self.n_pkinds = len(self.p_yield)
        self.hazard0 = f(params.hazard0)
        self.hazard_beta = f(params.hazard_beta)
        self.repair_rate = f(params.repair_rate)
        self.repair_cost = f(params.repair_cost)
        self.birth_rate = f(params.birth_rate)
        self.birth_ec_set = f(params.birth_ec_set)
        self.birth_ec_span = f(params.birth_ec_span)
        self.birth_alpha = -expm1(-dt / f(params.birth_tau))
        self.birth_cost = f(params.birth_cost)
        self.stress_threshold = f(params.stress_threshold)
        self.stress_death_s = f(params.stress_death_s)
        self.stress_recovery_dt = f(params.stress_recovery) * dt
        self.permeability = vec(params.permeability)
        self.tier_reserve = vec(params.tier_reserve)
        self.c_specialised = vec(params.c_specialised)
        self.conductance_scale = f(params.conductance_scale)
        self.chain_kind = int(params.chain_kind)
        self.chain_rate = f(params.chain_rate)
        self.chain_cost_per_unit = f(params.chain_cost_per_unit)
        self.chain_log_keep = log1p(-f(params.chain_p_stop))  # ln(1 - p_stop)
        self.chain_n_max = f(params.chain_n_max)
        self.chain_init_rate = f(params.chain_init_rate)
        self.chain_init_cost = f(params.chain_init_cost)

    def _make_cell(self, s: State, i: int) -> Cell:
        cell = Cell(i)
        cells, led, prod, cons = s.cells, s.ledger, s.producers, s.consumers
        for name in CELL_FIELDS:
            setattr(cell, name, getattr(cells, name)[i].tolist())
        for name in CELL_LEDGER_FIELDS:
            setattr(cell, name, getattr(led, name)[i].tolist())
        cell.uptake = float(cells.uptake[i])
        n_p = prod.alive.shape[1]
        for k in range(n_p):
            p = Producer()
            p.pid, p.kind = i * n_p + k, int(prod.kind[i, k])
            p.vmax = float(prod.vmax[i, k])
            p.health, p.alive = float(prod.health[i, k]), bool(prod.alive[i, k])
            p.j = p.made = p.want_h = 0.0
            cell.producers.append(p)
        cell.living = [p for p in cell.producers if p.alive]
        n_k = cons.kind.shape[1]
        demand_mult = float(cells.demand_mult[i])
        kinds, tiers = cons.kind[i].tolist(), cons.tier[i].tolist()
        for k in range(n_k):
            c = Consumer()
            c.cid, c.km, c.value = i * n_k + k, float(cons.km[i, k]), float(cons.value[i, k])
            c.vmax_eff = self.demand_scale * demand_mult * float(cons.vmax[i, k])
            c.reserve = self.tier_reserve[tiers[k]]
            c.spent, c.work = float(led.spent[i, k]), float(led.work[i, k])
            c.want = c.served = 0.0
            c.chain = False
            c.specialised = self.c_specialised[kinds[k]] > 0
            cell.consumers.append(c)
        cell.tiers = [[c for c, t in zip(cell.consumers, tiers) if t == tier] for tier in sorted(set(tiers))]
        cell.tier0 = [c for c, t in zip(cell.consumers, tiers) if t == 0]
        sat0 = 0.0
        for c in cell.tier0:
            sat0 += c.vmax_eff
        cell.saturated0 = sat0
        if s.chains is not None:
            cell.chains = [Chain.from_state(s.chains, i, k) for k in range(s.chains.active.shape[1])]
            cell.chain_led = {f: float(getattr(s.chain_ledger, f)[i]) for f in CHAIN_LEDGER_FIELDS}
        if cell.chains:  # the consumer the chains realise and their per-run constants (sim.substrates.bio.kernels.translation)
            cc = next((c for c, kind in zip(cell.consumers, kinds) if kind == self.chain_kind), None)
            if cc is not None:
                cc.chain = True
                cell.chain_c = cc
                r_max = self.chain_rate
                cell.chain_c0 = cc.vmax_eff / (len(cell.chains) * r_max) if r_max > 0 else 0.0
                cell.cohort = cell.chain_c0 / self.chain_cost_per_unit
                cell.chain_init_cost = self.chain_init_cost * cell.cohort
        return cell

    # ---- helpers ------------------------------------------------------------------------------

    def draws(self, purpose: int, n: int) -> list[float]:
        """This step's draws of ``purpose`` for ids ``0..n-1``."""
        return host_draws(self.key, self.step_count, purpose, n)

    def abs_dg(self, pools) -> float:
        """|dG_ATP| in kJ/mol at ``pools`` (sim.substrates.bio.kernels.thermo.dg_atp_kj)."""
        a, d, pi = pools[ATP], pools[ADP], pools[PI]
        ratio = ((d if d > TINY_MM else TINY_MM) * 1e-3) * ((pi if pi > TINY_MM else TINY_MM) * 1e-3)
        ratio = ratio / ((a if a > TINY_MM else TINY_MM) * 1e-3)
        return abs(self.dg0 + self.rt * log(ratio))

    def chain_params_cell(self, cell: Cell, a: float) -> ChainStep:
        """This step's chain parameters from the step-start ATP ``a``: elongation and initiation
        at ``A'/(K + A')`` of their maxima, ``A' = max(A - reserve of the tier, 0)``."""
        cc = cell.chain_c
        ap = a - cc.reserve
        ap = ap if ap > 0.0 else 0.0
        sat = ap / (cc.km + ap)
        return ChainStep(
            rate_dt=(self.chain_rate * sat) * self.dt, c0=cell.chain_c0, n_max=self.chain_n_max,
            p_init=-expm1(-(self.chain_init_rate * sat) * self.dt), init_cost=cell.chain_init_cost,
            log_keep_stop=self.chain_log_keep,
        )

    # ---- processes (sim.substrates.bio.kernels.step.PROCESSES) -------------------------------------------------

    # 1 metabolism
    def metabolism(self) -> None:
        draws = self.metabolism_draws()
        for cell in self.cells:
            self.metabolism_cell(cell, draws)

    def metabolism_draws(self):
        """The chains' draws (``CHAIN_DRAW``), indexed by chain id (None without chains)."""
        if not self.n_chain_slots:
            return None
        return self.draws(ck.CHAIN_DRAW, self.n * self.n_chain_slots)

    def metabolism_cell(self, cell: Cell, chain_draws=None) -> None:
        """Uptake, production, tiered consumption (chains included), repair and damage on the
        step-start state (sim.substrates.bio.kernels.metabolism)."""
        if not cell.alive:
            cell.maintenance = 1.0  # no tier-0 demand; every flux of a dead cell is zero
            return
        dt = self.dt
        pools = cell.pools
        s, a, d, pi = pools[GLC], pools[ATP], pools[ADP], pools[PI]
        rt = self.rt
        abs_dg = self.abs_dg(pools)

        uptake = self.uptake_scale * cell.uptake * (self.ext - s) * dt
        if uptake < -s:
            uptake = -s

        # saturation and thermodynamic-brake factors per producer kind (shared by the cell's
        # organelles of that kind)
        # times the capacity scale of the cell's producers (supply scale, parallel activation,
        # differentiation): the rate per unit capacity and health of each kind
        f_p, f_w = self.diff.factors(cell.index)
        scale = (self.supply_scale * self.supply_activation) * f_p
        factors = []
        for k in range(self.n_pkinds):
            x = (abs_dg - self.p_ceiling[k]) / rt
            br = 1.0 - exp(x) if x < 0.0 else 0.0
            factors.append(scale * ((s / (self.p_k_s[k] + s)) * (d / (self.p_k_adp[k] + d)) * (pi / (self.p_k_pi[k] + pi)) * br))
        # desired rate of each living producer J = V h S/(K_S+S) D/(K_D+D) Pi/(K_P+Pi) brake (mM/s)
        # and the repair it wants (a dead producer adds exact zeros)
        sum_j = 0.0
        sum_jg = 0.0
        living = cell.living
        p_yield = self.p_yield
        repair_rate = self.repair_rate
        for p in living:
            h = p.health
            j = p.vmax * h * factors[p.kind]
            p.j = j
            p.want_h = repair_rate * (1.0 - h) * dt
            sum_j += j
            sum_jg += j / p_yield[p.kind]
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
        p_abs_sdg = self.p_abs_sdg
        for p in living:
            m = p.j * dt * f_prod
            p.made = m
            made += m
            g = m / p_yield[p.kind]
            glc_used += g
            sub_e += g * p_abs_sdg[p.kind]
        substrate_energy = sub_e * self.volume

        # consumption by priority tier, limited by the ATP present at the start of the step: each
        # consumer wants V A'/(K + A') dt, A' = max(A - reserve of its tier, 0); the chains quote
        # their demand in place of the consumer they realise (served in its tier). With several
        # carriers A is what the cell's consumers can spend of its step-start holdings.
        a_pool = a
        if self.carriers_on:
            a = self.car.spendable(cell.index)
        cc = cell.chain_c
        if cc is not None:
            cp = self.chain_params_cell(cell, a)
            chain_want = chain_quote(cell.chains, cp, chain_draws)
            cc.want = chain_want
        rest = a
        output = 0.0
        for group in cell.tiers:
            want = 0.0
            for c in group:
                if not c.chain:
                    ap = max(a - c.reserve, 0.0)
                    vmax = c.vmax_eff * f_w if c.specialised else c.vmax_eff
                    c.want = vmax * ap / (c.km + ap) * dt
                want += c.want
            frac = (rest / want if want > 0 else 0.0) if want > rest else 1.0
            for c in group:
                served = c.want * frac
                c.served = served
                if not c.chain:  # the chains' share is booked once they have spent it
                    c.spent += served
                    c.work += served * c.value
                    if c.specialised:
                        output += served * c.value
            rest = rest - frac * want
            if rest < 0.0:
                rest = 0.0
        if cc is not None:  # the chains elongate with the share granted
            share = cc.served
            budget = share if share < chain_want else inf
            spent_ch, units = step_chains(cell.chains, cp, cell.chain_led, chain_draws, budget)
            cc.served = spent_ch  # ATP spent (mM) and amino acids made (mM) on this ledger line
            cc.spent += spent_ch
            cc.work += units * cell.cohort
        tier0 = 0.0
        for c in cell.tier0:
            tier0 += c.served
        sat0 = cell.saturated0
        if sat0 > 0:
            den = sat0 * dt
            cell.maintenance = tier0 / den if den > 0 else 0.0
        else:
            cell.maintenance = 1.0

        # repair of damaged producers, served after all consumers; wear from this step's load
        want_h = 0.0
        for p in living:
            want_h += p.want_h
        repair_cost = self.repair_cost * want_h
        f_rep = (rest / repair_cost if repair_cost > 0 else 0.0) if repair_cost > rest else 1.0
        repair_spent = repair_cost * f_rep
        repaired = 0.0
        # h + r dt f_rep (1 - h) - damage load dt with the load j f_prod / vmax = factor h f_prod,
        # as h (1 - wear) + mend (1 - h) (metabolism.health_update)
        p_damage = self.p_damage
        mend = (self.repair_rate * dt) * f_rep
        fd = f_prod * dt
        wear = [p_damage[k] * factors[k] * fd for k in range(self.n_pkinds)]
        for p in living:
            repaired += p.want_h * f_rep
            h = p.health * (1.0 - wear[p.kind]) + mend * (1.0 - p.health)
            p.health = 0.0 if h < 0.0 else (1.0 if h > 1.0 else h)

        spent = 0.0
        for c in cell.consumers:
            spent += c.served
        spent_total = spent + repair_spent
        x = s + (uptake - glc_used)
        pools[GLC] = x if x > 0.0 else 0.0
        if self.carriers_on:  # debit what was spent, credit what was made; the losses hydrolysed
            lost = self.car.debit(cell.index, spent_total)
            lost = lost + self.car.credit(cell.index, made)
            x = d + ((spent_total - made) + lost)
            pools[ADP] = x if x > 0.0 else 0.0
            x = pi + ((spent_total - made) + lost)
            pools[PI] = x if x > 0.0 else 0.0
            pools[ATP] = self.car.total(cell.index)
            hydrolysis = (spent_total + lost) * abs_dg * self.volume
        else:
            x = a_pool + (made - spent_total)
            pools[ATP] = x if x > 0.0 else 0.0
            x = d + (spent_total - made)
            pools[ADP] = x if x > 0.0 else 0.0
            x = pi + (spent_total - made)
            pools[PI] = x if x > 0.0 else 0.0
            hydrolysis = spent_total * abs_dg * self.volume
        stored = made * abs_dg * self.volume
        cell.produced += made
        cell.repair_spent += repair_spent
        cell.substrate_used += glc_used
        cell.substrate_uptake += uptake
        cell.substrate_energy_j += substrate_energy
        cell.stored_energy_j += stored - hydrolysis
        cell.heat_j += (substrate_energy - stored) + hydrolysis
        cell.hydrolysis_energy_j += hydrolysis
        cell.repair_health += repaired
        cell.output += output

    # 2 transport
    def transport(self) -> None:
        for cell in self.cells:
            self.transport_compute_cell(cell)
        for cell in self.cells:
            self.transport_apply_cell(cell)

    def transport_compute_cell(self, cell: Cell) -> None:
        """Signed flux (src -> dst) per species over each junction this cell owns (its src);
        reads the neighbours' pools, writes only this cell's fluxes."""
        flux = cell.flux
        if not cell.alive:
            for k in range(len(flux)):
                flux[k] = None  # closed junctions
            return
        p0, p1, p2, p3, p4 = cell.pools
        for k, (nb, gp, _, _) in enumerate(cell.out_edges):
            if nb.alive:
                q = nb.pools
                flux[k] = (
                    gp[0] * (p0 - q[0]),
                    gp[1] * (p1 - q[1]),
                    gp[2] * (p2 - q[2]),
                    gp[3] * (p3 - q[3]),
                    gp[4] * (p4 - q[4]),
                )
            else:
                flux[k] = None
        if self.carriers_on:  # every carrier down its own gradient, with ATP's permeability
            mine, kflux = self.car.held[cell.index], cell.kflux
            for k, (nb, gp, _, _) in enumerate(cell.out_edges):
                kflux[k] = None if flux[k] is None else tuple(gp[ATP] * (h - o) for h, o in
                                                               zip(mine, self.car.held[nb.index]))

    def transport_apply_cell(self, cell: Cell) -> None:
        """Add the fluxes of this cell's junctions (those it owns, then those it receives); what
        leaks in transit is booked to the sender (sim.substrates.bio.kernels.transport)."""
        if not cell.alive:
            return  # every junction of a dead cell is closed
        d_own = [0.0] * N_SPECIES
        lost_own = [0.0] * N_SPECIES
        in_own = out_own = 0.0
        for (_, _, keep, leak), flux in zip(cell.out_edges, cell.flux):
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
        for src, k, keep, leak in cell.in_edges:
            flux = src.flux[k]
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
        pools = cell.pools
        lost = cell.lost
        if self.carriers_on:  # ATP moved as its carriers: their flows replace the ATP column's
            in_own, out_own, in_in, out_in = self._transport_carriers_cell(cell, d_own, lost_own, d_in, lost_in)
        for s in _S:
            x = pools[s] + (d_own[s] + d_in[s])
            pools[s] = x if x > 0.0 else 0.0
            lost[s] += lost_own[s] + lost_in[s]
        if self.carriers_on:
            pools[ATP] = self.car.total(cell.index)
        cell.transported_in += in_own + in_in
        cell.transported_out += out_own + out_in

    def _transport_carriers_cell(self, cell: Cell, d_own, lost_own, d_in, lost_in):
        """The carriers' share of :meth:`transport_apply_cell`: each carrier's holding changes by
        its own flows; the ATP ledgers (sent, received, lost) add the carriers' flows each way
        (per junction: sent = sum of the positive flows, as the kernel's ATP column). Returns the
        ATP (received, sent) over owned junctions and over the others'."""
        k_n = self.car.k
        dh = [0.0] * k_n
        d_own[ATP] = d_in[ATP] = lost_own[ATP] = lost_in[ATP] = 0.0
        in_own = out_own = in_in = out_in = 0.0
        for (_, _, keep, leak), flux, kf in zip(cell.out_edges, cell.flux, cell.kflux):
            if flux is None:  # closed (kflux is not refreshed then)
                continue
            sent = recv = 0.0
            for m, j in enumerate(kf):
                if j > 0.0:
                    dh[m] += -j
                    sent += j
                elif j < 0.0:
                    dh[m] += keep * -j
                    recv += -j
            lost_own[ATP] += leak * sent
            out_own += sent
            in_own += keep * recv
        for src, k, keep, leak in cell.in_edges:
            if src.flux[k] is None:
                continue
            kf = src.kflux[k]
            sent = recv = 0.0
            for m, j in enumerate(kf):
                if j > 0.0:  # received from the owner
                    dh[m] += keep * j
                    recv += j
                elif j < 0.0:  # sent to the owner
                    dh[m] += j
                    sent += -j
            lost_in[ATP] += leak * sent
            out_in += sent
            in_in += keep * recv
        held = self.car.held[cell.index]
        for m in range(k_n):
            x = held[m] + dh[m]
            held[m] = x if x > 0.0 else 0.0
        return in_own, out_own, in_in, out_in

    # 3 adenylate kinase
    def adenylate_kinase(self) -> None:
        for cell in self.cells:
            self.adenylate_kinase_cell(cell)

    def adenylate_kinase_cell(self, cell: Cell) -> None:
        """2 ADP <-> ATP + AMP to equilibrium (sim.substrates.bio.kernels.thermo.adenylate_equilibrium),
        together with PCr + ADP <-> Cr + ATP when the cell has creatine (``ak_ck_equilibrium``)."""
        if not cell.alive:
            return
        if self.creatine_total > 0:
            self._ak_ck_cell(cell)
            return
        pools = cell.pools
        a0, d0, m0 = pools[ATP], pools[ADP], pools[AMP]
        n = a0 + d0 + m0
        e = 2.0 * a0 + d0
        if e < 0.0:
            e = 0.0
        n2 = 2.0 * n
        if e > n2:
            e = n2
        c = e * (n2 - e)
        disc = n * n - self.one_m_4k * c
        if disc < 0.0:
            disc = 0.0
        denom = n + sqrt(disc)
        d = c / denom if denom > 0 else 0.0
        a = 0.5 * (e - d)
        m = n - a - d
        pools[ATP] = a
        pools[ADP] = d
        pools[AMP] = m if m > 0.0 else 0.0
        self._reconcile(cell, a)
        cell.ak_atp += a - a0

    def _ak_ck_cell(self, cell: Cell) -> None:
        """Both kinases at equilibrium: Newton in ln(ATP/ADP) on the conserved high-energy
        phosphate, step for step as ``thermo.ak_ck_equilibrium``."""
        pools = cell.pools
        a0, d0, m0, pcr0 = pools[ATP], pools[ADP], pools[AMP], cell.pcr
        k, kc, c = self.k_ak, self.k_ck, self.creatine_total
        n = a0 + d0 + m0
        e = 2.0 * a0 + d0 + pcr0
        e_max = 2.0 * n + c
        e = 0.0 if e < 0.0 else (e_max if e > e_max else e)
        r = (a0 if a0 > TINY_MM else TINY_MM) / (d0 if d0 > TINY_MM else TINY_MM)
        r = 1e-6 if r < 1e-6 else (1e6 if r > 1e6 else r)
        x = log(r)
        for _ in range(N_NEWTON):
            r = exp(x)
            q = r * r + r + k
            rk = r + kc
            h = n * r * (2.0 * r + 1.0) / q + c * r / rk - e
            dh = r * (n * (r * r + 4.0 * k * r + k) / (q * q) + c * kc / (rk * rk))
            step = h / dh if dh > 0 else 0.0
            step = -MAX_LOG_STEP if step < -MAX_LOG_STEP else (MAX_LOG_STEP if step > MAX_LOG_STEP else step)
            x = x - step
        r = exp(x)
        q = r * r + r + k
        d = n * r / q
        a = d * r
        pools[ATP] = a
        pools[ADP] = d
        pools[AMP] = n * k / q
        self._reconcile(cell, a)
        pcr = c * r / (r + kc)
        cell.pcr = pcr
        ck = pcr0 - pcr
        cell.ak_atp += (a - a0) - ck
        cell.ck_atp += ck

    def _reconcile(self, cell: Cell, atp: float) -> None:
        """With several carriers: the kinases' new ATP ``atp`` spread over the cell's carriers pro
        rata (``sim.core.carriers.reconcile``); the ATP pool is their sum."""
        if self.carriers_on:
            i = cell.index
            self.car.held[i] = reconcile_row(self.car.held[i], self.car.make[i], atp)
            cell.pools[ATP] = self.car.total(i)

    def _pay(self, cell: Cell, cost: float) -> None:
        """ATP hydrolysed for ``cost`` mM (ATP -> ADP + Pi); with several carriers taken from every
        carrier pro rata (``sim.core.carriers.discharge``) and the ATP pool their sum."""
        pools = cell.pools
        a = pools[ATP]
        pools[ATP] = a - cost
        pools[ADP] = pools[ADP] + cost
        pools[PI] = pools[PI] + cost
        if self.carriers_on:
            i = cell.index
            frac = cost / a if a > 0 else 0.0
            self.car.held[i] = [h * (1.0 - frac) for h in self.car.held[i]]
            pools[ATP] = self.car.total(i)

    # 4 producer failure
    def producer_failure(self) -> None:
        u = self.producer_failure_draws()
        for cell in self.cells:
            self.producer_failure_cell(cell, u)

    def producer_failure_draws(self) -> list[float]:
        return self.draws(rng.PRODUCER_FAILURE_CELL, self.n)

    def producer_failure_cell(self, cell: Cell, u) -> None:
        """Each living producer fails with hazard ``hazard0 exp(beta (1 - h))`` (1/s), independently,
        its pattern decided by the cell's one draw (``u`` by cell index; :mod:`sim.core.rare_events`).
        The bound only skips work: a cell above it has no failure whatever its exact rates."""
        living = cell.living
        if not living:
            return
        uc = u[cell.index]
        h_min = min(p.health for p in living)
        slots = self.n_producer_slots
        if not uc < rare_events.bound_probability(slots * self.hazard0 * exp(self.hazard_beta * (1.0 - h_min)), self.dt, xp=math):
            return
        first = cell.index * slots
        rates = np.zeros((1, slots))
        for p in living:
            rates[0, p.pid - first] = self.hazard0 * exp(self.hazard_beta * (1.0 - p.health))
        fails = rare_events.pattern(np.array([uc]), rates, self.dt, xp=np)[0]
        failed = [p for p in living if fails[p.pid - first]]
        if failed:
            for p in failed:
                p.alive = False
            cell.failures += len(failed)
            cell.living = [p for p in living if p.alive]

    # 5 biogenesis
    def producer_biogenesis(self) -> None:
        u = self.producer_biogenesis_draws()
        for cell in self.cells:
            self.producer_biogenesis_cell(cell, u)

    def producer_biogenesis_draws(self) -> list[float]:
        return self.draws(rng.PRODUCER_BIRTH, self.n)

    def producer_biogenesis_cell(self, cell: Cell, u) -> None:
        """Update the slow energy-charge signal, then a new producer (health 1) in the first free
        slot with probability 1 - exp(-rate dt), rate = birth_rate x the clipped deficit of the
        signal below its set point; paid in ATP (-> ADP + Pi); ``u`` by cell."""
        if not cell.alive:
            return
        pools = cell.pools
        a, d, m = pools[ATP], pools[ADP], pools[AMP]
        db = d + self.adp_bound  # the charge of the total pools (sim.substrates.bio.kernels.thermo.energy_charge)
        total = a + db + (m + self.amp_bound)
        ec = (a + 0.5 * db) / total if total > 0 else 0.0
        ec_slow = cell.ec_slow + self.birth_alpha * (ec - cell.ec_slow)
        cell.ec_slow = ec_slow
        x = (self.birth_ec_set - ec_slow) / self.birth_ec_span
        x = 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)
        p_birth = -expm1(-(self.birth_rate * x) * self.dt)
        if not (a >= self.birth_cost and u[cell.index] < p_birth):
            return
        for p in cell.producers:
            if not p.alive:
                p.alive, p.health = True, 1.0
                cell.living = [p for p in cell.producers if p.alive]
                cost = self.birth_cost
                energy = cost * self.abs_dg(pools) * self.volume  # hydrolysed ATP: released, ends as heat
                cell.heat_j += energy
                cell.hydrolysis_energy_j += energy
                cell.stored_energy_j -= energy
                self._pay(cell, cost)
                cell.births += 1
                cell.birth_spent += cost
                return

    # 6 stress and death
    def cell_stress(self) -> None:
        for cell in self.cells:
            self.cell_stress_cell(cell)

    def cell_stress_cell(self, cell: Cell) -> None:
        """Accumulate stress while maintenance is short, recover otherwise; die at the threshold
        (its producers stop, its junctions close, its pools stay)."""
        if not cell.alive:
            return
        if cell.maintenance < self.stress_threshold:
            stress = cell.stress + self.dt
        else:
            stress = cell.stress - self.stress_recovery_dt
            if stress < 0.0:
                stress = 0.0
        cell.stress = stress
        if stress >= self.stress_death_s:
            cell.alive = False
            for p in cell.living:
                p.alive = False
            cell.living = []

    def _make_phases(self) -> tuple[Phase, ...]:
        """The step as phases (:mod:`sim.core.phases`), in the order of
        ``sim.substrates.bio.kernels.step.PROCESSES`` and then the core's appended processes.
        Transport is two per-cell phases because a cell's fluxes read its neighbours' pools: every
        flux is computed from the post-metabolism pools before any cell applies one."""
        phases = (
            Phase("metabolism", cell=self.metabolism_cell, draws=self.metabolism_draws),
            Phase("transport_compute", cell=self.transport_compute_cell),
            Phase("transport_apply", cell=self.transport_apply_cell),
            Phase("adenylate_kinase", cell=self.adenylate_kinase_cell),
            Phase("producer_failure", cell=self.producer_failure_cell, draws=self.producer_failure_draws),
            Phase("producer_biogenesis", cell=self.producer_biogenesis_cell, draws=self.producer_biogenesis_draws),
            Phase("cell_stress", cell=self.cell_stress_cell),
        )
        if self.diff.rule != "fixed":  # as the engine, which appends no adaptation process then
            # payoffs and imitation read every cell: whole-tissue phases
            phases += (Phase("adaptation", tissue=self.adaptation),)
        if self.carriers_on:  # the core's appended processes (sim.core.carriers.with_carriers)
            phases += (Phase("carrier_upkeep", tissue=self.carrier_upkeep),)
            if self.car.rule == "imitation":
                phases += (Phase("carrier_strategy", tissue=self.carrier_strategy),)
        return phases + (Phase("clock", tissue=self._tick),)

    def _tick(self) -> None:
        self.step_count += 1

    def step(self) -> None:
        """One time step: :attr:`phases` in order, cells in index order."""
        step_in_phases(self.phases, self.cells)

    # 7 differentiation (only with an adaptive rule: sim.core.differentiation.adaptive)
    def adaptation(self) -> None:
        cells = self.cells
        paid = self.diff.step(self.step_count, self.dt, [c.output for c in cells],
                              [c.pools[ATP] for c in cells], [c.alive for c in cells])
        for cell, cost in zip(cells, paid):
            if cost == 0.0:
                continue
            pools = cell.pools
            energy = cost * self.abs_dg(pools) * self.volume  # hydrolysed ATP, ends as heat (like biogenesis)
            cell.heat_j += energy
            cell.hydrolysis_energy_j += energy
            cell.stored_energy_j -= energy
            self._pay(cell, cost)
            cell.switching += cost

    # 8 carriers (only with several: sim.core.carriers.with_carriers appends them)
    def carrier_upkeep(self) -> None:
        """Storage decay and background conversion; the charge dissipated is hydrolysed into the
        shared ADP and Pi, its |dG| (at the pools before) ends as heat (``spec.settle``)."""
        for cell, x in zip(self.cells, self.car.upkeep(self.dt)):
            pools = cell.pools
            energy = x * self.abs_dg(pools) * self.volume
            cell.heat_j += energy
            cell.hydrolysis_energy_j += energy
            cell.stored_energy_j -= energy
            pools[ATP] = self.car.total(cell.index)
            pools[ADP] = pools[ADP] + x
            pools[PI] = pools[PI] + x

    def carrier_strategy(self) -> None:
        """Imitation of a better-off neighbour's carrier; the payoff is the cell's work (all kinds)."""
        work = []
        for cell in self.cells:
            w = 0.0
            for c in cell.consumers:
                w += c.work
            work.append(w)
        self.car.strategy(self.step_count, self.dt, work, [c.alive for c in self.cells])

    # ---- export -------------------------------------------------------------------------------

    def state(self) -> State:
        """The reference's state in the engine's PyTree layout (numpy, the initial state's dtypes)."""
        init = self._init

        def col(objs, name, like):
            return np.array([getattr(o, name) for o in objs], dtype=like.dtype).reshape(like.shape)

        cells = dataclasses.replace(
            jax.tree_util.tree_map(np.copy, init.cells),
            **{f: col(self.cells, f, getattr(init.cells, f)) for f in CELL_FIELDS},
        )
        prod = init.producers
        producers = dataclasses.replace(
            jax.tree_util.tree_map(np.copy, prod),
            health=col(self.producers, "health", prod.health),
            alive=col(self.producers, "alive", prod.alive),
        )
        led = init.ledger
        ledger = Ledger(**{f.name: col(self.consumers if f.name in ("spent", "work") else self.cells, f.name,
                                       getattr(led, f.name)) for f in dataclasses.fields(Ledger)})
        chains, chain_ledger = init.chains, init.chain_ledger
        if chains is not None:
            chains = ck.ChainSlots(**{f.name: col(self.chains, f.name, getattr(chains, f.name))
                                      for f in dataclasses.fields(ck.ChainSlots)})
            chain_ledger = ck.ChainLedger(**{f: np.array([c.chain_led[f] for c in self.cells],
                                                         dtype=getattr(chain_ledger, f).dtype)
                                             for f in CHAIN_LEDGER_FIELDS})
        return State(
            cells=cells,
            producers=producers,
            consumers=jax.tree_util.tree_map(np.copy, init.consumers),
            ledger=ledger,
            step=np.asarray(self.step_count, dtype=np.asarray(init.step).dtype),
            chains=chains,
            chain_ledger=chain_ledger,
            diff=self.diff.state(),
            carriers=None if self.car is None else jax.tree_util.tree_map(
                lambda x, like: np.asarray(x, like.dtype), self.car.state(), init.carriers),
        )


__all__ = ["ReferenceBio", "Cell", "Producer", "Consumer", "Chain", "ChainStep", "chain_quote", "step_chains",
           "host_draws", "CHAIN_LEDGER_FIELDS"]
