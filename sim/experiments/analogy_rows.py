"""The rows of the analogy table: each ONE definition, applied to both substrates.

A substrate enters the table only through a :class:`View`: the quantities both a tissue of cells
and a serving cluster expose, in the substrate's own currency unit (an ATP molecule, a token).
``sim.experiments.analogy_sides`` maps each substrate's records onto a View (one small function
each); everything here is written once and never asks which substrate it is looking at. The two
mappings are the only place where the analogy is asserted:

=====================  ==========================================  ==========================================
View field             biology                                     LLM serving
=====================  ==========================================  ==========================================
currency unit          ATP molecule                                token
``pool``               ATP held (living cells)                     tokens held in the KV caches (occupied)
``capacity``           adenine nucleotides ATP + ADP + AMP         KV cache capacity (occupied + free)
``produced``           ATP made by the producers                   tokens written into the KV caches
                                                                   (prompt prefilled + tool + generated)
``input_energy_j``     free energy of the glucose used             GPU electrical energy
``stored_energy_j``    ATP made x abs(dG_ATP) at the time          0: a token holds no free energy
``work``               amino acids incorporated (the cascade)      tokens generated (the cascade)
``work_currency``      ATP spent by protein synthesis              tokens written (all serve generation)
=====================  ==========================================  ==========================================

So the charged carrier is the one the currency occupies on both sides (ATP; an occupied KV slot)
and the same pool is used by the turnover time and the charged fraction.

Rows carry a label per side: ``emergent`` (a result of the dynamics: it moves when the state
moves), ``set by parameters`` (fixed, up to sampling, by configured constants: the row's
definition says which) or ``by definition`` (true by construction). Only a row emergent on BOTH
sides gets a verdict (:func:`verdict`): the ratio LLM / biology with its interval, "alike" when
the whole interval lies within a factor ``alike_factor`` of 1, "differs" when it lies wholly
outside, "undecided" otherwise. Every number is a mean over replicates with its spread
(:class:`Spread`: standard deviation, 95% t-interval of the mean, replicate count).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from scipy import stats

from sim.constants import landauer_j

CONFIDENCE = 0.95  # two-sided level of every interval of the table
E_FOLD = 1.0 - math.exp(-1.0)  # 63.2%: the fraction of the change an exponential covers in one time constant
NOISE_SDS = 3.0  # a change or drift within this many standard deviations of the fluctuations is not one
DRIFT_OF_CHANGE = 0.1  # a post-step window drifting by less than 10% of the change is a new steady state

EMERGENT, SET, DEFINITION = "emergent", "set by parameters", "by definition"
SIDES = ("bio", "llm")


# ---- what both substrates expose -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Window:
    """One steady window of a run, totals per replicate (arrays of shape (R,)), currency in units.

    ``index``: the records of the window (into ``View.times``); ``start``: the record at its start
    (increments run from ``start`` to ``index[-1]``)."""

    index: np.ndarray
    start: int
    produced: np.ndarray  # currency units made in the window
    input_energy_j: np.ndarray  # J taken in by the producers
    stored_energy_j: np.ndarray  # J of free energy held by the units made, at the time they were made
    work: np.ndarray  # units of the cascade's work delivered
    work_currency: np.ndarray  # currency units spent on that work


@dataclasses.dataclass(frozen=True)
class View:
    """A substrate's run as the table sees it: replicate axis first, summed over cells."""

    substrate: str  # "bio" or "llm" (labels only: no row reads it)
    unit: str  # the currency unit ("ATP", "token")
    temperature_k: float  # K, of the Landauer scale kT ln 2
    times: np.ndarray  # (T,) s
    pool: np.ndarray  # (R, T) charged currency held, units
    capacity: np.ndarray  # (R, T) the conserved carrier (charged + discharged), units
    i_step: int  # the record at the demand step
    before: Window  # the steady window that ends at the step
    after: Window  # the last window of the run (the new steady state, if there is one)
    settled: np.ndarray  # (R,) bool: the substrate's own conditions for a new steady state hold
    cascade_short: float  # exponent of currency per chain against length, short chains
    cascade_long: float  # the same, long chains

    @property
    def replicates(self) -> int:
        return int(self.pool.shape[0])


# ---- statistics ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spread:
    """Mean over replicates with its spread; ``exact``: computed from parameters, no sampling."""

    mean: float
    std: float
    low: float
    high: float
    n: int
    exact: bool = False

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def spread(values) -> Spread:
    """Mean, sample standard deviation and the two-sided CONFIDENCE t-interval of the mean of the
    finite ``values`` (one per replicate); NaN spread with fewer than 2."""
    v = np.asarray(values, float).reshape(-1)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return Spread(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if n == 1:
        return Spread(mean, math.nan, math.nan, math.nan, 1)
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    return Spread(mean, sd, mean - half, mean + half, n)


def exact(value: float) -> Spread:
    return Spread(float(value), 0.0, float(value), float(value), 1, exact=True)


# ---- the relaxation after the step -----------------------------------------------------------------


def step_response(times, x, *, i_step: int, pre, post) -> dict:
    """Before/after means, change, fluctuations, post-step drift and the 63% relaxation time of ONE
    signal ``x(times)`` (record ``i_step`` at the step; ``pre``/``post``: the steady windows).

    The relaxation time is the first time after the step at which ``x`` has covered 1 - 1/e of the
    change, linearly interpolated between records; NaN when the change lies within NOISE_SDS
    standard deviations of the pre-step fluctuations (no step to relax from)."""
    times, x = np.asarray(times, float), np.asarray(x, float)
    before, after = float(np.mean(x[pre])), float(np.mean(x[post]))
    change = after - before
    noise = float(np.std(x[pre]))
    tau = math.nan
    if change != 0.0 and abs(change) > NOISE_SDS * noise:
        f = (x[i_step:] - before) / change
        t = times[i_step:] - times[i_step]
        hit = np.nonzero(f[1:] >= E_FOLD)[0]
        if hit.size:
            k = int(hit[0]) + 1
            f0, f1 = min(f[k - 1], E_FOLD), f[k]
            tau = float(t[k - 1] + (E_FOLD - f0) / (f1 - f0) * (t[k] - t[k - 1])) if f1 > f0 else float(t[k])
    coef = np.polyfit(times[post], x[post], 1)
    drift = float(coef[0]) * float(times[post][-1] - times[post][0])
    noise_after = float(np.std(x[post] - np.polyval(coef, times[post])))  # fluctuations about the trend
    return {"before": before, "after": after, "change": change, "noise": noise, "noise_after": noise_after,
            "drift": drift, "relaxation_s": tau}


def small_drift(r: dict) -> bool:
    """The post-step window is steady: its drift is below max(DRIFT_OF_CHANGE x the change,
    NOISE_SDS x the larger of the pre-step fluctuations and the post-step window's own about its
    trend (a loaded queue fluctuates more than an idle one: a trend within them is not a drift))."""
    return abs(r["drift"]) <= max(DRIFT_OF_CHANGE * abs(r["change"]), NOISE_SDS * max(r["noise"], r["noise_after"]))


def responses(v: View) -> list[dict]:
    """:func:`step_response` of each replicate's charged fraction, with ``steady``: the
    substrate's own conditions and a small drift."""
    frac = charged_fraction(v)
    out = []
    for r in range(v.replicates):
        resp = step_response(v.times, frac[r], i_step=v.i_step, pre=v.before.index, post=v.after.index)
        resp["steady"] = bool(v.settled[r]) and small_drift(resp)
        out.append(resp)
    return out


# ---- the row definitions (written once) ------------------------------------------------------------


def charged_fraction(v: View) -> np.ndarray:
    """(R, T) charged currency / carrier, summed over cells."""
    return v.pool / np.where(v.capacity > 0, v.capacity, np.nan)


def _window_mean(x, w: Window) -> np.ndarray:
    return x[:, w.index].mean(-1)


def _span(v: View, w: Window) -> float:
    return float(v.times[w.index[-1]] - v.times[w.start])


def _ratio(a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.divide(a, b, out=np.full(np.broadcast(a, b).shape, np.nan), where=b != 0)


def fraction_before(v: View) -> np.ndarray:
    return _window_mean(charged_fraction(v), v.before)


def fraction_after(v: View) -> np.ndarray:
    return _window_mean(charged_fraction(v), v.after)


def response_change(v: View) -> np.ndarray:
    b, a = fraction_before(v), fraction_after(v)
    return _ratio(a - b, b)


def relaxation(v: View) -> np.ndarray:
    """Per replicate; NaN where the replicate reached no new steady state or had no change. (A
    deterministic reference, ``sim.experiments.analogy.RELAXATION_REFERENCE``, must use the same
    signal, the charged fraction, to be comparable: the energy charge relaxes ~8% slower.)"""
    return np.array([r["relaxation_s"] if r["steady"] else math.nan for r in responses(v)])


def _turnover(v: View, w: Window) -> np.ndarray:
    return _ratio(_window_mean(v.pool, w), w.produced / _span(v, w))


def turnover_before(v: View) -> np.ndarray:
    return _turnover(v, v.before)


def turnover_after(v: View) -> np.ndarray:
    return _turnover(v, v.after)


def input_energy_per_unit(v: View) -> np.ndarray:
    return _ratio(v.before.input_energy_j, v.before.produced)


def input_energy_per_unit_kt(v: View) -> np.ndarray:
    return input_energy_per_unit(v) / landauer_j(v.temperature_k)


def stored_fraction(v: View) -> np.ndarray:
    return _ratio(v.before.stored_energy_j, v.before.input_energy_j)


def currency_per_work(v: View) -> np.ndarray:
    return _ratio(v.before.work_currency, v.before.work)


def cascade_short(v: View) -> float:
    return v.cascade_short


def cascade_long(v: View) -> float:
    return v.cascade_long


@dataclasses.dataclass(frozen=True)
class Row:
    key: str  # bio_<key> / llm_<key> in summary.json
    name: str
    units: str
    definition: str  # the one definition, in words
    compute: Callable[[View], np.ndarray | float]  # per-replicate values (R,), or one exact value
    bio: str  # label of the biology side
    llm: str  # label of the LLM side
    why: str = ""  # why a side is not emergent
    exact: bool = False  # computed from parameters (no replicate spread)

    def label(self, side: str) -> str:
        return getattr(self, side)

    @property
    def compared(self) -> bool:
        """Only rows emergent on both sides get a verdict."""
        return self.bio == EMERGENT and self.llm == EMERGENT

    @property
    def row_label(self) -> str:
        if self.bio == self.llm:
            return self.bio
        return f"biology: {self.bio}; LLM: {self.llm}"


ROWS: tuple[Row, ...] = (
    Row("charged_fraction_before", "charged fraction of the carrier, before the step", "1",
        "charged currency / carrier (summed over cells), mean over the pre-step window; bio: ATP / (ATP + ADP + "
        "AMP); llm: occupied KV / KV capacity", fraction_before, EMERGENT, EMERGENT),
    Row("charged_fraction_after", "charged fraction of the carrier, after the step", "1",
        "as above, mean over the post-step window", fraction_after, EMERGENT, EMERGENT),
    Row("response_rel_change", "response of the charged fraction to the demand step", "1",
        "(after - before) / before; the step multiplies demand (bio) or the arrival rate (llm) by step_factor",
        response_change, EMERGENT, EMERGENT),
    Row("relaxation_s", "relaxation time after the step", "s",
        "time after the step at which a replicate's charged fraction has covered 63.2% (1 - 1/e) of its change "
        "(interpolated between records); replicates without a new steady state or a change above the noise "
        "are left out of n", relaxation, EMERGENT, EMERGENT),
    Row("turnover_s", "turnover time of the charged pool, before the step", "s",
        "mean charged pool / currency produced per second, over the pre-step window (the pool of the charged "
        "fraction)", turnover_before, EMERGENT, EMERGENT),
    Row("turnover_after_s", "turnover time of the charged pool, after the step", "s",
        "as above, over the post-step window", turnover_after, EMERGENT, EMERGENT),
    Row("input_energy_per_unit_j", "input energy per currency unit produced", "J per unit",
        "producers' input energy / currency units produced, pre-step window; bio: glucose free energy per ATP "
        "made; llm: GPU energy per token written into the KV cache", input_energy_per_unit, SET, EMERGENT,
        why="bio: substrate_dg_kj_per_mol / yield of each producer kind; the dynamics only mix glycolysis and "
            "OXPHOS, between those two constants"),
    Row("input_energy_per_unit_kt", "input energy per currency unit produced, in kT ln 2", "1",
        "the row above / (k_B T ln 2) at the substrate's temperature (310 K cell, 300 K GPU): the distance from "
        "the Landauer scale, no bit count assumed", input_energy_per_unit_kt, SET, EMERGENT,
        why="as the row above"),
    Row("stored_energy_fraction", "fraction of the input energy stored in the currency made", "1",
        "free energy held by the units made (at the time they were made) / input energy, pre-step window; bio: "
        "ATP made x abs(dG_ATP) / glucose free energy; llm: 0, a token holds no free energy",
        stored_fraction, EMERGENT, DEFINITION, why="llm: a token is information; it stores no free energy"),
    Row("currency_per_work", "currency per unit of the cascade's work", "units per unit of work",
        "currency spent on the cascade / its work, pre-step window; bio: ATP per amino acid incorporated "
        "(elongation + initiation); llm: tokens written per token generated", currency_per_work, SET, SET,
        why="bio: chains.atp_per_aa + chains.initiation_atp / protein length; llm: the workload's prompt, tool and "
            "output lengths"),
    Row("cascade_exponent_short", "cascade cost exponent, short chains", "1",
        "least-squares slope of log(currency per chain) against log(length) on the chain kernel; bio: proteins "
        "up to the mean length; llm: decode FLOPs, contexts up to short_max_tokens", cascade_short, SET, SET,
        why="the cost per unit c0 + c1 L of each substrate", exact=True),
    Row("cascade_exponent_long", "cascade cost exponent, long chains", "1",
        "as above; bio: proteins from the mean length; llm: contexts from long_min_tokens", cascade_long, SET, SET,
        why="as above", exact=True),
)


def row(key: str) -> Row:
    for r in ROWS:
        if r.key == key:
            return r
    raise KeyError(key)


# ---- evaluation and verdicts -----------------------------------------------------------------------


def evaluate(r: Row, v: View) -> Spread:
    """One row on one substrate: the SAME definition whichever substrate ``v`` is."""
    value = r.compute(v)
    return exact(value) if r.exact else spread(value)


def verdict(bio: Spread, llm: Spread, alike_factor: float) -> dict:
    """The ratio LLM / biology of two emergent values with its interval and what it says.

    The interval is the delta-method one of the log ratio (independent replicates on each side):
    ratio x exp(+- sqrt(h_b^2 + h_l^2)), h = half-width of each side's interval / its mean.
    ``alike``: the whole interval within [1/alike_factor, alike_factor]; ``differs``: wholly
    outside; ``opposite sign``: the two intervals lie on different sides of 0; else ``undecided``."""
    a, b = bio.mean, llm.mean
    out = {"verdict": "undecided", "factor": math.nan, "factor_low": math.nan, "factor_high": math.nan}
    if not (math.isfinite(a) and math.isfinite(b)):
        out["verdict"] = "not measured"
        return out
    sides = [(s.low > 0) - (s.high < 0) if math.isfinite(s.low) else (s.mean > 0) - (s.mean < 0) for s in (bio, llm)]
    if a == 0 or b == 0 or a * b < 0:
        out["verdict"] = "opposite sign" if sides[0] * sides[1] < 0 else "undecided"
        return out
    ratio = b / a
    rel = [(s.high - s.low) / 2 / abs(s.mean) if math.isfinite(s.low) else math.nan for s in (bio, llm)]
    half = math.sqrt(rel[0] ** 2 + rel[1] ** 2)
    lo, hi = ratio * math.exp(-half), ratio * math.exp(half)
    out.update(factor=ratio, factor_low=lo, factor_high=hi)
    if not math.isfinite(half):
        return out
    if lo >= 1 / alike_factor and hi <= alike_factor:
        out["verdict"] = "alike"
    elif hi < 1 / alike_factor or lo > alike_factor:
        out["verdict"] = "differs"
    return out


def table(views: dict[str, View], alike_factor: float) -> list[dict]:
    """Every row on both substrates: ``{"row": Row, "bio": Spread, "llm": Spread, verdict keys}``."""
    out = []
    for r in ROWS:
        entry = {"row": r, **{side: evaluate(r, views[side]) for side in SIDES}}
        if r.compared:
            entry.update(verdict(entry["bio"], entry["llm"], alike_factor))
        else:
            entry.update(verdict="not compared", factor=math.nan, factor_low=math.nan, factor_high=math.nan)
        out.append(entry)
    return out
