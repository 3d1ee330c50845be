"""Carriers: several competing currencies in one economy, and the emergence of one standard.

Written once for every substrate that exposes :class:`Hooks` (the generic substrate today). With
``carriers.n: 1`` (the default) nothing here runs and the substrate is bit-for-bit the one-currency
economy. With ``n > 1`` the substrate's charged pool ``A`` of a compartment is split over carriers,
``held[c, k]`` with ``sum_k held[c, k] = A[c]``; the discharged pool ``D`` stays one pool (the
bond, not the nucleoside, is what is spent: GTP and ATP are recharged from one phosphate
potential). Per compartment a *strategy*: the carrier its producers make (``make``) and the
carriers its consumers accept (``accept``). What each carrier costs:

``storage[k]``
    spontaneous discharge of the charged form per unit time (A_k -> D at rate s_k). ATP's kinetic
    stability (a half-life of hours to days in water at neutral pH without enzymes; Bonora et al.
    2012 Purinergic Signal 8:343) is a low storage cost; a carrier that decays fast must be used
    at once.
``production_cost[k]``
    the fraction of a recharge lost when making carrier k (its synthesis costs that much more).
``conversion_cost``, ``conversion_rate``
    a compartment's consumers spend the carriers they accept first; what they still ask for is
    converted on demand from the carriers they do not accept, losing the fraction
    ``conversion_cost`` of the charge converted (nucleoside diphosphate kinase moves the terminal
    phosphate between NTPs, Lascu & Gonin 2000 J Bioenerg Biomembr 32:237; re-tokenising or
    re-prefilling between model instances that do not share a format costs tokens). With cost 0 a
    mismatch costs nothing and the carriers are neutral; with cost 1 unaccepted charge is useless.
    Besides, ``conversion_rate`` (per unit time, default 0) converts unaccepted holdings in the
    background at the same cost (a standing converter, not driven by demand).

How a step uses them (the substrate's kernels call the pure functions below):
production credits the recharge to ``make`` (:func:`credit`), consumers see the accepted holdings
and the others at their conversion price (:func:`spendable`) and spend them (:func:`debit`), transport moves every carrier
down its own gradient (the substrate's transport law, column by column), and the process
``carrier_upkeep`` applies storage decay and conversion (:func:`upkeep`).

Strategy adaptation (``carriers.rule: imitation``): at rate ``rate`` per compartment it picks a
random neighbour and copies its strategy with the pairwise-comparison (Fermi) probability of
:mod:`sim.core.differentiation` on the local payoff (the work rate, averaged over the closed
neighbourhood or the compartment's own); with probability ``mutation`` a revision instead picks a
carrier uniformly at random (exploration, and what keeps a neutral population mixed). With
``accepts: own`` a compartment accepts exactly the carrier it makes (one strategy, copied and mutated
as one); ``all`` accepts every carrier (no coordination problem: the control); ``random`` gives each
compartment a fixed random subset of ``accept_size`` carriers at the start (copied, never mutated).
The payoff is the same local work rate as differentiation's, so a compartment that cannot use the
currency arriving from its neighbours does less work and is imitated less: standardisation is a
coordination game (Young 1993 Econometrica 61:57; Kandori, Mailath & Rob 1993 Econometrica 61:29)
whose outcome is measured, not assumed.

Outcomes: :func:`shares` (fraction of compartments making each carrier), the Herfindahl index
``H = sum_k share_k^2`` (1/n mixed, 1 one standard), the share of each carrier in the held currency.

Random draws: ``sim.rng.uniforms`` with purposes :data:`PURPOSES` keyed by compartment index (the
JAX process and :class:`CarrierReference` draw the same numbers). Units: rates per unit of the
substrate's time, costs as fractions, ``storage`` per unit time.
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
from sim.core import differentiation as dif
from sim.core.config import bounded, read_section
from sim.errors import ConfigError
from sim.pytree import pytree_dataclass, replace

RULES = ("fixed", "imitation")
ACCEPTS = ("own", "all", "random")
PAYOFFS = dif.PAYOFFS
# rng purposes of the strategy draws (never renumber: it changes results)
EVENT, NEIGHBOUR, ACCEPT, MUTATE, PICK = 35, 36, 37, 38, 39
PURPOSES = {"event": EVENT, "neighbour": NEIGHBOUR, "accept": ACCEPT, "mutate": MUTATE, "pick": PICK}
STANDARD = 0.9  # a carrier made by this share of compartments is "the standard" (time to standardisation)

DEFAULTS = {  # conf/carriers/one.yaml
    "n": 1, "names": None, "storage": 0.0, "production_cost": 0.0, "conversion_rate": 0.0,
    "conversion_cost": 0.0, "initial": "random", "accepts": "own", "accept_size": 1, "rule": "fixed",
    "rate": 0.0, "selection": 0.1, "mutation": 0.0, "payoff": "neighbourhood", "payoff_tau": 1.0,
}


@pytree_dataclass
class CarrierState:
    """Per compartment. With one carrier ``held`` and ``accept`` have zero width: no carrier axis."""

    held: object  # (C, K) charged currency per carrier (sum over k = the substrate's A)
    make: object  # (C,) int32: the carrier the compartment's producers make
    accept: object  # (C, K) bool: the carriers its consumers spend
    payoff: object  # (C,) exponential average of the work rate
    last_work: object  # (C,) cumulative work one step earlier
    decayed: object  # (C,) cumulative charge lost to storage decay
    converted: object  # (C,) cumulative charge taken into conversion
    conversion_lost: object  # (C,) cumulative charge lost converting
    production_lost: object  # (C,) cumulative charge lost to production costs
    switches: object  # (C,) cumulative strategy changes (a count, stored as a float)


@pytree_dataclass
class CarrierParams:
    storage: object  # (K,) decay rate of the charged form per unit time
    production_cost: object  # (K,) fraction of a recharge lost making carrier k, in [0, 1)
    conversion_rate: object  # per unit time
    conversion_cost: object  # fraction of converted charge lost, in [0, 1]
    rate: object  # strategy revisions per compartment per unit time
    selection: object  # Fermi selection on the relative payoff difference
    mutation: object  # probability that a revision picks a random carrier
    payoff_tau: object  # time constant of the payoff average
    neighbourhood: object  # 1.0: payoff over the closed neighbourhood; 0.0: own
    accepts: object  # int32 index in ACCEPTS
    rule: object  # int32 index in RULES (what the references run; the engine's processes come from with_carriers)
    nbr_start: object  # CSR neighbour table (sim.core.differentiation.neighbour_table)
    nbr_count: object
    nbr_index: object
    nbr_row: object
    nbr_weight: object


@dataclasses.dataclass(frozen=True)
class Hooks:
    """How a substrate exposes its currency to the carrier layer (all functions traced).

    ``work(state) -> (C,)`` cumulative work (the payoff); ``settle(state, params, held, dissipated)
    -> state`` sets the substrate's charged pool to ``held.sum(1)``, moves ``dissipated`` (C,) of
    charge to the discharged pool and stores ``held``; ``alive(state) -> (C,)`` bool."""

    work: Callable
    settle: Callable
    alive: Callable
    unit: str = "1"  # the currency's unit (records of held currency)


def records(unit: str):
    """The quantities a run with several carriers records besides the substrate's own."""
    from sim.core.substrate import Quantity

    return (Quantity("make", "1", "carrier the compartment's producers make (index)"),
            Quantity("held", unit, "charged currency held per carrier", ("carrier",)))


def observe(cs: CarrierState) -> dict:
    return {"make": cs.make, "held": cs.held}


# ------------------------------------------------------------------------------ config


def _numbers(value, n: int):
    """A number for every carrier, or a list of n numbers -> list, or None."""
    if isinstance(value, (list, tuple)):
        vals = list(value)
        if len(vals) != n:
            return None
    else:
        vals = [value] * n
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals)
    return [float(v) for v in vals] if ok else None


def read_config(cfg: dict) -> dict:
    """The ``carriers`` section of a plain config, checked (every problem at once)."""
    from sim.config.validate import ConfigErrors

    out, problems = read_section(cfg, "carriers", DEFAULTS)

    def bad(key, allowed):
        problems.append(ConfigError(f"carriers.{key}", out[key], allowed))

    n = out["n"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
        bad("n", "an integer in 1 .. 64 (number of competing carriers)")
        n = 1
    out["n"] = n
    if out["names"] is not None and not (isinstance(out["names"], (list, tuple)) and len(out["names"]) == n
                                         and all(isinstance(x, str) for x in out["names"])):
        bad("names", f"null or a list of {n} carrier names")
    for key, hi, hi_strict in (("storage", None, False), ("production_cost", 1.0, True)):
        vals = _numbers(out[key], n)
        if vals is None or any(v < 0 or (hi is not None and (v >= hi if hi_strict else v > hi)) for v in vals):
            bad(key, f"a finite number >= 0{' and < 1' if hi else ''}, or a list of n={n} of them")
        else:
            out[key] = vals
    for key, lo, strict, hi in (("conversion_rate", 0, False, None), ("conversion_cost", 0, False, 1),
                                ("rate", 0, False, None), ("selection", 0, True, None), ("mutation", 0, False, 1),
                                ("payoff_tau", 0, True, None)):
        allowed = bounded(out[key], lo, strict, hi)
        if allowed:
            bad(key, allowed)
    for key, allowed in (("rule", RULES), ("accepts", ACCEPTS), ("payoff", PAYOFFS)):
        if out[key] not in allowed:
            bad(key, "one of " + ", ".join(allowed))
    size = out["accept_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= n:
        bad("accept_size", f"an integer in 1 .. n={n} (carriers each compartment accepts with accepts: random)")
    init = out["initial"]
    if not (init == "random" or (isinstance(init, int) and not isinstance(init, bool) and 0 <= init < n)):
        bad("initial", f"'random' (uniform, from the seed) or a carrier index in 0 .. {n - 1}")
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigErrors(problems)
    return out


def is_active(opts: dict) -> bool:
    return opts["n"] > 1


def carrier_names(opts: dict) -> list[str]:
    return list(opts["names"]) if opts["names"] else [f"carrier_{k}" for k in range(opts["n"])]


def init_state(opts: dict, charged, seed: int, work0=None) -> CarrierState:
    """Carrier state at time 0: each compartment's charged pool ``charged`` (C,) held in the carrier
    it makes; ``make`` uniform from the seed ('random') or one carrier for all."""
    charged = np.asarray(charged, np.float64)
    c, k = charged.shape[0], opts["n"] if opts["n"] > 1 else 0
    gen = np.random.default_rng([int(seed), 0xCA77])
    make = (gen.integers(0, opts["n"], c) if opts["initial"] == "random" else np.full(c, int(opts["initial"])))
    make = make.astype(np.int32)
    if k == 0:
        make = np.zeros(c, np.int32)
    accept = np.zeros((c, k), bool)
    if k:
        if opts["accepts"] == "own":
            accept[np.arange(c), make] = True
        elif opts["accepts"] == "all":
            accept[:] = True
        else:
            for i in range(c):  # host-side, once: a random subset per compartment
                accept[i, gen.choice(k, opts["accept_size"], replace=False)] = True
    held = np.zeros((c, k))
    if k:
        held[np.arange(c), make] = charged
    zero = np.zeros(c)
    last = zero.copy() if work0 is None else np.asarray(work0, np.float64).copy()
    return CarrierState(held=held, make=make, accept=accept, payoff=zero.copy(), last_work=last,
                        decayed=zero.copy(), converted=zero.copy(), conversion_lost=zero.copy(),
                        production_lost=zero.copy(), switches=zero.copy())


def init_params(opts: dict, src, dst, n: int) -> CarrierParams:
    start, count, index, row, weight = dif.neighbour_table(src, dst, n)
    k = opts["n"] if opts["n"] > 1 else 0
    f = np.float64
    vec = lambda key: np.asarray(opts[key][:k] if isinstance(opts[key], list) else [opts[key]] * k, f)  # noqa: E731
    return CarrierParams(storage=vec("storage"), production_cost=vec("production_cost"),
                         conversion_rate=f(opts["conversion_rate"]), conversion_cost=f(opts["conversion_cost"]),
                         rate=f(opts["rate"]), selection=f(opts["selection"]), mutation=f(opts["mutation"]),
                         payoff_tau=f(opts["payoff_tau"]), neighbourhood=f(opts["payoff"] == "neighbourhood"),
                         accepts=np.int32(ACCEPTS.index(opts["accepts"])), rule=np.int32(RULES.index(opts["rule"])),
                         nbr_start=start, nbr_count=count,
                         nbr_index=index, nbr_row=row, nbr_weight=weight)


def params_axes(cp: CarrierParams):
    """vmap axes of CarrierParams in a batched study: scalar costs and rates batch; vectors and the graph do not."""
    return CarrierParams(storage=None, production_cost=None, conversion_rate=0, conversion_cost=0, rate=0,
                         selection=0, mutation=0, payoff_tau=0, neighbourhood=0, accepts=None, rule=None, nbr_start=None,
                         nbr_count=None, nbr_index=None, nbr_row=None, nbr_weight=None)


# ------------------------------------------------------------------------------ pure pieces the kernels call


def active(cs: CarrierState) -> bool:
    """Static (a shape): whether the state has a carrier axis."""
    return cs.held.shape[-1] > 0


def credit(cs: CarrierState, cp: CarrierParams, made):
    """The recharge ``made`` (C,) goes to the carrier each compartment makes, less its production
    cost. Returns (carrier state, charge dissipated (C,))."""
    k = cs.held.shape[-1]
    onehot = cs.make[:, None] == jnp.arange(k)[None, :]
    lost = made * cp.production_cost[cs.make]
    held = cs.held + jnp.where(onehot, (made - lost)[:, None], 0.0)
    return replace(cs, held=held, production_lost=cs.production_lost + lost), lost


def spendable(cs: CarrierState, cp: CarrierParams):
    """(C,) charged currency the compartment's consumers can spend: the accepted carriers in full,
    the others at ``1 - conversion_cost`` (converted on demand)."""
    acc = jnp.sum(jnp.where(cs.accept, cs.held, 0.0), axis=1)
    other = jnp.sum(jnp.where(cs.accept, 0.0, cs.held), axis=1)
    return acc + (1.0 - cp.conversion_cost) * other


def debit(cs: CarrierState, cp: CarrierParams, spent):
    """Remove ``spent`` (C,) (at most :func:`spendable`): the accepted carriers first, pro rata; the
    rest converted from the other carriers, pro rata, at ``1 / (1 - conversion_cost)`` of charge per
    unit spent. Returns (carrier state, charge lost converting (C,))."""
    mine = jnp.where(cs.accept, cs.held, 0.0)
    acc = jnp.sum(mine, axis=1)
    from_acc = jnp.minimum(spent, acc)
    frac = jnp.where(acc > 0, from_acc / jnp.where(acc > 0, acc, 1.0), 0.0)
    other = cs.held - mine
    total = jnp.sum(other, axis=1)
    keep = 1.0 - cp.conversion_cost
    rest = spent - from_acc
    taken = jnp.minimum(jnp.where(keep > 0, rest / jnp.where(keep > 0, keep, 1.0), 0.0), total)
    frac_o = jnp.where(total > 0, taken / jnp.where(total > 0, total, 1.0), 0.0)
    lost = jnp.maximum(taken - rest, 0.0)
    held = cs.held - mine * frac[:, None] - other * frac_o[:, None]
    cs = replace(cs, held=held, converted=cs.converted + taken, conversion_lost=cs.conversion_lost + lost)
    return cs, lost


def discharge(held, charged, amount):
    """``held`` less ``amount`` (C,) of charge taken from every carrier pro rata (``charged`` = held summed)."""
    frac = jnp.where(charged > 0, amount / jnp.where(charged > 0, charged, 1.0), 0.0)
    return held * (1.0 - frac)[:, None]


def upkeep(state, params, key=None, *, hooks: Hooks):
    """Storage decay of every carrier, then conversion of unaccepted into accepted carriers."""
    cs, cp, dt = state.carriers, params.carriers, params.dt
    held = cs.held
    decayed = held * (-jnp.expm1(-cp.storage * dt))[None, :]
    held = held - decayed
    n_acc = jnp.sum(cs.accept, axis=1)
    taken = jnp.where(cs.accept | (n_acc == 0)[:, None], 0.0, held) * (-jnp.expm1(-cp.conversion_rate * dt))
    total = jnp.sum(taken, axis=1)
    delivered = total * (1.0 - cp.conversion_cost)
    held = held - taken + jnp.where(cs.accept, (delivered / jnp.maximum(n_acc, 1))[:, None], 0.0)
    lost_decay = jnp.sum(decayed, axis=1)
    cs = replace(cs, decayed=cs.decayed + lost_decay, converted=cs.converted + total,
                 conversion_lost=cs.conversion_lost + (total - delivered))
    return hooks.settle(replace(state, carriers=cs), params, held, lost_decay + (total - delivered))


def strategy(state, params, key, *, hooks: Hooks):
    """One step of strategy adaptation by imitation (see the module docstring)."""
    cs, cp, dt = state.carriers, params.carriers, params.dt
    work = hooks.work(state)
    ema, local = dif._payoffs(cs, cp, work, dt)
    n, k = cs.accept.shape
    ids = jnp.arange(n, dtype=jnp.uint32)
    dtype = ema.dtype
    u_event, u_nbr, u_acc, u_mut, u_pick = (rng.uniforms(key, state.step, p, ids, dtype)
                                           for p in (EVENT, NEIGHBOUR, ACCEPT, MUTATE, PICK))
    alive = hooks.alive(state)
    act = alive & (u_event < -jnp.expm1(-cp.rate * dt))
    j = cp.nbr_index[cp.nbr_start + jnp.minimum(jnp.floor(u_nbr * cp.nbr_count).astype(jnp.int32),
                                                jnp.maximum(cp.nbr_count - 1, 0))]
    scale = cp.selection * (jnp.abs(local[j]) + jnp.abs(local)) + dif.TINY
    p = 1.0 / (1.0 + jnp.exp(-(local[j] - local) / scale))
    mutate = act & (u_mut < cp.mutation)
    imitate = act & ~mutate & (cp.nbr_count > 0) & alive[j] & (u_acc < p)
    pick = jnp.minimum(jnp.floor(u_pick * k).astype(jnp.int32), k - 1)
    make = jnp.where(mutate, pick, jnp.where(imitate, cs.make[j], cs.make))
    own = make[:, None] == jnp.arange(k)[None, :]
    accept = jnp.where(cp.accepts == 0, own, jnp.where((cp.accepts == 2) & imitate[:, None], cs.accept[j], cs.accept))
    changed = (make != cs.make) | jnp.any(accept != cs.accept, axis=1)
    cs = replace(cs, make=make.astype(cs.make.dtype), accept=accept, payoff=ema, last_work=work,
                 switches=cs.switches + changed.astype(cs.switches.dtype))
    return replace(state, carriers=cs)


@functools.lru_cache(maxsize=None)
def with_carriers(substrate, rule: str):
    """The substrate with the carrier processes appended (upkeep; strategy when ``rule`` adapts):
    one value per pair, so the executable cache sees the same program every time."""
    hooks = substrate.carriers
    procs = (("carrier_upkeep", functools.partial(upkeep, hooks=hooks)),)
    if rule == "imitation":
        procs += (("carrier_strategy", functools.partial(strategy, hooks=hooks)),)
    return dataclasses.replace(substrate, processes=tuple(substrate.processes) + procs,
                               records=tuple(substrate.records) + records(hooks.unit))


def substrate_for(substrate, cfg: dict):
    """The substrate a config runs: with the carrier processes when ``carriers.n > 1``. Refuses
    several carriers on a substrate without the carrier hooks."""
    opts = read_config(cfg)
    if not is_active(opts):
        return substrate
    if getattr(substrate, "carriers", None) is None:
        raise ConfigError("carriers.n", opts["n"], f"1 (substrate {substrate.name} has no carrier axis; "
                          "several carriers run on substrate=generic, generic_tissue or bio)")
    return with_carriers(substrate, opts["rule"])


# ------------------------------------------------------------------------------ outcomes


def shares(make, alive, n: int, xp=np):
    """(..., n) fraction of living compartments making each carrier; ``make``/``alive`` (..., C)."""
    onehot = (make[..., None] == xp.arange(n)) & alive[..., None]
    count = xp.maximum(xp.sum(alive, axis=-1), 1)[..., None]
    return xp.sum(onehot, axis=-2) / count


def herfindahl(share, xp=np):
    """sum_k share_k^2 over the last axis: 1/n evenly mixed, 1 one standard."""
    return xp.sum(share * share, axis=-1)


def time_to_standard(dominant_share, times, threshold: float = STANDARD):
    """First time the dominant carrier's share reaches ``threshold`` (``dominant_share`` (..., T));
    inf where it never does."""
    reached = np.asarray(dominant_share) >= threshold
    first = np.argmax(reached, axis=-1)
    return np.where(reached.any(axis=-1), np.asarray(times)[first], np.inf)


def summary(cs, records: dict, times, names, alive) -> dict:
    """Carrier outcomes of a run: final shares, Herfindahl indices, the winner, time to a standard.

    ``cs``: the final CarrierState (leading replicate axis); ``records``: ``make`` (R, T, C) and
    ``held`` (R, T, C, K) (and ``alive`` (R, T, C) when recorded); ``alive`` (R, C) at the end."""
    n = len(names)
    make, held = np.asarray(records["make"]), np.asarray(records["held"], np.float64)
    alive_t = np.asarray(records["alive"], bool) if "alive" in records else np.ones(make.shape, bool)
    share_t = shares(make, alive_t, n)  # (R, T, K)
    final = shares(np.asarray(cs.make), np.asarray(alive, bool), n)  # (R, K)
    held_final = np.asarray(cs.held, np.float64).sum(-2)  # (R, K)
    held_share = held_final / np.maximum(held_final.sum(-1, keepdims=True), 1e-300)
    winner = np.argmax(final, axis=-1)
    t_std = time_to_standard(share_t.max(-1), times)
    total = lambda x: float(np.mean(np.sum(np.asarray(x, np.float64), axis=-1)))  # noqa: E731
    out = {
        "carriers": n,
        "carrier_herfindahl": float(np.mean(herfindahl(final))),
        "carrier_herfindahl_held": float(np.mean(herfindahl(held_share))),
        "carrier_dominant_share": float(np.mean(final.max(-1))),
        "carrier_standardised_fraction": float(np.mean(np.isfinite(t_std))),
        "carrier_time_to_standard": float(np.median(t_std)),
        "carrier_winner": names[int(np.bincount(winner, minlength=n).argmax())],
        "carrier_decayed": total(cs.decayed), "carrier_conversion_lost": total(cs.conversion_lost),
        "carrier_converted": total(cs.converted), "carrier_production_lost": total(cs.production_lost),
        "carrier_switches": total(cs.switches),
    }
    out.update({f"carrier_share_{name}": float(np.mean(final[:, k])) for k, name in enumerate(names)})
    return out


# ------------------------------------------------------------------------------ plain-Python reference


class CarrierReference:
    """The carrier layer for the plain-Python references, compartment by compartment with Python
    floats (the same equations and draws as the JAX functions above)."""

    def __init__(self, carrier_state, carrier_params, key):
        s, q = jax.device_get(carrier_state), jax.device_get(carrier_params)
        lst = lambda x, t=float: np.asarray(x).astype(t).tolist()  # noqa: E731
        self.held, self.make, self.accept = lst(s.held), lst(s.make, int), lst(s.accept, bool)
        self.k = np.asarray(s.held).shape[1]
        self.payoff, self.last_work = lst(s.payoff), lst(s.last_work)
        self.ledger = {f: lst(getattr(s, f)) for f in ("decayed", "converted", "conversion_lost",
                                                       "production_lost", "switches")}
        self.storage, self.production_cost = lst(q.storage), lst(q.production_cost)
        self.q = {f: float(np.asarray(getattr(q, f))) for f in ("conversion_rate", "conversion_cost", "rate",
                                                                 "selection", "mutation", "payoff_tau",
                                                                 "neighbourhood")}
        self.accepts = ACCEPTS[int(np.asarray(q.accepts))]
        self.rule = RULES[int(np.asarray(q.rule))]
        start, count, index = np.asarray(q.nbr_start).tolist(), np.asarray(q.nbr_count).tolist(), \
            np.asarray(q.nbr_index).tolist()
        self.nbrs = [index[a:a + c] for a, c in zip(start, count)]
        self.key = key

    @property
    def on(self) -> bool:
        return self.k > 0

    def total(self, i: int) -> float:
        return float(np.sum(np.asarray(self.held[i])))  # the engine's jnp.sum order (pairwise for small K)

    def credit(self, i: int, made: float) -> float:
        lost = made * self.production_cost[self.make[i]]
        self.held[i][self.make[i]] += made - lost
        self.ledger["production_lost"][i] += lost
        return lost

    def spendable(self, i: int) -> float:
        acc = float(np.sum(np.asarray([h if a else 0.0 for h, a in zip(self.held[i], self.accept[i])])))
        other = float(np.sum(np.asarray([0.0 if a else h for h, a in zip(self.held[i], self.accept[i])])))
        return acc + (1.0 - self.q["conversion_cost"]) * other

    def debit(self, i: int, spent: float) -> float:
        mine = [h if a else 0.0 for h, a in zip(self.held[i], self.accept[i])]
        acc = float(np.sum(np.asarray(mine)))
        from_acc = min(spent, acc)
        frac = from_acc / acc if acc > 0 else 0.0
        other = [h - m for h, m in zip(self.held[i], mine)]
        total = float(np.sum(np.asarray(other)))
        keep = 1.0 - self.q["conversion_cost"]
        rest = spent - from_acc
        taken = min(rest / keep if keep > 0 else 0.0, total)
        frac_o = taken / total if total > 0 else 0.0
        lost = max(taken - rest, 0.0)
        self.held[i] = [h - m * frac - o * frac_o for h, m, o in zip(self.held[i], mine, other)]
        self.ledger["converted"][i] += taken
        self.ledger["conversion_lost"][i] += lost
        return lost

    def upkeep(self, dt: float) -> list[float]:
        """Storage decay and conversion; returns the charge each compartment dissipated."""
        q, out = self.q, []
        keep = [-math.expm1(-s * dt) for s in self.storage]
        conv = -math.expm1(-q["conversion_rate"] * dt)
        for i in range(len(self.held)):
            decayed = [h * f for h, f in zip(self.held[i], keep)]
            held = [h - x for h, x in zip(self.held[i], decayed)]
            n_acc = sum(self.accept[i])
            taken = [0.0 if (a or n_acc == 0) else h * conv for h, a in zip(held, self.accept[i])]
            total = float(np.sum(np.asarray(taken)))
            delivered = total * (1.0 - q["conversion_cost"])
            share = delivered / max(n_acc, 1)
            self.held[i] = [h - t + (share if a else 0.0) for h, t, a in zip(held, taken, self.accept[i])]
            lost_decay = float(np.sum(np.asarray(decayed)))
            self.ledger["decayed"][i] += lost_decay
            self.ledger["converted"][i] += total
            self.ledger["conversion_lost"][i] += total - delivered
            out.append(lost_decay + (total - delivered))
        return out

    def strategy(self, step: int, dt: float, work, alive) -> None:
        q, n, k = self.q, len(self.make), self.k
        ema, local = dif.reference_payoffs(self.payoff, self.last_work, work, dt, q, self.nbrs)
        draw = lambda purpose: np.asarray(rng.host_uniforms(self.key, step, purpose, n)).tolist()  # noqa: E731
        u_event, u_nbr, u_acc, u_mut, u_pick = (draw(p) for p in (EVENT, NEIGHBOUR, ACCEPT, MUTATE, PICK))
        threshold = -math.expm1(-q["rate"] * dt)
        make, accept = list(self.make), [list(a) for a in self.accept]
        for i in range(n):
            if not (alive[i] and u_event[i] < threshold):
                continue
            deg = len(self.nbrs[i])
            j = self.nbrs[i][min(int(math.floor(u_nbr[i] * deg)), deg - 1)] if deg else 0
            if u_mut[i] < q["mutation"]:
                make[i] = min(int(math.floor(u_pick[i] * k)), k - 1)
                imitate = False
            else:
                scale = q["selection"] * (abs(local[j]) + abs(local[i])) + dif.TINY
                p = 1.0 / (1.0 + math.exp(-(local[j] - local[i]) / scale))
                imitate = deg > 0 and alive[j] and u_acc[i] < p
                if imitate:
                    make[i] = self.make[j]
            if self.accepts == "own":
                accept[i] = [m == make[i] for m in range(k)]
            elif self.accepts == "random" and imitate:
                accept[i] = list(self.accept[j])
        for i in range(n):
            if make[i] != self.make[i] or accept[i] != self.accept[i]:
                self.ledger["switches"][i] += 1.0
        self.make, self.accept, self.payoff, self.last_work = make, accept, ema, list(work)

    def state(self) -> CarrierState:
        f = lambda x: np.array(x, np.float64)  # noqa: E731
        n = len(self.make)
        return CarrierState(held=f(self.held).reshape(n, self.k), make=np.array(self.make, np.int32),
                            accept=np.array(self.accept, bool).reshape(n, self.k), payoff=f(self.payoff),
                            last_work=f(self.last_work), **{k: f(v) for k, v in self.ledger.items()})


# ------------------------------------------------------------------------------ pools changed by other processes


def reconcile(held, make, new_total):
    """``held`` (C, K) rescaled to sum to ``new_total`` (C,), pro rata over the carriers held.

    For a substrate process that changes the charged pool without knowing the carriers (biology's
    adenylate kinase and creatine kinase buffer move the terminal phosphate of the shared pool): the
    change is spread over the carriers in proportion to what each holds. A compartment holding
    nothing puts ``new_total`` in the carrier it makes (``make`` (C,)). The result sums to
    ``new_total`` up to round-off; the substrate sets its charged pool to the sum."""
    old = jnp.sum(held, axis=1)
    has = old > 0
    frac = jnp.where(has, new_total / jnp.where(has, old, 1.0), 0.0)
    onehot = make[:, None] == jnp.arange(held.shape[-1])[None, :]
    return jnp.where(has[:, None], held * frac[:, None], jnp.where(onehot, new_total[:, None], 0.0))


def reconcile_row(row, make: int, new_total: float) -> list:
    """:func:`reconcile` for one compartment with Python floats (the plain-Python references):
    ``row`` its holdings (a list of K floats), ``make`` the carrier it makes."""
    old = float(np.sum(np.asarray(row)))  # the engine's jnp.sum order
    if old > 0:
        frac = new_total / old
        return [h * frac for h in row]
    return [new_total if k == make else 0.0 for k in range(len(row))]
