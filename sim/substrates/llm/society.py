"""Division of labour among model instances: generalists, specialists and agent topologies, costed
on the LLM roofline.

Tasks of ``K`` kinds arrive at a cluster of ``N`` model instances. Every instance holds, as a
cached prefix in front of each task, a *context*: a shared part (system prompt, ``base`` tokens) and
the context of the kinds it serves (tool descriptions, instructions, memory: ``c`` tokens per
kind). A **generalist** holds every kind (``base + K c``), a **specialist** only its own
(``base + c``; with ``N < K`` each instance owns ``ceil`` or ``floor`` of ``K / N`` kinds). A token
is dearer on a longer context: every decoded token reads the KV cache of its whole sequence and
spends ``4 n_layer d`` FLOPs per context token on attention, the prefill of a task's ``P`` new
tokens attends to the cached context (``2 n_layer d (2 C P + P^2)`` FLOPs beyond the weights'
``2 N P``), and a longer sequence leaves room for fewer concurrent sequences in the KV cache, so
the weight reads are shared by a smaller batch. Everything here is costed with the substrate's own
roofline (:mod:`sim.substrates.llm.specs`: :func:`~sim.substrates.llm.specs.prefill_flops`,
:func:`~sim.substrates.llm.specs.instance_step_time`, the GPU's power states and the KV capacity),
not a second cost model.

One call (``cached`` context tokens already in the prefix cache, ``new`` tokens to prefill,
``out`` tokens to decode) on one instance of ``g`` GPUs:

- prefill: ``F_pf = (1 - m) prefill_flops(new, cached) + m prefill_flops(cached + new, 0)`` FLOPs,
  ``m`` the prefix-cache miss fraction; time ``F_pf / (g F_achieved)`` at the prefill power;
- decode in a steady continuous batch: sequences of this call are, on average, at context
  ``L = cached + new + out / 2`` (ages spread uniformly over the decode), the batch holds
  ``B = min(max_batch, KV capacity / L)`` of them (each sequence keeps its whole context in the KV
  cache: prefix blocks are not shared between sequences, the conservative case), one iteration
  takes ``t = instance_step_time(B, B L)``; the call occupies ``out t / B`` GPU-seconds of the
  instance (its share of the batch) and waits ``out t`` seconds; energy at the decode power;
- USD: GPU-seconds x ``g`` x ``usd_per_gpu_hour`` / 3600 (rented GPUs; electricity is in the rent).

**Routing and hand-offs** (the transport cost). A task of kind ``k`` (kinds equally frequent) goes
to one of the instances owning ``k`` (uniformly) with probability ``1 - p_miss`` and, with
``p_miss``, to one of the others. An instance with differentiation share ``theta`` (below) serves a
foreign task itself with probability ``theta``; otherwise it has read the task (``P`` tokens
prefilled for nothing) and hands it off over the graph to an owner of ``k``, which prefills the
task again together with ``H`` tokens of handed-over working context (``handoff_tokens``: the
sender's note, partial work) and then decodes the answer; the hand-off also waits
``handoff_latency_s``. Hand-off tokens per hand-off: ``P + H``.

**theta** (the differentiation share of ``sim.core.differentiation``, mapped to an instance): the
fraction of every *other* kind's context an instance keeps besides its own,
``C(theta) = base + c (m + theta (K - m))`` for an instance owning ``m`` kinds, and the probability
that a foreign task finds what it needs there. ``theta = 1`` is a generalist, ``theta = 0`` a pure
specialist; a vector gives a mixed cluster (instance ``i`` owns kind ``i mod K``).

**Dimensionless axes** (:func:`dimensionless_axes`), the ones the multicellular phase diagrams use
for both substrates: the *specialization gain* ``G`` = generalist cost per task / specialist cost
per task (joules; also USD), without misrouting (the production side) and with it (net), and the
*transport cost* = hand-off tokens per task / task tokens (``P + O``), with the same per hand-off.
The curvature of the trade-off is not a parameter: in the ``theta^alpha`` form of the biology side
a generalist that splits its capacity over ``K`` functions delivers ``K (1/K)^alpha = K^(1-alpha)``
of a specialist's output, so ``alpha_effective = 1 + ln G / ln(K / m)``: 1 (linear, nothing to gain)
where weight reads dominate a token's cost (short contexts) and towards 2 where attention and KV
reads do (long contexts).

**Agent topologies** on one task of one kind (context ``C = base + c``; :func:`reference_topologies`,
:func:`topology_grid`): a *chat* (one call), a *single agent* (``T`` tool calls: ``T + 1`` calls,
each resending the growing history, ``step_output_tokens`` decoded and ``tool_result_tokens``
appended per tool call, so the input over ``T + 1`` calls is ``(T+1) b + k T (T+1) / 2`` with
``b = C + P``, ``k = step + result``: the agent-loop formula of ``experiment=cascade``), and
*orchestrator-workers* (a lead plans and writes ``W`` subtasks of ``subtask_tokens`` each; each
worker, with its own context, is handed its subtask plus ``H`` tokens of working context (the task,
documents: copied, not decoded), runs a single-agent loop of ``T_w`` tool calls and returns a
summary of ``summary_tokens``; the lead reads the ``W`` summaries and writes the answer; the
workers run in parallel, so the latency counts one of them; hand-off tokens
``W (subtask + H + summary)``). Published scale: agents use ~4x the
tokens of a chat and multi-agent systems ~15x (Anthropic 2025, "How we built our multi-agent
research system"); multi-agent systems use 4-220x the prefill tokens of single agents on agentic
tasks (Gao et al. 2025, arXiv:2505.18286).

Two implementations of the same accounting: a plain-Python reference (:func:`reference_society`,
:func:`reference_topologies`: loops over instances, kinds and calls) and a JAX one (:func:`society_grid`,
:func:`topology_grid`: arrays over instances x kinds and calls, ``jit(vmap)`` over a grid of context
per kind x hand-off tokens x N); ``tests/test_llm_society.py`` holds them equal to 1e-9.

Units: tokens, s, J, USD, FLOP.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from sim.core.config import num
from sim.errors import ConfigError
from sim.substrates.llm import specs

jax.config.update("jax_enable_x64", True)  # the reference comparison is at 1e-9

# per-task (or per-topology) quantities, all expected values per task
QUANTITIES = ("input_tokens", "prefill_tokens", "output_tokens", "handoff_tokens", "handoff_prob", "joules",
              "handoff_joules", "gpu_s", "usd", "latency_s")
UNITS = {"input_tokens": "tokens", "prefill_tokens": "tokens", "output_tokens": "tokens", "handoff_tokens": "tokens",
         "handoff_prob": "1", "joules": "J", "handoff_joules": "J", "gpu_s": "s", "usd": "USD", "latency_s": "s"}
DESCRIPTIONS = {
    "input_tokens": "input tokens of all calls (cached context included: what an API bills; Gao et al.'s prefill tokens)",
    "prefill_tokens": "tokens actually prefilled (new tokens + prefix-cache misses)",
    "output_tokens": "decoded tokens",
    "handoff_tokens": "tokens processed only because of hand-offs (misrouted reads + handed-over context; "
                      "orchestrator: subtasks + summaries)",
    "handoff_prob": "probability that a task is handed off",
    "joules": "energy per task (prefill and decode power x time)",
    "handoff_joules": "energy added by hand-offs",
    "gpu_s": "instance-seconds occupied per task (decode: the task's share of the batch)",
    "usd": "rent of the GPUs per task",
    "latency_s": "time from arrival to the last token (no queueing)",
}
TOPOLOGIES = ("chat", "single_agent", "orchestrator_workers")
SOCIETIES = ("generalists", "specialists")

# scalar parameters a grid may vary (traced under jit); the counts below them are static
FIELDS = ("base_context_tokens", "kind_context_tokens", "prompt_tokens", "output_tokens", "handoff_tokens",
          "handoff_latency_s", "p_miss", "context_cache_miss", "usd_per_gpu_hour", "step_output_tokens",
          "tool_result_tokens", "tool_latency_s", "workers", "subtask_tokens", "summary_tokens")


@dataclasses.dataclass(frozen=True)
class SocietyParams:
    """The numbers of the ``society`` config section (defaults and sources in
    ``conf/experiment/society.yaml``). Tokens, s, USD."""

    n_kinds: int
    n_instances: int
    base_context_tokens: float
    kind_context_tokens: float
    prompt_tokens: float
    output_tokens: float
    handoff_tokens: float
    handoff_latency_s: float
    p_miss: float
    context_cache_miss: float
    usd_per_gpu_hour: float
    tool_calls: int
    step_output_tokens: float
    tool_result_tokens: float
    tool_latency_s: float
    workers: float
    worker_tool_calls: int
    subtask_tokens: float
    summary_tokens: float

    def replace(self, **kw) -> "SocietyParams":
        return dataclasses.replace(self, **kw)

    def scalars(self) -> dict:
        return {f: float(getattr(self, f)) for f in FIELDS}


@dataclasses.dataclass(frozen=True)
class Hardware:
    """One model instance: ``n_gpus`` GPUs (tensor parallel), its KV capacity (tokens) and the most
    sequences it decodes at once (vLLM's ``max_num_seqs``, ``substrate.max_batch``)."""

    model: specs.ModelSpec
    gpu: specs.GpuSpec
    n_gpus: int
    kv_capacity: float
    max_batch: float

    @property
    def flops(self) -> float:
        return self.gpu.achieved_flops * self.n_gpus

    @property
    def power_prefill_w(self) -> float:
        return self.gpu.power_prefill_w * self.n_gpus

    @property
    def power_decode_w(self) -> float:
        return self.gpu.power_decode_w * self.n_gpus


# ---- config ----------------------------------------------------------------------------------


def _n(cfg, key, **kw):
    return num(cfg, f"society.{key}", **kw)


def read_params(cfg: dict) -> SocietyParams:
    """The ``society`` section as :class:`SocietyParams`; the first bad value raises a ConfigError
    naming its key (``society.<key>``)."""
    if not isinstance(cfg.get("society"), dict):
        raise ConfigError("society", cfg.get("society"), "the society options (experiment=society sets them)")
    if not isinstance(cfg["society"].get("agent"), dict):
        raise ConfigError("society.agent", cfg["society"].get("agent"), "a mapping of the agent topologies' numbers")
    # token counts are whole tokens (a refused 1.5 is a typo, not a half token)
    tok = dict(minimum=0, integer=True, what="a number of tokens")
    p = SocietyParams(
        n_kinds=_n(cfg, "n_kinds", minimum=1, integer=True, what="a number of task kinds"),
        n_instances=_n(cfg, "n_instances", minimum=1, integer=True, what="a number of model instances"),
        base_context_tokens=_n(cfg, "base_context_tokens", **tok),
        kind_context_tokens=_n(cfg, "kind_context_tokens", **tok),
        prompt_tokens=_n(cfg, "prompt_tokens", minimum=0, strict=True, integer=True, what="a number of tokens"),
        output_tokens=_n(cfg, "output_tokens", minimum=0, strict=True, integer=True, what="a number of tokens"),
        handoff_tokens=_n(cfg, "handoff_tokens", **tok),
        handoff_latency_s=_n(cfg, "handoff_latency_s", minimum=0, what="a time (s)"),
        p_miss=_n(cfg, "p_miss", minimum=0, maximum=1, what="a probability"),
        context_cache_miss=_n(cfg, "context_cache_miss", minimum=0, maximum=1, what="a fraction"),
        usd_per_gpu_hour=_n(cfg, "usd_per_gpu_hour", minimum=0, strict=True, what="a price (USD per GPU-hour)"),
        tool_calls=_n(cfg, "agent.tool_calls", minimum=0, integer=True, what="a number of tool calls"),
        step_output_tokens=_n(cfg, "agent.step_output_tokens", **tok),
        tool_result_tokens=_n(cfg, "agent.tool_result_tokens", **tok),
        tool_latency_s=_n(cfg, "agent.tool_latency_s", minimum=0, what="a time (s)"),
        workers=_n(cfg, "agent.workers", minimum=1, integer=True, what="a number of workers"),
        worker_tool_calls=_n(cfg, "agent.worker_tool_calls", minimum=0, integer=True, what="a number of tool calls"),
        subtask_tokens=_n(cfg, "agent.subtask_tokens", **tok),
        summary_tokens=_n(cfg, "agent.summary_tokens", **tok),
    )
    return p


def read_theta(cfg: dict, p: SocietyParams):
    """``society.theta``: null, or one share in [0, 1] per instance (``n_instances`` of them)."""
    th = cfg["society"].get("theta")
    if th is None:
        return None
    ok = (isinstance(th, list) and len(th) == p.n_instances
          and all(not isinstance(x, bool) and isinstance(x, (int, float)) and 0 <= x <= 1 for x in th))
    if not ok:
        raise ConfigError("society.theta", th, f"null or a list of society.n_instances={p.n_instances} shares in [0, 1]")
    return [float(x) for x in th]


def read_hardware(cfg: dict) -> Hardware:
    """Model, GPU and instance size from the ``model``, ``gpu`` and ``substrate`` groups (the LLM
    preset), with the KV capacity of :func:`specs.check_fits`."""
    model, gpu = specs.model_spec(cfg), specs.gpu_spec(cfg)
    sub = cfg.get("substrate") or {}
    c = {"substrate": sub}
    n_gpus = num(c, "substrate.gpus_per_model", minimum=1, integer=True, what="GPUs per model instance")
    util = num(c, "substrate.gpu_memory_utilization", minimum=0, maximum=1, strict=True, what="a fraction of HBM")
    act = num(c, "substrate.activation_reserve_gib", minimum=0, what="a reserve (GiB per GPU)")
    max_batch = num(c, "substrate.max_batch", minimum=1, integer=True, what="sequences decoding at once")
    cap = specs.check_fits(model, gpu, n_gpus, util, act)
    return Hardware(model, gpu, n_gpus, float(cap), float(max_batch))


def longest_contexts(p: SocietyParams, handoff_tokens=None, kind_context_tokens=None) -> dict:
    """Tokens of the longest sequence each arrangement holds (it must fit one instance's KV cache)."""
    c = p.kind_context_tokens if kind_context_tokens is None else kind_context_tokens
    h = p.handoff_tokens if handoff_tokens is None else handoff_tokens
    spec_ctx = p.base_context_tokens + c
    k = p.step_output_tokens + p.tool_result_tokens
    task = p.prompt_tokens + h + p.output_tokens  # a handed-off task at its end
    m = kinds_per_specialist(p.n_kinds, p.n_instances)
    return {
        "generalists": p.base_context_tokens + p.n_kinds * c + task,
        "specialists": p.base_context_tokens + m * c + task,
        "chat": spec_ctx + p.prompt_tokens + p.output_tokens,
        "single_agent": spec_ctx + p.prompt_tokens + p.tool_calls * k + p.output_tokens,
        "orchestrator_workers": max(
            spec_ctx + p.prompt_tokens + p.workers * (p.subtask_tokens + p.summary_tokens) + p.output_tokens,
            spec_ctx + p.subtask_tokens + h + p.worker_tool_calls * k + p.summary_tokens),
    }


def check_fits(hw: Hardware, p: SocietyParams, key: str = "society.kind_context_tokens", value=None) -> None:
    """ConfigError naming ``key`` when a sequence of any arrangement exceeds the KV capacity."""
    longest = longest_contexts(p)
    worst = max(longest, key=longest.get)
    if longest[worst] > hw.kv_capacity:
        raise ConfigError(
            key, p.kind_context_tokens if value is None else value,
            f"contexts that fit one instance's KV cache: the {worst} arrangement holds a sequence of "
            f"{longest[worst]:,.0f} tokens > {hw.kv_capacity:,.0f} tokens of KV capacity ({hw.model.name} on "
            f"{hw.n_gpus} x {hw.gpu.name})")


def owns(i: int, k: int, n: int, n_kinds: int) -> bool:
    """Instance ``i`` of ``n`` owns kind ``k``: ``i mod K == k`` when ``n >= K``, else ``k mod n == i``."""
    return (i % n_kinds == k) if n >= n_kinds else (k % n == i)


def specialization_index(theta) -> float:
    """Variance of theta over its largest possible value (1/4, half the instances at 0 and half at 1)."""
    t = np.asarray(theta, float)
    return float(t.var() / 0.25)


# ---- plain-Python reference ------------------------------------------------------------------


def _ref_call(hw: Hardware, p: SocietyParams, cached: float, new: float, out: float) -> dict:
    """One call on one instance (see the module docstring), in plain Python floats."""
    m = p.context_cache_miss
    flops = (1.0 - m) * specs.prefill_flops(hw.model, new, cached) + m * specs.prefill_flops(hw.model, cached + new, 0.0)
    t_pf = flops / hw.flops
    lbar = cached + new + 0.5 * out
    batch = min(hw.max_batch, hw.kv_capacity / lbar)
    t = specs.instance_step_time(hw.model, hw.gpu, batch, batch * lbar, hw.n_gpus)
    gpu_dec = out * t / batch
    return {
        "input_tokens": cached + new, "prefill_tokens": new + m * cached, "output_tokens": out,
        "handoff_tokens": 0.0, "handoff_prob": 0.0,
        "joules": t_pf * hw.power_prefill_w + gpu_dec * hw.power_decode_w, "handoff_joules": 0.0,
        "gpu_s": t_pf + gpu_dec, "latency_s": t_pf + out * t,
    }


def _acc(total: dict, part: dict, w: float) -> None:
    for q, v in part.items():
        total[q] = total.get(q, 0.0) + w * v


def _finish(hw: Hardware, p: SocietyParams, d: dict) -> dict:
    out = {q: float(d.get(q, 0.0)) for q in QUANTITIES if q != "usd"}
    out["usd"] = out["gpu_s"] * hw.n_gpus * p.usd_per_gpu_hour / 3600.0
    return out


def reference_society(hw: Hardware, p: SocietyParams, theta) -> dict:
    """Expected cost of one task in a cluster of ``len(theta)`` instances with these shares."""
    theta = [float(t) for t in theta]
    n, K = len(theta), p.n_kinds
    P, O, H = p.prompt_tokens, p.output_tokens, p.handoff_tokens
    own = [[owns(i, k, n, K) for k in range(K)] for i in range(n)]
    ctx = []
    for i in range(n):
        m = sum(own[i])
        ctx.append(p.base_context_tokens + p.kind_context_tokens * (m + theta[i] * (K - m)))
    total: dict = {}
    for k in range(K):
        homes = [i for i in range(n) if own[i][k]]
        others = [i for i in range(n) if not own[i][k]]
        pm = p.p_miss if others else 0.0
        for i in homes:
            _acc(total, _ref_call(hw, p, ctx[i], P, O), (1.0 - pm) / len(homes) / K)
        if not others:
            continue
        # the owner a hand-off reaches, averaged over the owners of kind k
        recv, recv_plain = {}, {}
        for j in homes:
            _acc(recv, _ref_call(hw, p, ctx[j], P + H, O), 1.0 / len(homes))
            _acc(recv_plain, _ref_call(hw, p, ctx[j], P, O), 1.0 / len(homes))
        for i in others:
            w = pm / len(others) / K
            _acc(total, _ref_call(hw, p, ctx[i], P, O), w * theta[i])
            sender = _ref_call(hw, p, ctx[i], P, 0.0)  # read the task, found it foreign
            hand = {q: sender[q] + recv[q] for q in sender}
            hand["latency_s"] += p.handoff_latency_s
            hand["handoff_tokens"] = P + H
            hand["handoff_prob"] = 1.0
            hand["handoff_joules"] = sender["joules"] + recv["joules"] - recv_plain["joules"]
            _acc(total, hand, w * (1.0 - theta[i]))
    return _finish(hw, p, total)


def reference_topologies(hw: Hardware, p: SocietyParams) -> dict:
    """Chat, single agent and orchestrator-workers on one task (context ``base + c``), call by call."""
    C = p.base_context_tokens + p.kind_context_tokens
    P, O, H = p.prompt_tokens, p.output_tokens, p.handoff_tokens
    step, res = p.step_output_tokens, p.tool_result_tokens

    def loop(first_new: float, turns: int, final_out: float) -> dict:
        """Calls of an agent loop: the first prefills ``first_new`` after the context; each tool
        call appends its result, which the next call prefills after the cached history."""
        tot: dict = {}
        history = C
        for t in range(turns + 1):
            new = first_new if t == 0 else res
            out = final_out if t == turns else step
            _acc(tot, _ref_call(hw, p, history, new, out), 1.0)
            history += new + out
        tot["latency_s"] += turns * p.tool_latency_s
        return tot

    chat = _ref_call(hw, p, C, P, O)
    agent = loop(P, p.tool_calls, O)
    lead1 = _ref_call(hw, p, C, P, p.workers * p.subtask_tokens)
    worker = loop(p.subtask_tokens + H, p.worker_tool_calls, p.summary_tokens)
    lead2 = _ref_call(hw, p, C + P + p.workers * p.subtask_tokens, p.workers * p.summary_tokens, O)
    orch: dict = {}
    _acc(orch, lead1, 1.0)
    _acc(orch, worker, p.workers)
    _acc(orch, lead2, 1.0)
    orch["latency_s"] = lead1["latency_s"] + worker["latency_s"] + lead2["latency_s"]  # workers in parallel
    orch["handoff_tokens"] = p.workers * (p.subtask_tokens + H + p.summary_tokens)
    return {"chat": _finish(hw, p, chat), "single_agent": _finish(hw, p, agent),
            "orchestrator_workers": _finish(hw, p, orch)}


# ---- JAX ---------------------------------------------------------------------------------------


def _jax_call(hw: Hardware, q: dict, cached, new, out) -> dict:
    m = q["context_cache_miss"]
    flops = ((1.0 - m) * specs.prefill_flops(hw.model, new, cached)
             + m * specs.prefill_flops(hw.model, cached + new, jnp.zeros_like(cached)))
    t_pf = flops / hw.flops
    lbar = cached + new + 0.5 * out
    batch = jnp.minimum(hw.max_batch, hw.kv_capacity / lbar)
    t = specs.instance_step_time(hw.model, hw.gpu, batch, batch * lbar, hw.n_gpus, xp=jnp)
    gpu_dec = out * t / batch
    zero = jnp.zeros_like(t_pf + gpu_dec)
    return {
        "input_tokens": cached + new + zero, "prefill_tokens": new + m * cached + zero, "output_tokens": out + zero,
        "handoff_tokens": zero, "handoff_prob": zero,
        "joules": t_pf * hw.power_prefill_w + gpu_dec * hw.power_decode_w, "handoff_joules": zero,
        "gpu_s": t_pf + gpu_dec, "latency_s": t_pf + out * t,
    }


def _with_usd(hw: Hardware, q: dict, d: dict) -> dict:
    d = dict(d)
    d["usd"] = d["gpu_s"] * hw.n_gpus * q["usd_per_gpu_hour"] / 3600.0
    return d


def _jax_society(hw: Hardware, n_kinds: int, n_max: int, q: dict, theta, n) -> dict:
    """:func:`reference_society` as arrays over (instance, kind); ``theta`` has ``n_max`` entries, the
    first ``n`` of which are the cluster."""
    K = n_kinds
    i = jnp.arange(n_max)
    k = jnp.arange(K)
    alive = i < n
    own = jnp.where(n >= K, (i[:, None] % K) == k[None, :], (k[None, :] % n) == i[:, None]) & alive[:, None]
    m = own.sum(1)
    ctx = q["base_context_tokens"] + q["kind_context_tokens"] * (m + theta * (K - m))
    P, O, H = q["prompt_tokens"], q["output_tokens"], q["handoff_tokens"]
    serve = _jax_call(hw, q, ctx, P, O)
    serve_h = _jax_call(hw, q, ctx, P + H, O)
    sender = _jax_call(hw, q, ctx, P, 0.0)
    homes = own.sum(0)
    others = n - homes
    pm = jnp.where(others > 0, q["p_miss"], 0.0)
    ownf = own.astype(float)
    w_home = ownf * (1.0 - pm) / homes
    w_other = ((~own) & alive[:, None]).astype(float) * pm / jnp.maximum(others, 1)
    th = theta[:, None]
    out = {}
    for name in QUANTITIES:
        if name == "usd":
            continue
        direct = serve[name][:, None]
        recv = (ownf * serve_h[name][:, None]).sum(0) / homes  # (K,)
        hand = sender[name][:, None] + recv[None, :]
        if name == "latency_s":
            hand = hand + q["handoff_latency_s"]
        elif name == "handoff_tokens":
            hand = jnp.broadcast_to(P + H, hand.shape)
        elif name == "handoff_prob":
            hand = jnp.ones_like(hand)
        elif name == "handoff_joules":
            recv_plain = (ownf * serve["joules"][:, None]).sum(0) / homes
            recv_h = (ownf * serve_h["joules"][:, None]).sum(0) / homes
            hand = sender["joules"][:, None] + (recv_h - recv_plain)[None, :]
        per = w_home * direct + w_other * (th * direct + (1.0 - th) * hand)
        out[name] = per.sum() / K
    return _with_usd(hw, q, out)


def _jax_topologies(hw: Hardware, tool_calls: int, worker_tool_calls: int, q: dict) -> dict:
    """:func:`reference_topologies` with the calls of each loop as one array."""
    C = q["base_context_tokens"] + q["kind_context_tokens"]
    P, O, H = q["prompt_tokens"], q["output_tokens"], q["handoff_tokens"]
    step, res, W = q["step_output_tokens"], q["tool_result_tokens"], q["workers"]

    def loop(first_new, turns: int, final_out):
        t = jnp.arange(turns + 1, dtype=float)
        new = jnp.where(t == 0, first_new, res)
        out = jnp.where(t == turns, final_out, step)
        # history before call t: the context, the first prompt, t outputs and t - 1 tool results
        cached = jnp.where(t == 0, C, C + first_new + t * step + (t - 1.0) * res)
        d = {name: v.sum() for name, v in _jax_call(hw, q, cached, new, out).items()}
        d["latency_s"] = d["latency_s"] + turns * q["tool_latency_s"]
        return d

    chat = _jax_call(hw, q, C, P, O)
    agent = loop(P, tool_calls, O)
    sub, summ = q["subtask_tokens"], q["summary_tokens"]
    lead1 = _jax_call(hw, q, C, P, W * sub)
    worker = loop(sub + H, worker_tool_calls, summ)
    lead2 = _jax_call(hw, q, C + P + W * sub, W * summ, O)
    orch = {name: lead1[name] + W * worker[name] + lead2[name] for name in lead1}
    orch["latency_s"] = lead1["latency_s"] + worker["latency_s"] + lead2["latency_s"]
    orch["handoff_tokens"] = W * (sub + H + summ)
    return {"chat": _with_usd(hw, q, chat), "single_agent": _with_usd(hw, q, agent),
            "orchestrator_workers": _with_usd(hw, q, orch)}


@functools.lru_cache(maxsize=32)
def _compiled_society(hw: Hardware, n_kinds: int, n_max: int):
    fn = functools.partial(_jax_society, hw, n_kinds, n_max)
    return jax.jit(jax.vmap(fn, in_axes=(0, 0, 0)))


@functools.lru_cache(maxsize=32)
def _compiled_topologies(hw: Hardware, tool_calls: int, worker_tool_calls: int):
    fn = functools.partial(_jax_topologies, hw, tool_calls, worker_tool_calls)
    return jax.jit(jax.vmap(fn))


def _stack(p: SocietyParams, size: int, **vary) -> dict:
    q = {f: np.full(size, v) for f, v in p.scalars().items()}
    for f, v in vary.items():
        q[f] = np.asarray(v, float).reshape(size)
    return {f: jnp.asarray(v, jnp.float64) for f, v in q.items()}


def society_points(hw: Hardware, p: SocietyParams, thetas, ns, **vary) -> dict:
    """JAX: the cost per task at many points in one compiled call. ``thetas``: (points, n_max)
    shares (entries past a point's N are ignored), ``ns``: (points,) cluster sizes, ``vary``:
    per-point values of any of :data:`FIELDS`. Returns quantity -> (points,) numpy array."""
    thetas = np.asarray(thetas, float)
    ns = np.asarray(ns, np.int64)
    size, n_max = thetas.shape
    q = _stack(p, size, **vary)
    res = _compiled_society(hw, p.n_kinds, int(n_max))(q, jnp.asarray(thetas), jnp.asarray(ns))
    return {k: np.asarray(v) for k, v in res.items()}


def society_grid(hw: Hardware, p: SocietyParams, contexts, handoffs, ns, theta: float) -> dict:
    """JAX: a uniform-``theta`` cluster over the grid context per kind x hand-off tokens x N, one
    compiled, vmapped call. Returns quantity -> array of shape (contexts, handoffs, ns)."""
    cc, hh, nn = np.meshgrid(np.asarray(contexts, float), np.asarray(handoffs, float), np.asarray(ns, np.int64),
                             indexing="ij")
    shape = cc.shape
    n_max = int(np.max(ns))
    thetas = np.full((cc.size, n_max), float(theta))
    res = society_points(hw, p, thetas, nn.ravel(), kind_context_tokens=cc.ravel(), handoff_tokens=hh.ravel())
    return {k: v.reshape(shape) for k, v in res.items()}


def topology_grid(hw: Hardware, p: SocietyParams, contexts, handoffs) -> dict:
    """JAX: chat, single agent and orchestrator-workers over context per kind x hand-off tokens.
    Returns topology -> quantity -> array of shape (contexts, handoffs)."""
    cc, hh = np.meshgrid(np.asarray(contexts, float), np.asarray(handoffs, float), indexing="ij")
    q = _stack(p, cc.size, kind_context_tokens=cc.ravel(), handoff_tokens=hh.ravel())
    res = _compiled_topologies(hw, int(p.tool_calls), int(p.worker_tool_calls))(q)
    return {t: {k: np.asarray(v).reshape(cc.shape) for k, v in d.items()} for t, d in res.items()}


# ---- derived outcomes ------------------------------------------------------------------------


def kinds_per_specialist(n_kinds: int, n: int) -> float:
    """Kinds a specialist owns (the most any instance owns)."""
    return float(math.ceil(n_kinds / n)) if n < n_kinds else 1.0


def alpha_effective(gain, n_kinds: int, n):
    """``1 + ln G / ln(K / m)``: the ``theta^alpha`` curvature that gives the same advantage of
    specialists over generalists (NaN where specialists own every kind: ``K / m = 1``)."""
    n = np.asarray(n)
    m = np.where(n < n_kinds, np.ceil(n_kinds / np.maximum(n, 1)), 1.0)
    split = n_kinds / m
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(split > 1, 1.0 + np.log(gain) / np.log(np.where(split > 1, split, 2.0)), np.nan)


def compare(hw: Hardware, p: SocietyParams, theta=None) -> dict:
    """Generalists, specialists (and the ``theta`` mix) at one point, with the dimensionless axes,
    the plain-Python reference throughout."""
    n, K = p.n_instances, p.n_kinds
    gen = reference_society(hw, p, [1.0] * n)
    spec = reference_society(hw, p, [0.0] * n)
    spec0 = reference_society(hw, p.replace(p_miss=0.0), [0.0] * n)
    task_tokens = p.prompt_tokens + p.output_tokens
    out = {"generalists": gen, "specialists": spec, "specialists_no_misrouting": spec0}
    if theta is not None:
        out["mix"] = reference_society(hw, p, theta)
        out["mix_specialization_index"] = specialization_index(theta)
    gain0, gain = gen["joules"] / spec0["joules"], gen["joules"] / spec["joules"]
    out["axes"] = {
        "specialization_gain": gain0,
        "specialization_gain_net": gain,
        "specialization_gain_usd": gen["usd"] / spec0["usd"],
        "specialization_gain_usd_net": gen["usd"] / spec["usd"],
        "transport_cost": spec["handoff_tokens"] / task_tokens,
        "transport_cost_per_handoff": (p.prompt_tokens + p.handoff_tokens) / task_tokens,
        "transport_energy_share": spec["handoff_joules"] / spec["joules"],
        "alpha_effective": float(alpha_effective(gain0, K, n)),
        "alpha_effective_net": float(alpha_effective(gain, K, n)),
    }
    return out


def dimensionless_axes(cfg: dict) -> dict:
    """The two axes on which the LLM and biology phase diagrams are drawn side by side, for a
    config with a ``society`` section and the LLM preset's ``model``/``gpu``/``substrate`` groups:
    ``specialization_gain`` (generalist / specialist joules per task, no misrouting;
    ``_net`` with it; ``_usd`` in rent), ``transport_cost`` (hand-off tokens per task / task tokens;
    ``_per_handoff``), ``alpha_effective`` (the equivalent ``theta^alpha`` curvature)."""
    hw, p = read_hardware(cfg), read_params(cfg)
    check_fits(hw, p)
    return compare(hw, p)["axes"]


def handoff_threshold(hw: Hardware, p: SocietyParams, tol: float = 1e-6) -> float:
    """Hand-off tokens ``H`` above which a cluster of generalists spends fewer joules per task than
    specialists (bisection on the reference; the cost grows monotonically with ``H``). ``0`` when
    generalists already win at ``H = 0``; ``inf`` when specialists win up to the largest ``H`` the
    KV cache holds or nothing is ever misrouted."""
    n = p.n_instances
    gen = reference_society(hw, p, [1.0] * n)["joules"]

    def spec(h):
        return reference_society(hw, p.replace(handoff_tokens=h), [0.0] * n)["joules"]

    if spec(0.0) >= gen:
        return 0.0
    longest = longest_contexts(p, handoff_tokens=0.0)["generalists"]
    hi = max(0.0, hw.kv_capacity - longest) * 0.999
    if hi <= 0 or spec(hi) < gen:
        return math.inf
    lo = 0.0
    while hi - lo > tol * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if spec(mid) < gen else (lo, mid)
    return 0.5 * (lo + hi)


def decode_shares(hw: Hardware, context: float) -> dict:
    """What binds one decode iteration of sequences at ``context`` tokens in a full batch: the share
    of the bytes read that are weights (the rest is KV cache) and of the FLOPs that are attention."""
    batch = min(hw.max_batch, hw.kv_capacity / context)
    nbytes = specs.decode_bytes(hw.model, batch * context)
    flops = specs.decode_flops(hw.model, batch, batch * context)
    return {"batch": batch, "weight_read_share": hw.model.weight_bytes / nbytes,
            "attention_flop_share": hw.model.flops_per_token_per_ctx * batch * context / flops}
