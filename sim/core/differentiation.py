"""Differentiation: each compartment's share ``theta`` of its capacity given to making currency.

Written once for every substrate (the multicellular stage). A compartment (a cell, a model
instance) splits a fixed budget between producing currency and doing specialised work:

    production capacity x f_p(theta) = (2 theta)^alpha
    specialised work capacity x f_w(theta) = (2 (1 - theta))^alpha

normalised so a generalist (theta = 1/2) keeps the substrate's configured capacities exactly
(``f_p = f_w = 1``: with ``rule: fixed`` and ``initial: 0.5`` every run is unchanged). ``alpha``
is the curvature of the trade-off: alpha > 1 (convex) makes the two extremes together worth more
than two generalists (``f_p(1) + f_w(1) = 2^alpha > 2``), so division of labour can pay; alpha < 1
(concave) favours generalists; alpha = 1 is neutral (Michod 2006 PNAS 103:9113; Rueffler, Hermisson
& Wagner 2012 PNAS 109:E326). Work needs currency, and currency moves between compartments over
the graph at the substrate's transport cost, so whether specialists win is a result, not an input.

How ``theta`` changes (``differentiation.rule``):

``fixed``
    never: the pattern of ``initial`` / ``pattern_period`` is imposed (a sweep can impose one).
``imitation``
    at rate ``rate`` per compartment, a compartment picks a random neighbour j and copies its theta
    (plus uniform noise of half-width ``noise``) with the pairwise-comparison (Fermi) probability
    ``1 / (1 + exp(-(pi_j - pi_i) / (selection (|pi_i| + |pi_j|))))`` (Traulsen, Nowak & Pacheco
    2006 Phys Rev E 74:011909; the payoff difference is taken relative, so ``selection`` is
    dimensionless on every substrate).
``gradient``
    at rate ``rate``, a step on the local payoff estimated from the compartment's own experience:
    the slope ``g = (pi - pi_ref) / (theta - theta_ref)`` over its last move, a step of at most
    ``step_size`` in its direction (``step_size * r / (1 + |r|)``, ``r = g / |pi|``) plus the same
    uniform noise (the exploration a finite-difference estimate needs; Kiefer & Wolfowitz 1952).

A move costs ``switch_cost x |dtheta|`` of the compartment's charged currency (re-building the
other machinery), paid by the substrate's ``pay`` hook; a compartment that cannot pay does not move.

The payoff ``pi`` of a compartment is its work rate (work per unit time; an exponential average
with time constant ``payoff_tau`` of the substrate's cumulative work ledger), averaged over its
closed neighbourhood with ``payoff: neighbourhood`` (default) or its own with ``payoff: own``. The
neighbourhood payoff is the local version of Michod's group fitness: cells of a tissue are one
clone and share the fate of the tissue around them, so a producer that does no work of its own is
paid by the work its currency enables next door. With ``payoff: own`` producers (who do no work)
always look worse than their neighbours and imitation erodes them: the cheater problem of
division of labour, offered for comparison.

Random draws come from ``sim.rng.uniforms`` with the purposes of :data:`PURPOSES`, keyed by the
compartment's index, so the JAX process and the plain-Python :class:`AdaptationReference` draw the
same numbers. Units: ``rate`` and ``payoff_tau`` in the substrate's time unit (s for biology, 1 for
generic), ``switch_cost`` in its currency unit (mM ATP, tokens, 1).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sim import rng
from sim.core.config import bounded, read_section
from sim.errors import ConfigError
from sim.pytree import pytree_dataclass, replace

RULES = ("fixed", "imitation", "gradient")
PAYOFFS = ("neighbourhood", "own")
# rng purposes of the adaptation draws (never renumber: it changes results)
EVENT, NEIGHBOUR, NOISE, ACCEPT = 31, 32, 33, 34
PURPOSES = {"event": EVENT, "neighbour": NEIGHBOUR, "noise": NOISE, "accept": ACCEPT}
TINY = 1e-300  # guards 0/0 in relative payoff differences

DEFAULTS = {  # conf/differentiation/fixed.yaml; a substrate-neutral starting point
    "rule": "fixed", "alpha": 1.0, "initial": 0.5, "pattern_period": 0, "rate": 0.0, "noise": 0.0,
    "switch_cost": 0.0, "payoff": "neighbourhood", "payoff_tau": 1.0, "step_size": 0.1, "selection": 0.1,
}


@pytree_dataclass
class DiffState:
    """Per compartment, shape ``(C,)``."""

    theta: object  # share of capacity given to making currency, in [0, 1]
    payoff: object  # exponential average of the work rate (work per unit time)
    last_work: object  # cumulative work at the previous step (differenced into the rate)
    ref_theta: object  # gradient rule: theta before the last move
    ref_payoff: object  # gradient rule: local payoff before the last move
    switched: object  # cumulative |dtheta|
    switch_paid: object  # cumulative currency paid for moves


@pytree_dataclass
class DiffParams:
    alpha: object  # trade-off curvature (> 0)
    rate: object  # adaptation attempts per compartment per unit time
    noise: object  # half-width of the uniform noise on a new theta
    switch_cost: object  # currency per unit |dtheta|
    payoff_tau: object  # time constant of the payoff average
    step_size: object  # gradient rule: largest deterministic step
    selection: object  # imitation: relative payoff difference that gives odds e:1
    neighbourhood: object  # 1.0: payoff averaged over the closed neighbourhood; 0.0: own
    rule: object  # int32 index in RULES (what the references run; the engine's process is chosen by adaptive())
    nbr_start: object  # (C,) int32: first entry of a compartment's neighbours in nbr_index
    nbr_count: object  # (C,) int32: its degree
    nbr_index: object  # (2E + 1,) int32: neighbours, grouped by compartment (one padding entry)
    nbr_row: object  # (2E + 1,) int32: whose neighbour each entry is (padding: row 0, weight 0)
    nbr_weight: object  # (2E + 1,) float: 1 for real entries, 0 for the padding


@dataclasses.dataclass(frozen=True)
class Hooks:
    """How a substrate exposes itself to differentiation (host-side value; all functions traced).

    ``work(state) -> (C,)`` cumulative work; ``charged(state) -> (C,)`` currency a compartment can
    pay a move with; ``pay(state, params, amount (C,)) -> state`` spends it (the substrate books it);
    ``alive(state) -> (C,)`` bool."""

    work: Callable
    charged: Callable
    pay: Callable
    alive: Callable


# ------------------------------------------------------------------------------ capacities


def production_factor(theta, alpha):
    """``(2 theta)^alpha``: 1 for a generalist, ``2^alpha`` for a producer (theta = 1), 0 for a worker."""
    return (2.0 * theta) ** alpha


def work_factor(theta, alpha):
    """``(2 (1 - theta))^alpha``: 1 for a generalist, ``2^alpha`` for a worker (theta = 0)."""
    return (2.0 * (1.0 - theta)) ** alpha


# ------------------------------------------------------------------------------ config


def read_config(cfg: dict) -> dict:
    """The ``differentiation`` section of a plain config, checked (every problem at once)."""
    from sim.config.validate import ConfigErrors

    out, problems = read_section(cfg, "differentiation", DEFAULTS)

    def bad(key, allowed):
        problems.append(ConfigError(f"differentiation.{key}", out[key], allowed))

    if out["rule"] not in RULES:
        bad("rule", "one of " + ", ".join(RULES))
    if out["payoff"] not in PAYOFFS:
        bad("payoff", "one of " + ", ".join(PAYOFFS))
    for key, lo, strict, hi in (("alpha", 0, True, None), ("rate", 0, False, None), ("noise", 0, False, 1),
                                ("switch_cost", 0, False, None), ("payoff_tau", 0, True, None),
                                ("step_size", 0, False, 1), ("selection", 0, True, None)):
        allowed = bounded(out[key], lo, strict, hi)
        if allowed:
            bad(key, allowed)
    init = out["initial"]
    if not (init == "random" or (isinstance(init, (int, float)) and not isinstance(init, bool)
                                 and math.isfinite(init) and 0 <= init <= 1)):
        bad("initial", "a number in [0, 1] (every compartment) or 'random' (uniform, from the seed)")
    period = out["pattern_period"]
    if isinstance(period, bool) or not isinstance(period, int) or period < 0 or period == 1:
        bad("pattern_period", "0 (no pattern) or an integer >= 2: compartment i is a producer (theta 1) when "
            "i % period == 0, else a worker (theta 0)")
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigErrors(problems)
    return out


def is_active(opts: dict) -> bool:
    """Whether a config departs from the substrate's plain behaviour (anything but uniform generalists)."""
    return opts["rule"] != "fixed" or opts["initial"] != 0.5 or opts["pattern_period"] != 0


def initial_theta(opts: dict, n: int, seed: int) -> np.ndarray:
    """theta at time 0: the pattern (``pattern_period``), else ``initial`` (a number or 'random')."""
    if opts["pattern_period"]:
        return (np.arange(n) % opts["pattern_period"] == 0).astype(np.float64)
    if opts["initial"] == "random":
        return np.random.default_rng([int(seed), 0x7E7A]).uniform(0.0, 1.0, n)
    return np.full(n, float(opts["initial"]))


def init_state(opts: dict, n: int, seed: int, work0=None) -> DiffState:
    theta = initial_theta(opts, n, seed)
    zero = np.zeros(n)
    last = zero.copy() if work0 is None else np.asarray(work0, np.float64).copy()
    return DiffState(theta=theta, payoff=zero.copy(), last_work=last, ref_theta=theta.copy(),
                     ref_payoff=zero.copy(), switched=zero.copy(), switch_paid=zero.copy())


def neighbour_table(src, dst, n: int):
    """CSR adjacency of an undirected edge list: (start, count, index, row, weight), one padding entry."""
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    rows = np.concatenate([src, dst])
    cols = np.concatenate([dst, src])
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    count = np.bincount(rows, minlength=n).astype(np.int32)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int32)
    index = np.concatenate([cols, [0]]).astype(np.int32)
    row = np.concatenate([rows, [0]]).astype(np.int32)
    weight = np.concatenate([np.ones(rows.size), [0.0]])
    return start, count, index, row, weight


def init_params(opts: dict, src, dst, n: int) -> DiffParams:
    start, count, index, row, weight = neighbour_table(src, dst, n)
    f = np.float64
    return DiffParams(alpha=f(opts["alpha"]), rate=f(opts["rate"]), noise=f(opts["noise"]),
                      switch_cost=f(opts["switch_cost"]), payoff_tau=f(opts["payoff_tau"]),
                      step_size=f(opts["step_size"]), selection=f(opts["selection"]),
                      neighbourhood=f(opts["payoff"] == "neighbourhood"), rule=np.int32(RULES.index(opts["rule"])),
                      nbr_start=start, nbr_count=count,
                      nbr_index=index, nbr_row=row, nbr_weight=weight)


def params_axes(diff: DiffParams):
    """vmap axes of DiffParams in a batched study: scalars batch, the graph does not."""
    return DiffParams(alpha=0, rate=0, noise=0, switch_cost=0, payoff_tau=0, step_size=0, selection=0,
                      neighbourhood=0, rule=None, nbr_start=None, nbr_count=None, nbr_index=None, nbr_row=None,
                      nbr_weight=None)


# ------------------------------------------------------------------------------ the process (JAX)


def _payoffs(d: DiffState, q: DiffParams, work, dt):
    """(new payoff average, local payoff) after this step's work."""
    rate = (work - d.last_work) / dt
    ema = d.payoff + (-jnp.expm1(-dt / q.payoff_tau)) * (rate - d.payoff)
    n = ema.shape[0]
    nb = jax.ops.segment_sum(q.nbr_weight * ema[q.nbr_index], q.nbr_row, num_segments=n)
    local = jnp.where(q.neighbourhood > 0, (ema + nb) / (1.0 + q.nbr_count), ema)
    return ema, local


def adapt(state, params, key, *, hooks: Hooks, rule: str):
    """One step of differentiation (see the module docstring): ``state.diff`` and ``params.diff``."""
    d, q, dt = state.diff, params.diff, params.dt
    work = hooks.work(state)
    ema, local = _payoffs(d, q, work, dt)
    theta = d.theta
    n = theta.shape[0]
    ids = jnp.arange(n, dtype=jnp.uint32)
    u_event = rng.uniforms(key, state.step, EVENT, ids, theta.dtype)
    u_noise = rng.uniforms(key, state.step, NOISE, ids, theta.dtype)
    alive = hooks.alive(state)
    act = alive & (u_event < -jnp.expm1(-q.rate * dt))
    jitter = q.noise * (2.0 * u_noise - 1.0)
    ref_theta, ref_payoff = d.ref_theta, d.ref_payoff
    if rule == "imitation":
        u_nbr = rng.uniforms(key, state.step, NEIGHBOUR, ids, theta.dtype)
        u_acc = rng.uniforms(key, state.step, ACCEPT, ids, theta.dtype)
        k = jnp.minimum(jnp.floor(u_nbr * q.nbr_count).astype(jnp.int32), jnp.maximum(q.nbr_count - 1, 0))
        j = q.nbr_index[q.nbr_start + k]
        gap = local[j] - local
        scale = q.selection * (jnp.abs(local[j]) + jnp.abs(local)) + TINY
        p = 1.0 / (1.0 + jnp.exp(-gap / scale))
        act = act & (q.nbr_count > 0) & alive[j] & (u_acc < p)
        target = jnp.clip(theta[j] + jitter, 0.0, 1.0)
    elif rule == "gradient":
        moved = theta - ref_theta
        has = jnp.abs(moved) > 1e-12
        g = jnp.where(has, (local - ref_payoff) / jnp.where(has, moved, 1.0), 0.0)
        r = g / (jnp.abs(local) + TINY)
        target = jnp.clip(theta + q.step_size * r / (1.0 + jnp.abs(r)) + jitter, 0.0, 1.0)
    else:
        raise ValueError(f"differentiation rule {rule!r} has no process (one of {RULES[1:]})")
    cost = q.switch_cost * jnp.abs(target - theta)
    go = act & (hooks.charged(state) >= cost)
    new = jnp.where(go, target, theta)
    paid = jnp.where(go, cost, 0.0)
    if rule == "gradient":
        ref_theta, ref_payoff = jnp.where(go, theta, ref_theta), jnp.where(go, local, ref_payoff)
    state = hooks.pay(state, params, paid)
    diff = DiffState(theta=new, payoff=ema, last_work=work, ref_theta=ref_theta, ref_payoff=ref_payoff,
                     switched=d.switched + jnp.abs(new - theta), switch_paid=d.switch_paid + paid)
    return replace(state, diff=diff)


@functools.lru_cache(maxsize=None)
def adaptive(substrate, rule: str):
    """The substrate with the adaptation process of ``rule`` appended (one value per pair, so the
    executable cache sees the same program every time); ``fixed`` returns the substrate itself."""
    if rule == "fixed":
        return substrate
    hooks = substrate.differentiation
    if hooks is None:
        raise ConfigError("differentiation.rule", rule, f"fixed (substrate {substrate.name} has no differentiation)")
    process = functools.partial(adapt, hooks=hooks, rule=rule)
    return dataclasses.replace(substrate, processes=tuple(substrate.processes) + (("adaptation", process),))


def substrate_for(substrate, cfg: dict):
    """The substrate a config runs: the adaptive variant when ``differentiation.rule`` asks for one.
    Refuses a differentiation config on a substrate without it."""
    opts = read_config(cfg)
    if is_active(opts) and substrate.differentiation is None:
        raise ConfigError("differentiation.rule" if opts["rule"] != "fixed" else "differentiation.initial",
                          opts["rule"] if opts["rule"] != "fixed" else opts["initial"],
                          f"the plain default (rule fixed, initial 0.5, no pattern): substrate {substrate.name} "
                          "has no differentiation")
    return adaptive(substrate, opts["rule"]) if substrate.differentiation is not None else substrate


# ------------------------------------------------------------------------------ plain-Python reference


def reference_payoffs(payoff, last_work, work, dt: float, q: dict, nbrs) -> tuple[list, list]:
    """:func:`_payoffs` with Python floats, compartment by compartment: (new payoff average, local
    payoff) from the cumulative ``work`` (``q``: ``payoff_tau``, ``neighbourhood``; ``nbrs``: lists)."""
    decay = -math.expm1(-dt / q["payoff_tau"])
    ema = [p + decay * ((w - lw) / dt - p) for p, w, lw in zip(payoff, work, last_work)]
    if q["neighbourhood"] > 0:
        return ema, [(ema[i] + sum(ema[j] for j in nbrs[i])) / (1.0 + len(nbrs[i])) for i in range(len(ema))]
    return ema, list(ema)


class AdaptationReference:
    """The adaptation process for the plain-Python references, compartment by compartment with
    Python floats (the same equations and draws as :func:`adapt`)."""

    def __init__(self, diff_state, diff_params, key):
        s, q = jax.device_get(diff_state), jax.device_get(diff_params)
        lst = lambda x: np.asarray(x, np.float64).tolist()  # noqa: E731
        self.theta, self.payoff, self.last_work = lst(s.theta), lst(s.payoff), lst(s.last_work)
        self.ref_theta, self.ref_payoff = lst(s.ref_theta), lst(s.ref_payoff)
        self.switched, self.switch_paid = lst(s.switched), lst(s.switch_paid)
        self.q = {f: float(np.asarray(getattr(q, f))) for f in
                  ("alpha", "rate", "noise", "switch_cost", "payoff_tau", "step_size", "selection", "neighbourhood")}
        start, count = np.asarray(q.nbr_start).tolist(), np.asarray(q.nbr_count).tolist()
        index = np.asarray(q.nbr_index).tolist()
        self.nbrs = [index[a:a + c] for a, c in zip(start, count)]
        self.rule, self.key = RULES[int(np.asarray(q.rule))], key

    def factors(self, i: int) -> tuple[float, float]:
        a, t = self.q["alpha"], self.theta[i]
        return (2.0 * t) ** a, (2.0 * (1.0 - t)) ** a

    def step(self, step: int, dt: float, work, charged, alive) -> list[float]:
        """Advance one step; returns what each compartment pays (the caller books it). Nothing
        happens with ``rule: fixed`` (the engine runs no adaptation process then)."""
        q, n = self.q, len(self.theta)
        if self.rule == "fixed":
            return [0.0] * n
        ema, local = reference_payoffs(self.payoff, self.last_work, work, dt, q, self.nbrs)
        draw = lambda purpose: np.asarray(rng.host_uniforms(self.key, step, purpose, n)).tolist()  # noqa: E731
        u_event, u_noise = draw(EVENT), draw(NOISE)
        u_nbr, u_acc = (draw(NEIGHBOUR), draw(ACCEPT)) if self.rule == "imitation" else (None, None)
        threshold = -math.expm1(-q["rate"] * dt)
        paid = [0.0] * n
        new = list(self.theta)
        for i in range(n):
            theta = self.theta[i]
            act = alive[i] and u_event[i] < threshold
            jitter = q["noise"] * (2.0 * u_noise[i] - 1.0)
            if self.rule == "imitation":
                deg = len(self.nbrs[i])
                if deg == 0:
                    continue
                j = self.nbrs[i][min(int(math.floor(u_nbr[i] * deg)), deg - 1)]
                scale = q["selection"] * (abs(local[j]) + abs(local[i])) + TINY
                p = 1.0 / (1.0 + math.exp(-(local[j] - local[i]) / scale))
                act = act and alive[j] and u_acc[i] < p
                target = min(max(self.theta[j] + jitter, 0.0), 1.0)
            else:
                moved = theta - self.ref_theta[i]
                g = (local[i] - self.ref_payoff[i]) / moved if abs(moved) > 1e-12 else 0.0
                r = g / (abs(local[i]) + TINY)
                target = min(max(theta + q["step_size"] * r / (1.0 + abs(r)) + jitter, 0.0), 1.0)
            cost = q["switch_cost"] * abs(target - theta)
            if act and charged[i] >= cost:
                new[i], paid[i] = target, cost
                if self.rule == "gradient":
                    self.ref_theta[i], self.ref_payoff[i] = theta, local[i]
                self.switched[i] += abs(target - theta)
                self.switch_paid[i] += cost
        self.theta, self.payoff, self.last_work = new, ema, list(work)
        return paid

    def state(self) -> DiffState:
        f = lambda x: np.array(x, np.float64)  # noqa: E731
        return DiffState(theta=f(self.theta), payoff=f(self.payoff), last_work=f(self.last_work),
                         ref_theta=f(self.ref_theta), ref_payoff=f(self.ref_payoff), switched=f(self.switched),
                         switch_paid=f(self.switch_paid))
