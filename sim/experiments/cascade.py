"""``experiment=cascade``: the cost of a chain, or of an agent loop, against its length.

Part 1, chains (``sim.core.chains``), biology and LLM side by side. One cell per (series,
length); each cell runs ``chains_per_length`` chains from 0 to ``L`` units in ``chain_steps``
elongation steps and the ledger gives the currency per chain:

- ``bio``: protein synthesis, 4 ATP per amino acid, constant cost per unit (c1 = 0): cost = 4 L,
  exponent 1.
- ``llm``: a decode stream costed in FLOPs, c(L) = 2N + 4 n_layer d L (weights, plus ``QK^T`` and
  ``AV``): cost = 2N L + 2 n_layer d L^2; linear while L << L* = N / (n_layer d) (~61k tokens for
  Llama-3-8B), quadratic beyond. The exponent is fitted inside the model's context window
  (``exponent_llm_window``: lengths from ``window_fit_min`` to ``max_context``, 1.06 for Llama-3-8B);
  lengths beyond the window are the same architecture extrapolated (long-context variants share
  it), and every exponent fitted there is reported as an extrapolation (``*_extrapolated`` keys,
  ``extrapolated_keys``).
- ``llm_tools``: tool calls with probability ``p_per_token`` append ``tokens`` each (retrieval),
  which every later token pays for (at most one call per chain per step).
- ``llm_memory``: a memory module compresses the context past ``threshold_tokens`` by ``factor``
  (cost: a forward pass, 2N FLOPs, per token held), which caps the context: cost turns linear.

Part 2, agent loops on the LLM engine (``sim.substrates.llm``): one conversation with fixed lengths (prompt
``b``, output ``o``, ``followup_tokens`` e per turn) runs ``T`` turns; a stateless API resends the
whole history, so the input tokens are ``T b + k T (T - 1) / 2`` with ``k = o + e``, exactly. A
memory module that compresses the history past a threshold caps it and makes the growth linear.
All ``T`` (with and without memory) run as one vmapped call.

Fitted exponents are least-squares slopes of log cost against log length.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from sim.api import RunOutput
from sim.config.validate import ConfigErrors, problems_of, validate
from sim.rng import replicate_keys
from sim.core.config import num
from sim.errors import ConfigError
from sim.experiments import register
from sim.io import CORE_OUTCOMES, COUNT, DIMENSIONLESS, FLAG, TEXT
from sim.core import chains as ck
from sim.core import engine
from sim.substrates.llm import SUBSTRATE as LLM
from sim.substrates.llm import specs
from sim.substrates.llm.build import build_llm, stack_params

SERIES = ("bio", "llm", "llm_tools", "llm_memory")


def fit_exponent(lengths, costs) -> float:
    """Least-squares slope of log(cost) against log(length)."""
    x, y = np.log(np.asarray(lengths, float)), np.log(np.asarray(costs, float))
    return float(np.polyfit(x, y, 1)[0])


def local_exponent(lengths, costs) -> np.ndarray:
    """d log(cost) / d log(length) between consecutive points."""
    x, y = np.log(np.asarray(lengths, float)), np.log(np.asarray(costs, float))
    return np.diff(y) / np.diff(x)


def _get(node, key, default=None):
    return node.get(key, default) if isinstance(node, dict) else default


def _lengths(c, key):
    v = _get(c, key)
    if not isinstance(v, list) or not v or any(isinstance(x, bool) or not isinstance(x, (int, float)) or x <= 0 for x in v):
        raise ConfigError(f"cascade.{key}", v, "a non-empty list of lengths > 0")
    return [float(x) for x in v]


def _num(c, key, lo=0.0, strict=False, hi=None, integer=False):
    """A number of the ``cascade`` section, through the one config reader."""
    return num({"cascade": c}, f"cascade.{key}", lo, hi, strict=strict, integer=integer)


# the numbers of the section: key -> (minimum, strict, maximum, integer); step and token counts are
# integers (int() would silently truncate 1.5), the thresholds and fit bounds of part 1 any real
NUMBERS = {
    "chain_steps": (1, False, None, True),
    "chains_per_length": (1, False, None, True),
    "bio_atp_per_unit": (0, True, None, False),
    "tools.p_per_token": (0, False, 1, False),
    "tools.tokens": (0, False, None, True),
    "memory.threshold_tokens": (0, True, None, False),
    "memory.factor": (1, True, None, False),
    "long_context_min": (0, True, None, False),
}
LOOP_NUMBERS = {
    "loop.prompt_tokens": (0, True, None, True),
    "loop.output_tokens": (0, True, None, True),
    "loop.followup_tokens": (0, False, None, True),
    "loop.memory_threshold_tokens": (0, True, None, False),  # a history length threshold, real like memory.threshold_tokens
    "loop.memory_factor": (1, True, None, False),
}
WINDOW_FIT_MIN = 1000.0  # tokens, when cascade.window_fit_min is not set


def _collect(problems: list, check, *args):
    try:
        return check(*args)
    except ConfigError as exc:
        problems.extend(problems_of(exc))
        return None


def _raise(problems: list) -> None:
    if problems:
        raise ConfigErrors(problems) if len(problems) > 1 else problems[0]


def loop_problems(cfg: dict, model: specs.ModelSpec | None = None) -> list[ConfigError]:
    """Every problem of ``cascade.loop`` (part 2), and, given the model, whether the longest loop
    fits its context window."""
    lc = _get(cfg.get("cascade"), "loop")
    problems: list[ConfigError] = []
    if not isinstance(lc, dict):
        return [ConfigError("cascade.loop", lc, "a mapping of the agent loop's options (conf/experiment/cascade.yaml)")]
    vals = {k: _collect(problems, _num, {"loop": lc}, k, *rule) for k, rule in LOOP_NUMBERS.items()}
    turns = lc.get("turns")
    if not isinstance(turns, list) or not turns or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in turns):
        problems.append(ConfigError("cascade.loop.turns", turns, "a non-empty list of integers >= 1"))
    elif model is not None and None not in vals.values():
        b, o, e = vals["loop.prompt_tokens"], vals["loop.output_tokens"], vals["loop.followup_tokens"]
        if b + (max(turns) - 1) * (o + e) + o > model.max_context:
            problems.append(ConfigError("cascade.loop.turns", max(turns), f"a loop whose history fits the context "
                                        f"window {model.max_context:g} of {model.name} without memory"))
    return problems


def check_options(cfg: dict, model: specs.ModelSpec) -> None:
    """Every option of the ``cascade`` section, every problem at once, before anything is built
    or run (the chain runs and the agent loops each take a compile)."""
    c = cfg.get("cascade")
    if not isinstance(c, dict):
        raise ConfigError("cascade", c, "the cascade options (experiment=cascade sets them)")
    problems: list[ConfigError] = []
    for section in ("tools", "memory"):  # (null passes the key check; its missing keys are hidden by this line)
        if not isinstance(c.get(section), dict):
            problems.append(ConfigError(f"cascade.{section}", c.get(section), "a mapping (conf/experiment/cascade.yaml)"))
    for key, rule in NUMBERS.items():
        _collect(problems, _num, c, key, *rule)
    win_min = _collect(problems, _num, c, "window_fit_min", 0, True) if "window_fit_min" in c else WINDOW_FIT_MIN
    for key in ("bio_lengths", "tool_lengths"):
        _collect(problems, _lengths, c, key)
    llm_l = _collect(problems, _lengths, c, "llm_lengths")
    window = float(model.max_context)
    if llm_l is not None and win_min is not None and sum(win_min <= L <= window for L in llm_l) < 2:
        problems.append(ConfigError("cascade.llm_lengths", llm_l, f"at least 2 lengths in [window_fit_min={win_min:g}, "
                                    f"max_context={window:g}] of {model.name}"))
    problems += loop_problems(cfg, model)
    _raise(problems)


# ---- part 1: chains ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("n_records", "record_every"))
def _run_chains(chains, ledger, params, key, n_records: int, record_every: int):
    def inner(carry, _):
        c, led, st = carry
        c, led, _ = ck.chain_step(c, led, params, key, st)
        return (c, led, st + 1), None

    def outer(carry, _):
        carry, _ = jax.lax.scan(inner, carry, None, length=record_every)
        return carry, carry[1].spent

    (c, led, _), spent = jax.lax.scan(outer, (chains, ledger, jnp.uint32(0)), None, length=n_records)
    return c, led, spent


def chain_costs(cfg: dict, model: specs.ModelSpec) -> dict:
    c = cfg.get("cascade") or {}
    steps = _num(c, "chain_steps", *NUMBERS["chain_steps"])
    per = _num(c, "chains_per_length", *NUMBERS["chains_per_length"])
    dt = float(cfg.get("dt", 1.0))
    bio_l, llm_l, tool_l = _lengths(c, "bio_lengths"), _lengths(c, "llm_lengths"), _lengths(c, "tool_lengths")
    p_tool = _num(c, "tools.p_per_token", *NUMBERS["tools.p_per_token"])
    r_tool = _num(c, "tools.tokens", *NUMBERS["tools.tokens"])
    m_thr = _num(c, "memory.threshold_tokens", *NUMBERS["memory.threshold_tokens"])
    m_fac = _num(c, "memory.factor", *NUMBERS["memory.factor"])
    bio_c0 = _num(c, "bio_atp_per_unit", *NUMBERS["bio_atp_per_unit"])
    rows = ([("bio", L) for L in bio_l] + [("llm", L) for L in llm_l] + [("llm_tools", L) for L in tool_l]
            + [("llm_memory", L) for L in llm_l])
    n = len(rows)
    series = np.array([r[0] for r in rows])
    length = np.array([r[1] for r in rows])
    is_bio = series == "bio"
    col = lambda bio, llm: np.where(is_bio, bio, llm).astype(float)  # noqa: E731
    params = ck._as_params(dict(
        dt=dt, rate=length / (steps * dt), c0=col(bio_c0, model.flops_per_token),
        c1=col(0.0, model.flops_per_token_per_ctx), p_stop=np.zeros(n), n_max=length, l0=np.zeros(n),
        init_rate=np.zeros(n), init_cost=np.zeros(n), p_tool=np.where(series == "llm_tools", p_tool, 0.0),
        tool_steps=1, r_tool=np.where(series == "llm_tools", r_tool, 0.0),
        mem_threshold=np.where(series == "llm_memory", m_thr, 0.0), mem_factor=np.full(n, m_fac),
        mem_cost=np.where(series == "llm_memory", model.flops_per_token, 0.0),
    ))
    chains, ledger = ck.empty(n, per)
    chains = dataclasses.replace(chains, active=np.ones((n, per), bool))
    # tool waits delay a chain by one step per call: give every chain room to finish
    every = max(1, steps // 20)
    n_records = -(-3 * steps // every)
    key = replicate_keys(int(cfg.get("seed", 0)), 1)[0]
    c_end, led, spent = _run_chains(chains, ledger, params, key, n_records, every)
    led = jax.device_get(led)
    delivered = np.asarray(led.delivered)
    if not np.all(delivered == per):
        raise ConfigError("cascade.chain_steps", steps, "enough steps for every chain to finish (raise it or lower "
                          "cascade.tools.p_per_token)")
    cost = (np.asarray(led.elongation_spent) + np.asarray(led.memory_spent)) / per
    return {
        "series": series, "length": length, "cost": cost, "spent": np.asarray(spent),
        "times": np.arange(1, n_records + 1) * every * dt, "tool_calls": np.asarray(led.tool_calls) / per,
        "units": np.asarray(led.units) / per,
    }


def plain_chain_costs(c0, c1, lengths, *, chain_steps: int = 400, dt: float = 1.0, seed: int = 0) -> np.ndarray:
    """Currency per finished chain for each length ``L`` of a plain series (no tools, no memory,
    no early termination), run on the same chain kernel as :func:`chain_costs`: one chain per
    length from 0 to ``L`` units in ``chain_steps`` elongation steps, the unit at context ``l``
    costing ``c0 + c1 l`` (``c0``, ``c1``: scalars or one value per length). The result is the
    ledger's elongation spending, ``c0 L + c1 L^2 / 2`` up to the step discretisation (exact for
    ``c1 = 0``). Used by ``experiment=analogy`` for its cascade exponents."""
    length = np.asarray(lengths, float)
    n = length.size
    if n == 0 or np.any(~np.isfinite(length)) or np.any(length <= 0):
        raise ValueError(f"lengths must be finite and > 0, got {lengths!r}")
    params = ck._as_params(dict(
        dt=dt, rate=length / (chain_steps * dt), c0=np.broadcast_to(np.asarray(c0, float), (n,)),
        c1=np.broadcast_to(np.asarray(c1, float), (n,)), p_stop=np.zeros(n), n_max=length, l0=np.zeros(n),
        init_rate=np.zeros(n), init_cost=np.zeros(n), p_tool=np.zeros(n), tool_steps=1, r_tool=np.zeros(n),
        mem_threshold=np.zeros(n), mem_factor=np.full(n, 2.0), mem_cost=np.zeros(n),
    ))
    chains, ledger = ck.empty(n, 1)
    chains = dataclasses.replace(chains, active=np.ones((n, 1), bool))
    every = max(1, chain_steps // 20)
    key = replicate_keys(int(seed), 1)[0]
    _, led, _ = _run_chains(chains, ledger, params, key, -(-(chain_steps + 1) // every), every)
    led = jax.device_get(led)
    if not np.all(np.asarray(led.delivered) == 1):
        raise RuntimeError(f"plain chains did not finish in {chain_steps} steps")
    return np.asarray(led.elongation_spent, float)


def roofline_time(model, gpu, lengths) -> np.ndarray:
    """s to decode a chain of L tokens alone (batch 1, one GPU) on the roofline at the achieved
    FLOP/s and bandwidth: sum over its tokens."""
    out = []
    for L in lengths:
        grid = np.linspace(0.0, L, 2001)
        t = specs.decode_step_time(model, gpu.achieved_flops, gpu.achieved_bandwidth, 1.0, grid, xp=np)
        out.append(float(np.trapezoid(t, grid)))
    return np.array(out)


# ---- part 2: agent loops on the LLM engine -----------------------------------------------------


def loop_config(cfg: dict, turns: int, memory: bool) -> dict:
    lc = (cfg.get("cascade") or {}).get("loop") or {}
    out = copy.deepcopy(cfg)
    sub = out["substrate"]
    sub.update(
        chain_slots=2, queue_slots=2, max_batch=2, routing=False, freeze_context=False,
        arrivals={**sub["arrivals"], "rate_per_s": 0.0},
        tools={**sub["tools"], "p_per_token": 0.0},
        memory={**sub["memory"], "threshold_tokens": lc["memory_threshold_tokens"] if memory else 0,
                "factor": lc["memory_factor"]},
        agent={**sub["agent"], "followup_prob": 1.0, "max_turns": int(turns), "followup_tokens": lc["followup_tokens"],
               "hops": 1},
        initial={"active": 0, "queued": 1, "prompt_tokens": lc["prompt_tokens"], "output_tokens": lc["output_tokens"]},
    )
    sub["arrivals"]["output_median_tokens"] = lc["output_tokens"]
    sub["arrivals"]["output_sigma"] = 0.0
    out["topology"] = {"kind": "single", "n_cells": 1}
    return out


def agent_loops(cfg: dict) -> dict:
    """Input tokens of a deterministic agent loop for each T, without and with memory (one call)."""
    _raise(loop_problems(cfg, specs.model_spec(cfg)))  # before the first build
    lc = cfg["cascade"]["loop"]
    turns = lc["turns"]
    b, o, e = float(lc["prompt_tokens"]), float(lc["output_tokens"]), float(lc["followup_tokens"])
    k = o + e
    points = [(T, mem) for mem in (False, True) for T in turns]
    models = [build_llm(loop_config(cfg, T, mem)) for T, mem in points]
    m0 = models[0]
    params = stack_params([m.params for m in models])
    # steps: each turn takes its prefill, o tokens of decode and one step in the queue
    per_turn = o * specs.instance_step_time(m0.model, m0.gpu, 1, b + max(turns) * k, m0.n_gpus)
    dt = float(np.asarray(m0.params.dt))
    steps = int(np.ceil(max(turns) * (per_turn / dt + 3) * 1.5)) + 10
    every = 10
    steps = -(-steps // every) * every
    res = engine.run(LLM, m0.state, params, seed=m0.seed, steps=steps, record_every=every, replicates=len(points),
                     batched_params=True)
    st = jax.device_get(res.state)
    tokens_in = np.asarray(st.ledger.tokens_in)[:, 0]
    turns_done = np.asarray(st.ledger.turns_done)[:, 0]
    completed = np.asarray(st.ledger.completed)[:, 0]
    if not np.all(completed == 1):
        raise RuntimeError(f"agent loops did not finish in {steps} steps (turns done {turns_done.tolist()})")
    n_t = len(turns)
    T = np.array(turns, float)
    return {
        "turns": T, "formula": T * b + k * T * (T - 1) / 2, "k": k, "b": b,
        "tokens_in": tokens_in[:n_t], "tokens_in_memory": tokens_in[n_t:],
        "tokens_out": np.asarray(st.ledger.tokens_out)[:n_t, 0],
        "energy_j": np.asarray(st.ledger.energy_j)[:n_t, 0], "energy_j_memory": np.asarray(st.ledger.energy_j)[n_t:, 0],
        "compressions": np.asarray(st.ledger.compressions)[n_t:, 0],
        "steps": steps, "wall_s": res.wall_s, "compile_s": res.compile_s,
    }


# ---- the experiment ----------------------------------------------------------------------------


# The unit of every key the cascade's summary can hold (sim.io's naming rule): exponents and
# ratios dimensionless, lengths in tokens, chain costs in ATP molecules or FLOP, energies in J.
OUTCOME_UNITS = {
    **CORE_OUTCOMES, "exponent_*": DIMENSIONLESS, "llm_context_window_tokens": "tokens",
    "exponent_llm_window_range_tokens": "tokens", "long_context_min_tokens": "tokens",
    "long_context_beyond_window": FLAG, "crossover_length_tokens": "tokens", "crossover_beyond_window": FLAG,
    "llm_chain_cost_at_max_length_flop": "FLOP", "llm_chain_cost_at_window_flop": "FLOP",
    "memory_cost_ratio_at_max_length": DIMENSIONLESS, "tools_cost_ratio_at_max_tool_length": DIMENSIONLESS,
    "bio_chain_cost_at_400_aa_molecules": "molecules", "llm_decode_energy_at_max_length_j": "J",
    "llm_decode_energy_at_window_j": "J", "extrapolated_keys": TEXT, "loop_b_tokens": "tokens",
    "loop_k_tokens": "tokens", "loop_input_tokens": "tokens", "loop_formula_input_tokens": "tokens",
    "loop_memory_input_tokens": "tokens", "loop_turns": COUNT, "loop_formula_max_abs_error_tokens": "tokens",
    "loop_memory_saving_at_max_turns": DIMENSIONLESS, "loop_energy_at_max_turns_j": "J",
    "loop_memory_energy_at_max_turns_j": "J",
}


@register("cascade")
def run_cascade(cfg: dict) -> RunOutput:
    validate(cfg)
    model, gpu = specs.model_spec(cfg), specs.gpu_spec(cfg)
    check_options(cfg, model)
    ch = chain_costs(cfg, model)
    loops = agent_loops(cfg)
    c = cfg["cascade"]
    long_min = _num(c, "long_context_min", *NUMBERS["long_context_min"])
    series, length, cost = ch["series"], ch["length"], ch["cost"]

    def sel(name, lo=0.0, hi=np.inf):
        m = (series == name) & (length >= lo) & (length <= hi)
        return length[m], cost[m]

    window = float(model.max_context)
    win_min = _num(c, "window_fit_min", 0, strict=True) if "window_fit_min" in c else WINDOW_FIT_MIN
    summary = {"status": "ok", "model": model.name, "gpu": gpu.name, "currency_unit": "ATP (bio), FLOP (llm)"}
    summary["exponent_bio"] = fit_exponent(*sel("bio"))
    l_llm, c_llm = sel("llm")
    summary["llm_context_window_tokens"] = window
    # inside the window: what the model actually runs
    l_win, c_win = sel("llm", lo=win_min, hi=window)
    if l_win.size < 2:
        raise ConfigError("cascade.llm_lengths", l_llm.tolist(), f"at least 2 lengths in [window_fit_min={win_min:g}, "
                          f"max_context={window:g}] of {model.name}")
    summary["exponent_llm_window"] = fit_exponent(l_win, c_win)
    summary["exponent_llm_window_range_tokens"] = [float(l_win.min()), float(l_win.max())]
    c0, c1 = model.flops_per_token, model.flops_per_token_per_ctx
    # d ln(c0 L + c1 L^2 / 2) / d ln L at the window's end (closed form)
    summary["exponent_llm_local_at_window"] = float((c0 + c1 * window) / (c0 + 0.5 * c1 * window))
    summary["exponent_llm_short"] = fit_exponent(*sel("llm", hi=1e3))
    # over all lengths and beyond the window: the architecture extrapolated
    summary["exponent_llm"] = fit_exponent(l_llm, c_llm)
    summary["exponent_llm_all_lengths_extrapolated"] = summary["exponent_llm"]
    summary["exponent_llm_long"] = fit_exponent(*sel("llm", lo=long_min))
    summary["exponent_llm_long_extrapolated"] = summary["exponent_llm_long"]
    summary["exponent_llm_memory_long"] = fit_exponent(*sel("llm_memory", lo=long_min))
    summary["exponent_llm_memory_long_extrapolated"] = summary["exponent_llm_memory_long"]
    summary["long_context_min_tokens"] = float(long_min)
    summary["long_context_beyond_window"] = bool(long_min > window)
    l_tool, c_tool = sel("llm_tools")
    summary["exponent_llm_tools"] = fit_exponent(l_tool, c_tool)
    summary["exponent_llm_same_range_as_tools"] = fit_exponent(*sel("llm", lo=l_tool.min(), hi=l_tool.max()))
    summary["crossover_length_tokens"] = 2.0 * c0 / c1
    summary["crossover_beyond_window"] = bool(summary["crossover_length_tokens"] > window)
    summary["llm_chain_cost_at_max_length_flop"] = float(c_llm[-1])
    summary["llm_chain_cost_at_window_flop"] = float(np.interp(window, l_llm, c_llm))
    mem_l, mem_c = sel("llm_memory")
    summary["memory_cost_ratio_at_max_length"] = float(mem_c[-1] / c_llm[-1])
    base_at_tool = np.interp(l_tool[-1], l_llm, c_llm)
    summary["tools_cost_ratio_at_max_tool_length"] = float(c_tool[-1] / base_at_tool)
    summary["bio_chain_cost_at_400_aa_molecules"] = float(np.interp(400.0, *sel("bio")))
    t_dec = roofline_time(model, gpu, l_llm)
    in_win = (l_llm >= win_min) & (l_llm <= window)
    summary["exponent_llm_decode_time_window"] = fit_exponent(l_llm[in_win], t_dec[in_win])
    summary["exponent_llm_decode_time_long"] = fit_exponent(l_llm[l_llm >= long_min], t_dec[l_llm >= long_min])
    summary["exponent_llm_decode_time_long_extrapolated"] = summary["exponent_llm_decode_time_long"]
    summary["llm_decode_energy_at_max_length_j"] = float(t_dec[-1] * gpu.power_decode_w)
    summary["llm_decode_energy_at_window_j"] = float(np.interp(window, l_llm, t_dec) * gpu.power_decode_w)
    beyond = []
    if long_min > window:
        beyond += ["exponent_llm_long", "exponent_llm_memory_long", "exponent_llm_decode_time_long",
                   "llm_decode_energy_at_max_length_j", "llm_chain_cost_at_max_length_flop",
                   "memory_cost_ratio_at_max_length"]
    if l_llm.max() > window:
        beyond.append("exponent_llm")
    if l_tool.max() > window:
        beyond += ["exponent_llm_tools", "exponent_llm_same_range_as_tools", "tools_cost_ratio_at_max_tool_length"]
    summary["extrapolated_keys"] = beyond
    T = loops["turns"]
    summary["loop_b_tokens"], summary["loop_k_tokens"] = loops["b"], loops["k"]
    summary["loop_input_tokens"] = loops["tokens_in"].tolist()
    summary["loop_formula_input_tokens"] = loops["formula"].tolist()
    summary["loop_memory_input_tokens"] = loops["tokens_in_memory"].tolist()
    summary["loop_turns"] = T.astype(int).tolist()
    summary["loop_formula_max_abs_error_tokens"] = float(np.max(np.abs(loops["tokens_in"] - loops["formula"])))
    big = T >= max(2.0, T.max() / 4)
    summary["exponent_loop"] = fit_exponent(T[big], loops["tokens_in"][big])
    summary["exponent_loop_memory"] = fit_exponent(T[big], loops["tokens_in_memory"][big])
    summary["loop_memory_saving_at_max_turns"] = float(1.0 - loops["tokens_in_memory"][-1] / loops["tokens_in"][-1])
    summary["loop_energy_at_max_turns_j"] = float(loops["energy_j"][-1])
    summary["loop_memory_energy_at_max_turns_j"] = float(loops["energy_j_memory"][-1])
    summary["wall_s"] = float(loops["wall_s"])
    summary["compile_s"] = float(loops["compile_s"])

    labels = np.array([f"{s}:{L:g}" for s, L in zip(series, length)])
    ds = xr.Dataset(
        {
            "chain_spent": (("replicate", "time", "cell"), ch["spent"][None],
                            {"units": "ATP (bio cells) or FLOP (llm cells)", "long_name": "cumulative currency spent on the cell's chains"}),
            "cost_per_chain": (("cell",), cost, {"units": "ATP or FLOP", "long_name": "currency per finished chain"}),
            "tool_calls_per_chain": (("cell",), ch["tool_calls"], {"units": "calls"}),
            "loop_tokens_in": (("memory", "turns"), np.stack([loops["tokens_in"], loops["tokens_in_memory"]]),
                               {"units": "tokens", "long_name": "input tokens of an agent loop of T turns"}),
            "loop_tokens_in_formula": (("turns",), loops["formula"], {"units": "tokens", "long_name": "T b + k T (T-1)/2"}),
        },
        coords={"replicate": [0], "time": ch["times"], "cell": np.arange(len(labels)), "label": ("cell", labels),
                "series": ("cell", series), "length": ("cell", length), "memory": [False, True], "turns": T},
    )
    ds["time"].attrs["units"] = "s"
    ds["length"].attrs["units"] = "units (aa for bio, tokens for llm)"
    ds.attrs.update(substrate="bio+llm", experiment="cascade", model=model.name, gpu=gpu.name)
    result = type("CascadeResult", (), {"error": None})()
    return RunOutput(ds, summary, None, result,
                     figures=lambda out_dir: cascade_figures(ch, loops, summary, model, gpu, t_dec, out_dir))


def cascade_figures(ch, loops, summary, model, gpu, t_dec, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    out = Path(out_dir) / "figures"
    series, length, cost = ch["series"], ch["length"], ch["cost"]
    paths = []
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    m = series == "bio"
    ax[0].loglog(length[m], cost[m], "o-", label=f"protein synthesis (slope {summary['exponent_bio']:.3f})")
    ax[0].set(xlabel="chain length (amino acids)", ylabel="cost per chain (ATP)", title="biology: constant cost per unit")
    ax[0].legend(fontsize=8)
    for name, lab in (("llm", "decode"), ("llm_tools", "decode + tool calls"), ("llm_memory", "decode + memory module")):
        m = series == name
        ax[1].loglog(length[m], cost[m], "o-", ms=3, label=lab)
    lx = length[series == "llm"]
    ax[1].loglog(lx, model.flops_per_token * lx, "k:", lw=0.8, label="slope 1 (2N L)")
    ax[1].loglog(lx, 0.5 * model.flops_per_token_per_ctx * lx**2, "k--", lw=0.8, label="slope 2 (n_layer d L^2)")
    ax[1].set(xlabel="chain length (tokens)", ylabel="cost per chain (FLOP)", title=f"LLM ({model.name}): cost grows with context")
    ax[1].legend(fontsize=7)
    mid = np.sqrt(lx[1:] * lx[:-1])
    ax[2].semilogx(mid, local_exponent(lx, cost[series == "llm"]), "o-", label="FLOPs (LLM)")
    ax[2].semilogx(mid, local_exponent(lx, t_dec), "s-", ms=3, label=f"decode time, batch 1 ({gpu.name})")
    mb = series == "llm_memory"
    ax[2].semilogx(np.sqrt(length[mb][1:] * length[mb][:-1]), local_exponent(length[mb], cost[mb]), "^-", ms=3,
                   label="with memory module")
    ax[2].axhline(1.0, color="k", lw=0.5)
    ax[2].axhline(2.0, color="k", lw=0.5)
    ax[2].set(xlabel="chain length (tokens)", ylabel="local exponent d ln cost / d ln L (1)", title="cost exponent vs length",
              ylim=(0.8, 2.1))
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, out / "cascade_cost.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4))
    T = loops["turns"]
    ax.plot(T, loops["tokens_in"], "o", label=f"simulated (exponent {summary['exponent_loop']:.2f})")
    ax.plot(T, loops["formula"], "k-", lw=0.8, label="T b + k T(T-1)/2")
    ax.plot(T, loops["tokens_in_memory"], "s", label=f"with memory module (exponent {summary['exponent_loop_memory']:.2f})")
    ax.set(xlabel="turns T (count)", ylabel="input per loop (tokens)", title="agent loop (stateless API resends history)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, out / "agent_loop.png"))
    return paths
