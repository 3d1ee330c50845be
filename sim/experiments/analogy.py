"""``experiment=analogy``: the structural table of biology and LLM serving, measured the same way.

One biology tissue (``substrate``, the ``bio`` preset) and one LLM serving tissue (the ``llm``
preset under ``analogy.llm_substrate``, with the ``model`` and ``gpu`` groups) run on the SAME
graph (the ``topology`` group: cells = model instances, junctions = links) with the same ``dt`` and
``seed``; the LLM side runs ``replicates`` replicates and biology ``analogy.bio_replicates`` (a
biology replicate costs ~1/20 of an LLM one here, so biology can afford the replicates its
relaxation-time interval needs). Each runs in four phases on the one engine (``sim.core.engine``),
each continuing from the state of the previous one (bit-identical to one run): warm-up, the
pre-step steady window (the last ``window_s`` before the step at ``step_time_s``), the transient
after a demand step (each substrate's demand knob ``Substrate.demand_knob``, ``demand_scale`` for
bio and ``arrival_rate`` for llm, times ``analogy.step_factor``: a changed parameter value, no
recompilation) and the post-step window (the last ``window_s`` of ``after_s``). The state at each
phase boundary gives the window ledgers.

The table (``sim.experiments.analogy_rows``): each row is ONE definition over the quantities both
substrates expose (``sim.experiments.analogy_sides`` maps each substrate's records onto them),
labelled per side ``emergent``, ``set by parameters`` or ``by definition``; every value is a mean
over replicates with its standard deviation, 95% t-interval and replicate count; rows emergent on
both sides get a verdict (alike / differs / undecided / opposite sign, with the ratio LLM /
biology and its interval; ``analogy.alike_factor``). Not rows, because they hold by construction:
the fraction of the input energy dissipated (1 on both sides at steady state: every joule ends as
heat) and the carrier balance (conserved by the code; its measured error is a check, printed
under the table); nor a Landauer ratio with a bit count per unit (a stated number of bits, not a
measurement: the table gives the input energy per unit in kT ln 2 instead).

Summary keys (``summary.json``): ``bio_<row>`` / ``llm_<row>`` (mean) with ``_std``, ``_ci_low``,
``_ci_high``, ``_n``; ``<row>_verdict``, ``<row>_factor`` (LLM / biology), ``_factor_low``,
``_factor_high`` for the compared rows; context numbers (ATP, energy charge of the total pools and
dG before / after, the serving summary's stability, arrival rates and times in system, carrier
balance errors). ``bio_relaxation_reference_s``: the deterministic twin of the biology
relaxation time (:data:`RELAXATION_REFERENCE`, by default :func:`ode_relaxation_reference`: the
single cell as an ODE with producer wear, through the same protocol and windows), when it applies.

Writes (the ``files`` and ``figures`` hooks of ``sim.app``): ``analogy_table.md`` (printed too),
``analogy_table.csv`` and ``analogy_table.parquet`` (one row per table row, numeric columns),
``figures/analogy.png`` (the step responses with their replicate spread, the verdicts' ratios
with their intervals, the cascade); ``results.nc`` holds both trajectories (dims ``time_bio`` /
``time_llm``, ``replicate_bio`` / ``replicate_llm``; variables prefixed ``bio_`` / ``llm_``), the
charged fraction of every replicate, the cascade costs and the table (``table_*`` over ``row`` x
``side``; attributes ``table_md``, ``table_csv``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from contextlib import contextmanager

import jax
import numpy as np
import xarray as xr

from sim.api import RunOutput, prepare
from sim.config.validate import ConfigErrors, check_stability, problems_of, validate, validate_llm
from sim.core import engine
from sim.core.config import num
from sim.errors import ConfigError
from sim.experiments import register
from sim.io import CORE_OUTCOMES, COUNT, DIMENSIONLESS, FLAG, TEXT
from sim.experiments import analogy_rows as rows
from sim.experiments.analogy_output import analogy_figure, table_csv, table_markdown, write_tables
from sim.experiments.analogy_sides import bio_view, llm_view
from sim.experiments.cascade import fit_exponent, plain_chain_costs
from sim.substrates.bio.kernels.thermo import dg_atp_kj, energy_charge_of
from sim.substrates.bio.results import summarize as bio_summarize
from sim.substrates.bio.results import to_dataset as bio_dataset
from sim.substrates.bio.state import ADP, ATP, PI
from sim.substrates.llm import SUBSTRATE as LLM
from sim.substrates.llm import results as llm_results
from sim.substrates.llm.build import POISSON_TAIL, build_llm, poisson_tail

def ode_relaxation_reference(model, stepped, opt: dict) -> float | None:
    """The biology relaxation time of the deterministic single cell (s): the tissue's cell 0 as an
    ODE with producer wear and repair (``sim.analysis.relaxation.ode_protocol_relaxation_time``),
    warm-up, step and post-step run as the table's, with the table's windows. None where it is not
    the tissue's twin: cells that differ (a demand multiplier, a producer count), or biogenesis on
    (births are stochastic and not in the ODE).

    Why wear: over the minute after a 2x step producer health falls by ~0.5% (repair's time scale
    is 1,000 s), so the post-step window lies below the wear-free new steady state and the 63%
    crossing comes ~4% later; an ODE without wear (3.08 s for the preset) sits outside the
    replicate interval (3.16 s [3.14, 3.18]), the one with wear (3.18 s) at its edge, the rest
    being the explicit step's first-order error (at dt 0.01 the interval is [3.15, 3.24])."""
    from sim.analysis import relaxation as rx
    from sim.analysis import supply_demand as sd

    if opt.get("bio_biogenesis"):
        return None
    st = model.state
    per_cell = (st.producers.vmax, st.producers.health, st.producers.alive, st.consumers.vmax,
                st.cells.demand_mult, st.cells.pools, st.cells.uptake)
    if model.n_cells > 1 and not all(np.all(np.asarray(x) == np.asarray(x)[:1]) for x in per_cell):
        return None
    factor = float(np.asarray(stepped.demand_scale) / np.asarray(model.params.demand_scale))
    return rx.ode_protocol_relaxation_time(sd.cell_from_model(model), factor, opt["step_time_s"], opt["after_s"],
                                           opt["window_s"])


# The deterministic reference of the biology relaxation time: a callable ``(bio model, stepped
# params, options) -> seconds or None``. When it gives a number, the summary gains
# ``bio_relaxation_reference_s`` and the table a note beside the replicate estimate.
RELAXATION_REFERENCE: Callable | None = ode_relaxation_reference


# ---- config --------------------------------------------------------------------------------------


def _records(key: str, seconds: float, rec_dt: float) -> int:
    n = int(round(seconds / rec_dt))
    if n < 1 or abs(n * rec_dt - seconds) > 1e-9 * max(seconds, rec_dt):
        raise ConfigError(f"analogy.{key}", seconds, f"a whole number of record intervals dt x record_every = {rec_dt:g} s")
    return n


def options(cfg: dict) -> dict:
    """The ``analogy`` options and ``replicates``, checked (a ConfigError naming the key)."""
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
    out["alike_factor"] = num(cfg, "analogy.alike_factor", 1, strict=True, what="a factor")
    reps = cfg.get("replicates")
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 2:
        raise ConfigError("replicates", reps, "an integer >= 2 for experiment=analogy (every row reports its spread "
                          "over replicates)")
    bio_reps = a.get("bio_replicates")
    if bio_reps is not None and (isinstance(bio_reps, bool) or not isinstance(bio_reps, int) or bio_reps < 2):
        raise ConfigError("analogy.bio_replicates", bio_reps, "an integer >= 2, or null (the same as replicates)")
    out["bio_replicates"] = reps if bio_reps is None else bio_reps
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
    counts = (n_step - n_win, n_win, n_after - n_win, n_win)  # warm-up, pre-step window, transient, post-step window
    return {"counts": counts, "chunk": engine.chunk_length(math.gcd(*counts), int(cfg.get("chunk_records", 100))),
            "rec_dt": rec_dt}


def split_configs(cfg: dict) -> tuple[dict, dict]:
    """(biology config, LLM config): the run config without ``analogy``, with ``substrate`` the
    bio preset or ``analogy.llm_substrate``; topology, dt and seed shared, ``replicates`` for the
    LLM side and ``analogy.bio_replicates`` (if set) for biology."""
    base = {k: v for k, v in cfg.items() if k != "analogy"}  # each preset's run config holds its own part
    sub = cfg.get("substrate")
    name = sub.get("name") if isinstance(sub, dict) else sub
    if name != "bio":
        raise ConfigError("substrate", name,
                          "bio for experiment=analogy (the LLM side is analogy.llm_substrate; a plain run of another "
                          "substrate is experiment=tissue)")
    if cfg.get("backend", "jax") != "jax":
        raise ConfigError("backend", cfg.get("backend"), "jax for experiment=analogy (both presets run on the engine)")
    llm_sub = (cfg.get("analogy") or {}).get("llm_substrate")
    if not isinstance(llm_sub, dict):
        raise ConfigError("analogy.llm_substrate", llm_sub, "the llm substrate preset (experiment=analogy sets it)")
    bio_reps = (cfg.get("analogy") or {}).get("bio_replicates")
    bio = base if bio_reps is None else {**base, "replicates": bio_reps}
    return bio, {**base, "substrate": llm_sub}


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
    """The four phases (``before`` params for warm-up and pre-step window, ``after`` for the
    transient and the post-step window), each continuing from the previous state; returns the
    results so far (stops at an error)."""
    out, state, start = [], state0, 0
    for n, params in zip(counts, (before, before, after, after)):
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


def windows(counts) -> dict:
    """Record indices of the four phases: ``pre``/``post`` the steady windows, ``i_step`` the record
    at the step, ``i_pre0``/``i_post0`` the records at the windows' starts (increments run from there)."""
    n_warm, n_win, n_trans, n_post = counts
    total = n_warm + n_win + n_trans + n_post
    return {"pre": np.arange(n_warm, n_warm + n_win), "post": np.arange(total - n_post, total),
            "i_step": n_warm + n_win - 1, "i_pre0": n_warm - 1, "i_post0": total - n_post - 1, "total": total}


def cascade_exponents(opt: dict, model, bio_sub: dict, llm) -> dict:
    """Currency per chain against length on the chain kernel (``experiment=cascade``'s
    :func:`~sim.experiments.cascade.plain_chain_costs`) and the fitted exponents: biology at the
    preset's ATP per amino acid (constant in the length), LLM at the model's decode FLOPs per token
    (growing with the context)."""
    atp_per_aa = float(np.asarray(model.params.chain_cost_per_unit).reshape(-1)[0])
    mean_aa = float(bio_sub["chains"]["mean_length_aa"])
    lb, ll = opt["bio_lengths"], opt["llm_lengths"]
    sb, lg = lb <= mean_aa, lb >= mean_aa
    if sb.sum() < 2 or lg.sum() < 2:
        raise ConfigError("analogy.cascade.bio_lengths", lb.tolist(), f"at least 2 lengths on each side of the mean "
                          f"protein length {mean_aa:g} aa")
    cb = plain_chain_costs(atp_per_aa, 0.0, lb)
    cl = plain_chain_costs(llm.model.flops_per_token, llm.model.flops_per_token_per_ctx, ll)
    short, long_ = ll <= opt["short_max_tokens"], ll >= opt["long_min_tokens"]
    return {
        "bio_lengths": lb, "bio_cost": cb, "llm_lengths": ll, "llm_cost": cl,
        "bio": (fit_exponent(lb[sb], cb[sb]), fit_exponent(lb[lg], cb[lg])),
        "llm": (fit_exponent(ll[short], cl[short]), fit_exponent(ll[long_], cl[long_])),
        "llm_cascade_crossover_tokens": 2.0 * llm.model.flops_per_token / llm.model.flops_per_token_per_ctx,
        # lengths past the model's context window are the same architecture extrapolated
        "llm_cascade_long_extrapolated": bool(ll[long_].max() > llm.model.max_context),
        "llm_max_context_tokens": float(llm.model.max_context),
    }


# ---- context numbers (not rows) --------------------------------------------------------------------


def _mean(x) -> float:
    return float(np.nanmean(x))


def bio_context(model, res, w) -> dict:
    """ATP, dG and the energy charge of the total pools (bound ADP/AMP included: what a tissue
    assay reports), means over living cells and replicates, before and after the step."""
    p, rec = model.params, res.records
    pools, alive = rec["pools"], rec["alive"].astype(float)
    n_alive = np.maximum(alive.sum(-1), 1)

    def cell_mean(x):  # (R, T)
        return (x * alive).sum(-1) / n_alive

    ec = cell_mean(energy_charge_of(pools, p, xp=np))
    dg = cell_mean(dg_atp_kj(pools[..., ATP], pools[..., ADP], pools[..., PI], float(p.dg0_kj),
                             float(p.temperature_k), xp=np))
    atp = cell_mean(pools[..., ATP])
    out = {}
    for when, idx in (("before", w["pre"]), ("after", w["post"])):
        out[f"atp_{when}_mm"] = _mean(atp[:, idx])
        out[f"energy_charge_{when}"] = _mean(ec[:, idx])
        out[f"dg_atp_{when}_kj_per_mol"] = _mean(dg[:, idx])
    out["cells_alive_after"] = _mean(alive[:, -1].sum(-1))
    out["carrier_balance_error"] = float(bio_summarize(model, res, model.state)["conservation_error"])
    return out


def _slice(res: engine.RunResult, i0: int, i1: int, state) -> engine.RunResult:
    """Records ``i0..i1-1`` (``i0``: the record at the start of the window) as a RunResult."""
    return engine.RunResult(state, {k: v[:, i0:i1] for k, v in res.records.items()}, res.times[i0:i1],
                            int(round((res.times[i1 - 1] - res.times[i0]) / (res.times[1] - res.times[0]))),
                            res.wall_s, res.compile_s, None)


def llm_context(llm, phases, res, w) -> dict:
    """The serving summary (``sim.substrates.llm.results.summarize``) over each steady window."""
    rec = res.records
    s_before = llm_results.summarize(llm, _slice(res, w["i_pre0"], w["i_step"] + 1, phases[1].state), 0.0)
    s_after = llm_results.summarize(llm, _slice(res, w["i_post0"], w["total"], phases[-1].state), 0.0)
    return {
        "stable_before": bool(s_before["stable"]), "stable_after": bool(s_after["stable"]),
        "stability_reason_after": s_after["stability_reason"],
        "kv_occupied_before_tokens": _mean(rec["kv_occupied"][:, w["pre"]].sum(-1).mean(-1)),
        "kv_occupied_after_tokens": _mean(rec["kv_occupied"][:, w["post"]].sum(-1).mean(-1)),
        "kv_capacity_tokens": float(llm.kv_capacity),
        "arrival_rate_before_req_per_s": s_before["arrival_rate_req_per_s"],
        "arrival_rate_after_req_per_s": s_after["arrival_rate_req_per_s"],
        "mean_time_in_system_before_s": s_before["mean_time_in_system_s"],
        "mean_time_in_system_after_s": s_after["mean_time_in_system_s"],
        "littles_law_rel_error_before": s_before["littles_law_rel_error"],
        "stability_limit_req_per_s": s_before["stability_limit_req_per_s"],
        "utilization_after": s_after["utilization_estimate"],
        "mean_power_before_w": s_before["mean_power_w"],
        "energy_per_output_token_j": s_before["energy_per_output_token_j"],
        "carrier_balance_error": float(s_after["kv_conservation_error"]),
    }


# ---- the experiment ------------------------------------------------------------------------------

ROW_UNITS = {"1": DIMENSIONLESS, "s": "s", "J per unit": "J/unit",
             "units per unit of work": DIMENSIONLESS}  # (currency units per work unit: a ratio of counts)


def _outcome_units() -> dict:
    """The unit of every key the analogy's summary can hold (sim.io's naming rule): the table's
    rows in their rows' units (a statistic in the unit of its row, ``_n`` a count), the context."""
    out = {
        **CORE_OUTCOMES, "failed_part": TEXT, "topology": TEXT, "bio_cells": COUNT, "llm_cells": COUNT, "edges": COUNT,
        "step_factor": DIMENSIONLESS, "step_time_s": "s", "window_s": "s", "end_time_s": "s", "bio_replicates": COUNT,
        "llm_replicates": COUNT, "confidence": DIMENSIONLESS, "alike_factor": DIMENSIONLESS, "bio_currency": TEXT,
        "llm_currency": TEXT, "bio_carrier": TEXT, "llm_carrier": TEXT, "bio_new_steady_state": FLAG,
        "llm_new_steady_state": FLAG, "bio_atp_*_mm": "mM", "bio_energy_charge_*": DIMENSIONLESS,
        "bio_dg_atp_*_kj_per_mol": "kJ/mol", "bio_cells_alive_after": COUNT, "bio_carrier_balance_error": DIMENSIONLESS,
        "llm_stable_*": FLAG, "llm_stability_reason_after": TEXT, "llm_kv_occupied_*_tokens": "tokens",
        "llm_kv_capacity_tokens": "tokens", "llm_arrival_rate_*_req_per_s": "requests/s",
        "llm_mean_time_in_system_*_s": "s", "llm_littles_law_rel_error_before": DIMENSIONLESS,
        "llm_stability_limit_req_per_s": "requests/s", "llm_utilization_after": DIMENSIONLESS,
        "llm_mean_power_before_w": "W", "llm_energy_per_output_token_j": "J/output token",
        "llm_carrier_balance_error": DIMENSIONLESS, "llm_cascade_crossover_tokens": "tokens",
        "llm_cascade_long_extrapolated": FLAG, "llm_max_context_tokens": "tokens", "bio_relaxation_reference_s": "s",
    }
    for r in rows.ROWS:
        unit = ROW_UNITS[r.units]
        for side in rows.SIDES:
            out.update({f"{side}_{r.key}{stat}": unit for stat in ("", "_std", "_ci_low", "_ci_high")})
            out[f"{side}_{r.key}_n"] = COUNT
        out[f"{r.key}_verdict"] = TEXT
        out.update({f"{r.key}_{k}": DIMENSIONLESS for k in ("factor", "factor_low", "factor_high")})
    return out


OUTCOME_UNITS = _outcome_units()


def _failed(reason_part: str, model, result) -> RunOutput:
    summary = {"status": "failed", "reason": f"{reason_part}: {result.error}", "failed_part": reason_part}
    return RunOutput(None, summary, model, result)


def table_summary(entries: list[dict]) -> dict:
    """The flat summary keys of the table (see the module doc)."""
    out = {}
    for e in entries:
        key = e["row"].key
        for side in rows.SIDES:
            s = e[side]
            out[f"{side}_{key}"] = s.mean
            out.update({f"{side}_{key}_{name}": getattr(s, attr) for name, attr in
                        (("std", "std"), ("ci_low", "low"), ("ci_high", "high"), ("n", "n"))})
        if e["row"].compared:
            out[f"{key}_verdict"] = e["verdict"]
            out.update({f"{key}_{k}": e[k] for k in ("factor", "factor_low", "factor_high")})
    return out


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
    casc = cascade_exponents(opt, model, bio_cfg["substrate"], llm)

    bio_phases = _phases(bio_fn, model.state, model.params, bio_step, counts, every)
    bio_res = _concat(bio_phases)
    if bio_res.error is not None:
        return _failed("bio", model, bio_res)
    llm_phases = _phases(llm_fn, llm.state, llm.params, llm_step, counts, every)
    llm_res = _concat(llm_phases)
    if llm_res.error is not None:
        return _failed("llm", llm, llm_res)

    w = windows(counts)
    edges = [jax.device_get(p.state) for p in bio_phases]  # the state at the end of every phase
    views = {"bio": bio_view(model, bio_res, edges, w, casc["bio"]),
             "llm": llm_view(llm, llm_res, w, casc["llm"])}
    entries = rows.table(views, opt["alike_factor"])
    steady = {side: all(r["steady"] for r in rows.responses(v)) for side, v in views.items()}

    topo = cfg.get("topology") or {}
    summary = {
        "status": "ok", "model": llm.model.name, "gpu": llm.gpu.name, "topology": str(topo.get("kind")),
        "bio_cells": model.n_cells, "llm_cells": llm.n_cells, "edges": int(np.asarray(model.params.edges.src).size),
        "step_factor": opt["step_factor"], "step_time_s": float(bio_res.times[w["i_step"]]),
        "window_s": float(w["pre"].size * ph["rec_dt"]), "end_time_s": float(bio_res.times[-1]),
        "replicates": int(llm_cfg["replicates"]), "bio_replicates": int(bio_cfg["replicates"]),
        "llm_replicates": int(llm_cfg["replicates"]), "confidence": rows.CONFIDENCE,
        "alike_factor": opt["alike_factor"], "bio_currency": "ATP", "llm_currency": "token",
        "bio_carrier": "free adenine nucleotides (ATP + ADP + AMP)", "llm_carrier": "KV cache (occupied + free)",
        "bio_new_steady_state": steady["bio"], "llm_new_steady_state": steady["llm"],
    }
    summary.update(table_summary(entries))
    summary.update({f"bio_{k}": v for k, v in bio_context(model, bio_res, w).items()})
    summary.update({f"llm_{k}": v for k, v in llm_context(llm, llm_phases, llm_res, w).items()})
    summary.update({k: casc[k] for k in ("llm_cascade_crossover_tokens", "llm_cascade_long_extrapolated",
                                         "llm_max_context_tokens")})
    reference = RELAXATION_REFERENCE(model, bio_step, opt) if RELAXATION_REFERENCE is not None else None
    if reference is not None:
        summary["bio_relaxation_reference_s"] = float(reference)
    summary["wall_s"] = float(bio_res.wall_s + llm_res.wall_s)
    summary["compile_s"] = float(bio_res.compile_s + llm_res.compile_s)
    md, csv_text = table_markdown(entries, summary), table_csv(entries)

    ds = _dataset(model, bio_res, bio_cfg, llm, llm_res, llm_cfg, casc, views, entries, summary)
    ds.attrs.update(table_md=md, table_csv=csv_text)
    return RunOutput(ds, summary, model, bio_res, report=md,
                     files=lambda out_dir: write_tables(entries, md, csv_text, out_dir),
                     figures=lambda out_dir: [analogy_figure(ds, entries, summary, out_dir)])


def _side_dataset(ds: xr.Dataset, side: str) -> xr.Dataset:
    ds = ds.rename({"time": f"time_{side}", "replicate": f"replicate_{side}"})
    return ds.rename({k: f"{side}_{k}" for k in ds.data_vars})


def _dataset(model, bio_res, bio_cfg, llm, llm_res, llm_cfg, casc, views, entries, summary) -> xr.Dataset:
    b = _side_dataset(bio_dataset(model, bio_res, bio_cfg), "bio")
    m = _side_dataset(llm_results.to_dataset(llm, llm_res, llm_cfg), "llm")
    ds = xr.merge([b, m], combine_attrs="drop")
    for side, what in (("bio", "ATP / free adenine nucleotides (ATP + ADP + AMP), living cells"),
                       ("llm", "occupied KV / KV capacity")):
        ds[f"{side}_charged_fraction"] = xr.Variable(
            (f"replicate_{side}", f"time_{side}"), rows.charged_fraction(views[side]),
            {"units": "1", "long_name": f"charged fraction of the carrier, summed over cells: {what}"})
    ds["llm_kv_free_fraction"] = ds["llm_kv_free"] / float(llm.kv_capacity)
    ds["llm_kv_free_fraction"].attrs.update(units="1", long_name="free KV fraction per instance")
    ds = ds.assign_coords(length_bio=casc["bio_lengths"], length_llm=casc["llm_lengths"],
                          row=[e["row"].key for e in entries], side=list(rows.SIDES))
    ds["cascade_bio_cost"] = xr.Variable(("length_bio",), casc["bio_cost"], {
        "units": "ATP", "long_name": "ATP per chain (protein of that many amino acids)"})
    ds["cascade_llm_cost"] = xr.Variable(("length_llm",), casc["llm_cost"], {
        "units": "FLOP", "long_name": "FLOPs of a decode stream of that many tokens"})
    for stat, attr, long_name in (("mean", "mean", "mean over replicates"), ("std", "std", "standard deviation"),
                                  ("ci_low", "low", f"{rows.CONFIDENCE:.0%} interval of the mean, low"),
                                  ("ci_high", "high", f"{rows.CONFIDENCE:.0%} interval of the mean, high"),
                                  ("n", "n", "replicates counted")):
        ds[f"table_{stat}"] = xr.Variable(("row", "side"), [[getattr(e[s], attr) for s in rows.SIDES] for e in entries],
                                          {"long_name": f"analogy table: {long_name} (units: see table_units)"})
    ds["table_units"] = xr.Variable(("row",), [e["row"].units for e in entries])
    ds["table_label"] = xr.Variable(("row", "side"), [[e["row"].label(s) for s in rows.SIDES] for e in entries])
    for name, units in (("time_bio", "s"), ("time_llm", "s"), ("length_bio", "amino acids"), ("length_llm", "tokens")):
        ds[name].attrs["units"] = units
    ds.attrs.update(
        experiment="analogy", substrate="bio+llm", model=summary["model"], gpu=summary["gpu"],
        topology=summary["topology"], n_cells=summary["bio_cells"], n_edges=summary["edges"],
        step_factor=summary["step_factor"], step_time_s=summary["step_time_s"], window_s=summary["window_s"],
        seed=int(bio_cfg.get("seed", 0)), dt_s=float(bio_cfg["dt"]), bio_currency="ATP", llm_currency="token",
        bio_volume_l=float(model.params.volume_l), llm_kv_capacity_tokens=float(llm.kv_capacity),
        bio_work_units=str(b.attrs.get("work_units", "")), confidence=rows.CONFIDENCE,
    )
    return ds
