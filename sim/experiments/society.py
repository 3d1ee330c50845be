"""``experiment=society``: division of labour among model instances, and agent topologies.

``python -m sim experiment=society model=llama3_8b gpu=h100`` sweeps context per kind
(``society.sweep.kind_context_tokens``) x hand-off tokens (``society.sweep.handoff_tokens``) x
cluster size (``society.sweep.n_instances``) for five arrangements of the same tasks: a cluster of
generalists, a cluster of specialists with routing and hand-offs, and, on one task, a chat, a
single agent and orchestrator-workers (:mod:`sim.substrates.llm.society` has the accounting). Each
arrangement is one ``jit(vmap)`` call over the whole grid. Outputs:

- ``results.nc``: every per-task quantity (tokens in / prefilled / out, hand-off tokens, J, USD,
  GPU-seconds, latency) by topology x context x hand-off at ``society.n_instances``, the cluster
  quantities over N too, the specialization gain (generalist / specialist J per task; without and
  with misrouting), the effective curvature ``alpha``, the transport cost, and masks of the points
  whose sequences fit the KV cache (``fits``) or run past the model's window (``beyond_window``:
  the same architecture extrapolated, as a long-context variant of the model would run it);
- ``society.parquet``: one row per (topology, N, context, hand-off), tokens relative to the chat;
- ``summary.json``: the comparison at the config's own point (generalists, specialists, the
  ``society.theta`` mix), the hand-off threshold above which generalists win, the gain at the
  shortest and longest context, and the agent topologies' token multiples against the published
  ranges (~4x and ~15x a chat: Anthropic 2025; 4-220x the prefill tokens of a single agent for
  multi-agent systems: Gao et al. 2025, arXiv:2505.18286);
- ``figures/society_gain.png`` (gain against hand-off cost, the region where specialists win) and
  ``figures/agent_tokens.png`` (tokens per task by topology against the published ranges).

With ``society.engine.enabled=true`` the same cluster (``society.n_instances`` instances on a complete
graph, ``society.n_kinds`` kinds, the society's contexts, hand-off tokens and miss rate, tasks of
exactly ``prompt_tokens`` / ``output_tokens``) also runs on the serving engine with queues
(``substrate.kinds``; :func:`sim.substrates.llm.kinds.compare`): specialists vs generalists at each
``society.engine.kind_context_tokens`` x ``rates_per_s``, over a window of ``steps`` after as many of
warm-up. Adds ``society_engine.parquet`` (one row per context x rate x arrangement: tokens, J (all
and busy), USD and latency per solved task, hand-off tokens, and the static accounting's numbers
beside them), ``engine_*`` summary keys and ``figures/society_engine.png``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import xarray as xr

from sim.api import RunOutput
from sim.core.config import num
from sim.config.validate import validate
from sim.errors import ConfigError
from sim.experiments import register
from sim.io import CORE_OUTCOMES, COUNT, DIMENSIONLESS, FLAG
from sim.substrates.llm import society as so

ARRANGEMENTS = ("generalists", "specialists", "chat", "single_agent", "orchestrator_workers")
# published multiples of a chat's tokens (Anthropic 2025) and of a single agent's prefill tokens
# (Gao et al. 2025) that the summary compares with
PUBLISHED = {"single_agent_vs_chat_tokens": 4.0, "multi_agent_vs_chat_tokens": 15.0,
             "multi_vs_single_prefill_range": (4.0, 220.0)}


def _list(cfg, key, *, integer=False, positive=False, section="sweep"):
    node = cfg["society"].get(section)
    v = node.get(key) if isinstance(node, dict) else None
    ok = isinstance(v, list) and bool(v) and all(
        not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)
        and (x > 0 if positive else x >= 0) and (not integer or (float(x) == int(x) and x >= 1)) for x in v)
    if not ok:
        what = "integers >= 1" if integer else ("numbers > 0" if positive else "numbers >= 0")
        raise ConfigError(f"society.{section}.{key}", v, f"a non-empty list of {what}")
    return sorted({int(x) if integer else float(x) for x in v})


def read_engine(cfg: dict, p) -> dict | None:
    """``society.engine`` (checked whether or not it is enabled): None when off, else its values and
    the engine config of the cluster (:func:`engine_config`), built once to refuse what it cannot run."""
    e = cfg["society"].get("engine")
    if e is None:
        return None
    if not isinstance(e, dict):
        raise ConfigError("society.engine", e, "a mapping of the engine comparison's options")
    enabled = e.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError("society.engine.enabled", enabled, "true or false")
    contexts = _list(cfg, "kind_context_tokens", positive=True, section="engine")
    rates = _list(cfg, "rates_per_s", positive=True, section="engine")
    steps = num(cfg, "society.engine.steps", minimum=1, integer=True, what="a number of steps")
    dt = num(cfg, "society.engine.dt", minimum=0, strict=True, what="a time step (s)")
    if not enabled:
        return None
    out = {"contexts": contexts, "rates": rates, "steps": steps, "dt": dt}
    from sim.substrates.llm.build import build_llm
    from sim.substrates.llm.kinds import with_kinds

    # the dearest point (generalists, longest context, highest rate) must build
    base = engine_config(cfg, p, out)
    probe = with_kinds(base, context_tokens=int(max(contexts)), theta=1.0)
    probe["substrate"]["arrivals"]["rate_per_s"] = max(rates)
    try:
        build_llm(probe)
    except ConfigError as exc:
        key = ("society.engine.kind_context_tokens" if "kinds" in exc.key else
               "society.engine.rates_per_s" if "arrivals" in exc.key else exc.key)
        raise ConfigError(key, contexts if "kinds" in exc.key else (rates if "arrivals" in exc.key else exc.value),
                          f"values the serving engine can run: {exc.allowed}") from exc
    out["cfg"] = base
    return out


def engine_config(cfg: dict, p, e: dict) -> dict:
    """The engine config of the society's cluster: ``n_instances`` instances on a complete graph,
    ``n_kinds`` kinds with the society's contexts, hand-off tokens and miss rate, tasks of exactly
    ``prompt_tokens`` and ``output_tokens`` (lognormal shapes 0), ``society.engine.dt``."""
    from sim.core.config import compose

    out = copy.deepcopy(cfg)
    out["topology"] = compose(["topology=complete", f"topology.n_cells={p.n_instances}"])["topology"]
    out["dt"] = e["dt"]
    sub = out["substrate"]
    sub["arrivals"].update(prompt_median_tokens=p.prompt_tokens, output_median_tokens=p.output_tokens,
                           prompt_sigma=0.0, output_sigma=0.0)
    sub["kinds"].update(n=p.n_kinds, base_context_tokens=p.base_context_tokens, context_tokens=p.kind_context_tokens,
                        handoff_tokens=p.handoff_tokens, p_miss=p.p_miss, theta=0.0)
    return out



# The unit of every summary key (sim.io's rule: a key ends with its unit, or is declared
# dimensionless / a count / a flag; tests/test_outcome_units.py). ``<arrangement>_<q>``: the
# generalists, specialists, mix and the agent topologies; ``engine_<arrangement>_<q>``: the engine mode.
_PER_ARRANGEMENT = {"energy_j": "J", "cost_usd": "USD", "handoff_energy_j": "J", "latency_s": "s", "gpu_s": "s",
                    "input_tokens": "tokens", "prefill_tokens": "tokens", "output_tokens": "tokens",
                    "handoff_tokens": "tokens", "handoff_prob": DIMENSIONLESS}
_PER_ENGINE_ARRANGEMENT = {"energy_per_task_j": "J/task", "busy_energy_per_task_j": "J/task",
                           "cost_per_task_usd": "USD/task", "latency_s": "s", "tokens_per_task": "tokens/task",
                           "handoff_tokens_per_task": "tokens/task", "drop_fraction": DIMENSIONLESS,
                           "static_tokens_per_task": "tokens/task", "static_busy_energy_per_task_j": "J/task",
                           "static_latency_s": "s"}
OUTCOME_UNITS = {
    **CORE_OUTCOMES,
    **{f"{a}_{q}": u for a in ("generalists", "specialists", "mix", "chat", "single_agent", "orchestrator_workers")
       for q, u in _PER_ARRANGEMENT.items()},
    **{f"engine_{a}_{q}": u for a in ("generalists", "specialists") for q, u in _PER_ENGINE_ARRANGEMENT.items()},
    "gpus_per_model": COUNT, "kv_capacity_tokens": "tokens", "n_kinds": COUNT, "n_instances": COUNT,
    "mix_specialization_index": DIMENSIONLESS, "alpha_effective*": DIMENSIONLESS, "specialization_gain*": DIMENSIONLESS,
    "transport_cost*": DIMENSIONLESS, "transport_energy_share": DIMENSIONLESS,
    "decode_weight_read_share_*": DIMENSIONLESS, "gain_shortest_context": DIMENSIONLESS,
    "gain_longest_context": DIMENSIONLESS, "specialists_win_fraction_of_grid": DIMENSIONLESS,
    "handoff_threshold_tokens": "tokens", "handoff_threshold_by_context_tokens": "tokens",
    "handoff_size_of_ranges_tokens": "tokens", "generalist_beyond_window": FLAG,
    "sweep_kind_context_tokens": "tokens", "sweep_handoff_tokens": "tokens", "sweep_n_instances": COUNT,
    "points_not_fitting_kv": COUNT, "extrapolated_points_beyond_window": COUNT,
    "*_vs_chat_token_ratio*": DIMENSIONLESS, "multi_vs_single_agent_token_ratio": DIMENSIONLESS,
    "multi_vs_single_prefill_ratio": DIMENSIONLESS, "multi_vs_single_prefill_range*": DIMENSIONLESS,
    "multi_vs_single_energy_ratio": DIMENSIONLESS, "published_multi_vs_single_prefill_range": DIMENSIONLESS, "multi_vs_single_prefill_in_published_range": FLAG,
    "engine_kind_context_tokens": "tokens", "engine_rates_req_per_s": "requests/s", "engine_window_s": "s",
    "engine_errors": COUNT, "engine_specialization_gain": DIMENSIONLESS,
}


# Summary names carry their units (sim.io: a key ends with its unit, or is declared dimensionless):
# the society's quantities as the dataset names them -> as a summary key ends.
SUMMARY_NAME = {"joules": "energy_j", "usd": "cost_usd", "handoff_joules": "handoff_energy_j",
                "joules_per_task": "energy_per_task_j", "busy_joules_per_task": "busy_energy_per_task_j",
                "usd_per_task": "cost_per_task_usd", "static_busy_joules_per_task": "static_busy_energy_per_task_j"}


def _named(q: str) -> str:
    return SUMMARY_NAME.get(q, q)


def engine_comparison(e: dict, p) -> tuple[list, dict]:
    """Rows of :func:`sim.substrates.llm.kinds.compare` and the ``engine_*`` summary keys."""
    from sim.substrates.llm import kinds as kd

    rows = kd.compare(e["cfg"], e["contexts"], e["rates"], warmup_steps=e["steps"], steps=e["steps"],
                      usd_per_gpu_hour=p.usd_per_gpu_hour)
    by = {(r["arrangement"], r["context_per_kind"], r["rate_per_s"]): r for r in rows}

    def grid(name, q):
        return [[by[(name, c, r)].get(q, float("nan")) for r in e["rates"]] for c in e["contexts"]]

    s = {"engine_kind_context_tokens": e["contexts"], "engine_rates_req_per_s": e["rates"],
         "engine_window_s": e["steps"] * e["dt"], "engine_errors": sum("error" in r for r in rows)}
    for name in so.SOCIETIES:
        for q in ("joules_per_task", "busy_joules_per_task", "usd_per_task", "latency_s", "tokens_per_task",
                  "handoff_tokens_per_task", "drop_fraction", "static_tokens_per_task", "static_busy_joules_per_task",
                  "static_latency_s"):
            s[f"engine_{name}_{_named(q)}"] = grid(name, q)
    s["engine_specialization_gain"] = [[g / sp for g, sp in zip(gr, sr)] for gr, sr in zip(
        s["engine_generalists_energy_per_task_j"], s["engine_specialists_energy_per_task_j"])]
    return rows, s


def read(cfg: dict):
    """Everything the experiment reads, checked before anything is compiled."""
    validate(cfg)
    p = so.read_params(cfg)
    theta = so.read_theta(cfg, p)
    if not isinstance(cfg["society"].get("sweep"), dict):
        raise ConfigError("society.sweep", cfg["society"].get("sweep"), "a mapping of the sweep's lists")
    contexts = _list(cfg, "kind_context_tokens", positive=True)
    handoffs = _list(cfg, "handoff_tokens")
    ns = _list(cfg, "n_instances", integer=True)
    hw = so.read_hardware(cfg)
    so.check_fits(hw, p)
    engine = read_engine(cfg, p)
    return hw, p, theta, contexts, handoffs, ns, engine


def _fits_masks(hw, p, contexts, handoffs, ns):
    """(arrangement, c, h) and (c, h, n) masks: every sequence fits the KV cache."""
    top = np.zeros((len(ARRANGEMENTS), len(contexts), len(handoffs)), bool)
    soc = np.zeros((len(contexts), len(handoffs), len(ns)), bool)
    window = np.zeros_like(soc)
    for a, c in enumerate(contexts):
        for b, h in enumerate(handoffs):
            for j, n in enumerate(ns):
                lc = so.longest_contexts(p.replace(n_instances=n), handoff_tokens=h, kind_context_tokens=c)
                soc[a, b, j] = max(lc["generalists"], lc["specialists"]) <= hw.kv_capacity
                window[a, b, j] = lc["generalists"] > hw.model.max_context
            lc = so.longest_contexts(p, handoff_tokens=h, kind_context_tokens=c)
            for t, name in enumerate(ARRANGEMENTS):
                top[t, a, b] = lc[name] <= hw.kv_capacity
    return top, soc, window


def sweep(hw, p, contexts, handoffs, ns) -> dict:
    """The grids: cluster costs over (c, h, n) for generalists, specialists and specialists routed
    without misses; agent topologies over (c, h)."""
    ns_all = sorted(set(ns) | {p.n_instances})
    gen = so.society_grid(hw, p, contexts, handoffs, ns_all, theta=1.0)
    spec = so.society_grid(hw, p, contexts, handoffs, ns_all, theta=0.0)
    spec0 = so.society_grid(hw, p.replace(p_miss=0.0), contexts, handoffs, ns_all, theta=0.0)
    tops = so.topology_grid(hw, p, contexts, handoffs)
    return {"ns": ns_all, "generalists": gen, "specialists": spec, "specialists_no_misrouting": spec0, **tops}


def _range(x) -> list:
    return [float(np.nanmin(x)), float(np.nanmax(x))]


def _tokens(d):
    return d["input_tokens"] + d["output_tokens"]


@register("society")
def run_society(cfg: dict) -> RunOutput:
    hw, p, theta, contexts, handoffs, ns, engine = read(cfg)
    g = sweep(hw, p, contexts, handoffs, ns)
    ns_all = g["ns"]
    j0 = ns_all.index(p.n_instances)
    top_fit, soc_fit, window = _fits_masks(hw, p, contexts, handoffs, ns_all)
    nan_soc = np.where(soc_fit, 1.0, np.nan)

    gain = g["generalists"]["joules"] / g["specialists"]["joules"] * nan_soc
    gain0 = (g["generalists"]["joules"] / g["specialists_no_misrouting"]["joules"] * nan_soc)[:, 0, :]
    gain_usd = g["generalists"]["usd"] / g["specialists"]["usd"] * nan_soc
    task_tokens = p.prompt_tokens + p.output_tokens
    transport = g["specialists"]["handoff_tokens"] / task_tokens * nan_soc
    n_arr = np.asarray(ns_all)
    alpha0 = so.alpha_effective(gain0, p.n_kinds, n_arr[None, :])
    alpha = so.alpha_effective(gain, p.n_kinds, n_arr[None, None, :])

    # per arrangement at the config's N: (arrangement, c, h)
    per = {q: np.stack([g[a][q][:, :, j0] if a in so.SOCIETIES else g[a][q] for a in ARRANGEMENTS])
           for q in so.QUANTITIES}
    for q in per:
        per[q] = np.where(top_fit, per[q], np.nan)
    chat = ARRANGEMENTS.index("chat")
    tokens = per["input_tokens"] + per["output_tokens"]
    vs_chat = tokens / tokens[chat]

    coords = {"topology": list(ARRANGEMENTS), "context_per_kind": np.asarray(contexts, float),
              "handoff_size": np.asarray(handoffs, float), "n_instances": n_arr}
    data = {q: (("topology", "context_per_kind", "handoff_size"), per[q],
                {"units": so.UNITS[q], "long_name": so.DESCRIPTIONS[q] + f" (clusters: N = {p.n_instances})"})
            for q in so.QUANTITIES}
    for a in so.SOCIETIES:
        for q in ("joules", "usd", "latency_s", "handoff_tokens", "input_tokens"):
            data[f"{a}_{q}_by_n"] = (("context_per_kind", "handoff_size", "n_instances"), g[a][q] * nan_soc,
                                     {"units": so.UNITS[q], "long_name": f"{a}: {so.DESCRIPTIONS[q]}"})
    data.update({
        "tokens_vs_chat": (("topology", "context_per_kind", "handoff_size"), vs_chat,
                           {"units": "1", "long_name": "tokens (in + out) per task / a chat's"}),
        "specialization_gain": (("context_per_kind", "n_instances"), gain0,
                                {"units": "1", "long_name": "generalist / specialist J per task, no misrouting"}),
        "specialization_gain_net": (("context_per_kind", "handoff_size", "n_instances"), gain,
                                    {"units": "1", "long_name": "generalist / specialist J per task with hand-offs"}),
        "specialization_gain_usd_net": (("context_per_kind", "handoff_size", "n_instances"), gain_usd,
                                        {"units": "1", "long_name": "generalist / specialist USD per task"}),
        "alpha_effective": (("context_per_kind", "n_instances"), alpha0,
                            {"units": "1", "long_name": "1 + ln(gain) / ln(K / m): theta^alpha curvature"}),
        "alpha_effective_net": (("context_per_kind", "handoff_size", "n_instances"), alpha,
                                {"units": "1", "long_name": "alpha_effective of the net gain"}),
        "transport_cost": (("context_per_kind", "handoff_size", "n_instances"), transport,
                           {"units": "1", "long_name": "hand-off tokens per task / task tokens (specialists)"}),
        "fits": (("topology", "context_per_kind", "handoff_size"), top_fit,
                 {"long_name": "every sequence fits one instance's KV cache"}),
        "society_fits": (("context_per_kind", "handoff_size", "n_instances"), soc_fit,
                         {"long_name": "every cluster sequence fits one instance's KV cache"}),
        "beyond_window": (("context_per_kind", "handoff_size", "n_instances"), window,
                          {"long_name": f"generalist sequences past model.max_context={hw.model.max_context} "
                                        "(the architecture extrapolated)"}),
    })
    ds = xr.Dataset(data, coords=coords)
    ds["context_per_kind"].attrs.update(units="tokens", long_name="society.sweep.kind_context_tokens: c")
    ds["handoff_size"].attrs.update(units="tokens", long_name="society.sweep.handoff_tokens: H per hand-off")
    ds.attrs.update(experiment="society", substrate="llm", model=hw.model.name, gpu=hw.gpu.name,
                    gpus_per_model=hw.n_gpus, n_kinds=p.n_kinds)

    summary = point_summary(hw, p, theta)
    k0 = int(np.argmin(np.abs(np.asarray(handoffs) - p.handoff_tokens)))
    mvs = per["input_tokens"][4] / per["input_tokens"][3]
    short, long_ = 0, len(contexts) - 1
    summary.update({
        "sweep_kind_context_tokens": [float(c) for c in contexts],
        "sweep_handoff_tokens": [float(h) for h in handoffs],
        "sweep_n_instances": [int(n) for n in ns_all],
        "gain_shortest_context": float(gain0[short, j0]),
        "gain_longest_context": float(gain0[long_, j0]),
        "alpha_effective_shortest_context": float(alpha0[short, j0]),
        "alpha_effective_longest_context": float(alpha0[long_, j0]),
        # what binds a decode step: the weights' share of the bytes read, per context, for each arrangement
        "decode_weight_read_share_generalist": [so.decode_shares(
            hw, p.base_context_tokens + p.n_kinds * c + p.prompt_tokens + 0.5 * p.output_tokens)["weight_read_share"]
            for c in contexts],
        "decode_weight_read_share_specialist": [so.decode_shares(
            hw, p.base_context_tokens + c + p.prompt_tokens + 0.5 * p.output_tokens)["weight_read_share"]
            for c in contexts],
        "specialists_win_fraction_of_grid": float(np.nanmean(gain[:, :, j0] > 1.0)),
        "handoff_threshold_by_context_tokens": [
            so.handoff_threshold(hw, p.replace(kind_context_tokens=c)) for c in contexts],
        # over the contexts at the configured hand-off size (nearest grid value), then over the whole grid
        "handoff_size_of_ranges_tokens": float(handoffs[k0]),
        "single_agent_vs_chat_token_ratio_range": _range(vs_chat[3][:, k0]),
        "multi_agent_vs_chat_token_ratio_range": _range(vs_chat[4][:, k0]),
        "multi_vs_single_prefill_range": _range(mvs[:, k0]),
        "multi_agent_vs_chat_token_ratio_range_grid": _range(vs_chat[4]),
        "multi_vs_single_prefill_range_grid": _range(mvs),
        "points_not_fitting_kv": int((~soc_fit).sum() + (~top_fit).sum()),
        "extrapolated_points_beyond_window": int(window.sum()),
    })
    summary["handoff_threshold_by_context_tokens"] = [
        (None if math.isinf(x) else x) for x in summary["handoff_threshold_by_context_tokens"]]
    rows = table(per, vs_chat, g, ns_all, contexts, handoffs, p, soc_fit)
    engine_rows = None
    if engine is not None:
        engine_rows, engine_summary = engine_comparison(engine, p)
        summary.update(engine_summary)
    report = format_report(summary)
    result = type("SocietyResult", (), {"error": None})()

    def files(out_dir):
        from sim.io import write_parquet

        write_parquet(Path(out_dir) / "society.parquet", rows)
        if engine_rows is not None:
            import pandas as pd

            write_parquet(Path(out_dir) / "society_engine.parquet", pd.DataFrame(engine_rows))

    def figures(out_dir):
        paths = society_figures(ds, summary, p, out_dir)
        if engine_rows is not None:
            paths.append(engine_figure(summary, p, out_dir))
        return paths

    return RunOutput(ds, summary, None, result, files=files, report=report, figures=figures)


def point_summary(hw, p, theta) -> dict:
    """The comparison at the config's own point (plain-Python reference)."""
    cmp = so.compare(hw, p, theta)
    tops = so.reference_topologies(hw, p)
    s = {"status": "ok", "model": hw.model.name, "gpu": hw.gpu.name, "gpus_per_model": hw.n_gpus,
         "currency_unit": "tokens", "kv_capacity_tokens": hw.kv_capacity, "n_kinds": p.n_kinds,
         "n_instances": p.n_instances}
    for a in ("generalists", "specialists", "mix"):
        if a in cmp:
            for q, v in cmp[a].items():
                s[f"{a}_{_named(q)}"] = v
    if "mix_specialization_index" in cmp:
        s["mix_specialization_index"] = cmp["mix_specialization_index"]
    s.update(cmp["axes"])
    thr = so.handoff_threshold(hw, p)
    s["handoff_threshold_tokens"] = None if math.isinf(thr) else thr
    s["generalist_beyond_window"] = bool(p.base_context_tokens + p.n_kinds * p.kind_context_tokens + p.prompt_tokens
                                         > hw.model.max_context)
    for t, d in tops.items():
        for q in ("input_tokens", "prefill_tokens", "output_tokens", "handoff_tokens", "joules", "usd", "latency_s"):
            s[f"{t}_{_named(q)}"] = d[q]
    chat = _tokens(tops["chat"])
    s["single_agent_vs_chat_token_ratio"] = _tokens(tops["single_agent"]) / chat
    s["multi_agent_vs_chat_token_ratio"] = _tokens(tops["orchestrator_workers"]) / chat
    s["multi_vs_single_agent_token_ratio"] = _tokens(tops["orchestrator_workers"]) / _tokens(tops["single_agent"])
    s["multi_vs_single_prefill_ratio"] = tops["orchestrator_workers"]["input_tokens"] / tops["single_agent"]["input_tokens"]
    s["multi_vs_single_energy_ratio"] = tops["orchestrator_workers"]["joules"] / tops["single_agent"]["joules"]
    s["published_single_agent_vs_chat_token_ratio"] = PUBLISHED["single_agent_vs_chat_tokens"]
    s["published_multi_agent_vs_chat_token_ratio"] = PUBLISHED["multi_agent_vs_chat_tokens"]
    s["published_multi_vs_single_prefill_range"] = list(PUBLISHED["multi_vs_single_prefill_range"])
    lo, hi = PUBLISHED["multi_vs_single_prefill_range"]
    s["multi_vs_single_prefill_in_published_range"] = bool(lo <= s["multi_vs_single_prefill_ratio"] <= hi)
    return s


def table(per, vs_chat, g, ns_all, contexts, handoffs, p, soc_fit):
    """One row per (topology, N, context, hand-off): the clusters at every N, the agent topologies
    once (N not applicable: NaN)."""
    import pandas as pd

    rows = []
    for a, name in enumerate(ARRANGEMENTS):
        for i, c in enumerate(contexts):
            for k, h in enumerate(handoffs):
                if name in so.SOCIETIES:
                    for j, n in enumerate(ns_all):
                        row = {"topology": name, "n_instances": float(n), "context_per_kind": c, "handoff_size": h,
                               "fits": bool(soc_fit[i, k, j])}
                        row.update({q: float(g[name][q][i, k, j]) if soc_fit[i, k, j] else np.nan for q in so.QUANTITIES})
                        rows.append(row)
                else:
                    row = {"topology": name, "n_instances": np.nan, "context_per_kind": c, "handoff_size": h,
                           "fits": bool(np.isfinite(per["joules"][a, i, k]))}
                    row.update({q: float(per[q][a, i, k]) for q in so.QUANTITIES})
                    rows.append(row)
    df = pd.DataFrame(rows)
    chat = df[df.topology == "chat"].set_index(["context_per_kind", "handoff_size"])
    key = list(zip(df.context_per_kind, df.handoff_size))
    chat_tokens = (chat.input_tokens + chat.output_tokens).reindex(key).to_numpy()
    df["tokens_vs_chat"] = (df.input_tokens + df.output_tokens).to_numpy() / chat_tokens
    df["input_tokens_vs_chat"] = df.input_tokens.to_numpy() / chat.input_tokens.reindex(key).to_numpy()
    df["joules_vs_chat"] = df.joules.to_numpy() / chat.joules.reindex(key).to_numpy()
    return df


def format_report(s: dict) -> str:
    thr = s["handoff_threshold_tokens"]
    lines = [
        f"society ({s['model']} on {s['gpus_per_model']} x {s['gpu']}, K = {s['n_kinds']} kinds, N = {s['n_instances']})",
        f"  J per task: generalists {s['generalists_energy_j']:.1f}, specialists {s['specialists_energy_j']:.1f}; "
        f"gain {s['specialization_gain']:.2f} (net {s['specialization_gain_net']:.2f}), "
        f"alpha_effective {s['alpha_effective']:.2f}, transport cost {s['transport_cost']:.3f}",
        f"  generalists win above {thr:,.0f} hand-off tokens" if thr is not None else
        "  specialists win at every hand-off the KV cache holds",
        f"  gain at the shortest / longest context: {s['gain_shortest_context']:.2f} / {s['gain_longest_context']:.2f}",
        f"  tokens vs chat: single agent {s['single_agent_vs_chat_token_ratio']:.1f}x (published ~4x), "
        f"orchestrator-workers {s['multi_agent_vs_chat_token_ratio']:.1f}x (~15x); multi/single prefill "
        f"{s['multi_vs_single_prefill_ratio']:.1f}x (4-220x)",
    ]
    if "engine_specialization_gain" in s:
        for i, c in enumerate(s["engine_kind_context_tokens"]):
            for j, r in enumerate(s["engine_rates_req_per_s"]):
                lines.append(
                    f"  engine c = {c:g}, {r:g} req/s per instance: J per task generalists "
                    f"{s['engine_generalists_energy_per_task_j'][i][j]:.1f}, specialists "
                    f"{s['engine_specialists_energy_per_task_j'][i][j]:.1f} (gain {s['engine_specialization_gain'][i][j]:.2f}); "
                    f"latency {s['engine_generalists_latency_s'][i][j]:.2f} / {s['engine_specialists_latency_s'][i][j]:.2f} s")
    return "\n".join(lines)


def engine_figure(s: dict, p, out_dir):
    """J per solved task and latency of specialists and generalists on the engine, by context per
    kind, one line per arrival rate (the static accounting's busy J as dotted lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    c = np.asarray(s["engine_kind_context_tokens"], float)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for j, r in enumerate(s["engine_rates_req_per_s"]):
        for name, ls in (("generalists", "o-"), ("specialists", "v--")):
            ax[0].loglog(c, [row[j] for row in s[f"engine_{name}_energy_per_task_j"]], ls, color=f"C{j}", ms=4,
                         label=f"{name}, {r:g} req/s")
            ax[1].loglog(c, [row[j] for row in s[f"engine_{name}_latency_s"]], ls, color=f"C{j}", ms=4,
                         label=f"{name}, {r:g} req/s")
    for name, ls in (("generalists", ":"), ("specialists", "-.")):
        ax[0].loglog(c, [row[0] for row in s[f"engine_{name}_static_busy_energy_per_task_j"]], ls, color="k", lw=0.8,
                     label=f"{name}, static (full batch, busy J)")
    ax[0].set(xlabel="context per kind c (tokens)", ylabel="energy per solved task (J)",
              title=f"engine: N = {p.n_instances}, K = {p.n_kinds}, p_miss = {p.p_miss:g}, H = {p.handoff_tokens:g}")
    ax[1].set(xlabel="context per kind c (tokens)", ylabel="mean time in system (s)", title="latency with queues")
    ax[0].legend(fontsize=6)
    ax[1].legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, Path(out_dir) / "figures" / "society_engine.png")


def society_figures(ds, summary, p, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import _save

    out = Path(out_dir) / "figures"
    paths = []
    c = ds["context_per_kind"].values
    h = ds["handoff_size"].values
    j0 = list(ds["n_instances"].values).index(p.n_instances)
    gain = ds["specialization_gain_net"].values[:, :, j0]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    hp = np.where(h > 0, h, np.nan)
    for i in range(len(c)):
        ax[0].semilogx(hp, gain[i], "o-", ms=3, label=f"c = {c[i]:g}")
    ax[0].axhline(1.0, color="k", lw=0.8)
    ax[0].fill_between([np.nanmin(hp), np.nanmax(hp)], 1.0, max(1.05, np.nanmax(gain) * 1.05), color="C2", alpha=0.08,
                       label="specialists win")
    ax[0].set(xlabel="hand-off size H (tokens)", ylabel="generalist / specialist energy per task (1)",
              title=f"specialization gain (N = {p.n_instances}, K = {p.n_kinds}, p_miss = {p.p_miss:g})")
    ax[0].legend(fontsize=7)
    for j, n in enumerate(ds["n_instances"].values):
        ax[1].semilogx(c, ds["alpha_effective"].values[:, j], "o-", ms=3, label=f"N = {n}")
    ax[1].axhline(1.0, color="k", lw=0.8)
    ax[1].set(xlabel="context per kind c (tokens)", ylabel="alpha_effective = 1 + ln G / ln(K/m) (1)",
              title="curvature from the roofline (no misrouting)")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, out / "society_gain.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    k0 = int(np.argmin(np.abs(h - p.handoff_tokens)))
    for name, marker in (("single_agent", "s-"), ("orchestrator_workers", "^-"), ("generalists", "o--"),
                         ("specialists", "v--")):
        ax.loglog(c, ds["tokens_vs_chat"].sel(topology=name).values[:, k0], marker, ms=4, label=name)
    ax.axhline(PUBLISHED["single_agent_vs_chat_tokens"], color="C0", ls=":", label="agents ~4x (Anthropic 2025)")
    ax.axhline(PUBLISHED["multi_agent_vs_chat_tokens"], color="C1", ls=":", label="multi-agent ~15x (Anthropic 2025)")
    ax.set(xlabel="context per kind c (tokens)", ylabel="tokens per task / a chat's (1)",
           title=f"tokens by topology (H = {h[k0]:g})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, out / "agent_tokens.png"))
    return paths
