"""Thermodynamics of the adenylate system (vectorised; ``xp`` may be numpy or jax.numpy).

dG_ATP = dG0' + RT ln([ADP][Pi]/[ATP]) with concentrations in M (-54.2 kJ/mol at 5/0.5/1 mM,
310 K; in vivo -50 to -60, Mader 2003; docs/references.md). The thermodynamic brake of a
producer whose free-energy ceiling is G_max (OXPHOS: n_H F dp, 3.67 H+/ATP (Watt et al. 2010)
x 0.18 V = 63.7 kJ/mol) is max(0, 1 - exp((|dG| - G_max)/RT)).

Free and bound nucleotides. The state's ATP, ADP and AMP are the FREE, exchanging cytosolic
concentrations: dG, every rate law and the two near-equilibrium kinases use them. Most of a
cell's ADP and AMP is bound to proteins (F-actin holds one ADP per subunit) or sequestered, and does
not exchange on the time scale of the fluxes; measured tissue contents, and hence the energy charge
(Atkinson 1968), count it. ``energy_charge`` therefore takes the bound pools (mM, constant per run,
``bio.yaml: bound.*``; Veech et al. 1979) and reports the charge of the TOTAL pools.

Creatine kinase buffer (optional, ``bio.yaml: buffer.*``): PCr + ADP + H+ <-> Cr + ATP, near
equilibrium in vivo (its activity far exceeds the ATPase flux), apparent constant
K_CK = [ATP][Cr]/([ADP][PCr]) = K_ref [H+] (K_ref = 1.66e9 /M, Lawson & Veech 1979; 166 at
pH 7.0). ``ak_ck_equilibrium`` puts adenylate and creatine kinase at equilibrium together.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sim.constants import R_J_PER_MOL_K
from sim.substrates.bio.state import ADP, AMP, ATP

TINY_MM = 1e-12  # floor inside logarithms so an emptied pool gives a finite dG


def rt_kj(temperature_k):
    return R_J_PER_MOL_K * temperature_k * 1e-3


def dg_atp_kj(atp, adp, pi, dg0_kj, temperature_k, xp=jnp):
    """Free energy of ATP hydrolysis in kJ/mol (negative) from mM concentrations."""
    ratio = (xp.maximum(adp, TINY_MM) * 1e-3) * (xp.maximum(pi, TINY_MM) * 1e-3)
    ratio = ratio / (xp.maximum(atp, TINY_MM) * 1e-3)
    return dg0_kj + rt_kj(temperature_k) * xp.log(ratio)


def brake(dg_kj, ceiling_kj, temperature_k, xp=jnp):
    """Fraction of forward capacity left by the thermodynamic driving force, in [0, 1]."""
    return xp.maximum(0.0, 1.0 - xp.exp((xp.abs(dg_kj) - ceiling_kj) / rt_kj(temperature_k)))


def energy_charge(atp, adp, amp, xp=jnp, adp_bound=0.0, amp_bound=0.0):
    """Atkinson's energy charge (ATP + ADP/2) / (ATP + ADP + AMP) of the total pools: free
    ``atp``, ``adp``, ``amp`` plus the bound ``adp_bound``, ``amp_bound`` (mM; 0: free pools only)."""
    adp = adp + adp_bound
    total = atp + adp + (amp + amp_bound)
    return xp.where(total > 0, (atp + 0.5 * adp) / xp.where(total > 0, total, 1.0), 0.0)


def energy_charge_of(pools, params, xp=jnp):
    """Energy charge of the total pools of ``pools`` (..., species) with the bound pools of
    ``params`` (``Params.adp_bound``, ``Params.amp_bound``): the charge a tissue assay reports."""
    return energy_charge(pools[..., ATP], pools[..., ADP], pools[..., AMP], xp=xp,
                         adp_bound=params.adp_bound, amp_bound=params.amp_bound)


def adenylate_equilibrium(atp, adp, amp, k_ak, xp=jnp):
    """Redistribute ATP/ADP/AMP to adenylate-kinase equilibrium K = ATP*AMP/ADP^2.

    2 ADP <-> ATP + AMP conserves the adenine pool N = ATP+ADP+AMP and the high-energy
    phosphate E = 2 ATP + ADP. With ATP = (E-D)/2 and AMP = N - ATP - D the equilibrium is the
    quadratic (1-4K) D^2 - 2N D + E(2N-E) = 0, whose physical root, written in the form that is
    stable for every K > 0 (also K = 1/4), is D = E(2N-E) / (N + sqrt(N^2 - (1-4K) E (2N-E))).
    """
    n = atp + adp + amp
    e = xp.clip(2.0 * atp + adp, 0.0, 2.0 * n)
    c = e * (2.0 * n - e)
    disc = xp.maximum(n * n - (1.0 - 4.0 * k_ak) * c, 0.0)
    denom = n + xp.sqrt(disc)
    d = xp.where(denom > 0, c / xp.where(denom > 0, denom, 1.0), 0.0)
    a = 0.5 * (e - d)
    m = xp.maximum(n - a - d, 0.0)
    return a, d, m


N_NEWTON = 16  # Newton steps of the joint equilibrium: from the step-start ratio, round-off in <= 6 here
MAX_LOG_STEP = 2.0  # largest change of ln(ATP/ADP) per Newton step (a guard far from the root)


def ak_ck_equilibrium(atp, adp, amp, pcr, creatine_total, k_ak, k_ck, xp=jnp):
    """Adenylate kinase and creatine kinase at equilibrium together; returns (ATP, ADP, AMP, PCr).

    Conserved: adenine N = A + D + M, high-energy phosphate E = 2A + D + PCr (each kinase moves a
    phosphate between carriers) and creatine C = PCr + Cr. With r = A/D both equilibria fix every
    species: D = N r/Q, A = N r^2/Q, M = N K_AK/Q (Q = r^2 + r + K_AK) and PCr = C r/(r + K_CK),
    so E(r) = N r (2r + 1)/Q + C r/(r + K_CK), strictly increasing from 0 to 2N + C; the root is
    found by Newton's method in ln r from the current ratio (``N_NEWTON`` steps, each at most
    ``MAX_LOG_STEP``). With C = 0 this is :func:`adenylate_equilibrium` (closed form, used then).
    """
    a0, d0, m0 = adenylate_equilibrium(atp, adp, amp, k_ak, xp=xp)
    if xp is jnp:
        # the Newton solve only where there is creatine: a real branch (35 transcendentals per
        # cell saved without the buffer; with batched parameters vmap evaluates both sides)
        return jax.lax.cond(jnp.any(creatine_total > 0),
                            lambda: creatine_equilibrium(atp, adp, amp, pcr, creatine_total, k_ak, k_ck, a0, d0, m0, xp),
                            lambda: (a0, d0, m0, pcr + jnp.zeros_like(a0)))
    return creatine_equilibrium(atp, adp, amp, pcr, creatine_total, k_ak, k_ck, a0, d0, m0, xp)


def creatine_equilibrium(atp, adp, amp, pcr, creatine_total, k_ak, k_ck, a0, d0, m0, xp=jnp):
    """The joint equilibrium of :func:`ak_ck_equilibrium` by Newton's method in ln(ATP/ADP);
    cells (or parameter rows) without creatine keep the closed form (a0, d0, m0) of
    :func:`adenylate_equilibrium` and their PCr."""
    n = atp + adp + amp
    c = creatine_total
    e = xp.clip(2.0 * atp + adp + pcr, 0.0, 2.0 * n + c)
    r = xp.clip(xp.maximum(atp, TINY_MM) / xp.maximum(adp, TINY_MM), 1e-6, 1e6)

    def newton(_, x):
        r = xp.exp(x)
        q = r * r + r + k_ak
        rk = r + k_ck
        h = n * r * (2.0 * r + 1.0) / q + c * r / rk - e
        dh = r * (n * (r * r + 4.0 * k_ak * r + k_ak) / (q * q) + c * k_ck / (rk * rk))
        step = xp.where(dh > 0, h / xp.where(dh > 0, dh, 1.0), 0.0)
        return x - xp.clip(step, -MAX_LOG_STEP, MAX_LOG_STEP)

    x = xp.log(r)
    if xp is jnp:
        # a loop, not 16 unrolled copies: XLA cut each copy into two kernels (exp's result has
        # several readers), 33 kernels that cost ~0.3 s of every biology program's compile; the
        # loop body is one kernel, the same operations in the same order, so the same bits
        x = jax.lax.fori_loop(0, N_NEWTON, newton, x)
    else:
        for i in range(N_NEWTON):
            x = newton(i, x)
    r = xp.exp(x)
    q = r * r + r + k_ak
    d = n * r / q
    a = d * r
    m = n * k_ak / q
    p = c * r / (r + k_ck)
    on = c > 0
    return xp.where(on, a, a0), xp.where(on, d, d0), xp.where(on, m, m0), xp.where(on, p, pcr)
