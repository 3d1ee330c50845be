"""``experiment=analogy``: the structural table (docs/references.md) with measured numbers.

One biology tissue (``substrate``, the ``bio`` preset) and one LLM serving tissue (the ``llm``
preset under ``analogy.llm_substrate``, with the ``model`` and ``gpu`` groups) run on the SAME
graph (the ``topology`` group: cells = model instances, junctions = links), with the same ``dt``,
``seed`` and ``replicates``. Each runs in three phases on the one engine (``sim.core.engine``, with
its substrate value), continuing from the state of the previous phase (bit-identical to one run):
warm-up ``[0, t_step - window]``, the pre-step steady window ``[t_step - window, t_step]``, and
``after_s`` seconds after a demand step at ``t_step``: each substrate's demand knob
(``Substrate.demand_knob``: ``demand_scale`` for bio, ``arrival_rate`` for llm) times ``analogy.step_factor``, a changed parameter value (no recompilation). The
post-step window is the last ``window_s`` of the run. The cascade exponents come from the chain
kernel of ``experiment=cascade`` (:func:`sim.experiments.cascade.plain_chain_costs`).

Every quantity below is measured over the pre-step steady window (sums over cells, means over
replicates) unless it says otherwise; ``bio_<key>`` / ``llm_<key>`` in summary.json:

- ``turnover_s`` (s), currency pool turnover time. bio: mean ATP pool (mM, summed over cells) /
  ATP spending flux (consumers + repair + biogenesis, mM/s; the definition of the tissue
  summary's ``currency_pool_turnover_s``, averaged over the window instead of the last record).
  llm: Little's law on tokens: mean tokens held in the KV caches / tokens entering them per
  second (prompt tokens prefilled + tool tokens + tokens generated).
- ``fraction_dissipated`` (1). bio: heat / free energy released by the substrate (ledger
  ``heat_j`` / ``substrate_energy_j``; the ledger books the energy of every ATP hydrolysed as
  heat, as the work of pumps and synthesis is dissipated again at steady state, so this is
  ``1 - change of the energy held in the ATP pool / input``). llm: ``1 - Landauer minimum of the
  tokens generated / electrical energy`` (kT ln 2 at 300 K x log2(vocabulary) bits per token).
- ``energy_captured_fraction`` (1), input energy packed into the currency before it is spent.
  bio: ATP made x |dG_ATP| / substrate energy (ledgers ``stored_energy_j + hydrolysis_energy_j``
  over ``substrate_energy_j``: the transduction efficiency of glycolysis and OXPHOS). llm: the
  Landauer minimum of the tokens generated / electrical energy (a token stores no free energy;
  its information is the only lower bound).
- ``energy_per_currency_j`` (J per unit). bio: hydrolysis energy / ATP hydrolysed by consumers,
  repair and producer biogenesis (|dG_ATP| at the time, per molecule). llm: GPU energy / tokens processed (prefilled
  + tool tokens + generated).
- ``currency_per_work`` (currency per unit of work). bio: ATP per amino acid incorporated by
  protein synthesis (the chain ledger line: elongation + initiation ATP / amino acids). llm:
  tokens processed per token generated. (The bio work ledger sums unlike units across consumer
  kinds, Na+ exported, Ca2+ moved, amino acids, ..., so only one kind is used: the cascade's.)
- ``landauer_ratio`` (1), as in the presets' own summaries. bio: energy per ATP hydrolysed /
  (kT ln 2 at 310 K x ``landauer_bits_per_unit`` = 1 bit, stated not measured). llm: GPU energy
  per token generated / (kT ln 2 at 300 K x log2(vocabulary) bits).
- ``charged_fraction_before`` / ``_after`` (1): the charged carrier fraction over the pre-step
  and post-step windows. bio: energy charge (ATP + ADP/2)/(ATP + ADP + AMP), mean over living
  cells; llm: free KV fraction kv_free / kv_capacity, mean over model instances.
- ``response_rel_change`` (1): (after - before) / before of that fraction.
- ``relaxation_s`` (s): time after the step at which the cell- and replicate-mean fraction has
  first covered 1 - 1/e (63.2%) of the change, linearly interpolated between records; NaN when
  the change is within 3 standard deviations of the pre-step fluctuations or when there is no new
  steady state. ``new_steady_state``: the drift of the fraction over the post-step window
  (least-squares slope x window) is below max(10% of the change, 3 pre-step standard deviations)
  and, llm, the serving summary's ``stable`` holds over the post-step window (no request dropped,
  no growth of the requests in the system beyond half their mean) and the requests in the system
  grow by less than 5% of the window's arrivals (``accumulation_after``: least-squares growth /
  arrivals; beyond the stability limit the queue grows while the KV cache stays full, which the
  drift of the free fraction cannot see), bio, no cell died after the step.
- ``cascade_exponent_short`` / ``_long`` (1): least-squares slope of log(currency per chain)
  against log(length). bio: 4 ATP per residue (the preset's ``chains.atp_per_aa``), lengths below
  / above the mean protein (``chains.mean_length_aa``); llm: FLOPs of a decode stream, 2N + 2
  n_layer d_model l per token at context l (Kaplan et al. 2020), lengths up to
  ``short_max_tokens`` / from ``long_min_tokens``.
- ``carrier_balance_error`` (1): bio, the tissue summary's ``conservation_error`` (adenine pool
  and per-cell ATP ledger, whole run); llm, |free + occupied - capacity| / capacity at the end.

Writes (through the ``figures`` hook, the one of ``sim.app`` that gets the run folder):
``analogy_table.md``, ``analogy_table.csv`` and ``figures/analogy.png``; ``results.nc`` holds both
trajectories (``time_bio``, ``time_llm``; variables prefixed ``bio_`` / ``llm_``), the cascade
costs and the table (attributes ``table_md``, ``table_csv``). The table is printed to stdout.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from contextlib import contextmanager
from pathlib import Path

import jax
import numpy as np
import xarray as xr

from sim.core import engine
from sim.api import RunOutput, prepare
from sim.substrates.llm import SUBSTRATE as LLM
from sim.config.validate import ConfigErrors, check_stability, problems_of, validate, validate_llm
from sim.constants import AVOGADRO_PER_MOL, landauer_j
from sim.errors import ConfigError
from sim.experiments import register
from sim.experiments.cascade import fit_exponent, plain_chain_costs
from sim.substrates.bio.kernels.thermo import dg_atp_kj, energy_charge
from sim.substrates.llm import results as llm_results
from sim.core.config import num
from sim.substrates.llm.build import POISSON_TAIL, build_llm, poisson_tail
from sim.substrates.llm.results import MAX_ACCUMULATION  # requests may grow by <= 5% of the window's arrivals
from sim.substrates.bio.results import summarize as bio_summarize
from sim.substrates.bio.results import to_dataset as bio_dataset
from sim.substrates.bio.state import ADP, AMP, ATP, PI

E_FOLD = 1.0 - math.exp(-1.0)  # 63.2%: the relaxation time of an exponential approach

# (key, quantity, units, definition); the values are bio_<key> / llm_<key> of the summary
ROWS = (
    ("currency", "currency", "-", "the unit consumers spend and the ledgers count"),
    ("carrier", "conserved carrier", "-", "what is conserved while the currency is charged and spent"),
    ("carrier_balance_error", "carrier balance error", "1",
     "bio: adenine pool + per-cell ATP ledger, relative (whole run); llm: |free + occupied - capacity| / capacity"),
    ("turnover_s", "currency pool turnover time", "s",
     "bio: mean ATP pool / ATP spending flux; llm (Little's law on tokens): mean tokens in the KV caches / "
     "tokens entering them per s (prefilled + tool + generated)"),
    ("fraction_dissipated", "fraction of input energy dissipated as heat", "1",
     "bio: ledger heat / substrate free energy released (hydrolysis energy counts as heat); "
     "llm: 1 - Landauer minimum of the tokens generated / electrical energy"),
    ("energy_captured_fraction", "fraction of input energy packed into the currency", "1",
     "bio: ATP made x |dG_ATP| / substrate free energy; llm: Landauer minimum of the tokens generated / "
     "electrical energy"),
    ("energy_per_currency_j", "energy per unit of currency", "J per ATP | J per token",
     "bio: hydrolysis energy / ATP hydrolysed (consumers + repair + biogenesis); llm: GPU energy / tokens processed "
     "(prefilled + tool + generated)"),
    ("currency_per_work", "currency per unit of work", "ATP per aa | tokens per token",
     "bio: ATP per amino acid incorporated (protein-synthesis ledger line, elongation + initiation); "
     "llm: tokens processed per token generated"),
    ("landauer_ratio", "Landauer ratio", "1",
     "energy per unit / (kT ln 2 x bits per unit); bio: per ATP hydrolysed, 310 K, 1 bit (stated); "
     "llm: per token generated, 300 K, log2(vocabulary) bits"),
    ("charged_fraction_before", "charged carrier fraction before the step", "1",
     "pre-step window mean; bio: energy charge (ATP + ADP/2)/(ATP + ADP + AMP); llm: free KV fraction"),
    ("charged_fraction_after", "charged carrier fraction after the step", "1", "post-step window mean, as above"),
    ("response_rel_change", "response to the demand step", "1",
     "(after - before) / before of the charged carrier fraction; the step: demand (bio) or arrival rate (llm) "
     "x step_factor"),
    ("relaxation_s", "relaxation time after the step", "s",
     "time to cover 63.2% (1 - 1/e) of the change (cell and replicate mean, interpolated between records)"),
    ("cascade_exponent_short", "cascade cost exponent, short chains", "1",
     "slope of log cost vs log length; bio: lengths <= the mean protein (4 ATP per aa); "
     "llm: decode FLOPs, contexts <= short_max_tokens"),
    ("cascade_exponent_long", "cascade cost exponent, long chains", "1",
     "as above; bio: lengths >= the mean protein; llm: contexts >= long_min_tokens"),
)


# ---- config --------------------------------------------------------------------------------------


def _records(key: str, seconds: float, rec_dt: float) -> int:
    n = int(round(seconds / rec_dt))
    if n < 1 or abs(n * rec_dt - seconds) > 1e-9 * max(seconds, rec_dt):
        raise ConfigError(f"analogy.{key}", seconds, f"a whole number of record intervals dt x record_every = {rec_dt:g} s")
    return n


def options(cfg: dict) -> dict:
    """The ``analogy`` options, checked (a ConfigError naming ``analogy.<key>``), in records."""
    a = cfg.get("analogy")
    if not isinstance(a, dict):
        raise ConfigError("analogy", a, "the analogy options (experiment=analogy sets them)")
    out = {"step_factor": num(cfg, "analogy.step_factor", 0, strict=True, what="a finite number")}
    for key in ("step_time_s", "after_s", "window_s"):
        out[key] = num(cfg, f"analogy.{key}", 0, strict=True, what="a finite number")
    adapt = a.get("bio_biogenesis", False)
    if not isinstance(adapt, bool):
        raise ConfigError("analogy.bio_biogenesis", adapt, "true or false")
    out["bio_biogenesis"] = adapt
    c = a.get("cascade")
    if not isinstance(c, dict):
        raise ConfigError("analogy.cascade", c, "a mapping with bio_lengths, llm_lengths, short_max_tokens, long_min_tokens")
    for key in ("bio_lengths", "llm_lengths"):
        v = c.get(key)
        if (not isinstance(v, list) or len(v) < 4
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < math.inf for x in v)):
            raise ConfigError(f"analogy.cascade.{key}", v, "a list of at least 4 lengths > 0")
        out[key] = np.asarray(v, float)
    for key in ("short_max_tokens", "long_min_tokens"):
        out[key] = num(cfg, f"analogy.cascade.{key}", 0, strict=True, what="a finite number")
    llm_l = out["llm_lengths"]
    if (llm_l <= out["short_max_tokens"]).sum() < 2:
        raise ConfigError("analogy.cascade.short_max_tokens", c["short_max_tokens"], "at least 2 llm_lengths up to it")
    if (llm_l >= out["long_min_tokens"]).sum() < 2:
        raise ConfigError("analogy.cascade.long_min_tokens", c["long_min_tokens"], "at least 2 llm_lengths from it up")
    return out


def _phase_records(cfg: dict, opt: dict) -> dict:
    rec_dt = float(cfg["dt"]) * int(cfg["record_every"])
    n_step = _records("step_time_s", opt["step_time_s"], rec_dt)
    n_after = _records("after_s", opt["after_s"], rec_dt)
    n_win = _records("window_s", opt["window_s"], rec_dt)
    if n_win < 3:
        raise ConfigError("analogy.window_s", opt["window_s"], f"at least 3 records ({3 * rec_dt:g} s)")
    if n_win >= n_step:
        raise ConfigError("analogy.window_s", opt["window_s"], f"shorter than analogy.step_time_s={opt['step_time_s']:g} "
                          "(a warm-up to steady state comes first)")
    if n_win >= n_after:
        raise ConfigError("analogy.window_s", opt["window_s"], f"shorter than analogy.after_s={opt['after_s']:g}")
    counts = (n_step - n_win, n_win, n_after)
    return {"counts": counts, "chunk": engine.chunk_length(math.gcd(*counts), int(cfg.get("chunk_records", 100))),
            "rec_dt": rec_dt}


def split_configs(cfg: dict) -> tuple[dict, dict]:
    """(biology config, LLM config): the run config without ``analogy``, with ``substrate`` the
    bio preset or ``analogy.llm_substrate``; topology, dt, seed and replicates shared."""
    base = {k: v for k, v in cfg.items() if k != "analogy"}  # each preset's run config holds its own part
    sub = cfg.get("substrate")
    name = sub.get("name") if isinstance(sub, dict) else sub
    if name != "bio":
        raise ConfigError("substrate", name, "bio for experiment=analogy (the LLM side is analogy.llm_substrate)")
    if cfg.get("backend", "jax") != "jax":
        raise ConfigError("backend", cfg.get("backend"), "jax for experiment=analogy (both presets run on the engine)")
    llm_sub = (cfg.get("analogy") or {}).get("llm_substrate")
    if not isinstance(llm_sub, dict):
        raise ConfigError("analogy.llm_substrate", llm_sub, "the llm substrate preset (experiment=analogy sets it)")
    return base, {**base, "substrate": llm_sub}


def _llm_key(key: str) -> str:
    return "analogy.llm_substrate" + key[len("substrate"):] if key.split(".")[0] == "substrate" else key


def _remapped(exc: ConfigError) -> list[ConfigError]:
    return [ConfigError(_llm_key(p.key), p.value, p.allowed) for p in problems_of(exc)]


@contextmanager
def _llm_keys():
    """ConfigErrors of the LLM config name the user's key (``analogy.llm_substrate.*``)."""
    try:
        yield
    except ConfigError as exc:
        problems = _remapped(exc)
        raise (ConfigErrors(problems) if len(problems) > 1 else problems[0]) from None


def _validate_both(bio_cfg: dict, llm_cfg: dict) -> None:
    problems, seen = [], set()
    for fn, cfg, remap in ((validate, bio_cfg, False), (validate_llm, llm_cfg, True)):
        try:
            fn(cfg)
        except ConfigError as exc:
            for p in (_remapped(exc) if remap else problems_of(exc)):
                if p.key not in seen:
                    seen.add(p.key)
                    problems.append(p)
    if problems:
        raise ConfigErrors(problems) if len(problems) > 1 else problems[0]


# ---- runs ----------------------------------------------------------------------------------------


def _phases(run_fn, state0, before, after, counts, every):
    """Warm-up, pre-step window (``before`` params) and after the step (``after``), each phase
    continuing from the previous state; returns the results so far (stops at an error)."""
    out, state, start = [], state0, 0
    for n, params in zip(counts, (before, before, after)):
        res = run_fn(state, params, steps=n * every, start_step=start)
        out.append(res)
        if res.error is not None:
            break
        state, start = res.state, start + n * every
    return out


def _concat(results) -> engine.RunResult:
    """One RunResult of consecutive phases (records and times joined, the last state)."""
    recs = {k: np.concatenate([r.records[k] for r in results if r.records[k] is not None], axis=1)
            for k in results[0].records}
    return engine.RunResult(jax.device_get(results[-1].state), recs, np.concatenate([r.times for r in results]),
                            sum(r.steps_done for r in results), sum(r.wall_s for r in results),
                            sum(r.compile_s for r in results), results[-1].error)


def _slice(res: engine.RunResult, i0: int, i1: int, state) -> engine.RunResult:
    """Records ``i0..i1-1`` (``i0``: the record at the start of the window) as a RunResult."""
    return engine.RunResult(state, {k: v[:, i0:i1] for k, v in res.records.items()}, res.times[i0:i1],
                            int(round((res.times[i1 - 1] - res.times[i0]) / (res.times[1] - res.times[0]))),
                            res.wall_s, res.compile_s, None)


def response(times, x, noise_ref, *, t_step: float, i_step: int, pre, post) -> dict:
    """Before/after means, relative change and the 63% relaxation time of a signal ``x(times)``
    (record ``i_step`` is at the step; ``pre``/``post``: index arrays of the steady windows)."""
    before, after = float(np.mean(x[pre])), float(np.mean(x[post]))
    change = after - before
    noise = float(np.std(noise_ref))
    tau = float("nan")
    if abs(change) > 3.0 * noise and change != 0.0:
        f = (x[i_step:] - before) / change
        t = times[i_step:] - t_step
        hit = np.nonzero(f[1:] >= E_FOLD)[0]
        if hit.size:
            k = int(hit[0]) + 1
            f0, f1 = min(f[k - 1], E_FOLD), f[k]
            tau = float(t[k - 1] + (E_FOLD - f0) / (f1 - f0) * (t[k] - t[k - 1])) if f1 > f0 else float(t[k])
    slope, noise_post = 0.0, 0.0
    if len(post) > 2:
        coef = np.polyfit(times[post], x[post], 1)
        slope = float(coef[0])
        noise_post = float(np.std(x[post] - np.polyval(coef, times[post])))  # fluctuations about the trend
    drift = slope * float(times[post][-1] - times[post][0])
    return {"before": before, "after": after, "rel_change": change / before if before else float("nan"),
            "relaxation_s": tau, "noise": noise, "noise_after": noise_post, "drift": drift, "change": change}


def _small_drift(r: dict) -> bool:
    """The post-step window is steady: its drift is below max(10% of the change, 3 noise SDs), the
    noise being the larger of the pre-step window's and the post-step window's own fluctuations
    about its trend (a loaded queue fluctuates more than an idle one: a trend within them is not a
    drift)."""
    return abs(r["drift"]) <= max(0.1 * abs(r["change"]), 3.0 * max(r["noise"], r.get("noise_after", 0.0)))


def _windows(counts):
    n_warm, n_win, n_after = counts
    i_step = n_warm + n_win - 1  # the record at the step
    total = n_warm + n_win + n_after
    return {"pre": np.arange(n_warm, n_warm + n_win), "post": np.arange(total - n_win, total), "i_step": i_step,
            "i_pre0": n_warm - 1, "i_post0": total - n_win - 1, "total": total}


def _mean(x):
    return float(np.mean(x))


def step_demand(sub, params, factor: float):
    """The parameters with the substrate's demand knob (``Substrate.demand_knob``) times ``factor``."""
    x = np.asarray(getattr(params, sub.demand_knob))
    return dataclasses.replace(params, **{sub.demand_knob: np.asarray(x * factor, dtype=x.dtype)})


def run_bio(cfg: dict, opt: dict, ph: dict):
    """Build the biology tissue; returns (model, the stepped params, a phase runner)."""
    cfg, sub, model = prepare(cfg)
    if not opt["bio_biogenesis"]:  # the fast (metabolic) response only: no producer adaptation
        p = model.params
        model = dataclasses.replace(model, params=dataclasses.replace(p, birth_rate=np.zeros_like(p.birth_rate)))
    p = model.params
    f = opt["step_factor"]
    stepped = step_demand(sub, p, f)
    try:
        check_stability(dataclasses.replace(model, params=stepped), cfg)
    except ConfigError as exc:
        raise ConfigError("analogy.step_factor", f, f"a step the explicit biology step stays stable with "
                          f"({problems_of(exc)[0].allowed})") from None
    every, reps = int(cfg["record_every"]), int(cfg["replicates"])

    def run_fn(state, params, steps, start_step):
        return engine.run(sub, state, params, seed=model.seed, steps=steps, record_every=every, replicates=reps,
                          chunk_records=ph["chunk"], start_step=start_step)

    return model, stepped, run_fn


def bio_quantities(model, phases, res, w) -> dict:
    """The biology row values (pre-step window ledgers and records) and the charged-fraction signal."""
    p = model.params
    rec = res.records
    pools, alive = rec["pools"], rec["alive"].astype(float)
    ec = energy_charge(pools[..., ATP], pools[..., ADP], pools[..., AMP], xp=np)
    sig = (ec * alive).sum((0, 2)) / np.maximum(alive.sum((0, 2)), 1)  # (T,) mean over living cells
    t = res.times
    pre, post = w["pre"], w["post"]
    span = float(t[pre][-1] - t[w["i_pre0"]])
    r = response(t, sig, sig[pre], t_step=float(t[w["i_step"]]), i_step=w["i_step"], pre=pre, post=post)

    def turnover(win, i0):
        pool = (pools[..., ATP] * alive)[:, win].sum(-1).mean(-1)  # (R,) mM summed over cells
        flux = (rec["spent"][:, win[-1]] - rec["spent"][:, i0]).sum(-1) / float(t[win[-1]] - t[i0])
        return _mean(pool / np.maximum(flux, 1e-300))

    # window ledgers: the state at the end of the warm-up and at the step
    s0, s1 = (jax.device_get(ph.state) for ph in phases[:2])
    led0, led1 = s0.ledger, s1.ledger
    d = lambda name: np.asarray(getattr(led1, name)) - np.asarray(getattr(led0, name))  # noqa: E731
    tissue = lambda x: _mean(np.sum(x, axis=-1))  # noqa: E731  sum over cells, mean over replicates
    molecules = float(p.volume_l) * 1e-3 * AVOGADRO_PER_MOL
    hydro, subst, heat = tissue(d("hydrolysis_energy_j")), tissue(d("substrate_energy_j")), tissue(d("heat_j"))
    stored = tissue(d("stored_energy_j"))
    hydrolysed = tissue(d("spent").sum(-1) + d("repair_spent") + d("birth_spent")) * molecules
    k = int(np.asarray(p.chain_kind).reshape(-1)[0])
    if k < 0 and "protein_synthesis" in model.consumer_kinds:
        k = list(model.consumer_kinds).index("protein_synthesis")
    atp_per_aa = tissue(d("spent")[..., k]) / tissue(d("work")[..., k]) if k >= 0 else float("nan")
    j_per_atp = hydro / hydrolysed
    bits = float(model.substrate.get("landauer_bits_per_unit", 1.0))
    dg = dg_atp_kj(pools[..., ATP], pools[..., ADP], pools[..., PI], float(p.dg0_kj), float(p.temperature_k), xp=np)
    dead_after = bool(np.any(alive[:, -1].sum(-1) < alive[:, w["i_step"]].sum(-1)))
    steady = (not dead_after) and _small_drift(r)
    atp_cells = (pools[..., ATP] * alive).sum((0, 2)) / np.maximum(alive.sum((0, 2)), 1)
    dg_cells = (dg * alive).sum((0, 2)) / np.maximum(alive.sum((0, 2)), 1)
    return {
        "currency": "ATP", "carrier": "adenine nucleotides (ATP + ADP + AMP)",
        "turnover_s": turnover(pre, w["i_pre0"]), "turnover_after_s": turnover(post, w["i_post0"]),
        "fraction_dissipated": heat / subst, "energy_captured_fraction": (stored + hydro) / subst,
        "energy_per_currency_j": j_per_atp, "currency_per_work": atp_per_aa,
        "landauer_ratio": j_per_atp / (landauer_j(float(p.temperature_k)) * bits),
        "bits_per_unit": bits, "temperature_k": float(p.temperature_k),
        "charged_fraction_before": r["before"], "charged_fraction_after": r["after"],
        "response_rel_change": r["rel_change"], "new_steady_state": bool(steady),
        "relaxation_s": r["relaxation_s"] if steady else float("nan"), "drift_after": r["drift"],
        "atp_before_mm": _mean(atp_cells[pre]), "atp_after_mm": _mean(atp_cells[post]),
        "dg_atp_before_kj_per_mol": _mean(dg_cells[pre]), "dg_atp_after_kj_per_mol": _mean(dg_cells[post]),
        "substrate_energy_w": subst / span, "heat_w": heat / span,
        "cells_alive_after": _mean(alive[:, -1].sum(-1)),
    }, sig


def run_llm(cfg: dict, opt: dict, ph: dict):
    """Build the LLM serving tissue; returns (model, the stepped params, a phase runner)."""
    with _llm_keys():
        llm = build_llm(cfg)
    p = llm.params
    f = opt["step_factor"]
    rate = float(np.max(np.asarray(p.arrival_rate))) * f
    a_max = int(np.asarray(p.arrival_k).shape[0])
    tail = poisson_tail(rate * float(np.asarray(p.dt)), a_max)
    if tail > POISSON_TAIL:
        raise ConfigError("analogy.step_factor", f, f"a stepped arrival rate the Poisson truncation takes ({rate:g}/s x "
                          f"dt: P(more than {a_max} per step) = {tail:.2g}); raise "
                          "analogy.llm_substrate.arrivals.max_per_step or lower dt")
    stepped = step_demand(LLM, p, f)
    every, reps = int(cfg["record_every"]), int(cfg["replicates"])

    def run_fn(state, params, steps, start_step):
        return engine.run(LLM, state, params, seed=llm.seed, steps=steps, record_every=every, replicates=reps,
                          chunk_records=ph["chunk"], start_step=start_step)

    return llm, stepped, run_fn


def llm_quantities(llm, phases, res, w) -> dict:
    """The LLM row values (window increments of the records) and the charged-fraction signal."""
    rec, t = res.records, res.times
    pre, post = w["pre"], w["post"]
    cap = float(llm.kv_capacity)
    sig = (rec["kv_free"] / cap).mean((0, 2))
    r = response(t, sig, sig[pre], t_step=float(t[w["i_step"]]), i_step=w["i_step"], pre=pre, post=post)
    win_before = _slice(res, w["i_pre0"], w["i_step"] + 1, jax.device_get(phases[1].state))
    win_after = _slice(res, w["i_post0"], w["total"], jax.device_get(phases[-1].state))
    s_before = llm_results.summarize(llm, win_before, 0.0)
    s_after = llm_results.summarize(llm, win_after, 0.0)

    def d(name, i0, i1):
        return (rec[name][:, i1] - rec[name][:, i0]).sum(-1)  # (R,) window increment summed over cells

    def window(win, i0):
        i1 = win[-1]
        span = float(t[i1] - t[i0])
        processed = d("tokens_in", i0, i1) + d("tool_tokens", i0, i1) + d("tokens_out", i0, i1)
        held = rec["kv_occupied"][:, win].sum(-1).mean(-1)  # (R,) tokens, time mean over the window
        return {"turnover_s": _mean(held / np.maximum(processed / span, 1e-300)),
                "energy_per_currency_j": _mean(d("energy_j", i0, i1) / np.maximum(processed, 1e-300)),
                "currency_per_work": _mean(processed / np.maximum(d("tokens_out", i0, i1), 1e-300)),
                "landauer_min_j": d("tokens_out", i0, i1) * llm.bits_per_token * landauer_j(llm.temperature_k),
                "energy_j": d("energy_j", i0, i1)}

    def accumulation(win, i0):  # requests piling up: growth of the requests in the system / arrivals
        n_sys = rec["in_system"][:, win].sum(-1).mean(0).astype(float)
        growth = np.polyfit(t[win], n_sys, 1)[0] * float(t[win[-1]] - t[win[0]])
        return float(growth / max(_mean(d("arrived", i0, win[-1])), 1.0))

    wb, wa = window(pre, w["i_pre0"]), window(post, w["i_post0"])
    acc_before, acc_after = accumulation(pre, w["i_pre0"]), accumulation(post, w["i_post0"])
    captured = _mean(wb["landauer_min_j"] / np.maximum(wb["energy_j"], 1e-300))
    steady = bool(s_after["stable"]) and acc_after < MAX_ACCUMULATION and _small_drift(r)
    return {
        "currency": "token", "carrier": "KV cache capacity (occupied + free tokens)",
        "carrier_balance_error": float(s_after["kv_conservation_error"]),
        "turnover_s": wb["turnover_s"], "turnover_after_s": wa["turnover_s"],
        "fraction_dissipated": 1.0 - captured, "energy_captured_fraction": captured,
        "energy_per_currency_j": wb["energy_per_currency_j"], "currency_per_work": wb["currency_per_work"],
        "landauer_ratio": float(s_before["landauer_ratio"]), "joules_per_output_token_j": s_before["joules_per_token"],
        "bits_per_unit": float(llm.bits_per_token), "temperature_k": float(llm.temperature_k),
        "charged_fraction_before": r["before"], "charged_fraction_after": r["after"],
        "response_rel_change": r["rel_change"], "new_steady_state": steady,
        "relaxation_s": r["relaxation_s"] if steady else float("nan"), "drift_after": r["drift"],
        "stable_before": bool(s_before["stable"]), "stable_after": bool(s_after["stable"]),
        "accumulation_before": acc_before, "accumulation_after": acc_after,
        "stability_reason_after": s_after["stability_reason"],
        "kv_occupied_before_tokens": _mean(rec["kv_occupied"][:, pre].sum(-1).mean(-1)),
        "kv_occupied_after_tokens": _mean(rec["kv_occupied"][:, post].sum(-1).mean(-1)),
        "arrival_rate_before_req_per_s": s_before["arrival_rate_req_per_s"],
        "arrival_rate_after_req_per_s": s_after["arrival_rate_req_per_s"],
        "mean_time_in_system_before_s": s_before["mean_time_in_system_s"],
        "mean_time_in_system_after_s": s_after["mean_time_in_system_s"],
        "littles_law_rel_error_before": s_before["littles_law_rel_error"],
        "stability_limit_req_per_s": s_before["stability_limit_req_per_s"],
        "utilization_after": s_after["utilization_estimate"],
        "kv_capacity_tokens": cap, "mean_power_before_w": s_before["mean_power_w"],
    }, sig


def cascade_exponents(opt: dict, bio_sub: dict, llm) -> dict:
    """Currency per chain vs length on the chain kernel and the fitted exponents (see the module doc)."""
    chains = bio_sub.get("chains") or {}
    atp_per_aa = float(chains.get("atp_per_aa", 4.0))
    mean_aa = float(chains.get("mean_length_aa", 400.0))
    lb, ll = opt["bio_lengths"], opt["llm_lengths"]
    sb, lg = lb <= mean_aa, lb >= mean_aa
    if sb.sum() < 2 or lg.sum() < 2:
        raise ConfigError("analogy.cascade.bio_lengths", lb.tolist(), f"at least 2 lengths on each side of the mean "
                          f"protein length {mean_aa:g} aa")
    cb = plain_chain_costs(atp_per_aa, 0.0, lb)
    cl = plain_chain_costs(llm.model.flops_per_token, llm.model.flops_per_token_per_ctx, ll)
    return {
        "bio_lengths": lb, "bio_cost": cb, "llm_lengths": ll, "llm_cost": cl, "bio_c0": atp_per_aa,
        "llm_c0": llm.model.flops_per_token,
        "bio_cascade_exponent_short": fit_exponent(lb[sb], cb[sb]),
        "bio_cascade_exponent_long": fit_exponent(lb[lg], cb[lg]),
        "llm_cascade_exponent_short": fit_exponent(ll[ll <= opt["short_max_tokens"]], cl[ll <= opt["short_max_tokens"]]),
        "llm_cascade_exponent_long": fit_exponent(ll[ll >= opt["long_min_tokens"]], cl[ll >= opt["long_min_tokens"]]),
        "llm_cascade_crossover_tokens": 2.0 * llm.model.flops_per_token / llm.model.flops_per_token_per_ctx,
    }


# ---- the table -----------------------------------------------------------------------------------


def _cell(key: str, value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no new steady state" if key == "relaxation_s" else "n/a"
    if key.endswith("exponent_short") or key.endswith("exponent_long"):
        return f"{value:.3f}"
    return f"{value:.4g}"


def _value(summary: dict, pre: str, key: str) -> str:
    v = summary.get(f"{pre}_{key}")
    captured = summary.get(f"{pre}_energy_captured_fraction")
    if key == "fraction_dissipated" and isinstance(captured, float) and 0 < captured < 1e-4:
        return f"1 - {captured:.3g}"  # (1 - 1e-19 is 1.0 in float64: show what it is short of 1)
    return _cell(key, v)


def table_rows(summary: dict) -> list[list[str]]:
    return [[name, _value(summary, "bio", key), _value(summary, "llm", key), units, definition]
            for key, name, units, definition in ROWS]


HEADER = ["quantity", "biology", "LLM", "units", "definition"]


def table_markdown(summary: dict) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---", "---:", "---:", "---", "---"]) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in table_rows(summary)]
    title = (f"Structural analogy, measured: {summary['bio_cells']} cells / model instances "
             f"({summary['topology']}, {summary['edges']} edges), {summary['model']} on {summary['gpu']}, demand step "
             f"x{summary['step_factor']:g} at t = {summary['step_time_s']:g} s")
    return title + "\n\n" + "\n".join(lines) + "\n"


def table_csv(summary: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    w.writerows(table_rows(summary))
    return buf.getvalue()


# ---- the experiment ------------------------------------------------------------------------------


def _failed(reason_part: str, model, result) -> RunOutput:
    summary = {"status": "failed", "reason": f"{reason_part}: {result.error}", "failed_part": reason_part}
    return RunOutput(None, summary, model, result)


@register("analogy")
def run_analogy(cfg: dict) -> RunOutput:
    opt = options(cfg)
    bio_cfg, llm_cfg = split_configs(cfg)
    _validate_both(bio_cfg, llm_cfg)
    ph = _phase_records(cfg, opt)
    counts, every = ph["counts"], int(cfg["record_every"])
    model, bio_step, bio_fn = run_bio(bio_cfg, opt, ph)
    llm, llm_step, llm_fn = run_llm(llm_cfg, opt, ph)
    same = all(np.array_equal(np.asarray(getattr(model.params.edges, e)), np.asarray(getattr(llm.params.edges, e)))
               for e in ("src", "dst"))
    if model.n_cells != llm.n_cells or not same:
        raise RuntimeError("the biology and LLM tissues were built on different graphs")
    casc = cascade_exponents(opt, bio_cfg["substrate"], llm)

    bio_phases = _phases(bio_fn, model.state, model.params, bio_step, counts, every)
    bio_res = _concat(bio_phases)
    if bio_res.error is not None:
        return _failed("bio", model, bio_res)
    llm_phases = _phases(llm_fn, llm.state, llm.params, llm_step, counts, every)
    llm_res = _concat(llm_phases)
    if llm_res.error is not None:
        return _failed("llm", llm, llm_res)

    w = _windows(counts)
    bio, bio_sig = bio_quantities(model, bio_phases, bio_res, w)
    bio["carrier_balance_error"] = float(bio_summarize(model, bio_res, model.state)["conservation_error"])
    lq, llm_sig = llm_quantities(llm, llm_phases, llm_res, w)
    topo = cfg.get("topology") or {}
    summary = {
        "status": "ok", "model": llm.model.name, "gpu": llm.gpu.name, "topology": str(topo.get("kind")),
        "bio_cells": model.n_cells, "llm_cells": llm.n_cells, "edges": int(np.asarray(model.params.edges.src).size),
        "step_factor": opt["step_factor"], "step_time_s": float(bio_res.times[w["i_step"]]),
        "window_s": float(w["pre"].size * ph["rec_dt"]), "end_time_s": float(bio_res.times[-1]),
        "replicates": int(cfg["replicates"]),
    }
    summary.update({f"bio_{k}": v for k, v in bio.items()})
    summary.update({f"llm_{k}": v for k, v in lq.items()})
    summary.update({k: v for k, v in casc.items() if k.endswith(("_short", "_long", "_tokens"))})
    summary["wall_s"] = float(bio_res.wall_s + llm_res.wall_s)
    summary["compile_s"] = float(bio_res.compile_s + llm_res.compile_s)
    md, csv_text = table_markdown(summary), table_csv(summary)

    ds = _dataset(model, bio_res, bio_cfg, llm, llm_res, llm_cfg, casc, bio_sig, llm_sig, summary)
    ds.attrs.update(table_md=md, table_csv=csv_text)
    return RunOutput(ds, summary, model, bio_res, report=md,
                     files=lambda out_dir: write_tables(md, csv_text, out_dir),
                     figures=lambda out_dir: [analogy_figure(ds, summary, out_dir)])


def _dataset(model, bio_res, bio_cfg, llm, llm_res, llm_cfg, casc, bio_sig, llm_sig, summary) -> xr.Dataset:
    b = bio_dataset(model, bio_res, bio_cfg).rename({"time": "time_bio"})
    b = b.rename({k: f"bio_{k}" for k in b.data_vars})
    m = llm_results.to_dataset(llm, llm_res, llm_cfg).rename({"time": "time_llm"})
    m = m.rename({k: f"llm_{k}" for k in m.data_vars})
    ds = xr.merge([b, m], combine_attrs="drop")
    ds["bio_charged_fraction"] = xr.Variable(("time_bio",), bio_sig, {
        "units": "1", "long_name": "energy charge, mean over living cells and replicates"})
    ds["llm_charged_fraction"] = xr.Variable(("time_llm",), llm_sig, {
        "units": "1", "long_name": "free KV fraction kv_free / kv_capacity, mean over instances and replicates"})
    ds["llm_kv_free_fraction"] = ds["llm_kv_free"] / float(llm.kv_capacity)
    ds["llm_kv_free_fraction"].attrs.update(units="1", long_name="free KV fraction per instance")
    ds = ds.assign_coords(length_bio=casc["bio_lengths"], length_llm=casc["llm_lengths"])
    ds["cascade_bio_cost"] = xr.Variable(("length_bio",), casc["bio_cost"], {
        "units": "ATP", "long_name": "ATP per chain (protein of that many amino acids)"})
    ds["cascade_llm_cost"] = xr.Variable(("length_llm",), casc["llm_cost"], {
        "units": "FLOP", "long_name": "FLOPs of a decode stream of that many tokens"})
    for name, units in (("time_bio", "s"), ("time_llm", "s"), ("length_bio", "amino acids"), ("length_llm", "tokens")):
        ds[name].attrs["units"] = units
    ds.attrs.update(
        experiment="analogy", substrate="bio+llm", model=summary["model"], gpu=summary["gpu"],
        topology=summary["topology"], n_cells=summary["bio_cells"], n_edges=summary["edges"],
        step_factor=summary["step_factor"], step_time_s=summary["step_time_s"], window_s=summary["window_s"],
        seed=int(bio_cfg.get("seed", 0)), dt_s=float(bio_cfg["dt"]), bio_currency="ATP", llm_currency="token",
        bio_volume_l=float(model.params.volume_l), llm_kv_capacity_tokens=float(llm.kv_capacity),
        bio_work_units=str(b.attrs.get("work_units", "")),
    )
    return ds


def write_tables(md: str, csv_text: str, out_dir) -> list:
    """Write analogy_table.md and analogy_table.csv into the run folder (atomically)."""
    from sim.io import write_text

    out_dir = Path(out_dir)
    write_text(out_dir / "analogy_table.md", md)
    write_text(out_dir / "analogy_table.csv", csv_text)
    return [out_dir / "analogy_table.md", out_dir / "analogy_table.csv"]


def analogy_figure(ds: xr.Dataset, summary: dict, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    t_step = summary["step_time_s"]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for a, pre, name, label, ylab in (
        (ax[0], "bio", "bio_charged_fraction", "energy charge", "biology: energy charge / pre-step mean"),
        (ax[1], "llm", "llm_charged_fraction", "free KV fraction", "LLM: free KV fraction / pre-step mean"),
    ):
        t = ds[f"time_{pre}"].values - t_step
        x = ds[name].values
        a.plot(t, x / summary[f"{pre}_charged_fraction_before"], lw=1, label=label)
        a.axvline(0.0, color="k", lw=0.5, ls=":")
        a.axhline(summary[f"{pre}_charged_fraction_after"] / summary[f"{pre}_charged_fraction_before"], color="C3",
                  lw=0.6, ls="--", label="post-step mean")
        tau = summary.get(f"{pre}_relaxation_s")
        if tau is not None and np.isfinite(tau):
            a.axvline(tau, color="C2", lw=0.6, ls="--", label=f"63% at {tau:.2g} s")
        a.set(xlabel="time from the demand step (s)", ylabel=ylab,
              title=f"{'biology' if pre == 'bio' else 'LLM'}: demand x{summary['step_factor']:g}")
        a.legend(fontsize=8)
    lb, cb = ds["length_bio"].values, ds["cascade_bio_cost"].values
    ll, cl = ds["length_llm"].values, ds["cascade_llm_cost"].values
    ax[2].loglog(lb, cb / cb[0] * lb[0], "o-", label=f"biology, 4 ATP/aa (slope {summary['bio_cascade_exponent_long']:.3f})")
    ax[2].loglog(ll, cl / cl[0] * ll[0], "s-", ms=3,
                 label=f"LLM decode FLOPs (slope {summary['llm_cascade_exponent_short']:.2f} short, "
                       f"{summary['llm_cascade_exponent_long']:.2f} long)")
    ax[2].loglog(ll, ll, "k:", lw=0.8, label="slope 1")
    ax[2].set(xlabel="chain length (aa or tokens)", ylabel="cost per chain / cost per unit of the shortest",
              title="cascade: cost vs length")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, Path(out_dir) / "figures" / "analogy.png")
