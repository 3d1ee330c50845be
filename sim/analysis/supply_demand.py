"""Independent steady state and supply-demand analysis of one cell of the biology preset.

This module re-derives the continuous-time rate equations of one cell in plain numpy/scipy and
never calls the JAX kernels, so the engine can be checked against it. Units: concentrations in
mM, time in s, fluxes in mM/s, free energies in kJ/mol, temperature in K.

Equations (values and sources in conf/substrate/bio.yaml and docs/references.md):

* glucose uptake from the surroundings ``v_up = k_up (S_ext - S)``                       [mM/s]
* producer p:  ``J_p = s V_p h_p S/(K_S,p+S) D/(K_D,p+D) Pi/(K_P,p+Pi) brake_p(dG)``         [mM/s]
  with ``s`` = ``supply_scale``, glucose use ``J_p / yield_p``; the thermodynamic brake is
  ``max(0, 1 - exp((|dG| - G_max,p)/RT))`` (OXPHOS: ``G_max = n_H F dp``)
* ``dG = dG0' + RT ln(D Pi / A)`` with the concentrations in M (-54.2 kJ/mol at 5/0.5/1 mM,
  310 K; docs/references.md)
* consumer j: ``u_j = d m V_j A'/(K_j + A')``, ``A' = max(A - R_tier, 0)`` (Michaelis-Menten above the tier's reserve) with ``d`` = ``demand_scale`` and
  ``m`` the cell's demand multiplier
* protein synthesis run as chains (S ribosome cohorts, each elongating at ``r A'/(K + A')`` aa/s
  for ``c0 = V/(S r)`` mM ATP per aa, terminating with probability ``p_stop`` per aa, a free slot
  initiating at ``k_i A'/(K + A')`` per s for ``c_i`` ATP per ribosome): in expectation over the
  renewal of each slot (steps of ``dt``: an elongating run lasts ``1/q`` steps,
  ``q = 1 - (1 - p_stop)^(r g dt)``, ``g = A'/(K + A')``; a free slot waits ``(1 - p_i)/p_i`` steps,
  ``p_i = 1 - exp(-k_i g dt)``) the slots translate a fraction ``f = p_i/(p_i + q (1 - p_i))`` of
  the time, so the chains spend ``u = d m V g f (1 + q c_i/(r g dt a))`` with ``a`` ATP per aa.
  With ``p_stop = 0`` every slot keeps translating (``f = 1``): the demand is deterministic and
  equals the Michaelis-Menten law of the consumer the chains realise.
* adenylate kinase at equilibrium ``K_AK = A M / D^2`` (fast on the time scale of the fluxes):
  the adenine pool ``N = A + D + M`` and the high-energy phosphate ``E = 2A + D`` fix A, D, M
* optional creatine kinase buffer at equilibrium too, ``K_CK = A Cr / (D PCr)`` with creatine
  ``C = PCr + Cr``: then ``E = 2A + D + PCr`` and, with ``r = A/D``, ``E(r) = N r (2r + 1)/(r^2 + r
  + K_AK) + C r/(r + K_CK)`` (increasing), solved for r with ``brentq``
* parallel activation: producer capacities times ``demand_scale ** parallel_activation``
* A, D, M are the FREE pools; the energy charge is that of the totals, with constant bound ADP and
  AMP added (``adp_bound``, ``amp_bound``)
* conserved moieties in a closed cell: ``N`` and ``Pi + E`` (ATP synthesis turns one Pi and one
  ADP into ATP: E rises by one, Pi falls by one; hydrolysis is the reverse; the kinases conserve
  both).

At a steady state the only free variables are E (which sets A, D, M and Pi) and S, and the
steady-state conditions are ``sum_p J_p = sum_j u_j`` (supply = demand of ATP) and
``v_up = sum_p J_p / yield_p``. They are solved with nested ``scipy.optimize.brentq`` to
``xtol = 1e-15`` (absolute, mM) and ``rtol = 4 eps``; the residuals are reported.

Supply-demand analysis (Hofmeyr & Cornish-Bowden 2000 FEBS Lett 476:47) splits the cell at the
linking intermediate (here E, equivalently ATP): the supply block (uptake + producers, with the
internal intermediate S relaxed to its quasi-steady state for each E) and the demand block
(consumers). With elasticities ``e_s = d ln J_supply / d ln E`` and ``e_d = d ln J_demand /
d ln E`` the flux control coefficients are ``C_supply = e_d/(e_d - e_s)`` and
``C_demand = -e_s/(e_d - e_s)``; they sum to 1. Elasticities with respect to ATP differ from
those with respect to E by the common factor ``d ln A / d ln E``, which cancels in the ratios.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize

R_J_PER_MOL_K = 8.314462618  # CODATA 2018 (kept here so this module does not import the engine)
XTOL = 1e-15  # mM
RTOL = 4 * np.finfo(float).eps
N_SCAN = 201  # grid points (log and linear each) of E scanned to bracket the physical root

__all__ = [
    "CellModel",
    "SteadyState",
    "ak_equilibrium",
    "cell_from_model",
    "control_coefficients",
    "dg_atp_kj",
    "elasticities",
    "numerical_control_coefficients",
    "rhs",
    "rhs_wear",
    "quasi_steady_glucose",
    "solve_steady_state",
    "supply_capacity",
]


# --------------------------------------------------------------------------------------------
# thermodynamics and adenylate kinase


def dg_atp_kj(atp, adp, pi, dg0_kj, temperature_k):
    """dG of ATP hydrolysis in kJ/mol (negative) from mM concentrations: dG0' + RT ln(D Pi / A)."""
    rt = R_J_PER_MOL_K * temperature_k * 1e-3
    with np.errstate(divide="ignore"):  # an empty ATP pool gives dG = +inf (the brake closes)
        ratio_m = (np.asarray(adp) * 1e-3) * (np.asarray(pi) * 1e-3) / (np.asarray(atp) * 1e-3)
        return dg0_kj + rt * np.log(ratio_m)


def ak_equilibrium(n, e, k_ak):
    """(ATP, ADP, AMP) at adenylate-kinase equilibrium for adenine pool ``n`` and ``e = 2A + D``.

    With A = (E - D)/2 and M = N - (E + D)/2, ``K D^2 = A M`` becomes
    ``(1 - 4K) D^2 - 2 N D + E (2N - E) = 0``. Its smaller root (the one with A, M >= 0) is written
    as ``D = E(2N - E) / (N + sqrt(N^2 - (1 - 4K) E (2N - E)))`` (no cancellation, valid at
    K = 1/4), then polished by one Newton step on the quadratic. Inputs broadcast; ``0 <= e <= 2n``.
    """
    n = np.asarray(n, dtype=float)
    e = np.asarray(e, dtype=float)
    k = np.asarray(k_ak, dtype=float)
    a2 = 1.0 - 4.0 * k
    c = e * (2.0 * n - e)
    d = np.where(c > 0, c / np.where(c > 0, n + np.sqrt(np.maximum(n * n - a2 * c, 0.0)), 1.0), 0.0)
    f = a2 * d * d - 2.0 * n * d + c
    fp = 2.0 * a2 * d - 2.0 * n
    d = np.where((c > 0) & (fp != 0), d - f / np.where(fp != 0, fp, 1.0), d)
    d = np.clip(d, 0.0, np.minimum(e, 2.0 * n - e))
    a = 0.5 * (e - d)
    m = n - a - d
    return a, d, m


def ak_ck_species(n, e, k_ak, creatine, k_ck):
    """(ATP, ADP, AMP, PCr) with adenylate and creatine kinase at equilibrium for adenine ``n``,
    creatine ``creatine`` and high-energy phosphate ``e = 2A + D + PCr`` (scalars; ``brentq`` on
    ln(A/D), independent of the engine's Newton iteration)."""
    if creatine <= 0:
        a, d, m = ak_equilibrium(n, e, k_ak)
        return float(a), float(d), float(m), 0.0
    e = min(max(float(e), 0.0), 2.0 * n + creatine)

    def e_of(x):
        r = math.exp(x)
        return n * r * (2.0 * r + 1.0) / (r * r + r + k_ak) + creatine * r / (r + k_ck) - e

    lo, hi = -60.0, 60.0
    if e_of(lo) >= 0:
        x = lo
    elif e_of(hi) <= 0:
        x = hi
    else:
        x = optimize.brentq(e_of, lo, hi, xtol=1e-15, rtol=RTOL, maxiter=500)
    r = math.exp(x)
    q = r * r + r + k_ak
    return n * r * r / q, n * r / q, n * k_ak / q, creatine * r / (r + k_ck)


# --------------------------------------------------------------------------------------------
# the cell


@dataclasses.dataclass(frozen=True)
class CellModel:
    """The numbers of one cell (plain floats and numpy vectors over producers / consumers)."""

    temperature_k: float
    dg0_kj: float
    k_ak: float
    n_adenine: float  # mM, A + D + M (conserved)
    p_total: float  # mM, Pi + 2A + D (conserved)
    s_ext: float  # mM glucose outside
    k_uptake: float  # 1/s, uptake conductance (cell value, before uptake_scale)
    p_vmax: np.ndarray  # mM/s, V_p * h_p of the living producers (before supply_scale)
    p_yield: np.ndarray  # ATP per glucose
    p_k_s: np.ndarray  # mM
    p_k_adp: np.ndarray  # mM
    p_k_pi: np.ndarray  # mM
    p_ceiling_kj: np.ndarray  # kJ/mol
    c_vmax: np.ndarray  # mM/s, m V_j (before demand_scale)
    c_km: np.ndarray  # mM ATP
    c_tier: np.ndarray  # int
    c_reserve: np.ndarray  # mM ATP below which each consumer's tier stops drawing
    supply_scale: float = 1.0
    demand_scale: float = 1.0
    uptake_scale: float = 1.0
    # chains (protein synthesis by ribosome cohorts); c_chain marks the consumer they realise
    c_chain: np.ndarray | None = None  # bool per consumer
    ch_slots: int = 0
    ch_active0: int = 0  # slots translating at the start (what stays when p_stop = 0, no initiation)
    ch_dt: float = 0.0  # s, the step (the renewal is counted in steps)
    ch_rate: float = 0.0  # aa/s at saturating ATP
    ch_p_stop: float = 0.0  # per aa
    ch_init_rate: float = 0.0  # 1/s per free slot at saturating ATP
    ch_init_per_aa: float = 0.0  # initiation ATP per ribosome / ATP per aa
    # free versus bound nucleotides, creatine kinase buffer, parallel activation (see the module docstring)
    adp_bound: float = 0.0  # mM
    amp_bound: float = 0.0  # mM
    creatine_total: float = 0.0  # mM (0: no buffer)
    k_ck: float = 166.0  # apparent K_CK (Lawson & Veech 1979 at pH 7.0)
    parallel_activation: float = 0.0  # exponent of demand_scale on the producers' capacity
    # producer wear and repair (only :func:`rhs_wear` uses them; ``p_vmax`` above is ``p_v_nominal * p_health``)
    p_v_nominal: np.ndarray | None = None  # mM/s, V_p of the living producers before health
    p_health: np.ndarray | None = None  # health h_p in [0, 1] at the start
    p_damage: np.ndarray | None = None  # 1/s health lost per unit relative load J_p / V_p
    repair_rate: float = 0.0  # 1/s: repair restores repair_rate (1 - h_p) health per s
    repair_cost: float = 0.0  # mM ATP per unit health restored
    # the cell's starting pools (what an ODE started from the built state begins with)
    e_start: float | None = None  # mM, high-energy phosphate 2A + D + PCr
    glucose_start: float | None = None  # mM

    def replace(self, **kw) -> "CellModel":
        return dataclasses.replace(self, **kw)

    # ---- rates (vectorised over E and S where that makes sense) ----
    def species(self, e):
        """(A, D, M, Pi) in mM (free) on the kinase-equilibrium manifold for high-energy phosphate ``e``."""
        if self.creatine_total > 0:
            a, d, m, _ = self.species_pcr(e)
        else:
            a, d, m = ak_equilibrium(self.n_adenine, e, self.k_ak)
        return a, d, m, self.p_total - np.asarray(e, dtype=float)

    def species_pcr(self, e):
        """(A, D, M, PCr) in mM for high-energy phosphate ``e`` (vectorised over ``e``)."""
        f = np.vectorize(lambda x: ak_ck_species(self.n_adenine, x, self.k_ak, self.creatine_total, self.k_ck))
        a, d, m, p = f(np.asarray(e, dtype=float))
        return a, d, m, p

    def energy_charge(self, e):
        """Energy charge of the total pools (bound ADP and AMP included) at ``e``."""
        a, d, m, _ = self.species(e)
        d = d + self.adp_bound
        return (a + 0.5 * d) / (a + d + (m + self.amp_bound))

    @property
    def activation(self) -> float:
        """Parallel activation of supply: ``demand_scale ** parallel_activation``."""
        return self.demand_scale ** self.parallel_activation

    def brake(self, dg):
        rt = R_J_PER_MOL_K * self.temperature_k * 1e-3
        return np.maximum(0.0, 1.0 - np.exp((np.abs(dg)[..., None] - self.p_ceiling_kj) / rt))

    def producer_rates(self, e, s):
        """ATP synthesis per producer (..., P) in mM/s."""
        a, d, _, pi = self.species(e)
        s = np.asarray(s, dtype=float)
        dg = dg_atp_kj(a, d, pi, self.dg0_kj, self.temperature_k)
        sat = (
            (s[..., None] / (self.p_k_s + s[..., None]))
            * (d[..., None] / (self.p_k_adp + d[..., None]))
            * (pi[..., None] / (self.p_k_pi + pi[..., None]))
        )
        return (self.supply_scale * self.activation) * self.p_vmax * sat * self.brake(dg)

    def supply(self, e, s):
        return np.sum(self.producer_rates(e, s), axis=-1)

    def glucose_use(self, e, s):
        return np.sum(self.producer_rates(e, s) / self.p_yield, axis=-1)

    def uptake(self, s):
        return self.uptake_scale * self.k_uptake * (self.s_ext - np.asarray(s, dtype=float))

    def chain_factor(self, g):
        """Expected chain spend relative to ``d m V g`` at saturation factor ``g``: occupancy
        ``f`` times (1 + the initiation ATP per elongation ATP); see the module docstring."""
        g = np.asarray(g, dtype=float)
        if self.ch_p_stop <= 0:
            if self.ch_init_rate > 0:
                return np.ones_like(g)
            return np.full_like(g, self.ch_active0 / max(self.ch_slots, 1))
        dt = self.ch_dt
        step_aa = self.ch_rate * g * dt
        q = -np.expm1(step_aa * np.log1p(-self.ch_p_stop))
        p = -np.expm1(-self.ch_init_rate * g * dt)
        den = p + q * (1.0 - p)
        occ = np.where(den > 0, p / np.where(den > 0, den, 1.0), 0.0)
        init = np.where(step_aa > 0, q * self.ch_init_per_aa / np.where(step_aa > 0, step_aa, 1.0), 0.0)
        return occ * (1.0 + init)

    def consumer_rates(self, e):
        a = np.maximum(np.asarray(self.species(e)[0])[..., None] - self.c_reserve, 0.0)
        g = a / (self.c_km + a)
        u = self.demand_scale * self.c_vmax * g
        if self.c_chain is not None and self.ch_slots > 0:
            u = np.where(self.c_chain, u * self.chain_factor(g), u)
        return u

    def demand(self, e):
        return np.sum(self.consumer_rates(e), axis=-1)

    @property
    def e_max(self) -> float:
        """Largest feasible E: A <= N and PCr <= C (E <= 2N + C) and Pi >= 0 (E <= p_total)."""
        return float(min(2.0 * self.n_adenine + self.creatine_total, self.p_total))


def cell_from_model(model, cell: int = 0, **overrides) -> CellModel:
    """Read one cell of a :class:`sim.substrates.bio.build.Model` (its initial state and params) as numbers.

    The conserved totals N and Pi + E are taken from the cell's initial pools. ``overrides`` set
    any :class:`CellModel` field, e.g. ``demand_scale=2.0``.
    """
    st, pr = model.state, model.params
    f = lambda x: float(np.asarray(x))  # noqa: E731
    pools = np.asarray(st.cells.pools)[cell]
    # species order of sim.substrates.bio.state: glucose, atp, adp, amp, pi
    atp, adp, amp, pi = (float(v) for v in pools[1:5])
    pcr = float(np.asarray(st.cells.pcr)[cell])
    alive_p = np.asarray(st.producers.alive)[cell] & bool(np.asarray(st.cells.alive)[cell])
    kind = np.asarray(st.producers.kind)[cell][alive_p]
    v_nominal = np.asarray(st.producers.vmax, float)[cell][alive_p]
    health = np.asarray(st.producers.health, float)[cell][alive_p]
    vmax = v_nominal * health
    mult = f(np.asarray(st.cells.demand_mult)[cell])
    cm = CellModel(
        temperature_k=f(pr.temperature_k),
        dg0_kj=f(pr.dg0_kj),
        k_ak=f(pr.k_ak),
        n_adenine=atp + adp + amp,
        p_total=pi + 2.0 * atp + adp + pcr,
        s_ext=f(pr.external_substrate),
        k_uptake=f(np.asarray(st.cells.uptake)[cell]),
        p_vmax=np.asarray(vmax, float),
        p_yield=np.asarray(pr.p_yield, float)[kind],
        p_k_s=np.asarray(pr.p_k_s, float)[kind],
        p_k_adp=np.asarray(pr.p_k_adp, float)[kind],
        p_k_pi=np.asarray(pr.p_k_pi, float)[kind],
        p_ceiling_kj=np.asarray(pr.p_ceiling_kj, float)[kind],
        c_vmax=mult * np.asarray(st.consumers.vmax, float)[cell],
        c_km=np.asarray(st.consumers.km, float)[cell],
        c_tier=np.asarray(st.consumers.tier)[cell].astype(int),
        c_reserve=np.asarray(pr.tier_reserve, float)[np.asarray(st.consumers.tier)[cell].astype(int)],
        supply_scale=f(pr.supply_scale),
        demand_scale=f(pr.demand_scale),
        uptake_scale=f(pr.uptake_scale),
        adp_bound=f(pr.adp_bound),
        amp_bound=f(pr.amp_bound),
        creatine_total=f(pr.creatine_total),
        k_ck=f(pr.k_ck),
        parallel_activation=f(pr.parallel_activation),
        p_v_nominal=v_nominal,
        p_health=health,
        p_damage=np.asarray(pr.p_damage, float)[kind],
        repair_rate=f(pr.repair_rate),
        repair_cost=f(pr.repair_cost),
        e_start=2.0 * atp + adp + pcr,
        glucose_start=float(pools[0]),
    )
    ch = getattr(st, "chains", None)
    slots = 0 if ch is None else int(np.asarray(ch.active).shape[-1])
    if slots:
        cm = cm.replace(
            c_chain=np.asarray(st.consumers.kind)[cell] == int(np.asarray(pr.chain_kind)),
            ch_slots=slots,
            ch_active0=int(np.sum(np.asarray(ch.active)[cell])),
            ch_dt=f(pr.dt),
            ch_rate=f(pr.chain_rate),
            ch_p_stop=f(pr.chain_p_stop),
            ch_init_rate=f(pr.chain_init_rate),
            ch_init_per_aa=f(pr.chain_init_cost) / f(pr.chain_cost_per_unit),
        )
    return cm.replace(**overrides) if overrides else cm


# --------------------------------------------------------------------------------------------
# steady state


@dataclasses.dataclass(frozen=True)
class SteadyState:
    atp: float  # mM
    adp: float  # mM
    amp: float  # mM
    pi: float  # mM
    glucose: float  # mM
    e: float  # mM, high-energy phosphate 2A + D
    flux: float  # mM/s ATP turned over (= supply = demand)
    glucose_flux: float  # mM/s glucose taken up (= used)
    energy_charge: float  # of the total pools (bound ADP and AMP included)
    dg_kj: float  # kJ/mol
    turnover_s: float  # s, ATP pool / flux
    consumer_rates: np.ndarray  # mM/s per consumer
    residual_atp: float  # mM/s, supply - demand at the root
    residual_glucose: float  # mM/s, uptake - use at the root
    pcr: float = 0.0  # mM phosphocreatine
    adp_total: float = 0.0  # mM, free + bound
    amp_total: float = 0.0  # mM, free + bound


def quasi_steady_glucose(cm: CellModel, e: float) -> float:
    """Quasi-steady glucose for fixed E: uptake(S) = use(E, S); unique (uptake falls, use rises)."""
    if cm.uptake_scale * cm.k_uptake <= 0 or cm.s_ext <= 0:
        return 0.0
    g = lambda s: float(cm.uptake(s) - cm.glucose_use(e, s))  # noqa: E731
    if g(cm.s_ext) >= 0:
        return cm.s_ext
    return optimize.brentq(g, 0.0, cm.s_ext, xtol=XTOL, rtol=RTOL, maxiter=500)


def supply_capacity(cm: CellModel, n_grid: int = 981) -> float:
    """Most ATP (mM/s) the supply block can make at any E (glucose at its quasi-steady state):
    the flux at which supply saturates however high demand goes (grid maximum, 1% .. 99% of E_max)."""
    grid = np.linspace(0.01, 0.99, n_grid) * cm.e_max
    return max(float(cm.supply(e, quasi_steady_glucose(cm, e))) for e in grid)


def _net_supply(cm: CellModel, e: float) -> float:
    s = quasi_steady_glucose(cm, e)
    return float(cm.supply(e, s) - cm.demand(e))


def solve_steady_state(cm: CellModel) -> SteadyState:
    """Stable steady state of one cell (supply = demand of ATP, uptake = use of glucose).

    E is bracketed by scanning a grid on (0, E_max]; the root taken is the largest E where
    supply - demand changes sign from + to - (the stable, physiological branch; at vanishing E a
    spurious crossing can appear because |dG| of a nearly empty ATP pool closes the brake).
    """
    e_hi = cm.e_max
    grid = np.unique(
        np.concatenate([np.geomspace(e_hi * 1e-9, e_hi, N_SCAN), np.linspace(0, e_hi, N_SCAN)[1:]])
    )
    vals = np.array([_net_supply(cm, e) for e in grid])
    sign_change = np.nonzero((vals[:-1] > 0) & (vals[1:] <= 0))[0]
    if sign_change.size == 0:
        raise ValueError("no steady state with supply = demand in (0, E_max]")
    i = sign_change[-1]
    if vals[i + 1] == 0:
        e_star = float(grid[i + 1])
    else:
        e_star = optimize.brentq(
            lambda e: _net_supply(cm, e), grid[i], grid[i + 1], xtol=XTOL, rtol=RTOL, maxiter=500
        )
    s_star = quasi_steady_glucose(cm, e_star)
    a, d, m, pi = (float(x) for x in cm.species(e_star))
    pcr = float(cm.species_pcr(e_star)[3]) if cm.creatine_total > 0 else 0.0
    demand = float(cm.demand(e_star))
    supply = float(cm.supply(e_star, s_star))
    return SteadyState(
        atp=a,
        adp=d,
        amp=m,
        pi=pi,
        glucose=s_star,
        e=e_star,
        flux=demand,
        glucose_flux=float(cm.uptake(s_star)),
        energy_charge=float(cm.energy_charge(e_star)),
        dg_kj=float(dg_atp_kj(a, d, pi, cm.dg0_kj, cm.temperature_k)),
        turnover_s=a / demand,
        consumer_rates=np.asarray(cm.consumer_rates(e_star), float),
        residual_atp=supply - demand,
        residual_glucose=float(cm.uptake(s_star) - cm.glucose_use(e_star, s_star)),
        pcr=pcr,
        adp_total=d + cm.adp_bound,
        amp_total=m + cm.amp_bound,
    )


# --------------------------------------------------------------------------------------------
# supply-demand analysis


def elasticities(cm: CellModel, ss: SteadyState | None = None, rel_step: float = 1e-5) -> dict:
    """Block elasticities at the steady state (central differences in ln E, step ``rel_step``).

    Returns ``e_supply``/``e_demand`` with respect to E and ``e_supply_atp``/``e_demand_atp`` with
    respect to ATP (divided by d ln A / d ln E). The supply block lets glucose relax to its
    quasi-steady state at each E (uptake is part of the supply block).
    """
    ss = ss or solve_steady_state(cm)
    e0 = ss.e
    hi, lo = e0 * (1 + rel_step), e0 * (1 - rel_step)
    dlnE = math.log(hi / lo)

    def supply_block(e):
        return float(cm.supply(e, quasi_steady_glucose(cm, e)))

    e_s = (math.log(supply_block(hi)) - math.log(supply_block(lo))) / dlnE
    e_d = (math.log(float(cm.demand(hi))) - math.log(float(cm.demand(lo)))) / dlnE
    dlnA = (math.log(float(cm.species(hi)[0])) - math.log(float(cm.species(lo)[0]))) / dlnE
    return {
        "e_supply": e_s,
        "e_demand": e_d,
        "dlnA_dlnE": dlnA,
        "e_supply_atp": e_s / dlnA,
        "e_demand_atp": e_d / dlnA,
    }


def control_coefficients(e_supply: float, e_demand: float) -> tuple[float, float]:
    """Flux control coefficients (C_supply, C_demand) = (e_d, -e_s) / (e_d - e_s)."""
    den = e_demand - e_supply
    return e_demand / den, -e_supply / den


def numerical_control_coefficients(
    cm: CellModel, rel_step: float = 1e-4, names=("supply_scale", "demand_scale", "uptake_scale")
) -> dict:
    """d ln J / d ln p for each scale parameter ``p``, by re-solving at p (1 +- rel_step).

    Scaling all three (uptake, producers, consumers) by the same factor scales every rate and
    leaves the concentrations unchanged, so the three coefficients sum to 1 (summation theorem).
    """
    out = {}
    for name in names:
        p0 = getattr(cm, name)
        up = solve_steady_state(cm.replace(**{name: p0 * (1 + rel_step)})).flux
        dn = solve_steady_state(cm.replace(**{name: p0 * (1 - rel_step)})).flux
        out[name] = (math.log(up) - math.log(dn)) / (math.log(1 + rel_step) - math.log(1 - rel_step))
    return out


def rhs(cm: CellModel):
    """Right-hand side ``f(t, y)`` of the deterministic single cell for an ODE solver, ``y = (E, S)``:
    ``dE/dt = supply(E, S) - demand(E)`` (the kinases at equilibrium conserve E), ``dS/dt =
    uptake(S) - glucose use(E, S)``; the species follow from E on the equilibrium manifold."""

    def f(t, y):
        e, s = float(y[0]), float(y[1])
        return [float(cm.supply(e, s) - cm.demand(e)), float(cm.uptake(s) - cm.glucose_use(e, s))]

    return f


def rhs_wear(cm: CellModel):
    """:func:`rhs` with producer wear and repair, ``y = (E, S, h_1 .. h_P)`` (the engine's
    ``metabolism``): ``dh_p/dt = k_r (1 - h_p) - w_p J_p / V_p`` (wear grows with the relative load;
    repair served in full, which holds while ATP is left after the consumers), repair costs
    ``c_r k_r sum_p (1 - h_p)`` mM ATP/s, and ``J_p`` runs on ``V_p h_p``. Wear has the 1/k_r =
    1,000 s time scale of the preset, so over a minute it is a slow drift of capacity that the
    two-variable :func:`rhs` leaves out."""
    if cm.p_v_nominal is None or cm.p_damage is None:
        raise ValueError("rhs_wear needs p_v_nominal, p_health and p_damage (cell_from_model fills them)")
    v = np.asarray(cm.p_v_nominal, float)
    w = np.asarray(cm.p_damage, float)

    def f(t, y):
        e, s, h = float(y[0]), float(y[1]), np.asarray(y[2:], float)
        c = cm.replace(p_vmax=v * h)
        j = np.asarray(c.producer_rates(e, s), float)
        repair = cm.repair_rate * (1.0 - h)
        de = float(j.sum() - c.demand(e) - cm.repair_cost * repair.sum())
        ds = float(c.uptake(s) - np.sum(j / c.p_yield))
        load = np.divide(j, v, out=np.zeros_like(j), where=v > 0)
        return [de, ds, *(repair - w * load)]

    return f
