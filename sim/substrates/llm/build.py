"""Config -> initial LLM state and parameters (the one place the LLM config becomes numbers).

Refuses bad input with a ``ConfigError`` naming the values: weights that do not fit the GPU
memory, a KV cache smaller than one full context, negative rates, probabilities outside [0, 1],
a Poisson truncation that would lose arrivals. Both backends start from this output.
"""

from __future__ import annotations

import dataclasses
import math

import networkx as nx
import numpy as np

from sim.core.config import CONF_DIR, compose, num  # noqa: F401 (compose re-exported for scripts and tests)
from sim.core.substrate import Rule
from sim.errors import ConfigError
from sim.substrates.llm.params import Edges, LLMParams
from sim.substrates.llm.specs import GpuSpec, ModelSpec, check_fits, gpu_spec, model_spec
from sim.substrates.llm.state import Cells, Chains, Gpus, Ledger, LLMState, Queue
from sim.topology import build_graph, edge_arrays, file_inputs

POISSON_TAIL = 1e-9  # arrivals lost to truncation per step must stay below this probability


@dataclasses.dataclass
class LLMModel:
    state: LLMState
    params: LLMParams
    graph: nx.Graph
    model: ModelSpec
    gpu: GpuSpec
    substrate: dict
    seed: int
    n_gpus: int
    kv_capacity: float  # tokens per cell
    bits_per_token: float
    temperature_k: float
    prices: dict

    @property
    def n_cells(self) -> int:
        return int(self.state.cells.alive.shape[0])


def poisson_tail(lam: float, kmax: int) -> float:
    """P(Poisson(lam) > kmax - 1)... i.e. the mass the truncation at ``kmax`` arrivals changes."""
    p, cdf = math.exp(-lam), 0.0
    for k in range(kmax):
        cdf += p
        p *= lam / (k + 1)
    return max(0.0, 1.0 - cdf)


# The numbers of the LLM substrate preset and what each must be: (key under ``substrate``, its
# :class:`~sim.core.substrate.Rule`, checked by :func:`num`; ``optional``: null allowed). Read here by
# :func:`read_numbers` (the first problem raises), checked all at once by :func:`config_problems` and,
# as the substrate's ``config_rules``, by ``sim.config.validate.validate``.
SUBSTRATE_NUMBERS = (
    ("gpus_per_model", Rule(minimum=1, integer=True, what="GPUs per model instance")),
    ("gpu_memory_utilization", Rule(minimum=0, maximum=1, strict=True, what="a fraction of HBM")),
    ("activation_reserve_gib", Rule(minimum=0, what="an activation reserve (GiB per GPU)")),
    ("kv_capacity_tokens", Rule(minimum=1, what="KV capacity (tokens)", optional=True)),
    ("chain_slots", Rule(minimum=1, integer=True, what="chain slots per model")),
    ("max_batch", Rule(minimum=1, integer=True, what="a batch size")),
    ("queue_slots", Rule(minimum=1, integer=True, what="queue slots per model")),
    ("arrivals.rate_per_s", Rule(minimum=0, what="an arrival rate (requests/s per model instance)")),
    ("arrivals.max_per_step", Rule(minimum=1, integer=True, what="arrivals per step")),
    ("arrivals.prompt_median_tokens", Rule(minimum=1, what="a median prompt length (tokens)")),
    ("arrivals.output_median_tokens", Rule(minimum=1, what="a median output length (tokens)")),
    ("arrivals.prompt_sigma", Rule(minimum=0, what="a lognormal shape")),
    ("arrivals.output_sigma", Rule(minimum=0, what="a lognormal shape")),
    ("tools.p_per_token", Rule(minimum=0, maximum=1, what="a probability per token")),
    ("tools.latency_s", Rule(minimum=0, what="a tool latency (s)")),
    ("tools.tokens", Rule(minimum=0, integer=True, what="tokens appended per tool call")),
    ("memory.threshold_tokens", Rule(minimum=0, what="a history length (tokens; 0 = off)")),
    ("memory.factor", Rule(minimum=1, strict=True, what="a compression factor")),
    ("memory.cost_fraction", Rule(minimum=0, what="a cost fraction")),
    ("agent.followup_prob", Rule(minimum=0, maximum=1, what="a probability")),
    ("agent.max_turns", Rule(minimum=1, integer=True, what="turns per conversation")),
    ("agent.followup_tokens", Rule(minimum=0, integer=True, what="tokens per follow-up")),
    ("agent.hops", Rule(minimum=1, integer=True, what="models per agentic chain")),
    ("agent.handoff_tokens", Rule(minimum=0, integer=True, what="tokens per hand-off")),
    ("prices.usd_per_1m_input", Rule(minimum=0, what="a price >= 0")),
    ("prices.usd_per_1m_output", Rule(minimum=0, what="a price >= 0")),
    ("prices.usd_per_kwh", Rule(minimum=0, what="a price >= 0")),
    ("temperature_k", Rule(minimum=0, strict=True, what="a temperature (K)")),
    ("landauer_bits_per_unit", Rule(minimum=0, strict=True, what="bits per token", optional=True)),
    ("initial.active", Rule(minimum=0, integer=True, what="initial chains per model")),
    ("initial.queued", Rule(minimum=0, integer=True, what="initial queued requests per model")),
    ("initial.prompt_tokens", Rule(minimum=1, integer=True, what="a prompt length (tokens)")),
    ("initial.output_tokens", Rule(minimum=1, what="an output length (tokens)")),
)
# task kinds (``substrate.kinds``, issue 12's division of labour on the engine); a preset without the
# section has them off (n = 1). ``theta``: one share for every instance or a list, one per instance.
KIND_NUMBERS = (
    ("kinds.n", Rule(minimum=1, integer=True, what="a number of task kinds (1 = off)")),
    ("kinds.context_tokens", Rule(minimum=0, integer=True, what="tokens of context per kind")),
    ("kinds.base_context_tokens", Rule(minimum=0, integer=True, what="tokens of shared context")),
    ("kinds.handoff_tokens", Rule(minimum=0, integer=True, what="tokens handed over per hand-off")),
    ("kinds.p_miss", Rule(minimum=0, maximum=1, what="a probability")),
    ("kinds.theta", Rule(minimum=0, maximum=1, what="a share in [0, 1] (one, or a list of one per model instance)")),
)
KIND_DEFAULTS = {"kinds.n": 1, "kinds.context_tokens": 0, "kinds.base_context_tokens": 0, "kinds.handoff_tokens": 0,
                 "kinds.p_miss": 0.0, "kinds.theta": 0.0}
RULES = SUBSTRATE_NUMBERS + KIND_NUMBERS  # the substrate's config_rules
SUBSTRATE_FLAGS = ("routing", "freeze_context")  # booleans (freeze_context: false when absent)


def _number(sub: dict, key: str, rule: Rule):
    dotted = f"substrate.{key}"
    node = sub
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None and rule.optional:
        return None
    if key in KIND_DEFAULTS and not isinstance(sub.get("kinds"), dict):
        if sub.get("kinds") is not None:
            raise ConfigError("substrate.kinds", sub.get("kinds"), "a mapping of the task kinds' numbers (n: 1 = off)")
        return KIND_DEFAULTS[key]  # no kinds section: kinds off
    if isinstance(node, list) and key == "kinds.theta":  # a list is checked element by element
        problem = rule.problem(dotted, node)
        if problem is not None or not node:
            raise problem or ConfigError(dotted, node, rule.what)
        return [float(x) for x in node]
    return num({"substrate": sub}, dotted, **rule.num_kwargs())


def _flag(sub: dict, key: str) -> bool:
    v = sub.get(key, False if key == "freeze_context" else None)
    if not isinstance(v, bool):
        raise ConfigError(f"substrate.{key}", v, "true or false")
    return v


def read_numbers(sub: dict) -> dict:
    """The preset's numbers and flags by key (raises a ConfigError at the first problem)."""
    out = {key: _number(sub, key, rule) for key, rule in RULES}
    out.update({key: _flag(sub, key) for key in SUBSTRATE_FLAGS})
    return out


def config_problems(cfg: dict) -> list[ConfigError]:
    """Every problem of the LLM keys of a composed config (model, GPU, the substrate's numbers and
    flags), one ConfigError each; cross-checks that need the values (the weights fit, the Poisson
    truncation, the initial batch) are :func:`build_llm`'s."""
    problems = []
    sub = cfg.get("substrate") or {}
    checks = [lambda: model_spec(cfg), lambda: gpu_spec(cfg)]
    checks += [lambda key=key, rule=rule: _number(sub, key, rule) for key, rule in RULES]
    checks += [lambda key=key: _flag(sub, key) for key in SUBSTRATE_FLAGS]
    for check in checks:
        try:
            check()
        except ConfigError as exc:
            problems.append(exc)
    return problems


def build_llm(cfg: dict) -> LLMModel:
    """Composed plain config (``substrate`` = llm, ``model``, ``gpu``, ``topology``) -> LLMModel."""
    sub = cfg.get("substrate") or {}
    if sub.get("name") != "llm":
        raise ConfigError("substrate", sub.get("name"), "llm for this experiment (substrate=llm)")
    model, gpu = model_spec(cfg), gpu_spec(cfg)
    seed = int(cfg.get("seed", 0))
    dt = num(cfg, "dt", 0, strict=True, what="a time step (s)")
    v = read_numbers(sub)
    n_gpus, util = v["gpus_per_model"], v["gpu_memory_utilization"]
    cap = check_fits(model, gpu, n_gpus, util, v["activation_reserve_gib"])
    if v["kv_capacity_tokens"] is not None:
        cap_o = v["kv_capacity_tokens"]
        if cap_o > cap:
            raise ConfigError("substrate.kv_capacity_tokens", cap_o, f"at most the derived capacity {cap:.0f} tokens")
        if cap_o < model.max_context:
            # a request of a full context could never be admitted and would block its queue for good;
            # vLLM refuses to start in that case too (max_model_len larger than the KV cache)
            raise ConfigError(
                "substrate.kv_capacity_tokens", cap_o,
                f"at least max_context={model.max_context} of {model.name} (one full context must fit); "
                "lower model.max_context to study a smaller cache",
            )
        cap = cap_o
    cap = float(math.floor(cap))
    l_max = float(model.max_context)
    slots, max_batch, q_slots = v["chain_slots"], v["max_batch"], v["queue_slots"]

    rate, a_max = v["arrivals.rate_per_s"], v["arrivals.max_per_step"]
    tail = poisson_tail(rate * dt, a_max)
    if tail > POISSON_TAIL:
        raise ConfigError(
            "substrate.arrivals.max_per_step", a_max,
            f"enough for rate_per_s x dt = {rate} x {dt} = {rate * dt:.3g} arrivals per step (P(more) = {tail:.2g} > "
            f"{POISSON_TAIL:g}); raise it or lower dt",
        )
    p_med, o_med = v["arrivals.prompt_median_tokens"], v["arrivals.output_median_tokens"]
    p_sig, o_sig = v["arrivals.prompt_sigma"], v["arrivals.output_sigma"]
    p_tool, latency, r_tool = v["tools.p_per_token"], v["tools.latency_s"], v["tools.tokens"]
    m_thr, m_fac, m_cost = v["memory.threshold_tokens"], v["memory.factor"], v["memory.cost_fraction"]
    f_prob, turns, f_tok = v["agent.followup_prob"], v["agent.max_turns"], v["agent.followup_tokens"]
    hops, h_tok = v["agent.hops"], v["agent.handoff_tokens"]
    routing = v["routing"]
    prices = {k: v[f"prices.{k}"] for k in ("usd_per_1m_input", "usd_per_1m_output", "usd_per_kwh")}
    temp = v["temperature_k"]
    bits = model.bits_per_token if v["landauer_bits_per_unit"] is None else v["landauer_bits_per_unit"]

    graph = build_graph(cfg["topology"], seed=seed)
    n = graph.number_of_nodes()
    src, dst = edge_arrays(graph)
    file_inputs(graph, src, dst, substrate="llm")  # no junction conductance, no per-cell demand: warns what a file sets

    # initial requests (serving calculator, agent loops)
    n_act, n_q = v["initial.active"], v["initial.queued"]
    p0, o0 = v["initial.prompt_tokens"], v["initial.output_tokens"]
    if n_act > slots:
        raise ConfigError("substrate.initial.active", n_act, f"at most substrate.chain_slots={slots}")
    if n_act > max_batch:
        raise ConfigError("substrate.initial.active", n_act, f"at most substrate.max_batch={max_batch}")
    if n_q > q_slots:
        raise ConfigError("substrate.initial.queued", n_q, f"at most substrate.queue_slots={q_slots}")
    freeze = v["freeze_context"]
    if not freeze and p0 + o0 > l_max and (n_act or n_q):
        raise ConfigError("substrate.initial.prompt_tokens", p0,
                          f"prompt + output <= max_context {l_max:.0f} of {model.name} (output {o0:g})")
    need = n_act * (p0 if freeze else p0 + o0)
    if need > cap:
        raise ConfigError(
            "substrate.initial.active", n_act,
            f"a batch the KV cache holds: {n_act} x {p0 if freeze else p0 + o0:g} tokens = {need:,.0f} > KV capacity "
            f"{cap:,.0f} tokens ({model.name} on {n_gpus} x {gpu.name})",
        )

    kinds = kind_layout(v, n, cap, l_max)
    f64 = np.float64
    i32 = np.int32
    zc = np.zeros(n, f64)
    chains = Chains(
        active=np.zeros((n, slots), bool), base=np.zeros((n, slots), f64), out=np.zeros((n, slots), f64),
        target=np.zeros((n, slots), f64), tool_wait=np.zeros((n, slots), i32), born=np.zeros((n, slots), i32),
        turn=np.zeros((n, slots), i32), hop=np.zeros((n, slots), i32), kind=np.zeros((n, slots), i32),
    )
    chains.active[:, :n_act] = True
    chains.base[:, :n_act] = p0
    chains.target[:, :n_act] = o0
    queue = Queue(
        active=np.zeros((n, q_slots), bool), prompt=np.zeros((n, q_slots), f64), target=np.zeros((n, q_slots), f64),
        born=np.zeros((n, q_slots), i32), turn=np.zeros((n, q_slots), i32), hop=np.zeros((n, q_slots), i32),
        seq=np.zeros((n, q_slots), i32), kind=np.zeros((n, q_slots), i32),
    )
    queue.active[:, :n_q] = True
    queue.prompt[:, :n_q] = p0
    queue.target[:, :n_q] = o0
    queue.seq[:, :n_q] = np.arange(n_q, dtype=i32)
    first_kind = np.argmax(kinds["owner"], axis=1).astype(i32)  # requests at t = 0: of the first kind owned
    chains.kind[:, :n_act] = first_kind[:, None]
    queue.kind[:, :n_q] = first_kind[:, None]
    # the initial batch is prefilled already (not billed, not costed): it is the calculator's set-up
    cells = Cells(
        # the cached context prefix is held once per instance: it is taken out of the KV capacity
        alive=np.ones(n, bool), kv_capacity=cap - kinds["prefix"], kv_free=cap - kinds["prefix"] - n_act * p0,
        debt_s=zc.copy(), next_seq=np.full(n, n_q, i32), step_time_s=zc.copy(),
    )
    ledger = Ledger(**{f.name: zc.copy() for f in dataclasses.fields(Ledger)})
    state = LLMState(cells=cells, gpus=Gpus(alive=np.ones((n, n_gpus), bool)), chains=chains, queue=queue,
                     ledger=ledger, step=np.int32(0))
    p = lambda v: np.asarray(v, f64)  # noqa: E731
    params = LLMParams(
        dt=p(dt),
        c0=p(model.flops_per_token), c1=p(model.flops_per_token_per_ctx),
        weight_bytes=p(model.weight_bytes), kv_bytes=p(model.kv_bytes_per_token), l_max=p(l_max),
        peak_flops=p(gpu.achieved_flops), bandwidth=p(gpu.achieved_bandwidth),
        n_allreduce=p(model.allreduces_per_step), allreduce_bytes=p(model.allreduce_bytes_per_token),
        link_bandwidth=p(gpu.link_bandwidth), allreduce_latency=p(gpu.allreduce_latency_s),
        power_idle=p(gpu.power_idle_w), power_prefill=p(gpu.power_prefill_w), power_decode=p(gpu.power_decode_w),
        max_batch=np.asarray(max_batch, i32),
        arrival_rate=np.full(n, rate, f64), arrival_k=np.arange(a_max, dtype=i32),
        prompt_median=p(p_med), prompt_sigma=p(p_sig), output_median=p(o_med), output_sigma=p(o_sig),
        p_tool=p(p_tool), tool_steps=np.asarray(max(1, math.ceil(latency / dt - 1e-9)), i32), r_tool=p(r_tool),
        mem_threshold=p(m_thr), mem_factor=p(m_fac), mem_cost=p(m_cost),
        followup_prob=p(f_prob), max_turns=np.asarray(turns, i32), followup_tokens=p(f_tok),
        hops=np.asarray(hops, i32), handoff_tokens=p(h_tok),
        routing=np.asarray(routing), freeze_context=p(1.0 if freeze else 0.0),
        kind_owner=kinds["owner"], kind_prefix=kinds["prefix"], kind_theta=kinds["theta"],
        kind_p_miss=p(kinds["p_miss"]), kind_handoff_tokens=p(kinds["handoff_tokens"]),
        edges=Edges(src=src, dst=dst),
    )
    return LLMModel(
        state=state, params=params, graph=graph, model=model, gpu=gpu, substrate=dict(sub), seed=seed,
        n_gpus=n_gpus, kv_capacity=cap, bits_per_token=float(bits), temperature_k=temp, prices=prices,
    )


def kind_layout(v: dict, n: int, cap: float, l_max: float) -> dict:
    """Task kinds on ``n`` instances (``substrate.kinds``): who owns which kind, each instance's cached
    context prefix ``C(theta_i) = base + c (m_i + theta_i (K - m_i))`` (tokens; ``m_i`` kinds owned,
    :mod:`sim.substrates.llm.society`'s accounting) and its share ``theta_i``. With ``n: 1`` (off):
    one kind owned by everyone, no prefix, so the engine is exactly the one without kinds."""
    from sim.substrates.llm.society import owns

    k = v["kinds.n"]
    th = v["kinds.theta"]
    if isinstance(th, list) and len(th) != n:
        raise ConfigError("substrate.kinds.theta", th,
                          f"one share in [0, 1], or a list of {n} (one per model instance)")
    theta = np.asarray(th if isinstance(th, list) else [th] * n, np.float64)
    owner = np.array([[owns(i, j, n, k) for j in range(k)] for i in range(n)], bool)
    if k == 1:
        return {"owner": owner, "prefix": np.zeros(n), "theta": np.ones(n), "p_miss": 0.0, "handoff_tokens": 0.0}
    m = owner.sum(axis=1)
    prefix = v["kinds.base_context_tokens"] + v["kinds.context_tokens"] * (m + theta * (k - m))
    worst = float(prefix.max())
    if cap - worst < l_max:
        raise ConfigError(
            "substrate.kinds.context_tokens", v["kinds.context_tokens"],
            f"a cached context prefix (largest {worst:,.0f} tokens) that leaves one full context "
            f"(max_context {l_max:,.0f}) in the KV cache of {cap:,.0f} tokens")
    return {"owner": owner, "prefix": prefix, "theta": theta, "p_miss": v["kinds.p_miss"],
            "handoff_tokens": v["kinds.handoff_tokens"]}


def stack_params(params_list):
    """Stack parameter points along a leading axis (edges and the Poisson support shared)."""
    import jax

    first = params_list[0]
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *params_list)
    return dataclasses.replace(stacked, edges=first.edges, arrival_k=first.arrival_k)
