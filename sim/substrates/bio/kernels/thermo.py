"""Thermodynamics of the adenylate system (vectorised; ``xp`` may be numpy or jax.numpy).

dG_ATP = dG0' + RT ln([ADP][Pi]/[ATP]) with concentrations in M (-54.2 kJ/mol at 5/0.5/1 mM,
310 K; in vivo -50 to -60, Mader 2003; docs/references.md). The thermodynamic brake of a
producer whose free-energy ceiling is G_max (OXPHOS: n_H F dp, 3.67 H+/ATP (Watt et al. 2010)
x 0.18 V = 63.7 kJ/mol) is max(0, 1 - exp((|dG| - G_max)/RT)).
"""

from __future__ import annotations

import jax.numpy as jnp

from sim.constants import R_J_PER_MOL_K

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


def energy_charge(atp, adp, amp, xp=jnp):
    """Atkinson's energy charge (ATP + ADP/2) / (ATP + ADP + AMP)."""
    total = atp + adp + amp
    return xp.where(total > 0, (atp + 0.5 * adp) / xp.where(total > 0, total, 1.0), 0.0)


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
