"""Parameters of the LLM preset as a PyTree (separate from the state so sweeps can vmap them).

Scalars are 0-d arrays; ``arrival_rate`` is per cell. ``arrival_k`` is the support 0..A-1 of the
truncated Poisson arrival count (its length A, the most arrivals a cell takes per step, is a
static shape). Defaults and their sources: ``conf/substrate/llm.yaml``, ``conf/model``, ``conf/gpu``.
"""

from __future__ import annotations

import dataclasses

from sim.pytree import pytree_dataclass


@pytree_dataclass
class Edges:
    src: object  # (E,) int32, one entry per undirected edge
    dst: object  # (E,) int32


@pytree_dataclass
class LLMParams:
    dt: object  # s per step
    # model (one instance = one cell)
    c0: object  # FLOPs per token independent of context: 2N
    c1: object  # FLOPs per token per token of context: 4 n_layer d_model (QK^T and AV)
    weight_bytes: object  # bytes read once per decode iteration
    kv_bytes: object  # bytes of KV cache per token
    l_max: object  # tokens, context limit (model max_context)
    # GPU (per device; a cell has G slots, scaled by the live ones)
    peak_flops: object  # FLOP/s achieved: datasheet peak x compute_efficiency
    bandwidth: object  # bytes/s achieved: datasheet peak x bandwidth_efficiency
    # tensor parallelism: per decode iteration n_allreduce ring all-reduces of B x allreduce_bytes
    n_allreduce: object  # all-reduces per forward pass: 2 n_layer
    allreduce_bytes: object  # bytes per stream per all-reduce: d_model x bytes
    link_bandwidth: object  # bytes/s per direction per GPU (NVLink)
    allreduce_latency: object  # s per all-reduce
    power_idle: object  # W
    power_prefill: object  # W: idle + (TDP - idle) x compute_efficiency
    power_decode: object  # W: idle + (TDP - idle) x bandwidth_efficiency
    # scheduler
    max_batch: object  # streams decoding at once (vLLM max_num_seqs)
    # arrivals (Poisson) and lengths (lognormal, rounded to whole tokens)
    arrival_rate: object  # (C,) requests/s per cell
    arrival_k: object  # (A,) 0..A-1, support of the truncated Poisson count per step
    prompt_median: object  # tokens
    prompt_sigma: object  # lognormal shape (0: every prompt is the median)
    output_median: object  # tokens
    output_sigma: object
    # tools (consumers): per generated token a call with probability p_tool, wait, append r_tool
    p_tool: object
    tool_steps: object  # int32 steps of tool latency (>= 1)
    r_tool: object  # tokens appended when the tool returns
    # memory module: a history above the threshold is compressed by a factor, at a cost
    mem_threshold: object  # tokens (<= 0: no memory module)
    mem_factor: object  # compression factor (> 1)
    mem_cost: object  # cost as a fraction of a prefill pass over the history compressed
    # agent loops and agentic chains of models
    followup_prob: object  # probability a finished turn triggers another (stateless: history resent)
    max_turns: object  # int32 turns per conversation at most
    followup_tokens: object  # tokens added per follow-up turn (user message / observation)
    hops: object  # int32 models in the agentic chain a conversation passes through
    handoff_tokens: object  # tokens of instructions added when handing the transcript on
    routing: object  # bool: arrivals go to the neighbour with most free capacity if it has more
    freeze_context: object  # 0/1: decode without growing the context (serving calculator)
    # task kinds (``substrate.kinds``; K = kind_owner.shape[-1] is static: K = 1 switches them off)
    kind_owner: object  # (C, K) bool: instance i owns kind k (society.owns: i mod K == k when C >= K)
    kind_prefix: object  # (C,) tokens of cached context prefix C(theta_i) = base + c (m + theta_i (K - m))
    kind_theta: object  # (C,) probability a task of a foreign kind is served in place (else handed on)
    kind_p_miss: object  # probability the router sends a task to an instance not owning its kind
    kind_handoff_tokens: object  # H: tokens of working context handed over with a misrouted task
    edges: Edges

    def batch_axes(self):
        """``in_axes`` for vmapping over parameter points: everything batched but edges/support."""
        axes = {f.name: 0 for f in dataclasses.fields(self)}
        axes["edges"] = None
        axes["arrival_k"] = None
        return dataclasses.replace(self, **axes)
