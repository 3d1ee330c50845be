"""Relaxation time after a demand step: from a trajectory, over replicates with a confidence
interval, and from the deterministic single cell integrated as an ODE.

Definition (the one of the analogy table, ``sim/experiments/analogy.py``): for a signal ``x(t)``
that moves from a steady value ``before`` to a new steady value ``after`` when demand steps at
``t_step``, the relaxation time is the first time after the step at which the normalised
response ``(x - before) / (after - before)`` reaches ``1 - 1/e`` (63.2%), linearly interpolated
between samples; for an exponential approach it is the time constant. Units: s.

Two ways to get it without the stochastic part of the biology engine (producer failure and
biogenesis, whose few events in 2 replicates moved the table's value from the ODE's):

* :func:`ode_relaxation_time` integrates the deterministic single cell of
  :mod:`sim.analysis.supply_demand` (free pools on the kinase-equilibrium manifold, protein
  synthesis at its expected rate) with ``scipy.integrate.solve_ivp`` from the steady state before
  the step; it never calls the engine;
* :func:`ode_protocol_relaxation_time` integrates the same cell WITH producer wear and repair
  (:func:`sim.analysis.supply_demand.rhs_wear`) through the analogy's protocol from the built
  state (warm-up at rest, the step, the run after it) and applies the analogy's window
  definition (``before``/``after`` = means over the steady windows), so it is the deterministic
  twin of the table's number. Wear matters: over the minute after a 2x step producer health falls
  by ~0.5% (time scale 1/repair = 1,000 s), the post-step window sits below the wear-free new
  steady state, and the 63% crossing comes ~4% later (3.16 s vs 3.08 s for the preset);
* :func:`relaxation_time_ci` measures it in each replicate of a simulated trajectory and reports
  the mean with a Student-t confidence interval over replicates.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, stats

from sim.analysis import supply_demand as sd

E_FOLD = 1.0 - math.exp(-1.0)  # 63.2%

__all__ = ["E_FOLD", "ode_protocol_relaxation_time", "ode_protocol_response", "ode_relaxation_time",
           "ode_step_response", "relaxation_time", "relaxation_time_ci"]


def relaxation_time(times, x, t_step: float, before: float, after: float) -> float:
    """Seconds after ``t_step`` at which ``x`` first covers 63.2% of the way from ``before`` to
    ``after`` (linear interpolation between samples); NaN if it never does or nothing changes."""
    times, x = np.asarray(times, float), np.asarray(x, float)
    change = after - before
    if change == 0.0 or not math.isfinite(change):
        return float("nan")
    sel = times >= t_step - 1e-12
    t, f = times[sel] - t_step, (x[sel] - before) / change
    hit = np.nonzero(f[1:] >= E_FOLD)[0]
    if not hit.size:
        return float("nan")
    k = int(hit[0]) + 1
    f0, f1 = min(f[k - 1], E_FOLD), f[k]
    return float(t[k - 1] + (E_FOLD - f0) / (f1 - f0) * (t[k] - t[k - 1])) if f1 > f0 else float(t[k])


def relaxation_time_ci(times, signals, t_step: float, pre, post, confidence: float = 0.95) -> dict:
    """Relaxation time of each replicate's signal and their mean with a Student-t interval.

    ``signals`` (replicates, time); ``pre``/``post``: index arrays (or masks) of the steady windows
    before and after the step whose means are ``before``/``after`` of each replicate. Returns
    ``mean``, ``ci_low``, ``ci_high``, ``sem`` (s), ``n`` (replicates with a finite time) and
    ``values`` (per replicate, NaN where the signal never crossed 63.2%). A first passage through
    noise comes early by about noise / slope at the crossing: average over cells (or smooth) first
    when the fluctuations are not small against the change.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r}; allowed: a probability in (0, 1)")
    signals = np.atleast_2d(np.asarray(signals, float))
    values = np.array([relaxation_time(times, s, t_step, float(np.mean(s[pre])), float(np.mean(s[post])))
                       for s in signals])
    ok = values[np.isfinite(values)]
    n = int(ok.size)
    mean = float(np.mean(ok)) if n else float("nan")
    if n < 2:
        return {"mean": mean, "ci_low": float("nan"), "ci_high": float("nan"), "sem": float("nan"), "n": n,
                "values": values}
    sem = float(np.std(ok, ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * sem
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "sem": sem, "n": n, "values": values}


def _signal(cm: sd.CellModel, e: float, quantity: str) -> float:
    if quantity == "energy_charge":
        return float(cm.energy_charge(e))
    if quantity == "atp":
        return float(cm.species(e)[0])
    raise ValueError(f"quantity={quantity!r}; allowed: energy_charge or atp")


def ode_step_response(cm: sd.CellModel, factor: float, times, quantity: str = "energy_charge",
                      rtol: float = 1e-11, atol: float = 1e-13):
    """``quantity`` (``energy_charge`` of the total pools, or free ``atp`` in mM) at ``times`` (s
    after the step) when demand steps from ``cm.demand_scale`` to ``factor`` times it at t = 0,
    starting from the steady state before the step; returns (values, value before, value after)."""
    ss0 = sd.solve_steady_state(cm)
    stepped = cm.replace(demand_scale=cm.demand_scale * factor)
    ss1 = sd.solve_steady_state(stepped)
    times = np.asarray(times, float)
    sol = integrate.solve_ivp(sd.rhs(stepped), (0.0, float(times[-1])), [ss0.e, ss0.glucose], method="LSODA",
                              t_eval=times, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    values = np.array([_signal(stepped, e, quantity) for e in sol.y[0]])
    return values, _signal(cm, ss0.e, quantity), _signal(stepped, ss1.e, quantity)


def ode_relaxation_time(cm: sd.CellModel, factor: float = 2.0, quantity: str = "energy_charge",
                        t_end: float = 120.0, n_points: int = 24001) -> float:
    """Relaxation time (s) of the deterministic single cell after demand steps by ``factor``
    (:func:`ode_step_response` sampled every ``t_end / (n_points - 1)`` s, then :func:`relaxation_time`)."""
    times = np.linspace(0.0, t_end, n_points)
    values, before, after = ode_step_response(cm, factor, times, quantity)
    return relaxation_time(times, values, 0.0, before, after)


def ode_protocol_response(cm: sd.CellModel, factor: float, step_time_s: float, after_s: float, times,
                          wear: bool = True, rtol: float = 1e-10, atol: float = 1e-12) -> np.ndarray:
    """Free ATP (mM) at ``times`` (s from the start) of the deterministic cell ``cm`` started from
    its own pools (``cm.e_start``, ``cm.glucose_start``, producer health ``cm.p_health``), at rest
    until ``step_time_s`` and at ``factor`` times the demand for ``after_s`` more (one LSODA leg
    each). ``wear``: producer health is integrated too
    (:func:`~sim.analysis.supply_demand.rhs_wear`); otherwise it stays at its start."""
    if cm.e_start is None or cm.glucose_start is None:
        raise ValueError("ode_protocol_response needs the cell's starting pools (cell_from_model fills them)")
    times = np.asarray(times, float)
    y = [float(cm.e_start), float(cm.glucose_start)]
    if wear:
        y += [float(h) for h in np.asarray(cm.p_health, float)]
    t_end = float(step_time_s + after_s)
    legs = ((cm, 0.0, float(step_time_s)), (cm.replace(demand_scale=cm.demand_scale * factor), float(step_time_s), t_end))
    out = np.full(times.shape, np.nan)
    for c, t0, t1 in legs:
        sel = (times >= t0) & ((times < t1) if t1 < t_end else (times <= t1))
        t_eval = np.append(times[sel], t1)  # the leg's end (the next leg's start) as the last point
        keep = np.ones(t_eval.size, bool)
        keep[-1] = not (t_eval.size > 1 and t_eval[-2] == t1)
        t_eval = t_eval[keep]
        sol = integrate.solve_ivp(sd.rhs_wear(c) if wear else sd.rhs(c), (t0, t1), y, method="LSODA", t_eval=t_eval,
                                  rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed: {sol.message}")
        out[sel] = [float(c.species(e)[0]) for e in sol.y[0, :int(sel.sum())]]
        y = sol.y[:, -1]
    return out


def ode_protocol_relaxation_time(cm: sd.CellModel, factor: float, step_time_s: float, after_s: float,
                                 window_s: float, sample_s: float = 0.01, wear: bool = True) -> float:
    """The analogy table's relaxation time (s) of the deterministic cell: :func:`ode_protocol_response`
    sampled every ``sample_s``, ``before``/``after`` the means over the last ``window_s`` before the
    step and before the end, then :func:`relaxation_time` from the step."""
    n = int(round((step_time_s + after_s) / sample_s))
    times = np.linspace(0.0, n * sample_s, n + 1)
    x = ode_protocol_response(cm, factor, step_time_s, after_s, times, wear=wear)
    eps = 1e-9
    pre = (times > step_time_s - window_s + eps) & (times <= step_time_s + eps)
    post = times > times[-1] - window_s + eps
    return relaxation_time(times, x, step_time_s, float(x[pre].mean()), float(x[post].mean()))
