"""Message formats between model instances: competing formats and the emergence of one standard.

The LLM side of ``experiment=standardization`` (the biology and generic side is
:mod:`sim.core.carriers`). ``N`` model instances sit on a graph; each uses one message format ``f``
of ``F`` for the working context it hands over with a task (what it sends and what it takes in
without conversion). Every hand-off round each instance hands one task, with ``H`` tokens of
working context (``handoff_tokens``), to a uniformly drawn neighbour, which takes it in and decodes
an answer of ``O`` tokens (``output_tokens``) after its cached system prompt of ``C0`` tokens
(``context_tokens``). What a hand-off costs is derived from the roofline of the configured model and
GPU (:mod:`sim.substrates.llm.specs`: :func:`~sim.substrates.llm.specs.prefill_flops`,
:func:`~sim.substrates.llm.specs.instance_step_time`, the prefill and decode power states, the KV
capacity), the cost model of :mod:`sim.substrates.llm.society`, not from constants of its own.

What a format is (each entry of ``formats``):

``state``
    what the receiver gets. ``text``: token IDs (4 bytes per token); the receiver prefills every
    handed-over token (text carries no computed state). ``hidden_states``: the per-layer hidden
    states of the handed-over tokens (``n_layers x d_model`` values at the KV precision per token);
    a receiver of the same format recomputes only the K and V projections from them
    (``2 n_layers d_model (2 n_kv_heads head_dim)`` FLOPs per token), the state restoration of
    HCache (Gao et al. 2025, EuroSys, arXiv:2410.05004). The default format ``embedding`` is this:
    "shared embeddings" from which the same model needs almost no re-prefill. ``kv_cache``: the KV
    cache itself (``2 n_layers n_kv_heads head_dim bytes_per_kv`` per token, 128 KiB for
    Llama-3-8B): a receiver of the same format prefills nothing (disaggregated prefill ships KV
    caches between instances in the same way: Splitwise, Patel et al. 2024; DistServe, Zhong et
    al. 2024).
``token_factor``
    tokens this format's tokenizer needs per token of the model's own tokenizer. ``text_a`` is the
    model's own (Llama-3: 128k vocabulary), 1. ``text_b`` is Llama-2's 32k-vocabulary tokenizer:
    Meta's Llama 3 announcement (April 2024, "Introducing Meta Llama 3") says the new tokenizer
    yields "up to 15% fewer tokens" than Llama 2's, taken here as the typical value (an
    assumption; a per-character comparison, ~3.2 vs ~4 characters per token of English, would give
    1.25): ``1 / 0.85 = 1.176``. The cluster runs one model architecture (the ``model`` group); a
    format's token factor scales every handed-over token it processes.
``bytes_per_token``
    optional override of the bytes held per handed-over token (null: derived from ``state``).

What a hand-off from an instance of format ``s`` to one of format ``r`` costs (joules, all on the
roofline of one instance of ``substrate.gpus_per_model`` GPUs of the ``gpu`` group):

receiver, ``recv[s, r]``
    taking the context in plus decoding the answer. With ``n_r = H x token_factor_r`` tokens:
    matched (``s == r``) it pays its state's own take-in (``text``: a prefill of ``n_r`` tokens
    after the cached ``C0``; ``hidden_states``: the K/V projections of ``n_r`` tokens; ``kv_cache``:
    nothing); mismatched it detokenises the sender's message, re-tokenises it (CPU work, not
    charged) and re-prefills: ``match + conversion_cost x (full - match)``, ``full`` the prefill of
    ``n_r`` tokens after ``C0``. ``conversion_cost`` in [0, 1] is the fraction of that re-prefill a
    mismatch pays (1: the physical cost; 0: conversion free, formats interchangeable). Between two
    text formats a mismatch therefore costs nothing extra: the receiver prefills text anyway. Then
    the answer: ``O`` decoded tokens at ``P_decode t(B) / B`` joules each, ``t`` the roofline step
    of a batch ``B = min(max_batch, KV capacity / L)`` of sequences at the mean context
    ``L = C0 + n_r + O / 2`` (as :func:`sim.substrates.llm.society._ref_call` costs a call).
sender, ``send[s]`` (the storage cost)
    the handed-over state waits in the sender's HBM until the receiver has taken it over; an
    instance holds ``staged_per_sequence`` such states per sequence it decodes (chosen: 1, a state
    waits about one task time, for a receiver like the sender to answer; 0 removes storage costs).
    They take KV room, so the batch shrinks to ``B_s = min(max_batch, KV bytes / (kv L + staged x
    n_s x bytes_s))`` and every decoded token costs more: ``send[s] = O (J_tok(B_s) - J_tok(B))``
    per task. Text's token IDs cost nothing measurable; a KV cache or hidden states cost batch only
    where the KV room binds (``KV capacity / L < max_batch``), which is the roofline's answer to
    "is HBM scarce".

Costs are rounded to multiples of :data:`QUANTUM` (2^-24 J, 2^-24 tokens) so that sums over any
number of hand-offs are exact in any order: the JAX economy and the plain-Python
:class:`Reference` then give the same payoffs bit for bit.

Strategy adaptation (as :func:`sim.core.carriers.strategy`): an instance's payoff is the
exponential average, over a window of ``payoff_window`` rounds (a power of two, so the update is
exact but for one rounding), of minus its joules per hand-off in the round (the sending cost of its
one hand-off plus the receiving costs of those it took in, over their number; unchanged in a round
without hand-offs). Each round an instance revises with probability ``1 - exp(-rate)``: with
probability ``mutation`` it picks a format uniformly at random (exploration), otherwise it picks a
random neighbour and copies its format with the pairwise-comparison (Fermi) probability
``1 / (1 + exp(-(pi_j - pi_i) / (selection (|pi_i| + |pi_j|))))`` (Traulsen, Nowak & Pacheco 2006
Phys Rev E 74:011909), revisions synchronous on the round's formats. Formats start uniformly at
random (``initial: random``) or all at one format.

Outcomes: the share of each format over time, the Herfindahl index ``sum_f share_f^2`` (1/F mixed,
1 one standard), the time to a standard (first round the dominant share reaches 90%,
:data:`sim.core.carriers.STANDARD`), the winner, and the cluster's joules and re-prefilled tokens
per hand-off, for the adaptive cluster and for clusters forced onto one format (the cheapest
matched one) and forced to stay mixed (:func:`run`).

Random draws: ``sim.rng.uniforms`` keyed by (replicate key, round, purpose, instance) with the
purposes :data:`PURPOSES` (60-64, used nowhere else); the initial formats are drawn at round 0 with
purpose :data:`HANDOFF`, the rounds are 1, 2, .... Mutation reuses its uniform: ``u < mutation``
decides, ``u / mutation`` (uniform given that) picks the format.

Units: J, tokens, bytes, s; time in hand-off rounds (one round ~ one task: prefill plus ``O``
decode steps, ~4 s for Llama-3-8B on an H100 with the defaults).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from sim import rng
from sim.core import carriers as car
from sim.core.differentiation import TINY, neighbour_table
from sim.errors import ConfigError
from sim.pytree import pytree_dataclass
from sim.substrates.llm import society, specs

jax.config.update("jax_enable_x64", True)  # the reference comparison is bit for bit

# rng purposes (never renumber: it changes results); disjoint from every other purpose of the project
HANDOFF, EVENT, NEIGHBOUR, ACCEPT, MUTATE = 60, 61, 62, 63, 64
PURPOSES = {"handoff": HANDOFF, "event": EVENT, "neighbour": NEIGHBOUR, "accept": ACCEPT, "mutate": MUTATE}
STATES = ("text", "hidden_states", "kv_cache")
TOKEN_ID_BYTES = 4.0  # a token ID as int32 (a 128k vocabulary needs 17 bits)
QUANTUM = 2.0 ** -24  # J and tokens: costs are multiples of it, so sums are exact in any order
MODES = ("adaptive", "one", "mixed")
TAIL = 0.5  # the cost of a cluster: the mean over the last half of its rounds
END = 0.1  # the end state of a run: the mean over its last 10% of rounds (shares flicker under mutation)

LLAMA3_VS_LLAMA2_TOKENS = 0.85  # Meta 2024: Llama 3's tokenizer needs "up to 15% fewer tokens" than Llama 2's
DEFAULT_FORMATS = (
    {"name": "text_a", "state": "text", "token_factor": 1.0},
    {"name": "text_b", "state": "text", "token_factor": round(1.0 / LLAMA3_VS_LLAMA2_TOKENS, 4)},
    {"name": "embedding", "state": "hidden_states", "token_factor": 1.0},
    {"name": "kv_cache", "state": "kv_cache", "token_factor": 1.0},
)
DEFAULTS = {  # the ``standardization.llm_formats`` section of conf/experiment/standardization.yaml
    "formats": [dict(f) for f in DEFAULT_FORMATS],
    "handoff_tokens": 1000,  # H: as society.handoff_tokens (chosen, ~ one prompt)
    "context_tokens": 500,  # C0: cached system prompt, as society.base_context_tokens (chosen)
    "output_tokens": 129,  # O: answer, median of the Azure 2023 conversation trace (Splitwise)
    "staged_per_sequence": 1.0,  # hand-over states held per decoding sequence (chosen)
    "conversion_cost": 1.0,  # fraction of the re-prefill a mismatched hand-off pays (1: physical)
    "rate": 0.1,  # revisions per instance per round
    "selection": 0.05,  # relative payoff gap giving odds e:1
    "mutation": 0.02,  # probability that a revision picks a random format
    "payoff_window": 16,  # rounds of the payoff average (a power of two)
    "rounds": 2000,  # hand-off rounds per run
    "initial": "random",  # 'random' or a format name: all instances start there
}
FORMAT_KEYS = ("name", "state", "token_factor", "bytes_per_token")


# ------------------------------------------------------------------------------ config


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def read_config(node=None, prefix: str = "standardization.llm_formats") -> dict:
    """The format economy's options: :data:`DEFAULTS` updated by ``node`` (a mapping; None: the
    defaults), checked; every problem at once (a ConfigError naming ``prefix.<key>``, the value and
    what is allowed)."""
    from sim.config.validate import ConfigErrors

    node = {} if node is None else node
    if not isinstance(node, dict):
        raise ConfigError(prefix, node, "a mapping of the LLM format economy's options (keys: " + ", ".join(DEFAULTS) + ")")
    out, problems = {k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULTS.items()}, []
    for key, value in node.items():
        if key not in DEFAULTS:
            problems.append(ConfigError(f"{prefix}.{key}", value, "a key of " + prefix + ": " + ", ".join(DEFAULTS)))
        else:
            out[key] = value

    def bad(key, allowed):
        problems.append(ConfigError(f"{prefix}.{key}", out[key], allowed))

    fmts = out["formats"]
    if (not isinstance(fmts, (list, tuple)) or not 2 <= len(fmts) <= 64
            or not all(isinstance(f, dict) for f in fmts)):  # one refusal of the list, not one per entry
        bad("formats", "a list of 2 .. 64 formats, each a mapping {name, state, token_factor[, bytes_per_token]}")
        fmts = []
    checked = []
    for i, f in enumerate(fmts):
        key = f"formats[{i}]"
        if not isinstance(f, dict):
            problems.append(ConfigError(f"{prefix}.{key}", f, "a mapping {name, state, token_factor[, bytes_per_token]}"))
            continue
        extra = [k for k in f if k not in FORMAT_KEYS]
        if extra:
            problems.append(ConfigError(f"{prefix}.{key}.{extra[0]}", f[extra[0]],
                                        "a key of a format: " + ", ".join(FORMAT_KEYS)))
        name, state = f.get("name"), f.get("state")
        factor, nbytes = f.get("token_factor", 1.0), f.get("bytes_per_token")
        if not isinstance(name, str) or not name:
            problems.append(ConfigError(f"{prefix}.{key}.name", name, "a non-empty string"))
        if state not in STATES:
            problems.append(ConfigError(f"{prefix}.{key}.state", state, "one of " + ", ".join(STATES)))
        if not _is_number(factor) or factor <= 0:
            problems.append(ConfigError(f"{prefix}.{key}.token_factor", factor,
                                        "a finite number > 0 (tokens per token of the model's own tokenizer)"))
        if nbytes is not None and (not _is_number(nbytes) or nbytes < 0):
            problems.append(ConfigError(f"{prefix}.{key}.bytes_per_token", nbytes,
                                        "null (derived from state and the model) or a finite number of bytes >= 0"))
        checked.append({"name": name, "state": state, "token_factor": float(factor) if _is_number(factor) else factor,
                        "bytes_per_token": None if nbytes is None or not _is_number(nbytes) else float(nbytes)})
    names = [f["name"] for f in checked]
    if len(set(map(str, names))) != len(names):
        bad("formats", "formats with distinct names")
    out["formats"] = checked
    for key, lo, strict, hi, integer, what in (
            ("handoff_tokens", 0, True, None, True, "a number of tokens > 0"),
            ("context_tokens", 0, False, None, True, "a number of tokens >= 0"),
            ("output_tokens", 0, True, None, True, "a number of tokens > 0"),
            ("staged_per_sequence", 0, False, None, False, "a finite number >= 0 (states held per decoding sequence)"),
            ("conversion_cost", 0, False, 1, False, "a fraction in [0, 1] of the re-prefill a mismatch pays"),
            ("rate", 0, False, None, False, "a finite number >= 0 (revisions per instance per round)"),
            ("selection", 0, True, None, False, "a finite number > 0 (relative payoff gap giving odds e:1)"),
            ("mutation", 0, False, 1, False, "a probability in [0, 1]"),
            ("rounds", 1, False, 10_000_000, True, "an integer number of rounds in 1 .. 10000000")):
        v = out[key]
        ok = _is_number(v) and (v > lo if strict else v >= lo) and (hi is None or v <= hi)
        ok = ok and (not integer or float(v) == int(v))
        if not ok:
            bad(key, what)
        else:
            out[key] = int(v) if integer else float(v)
    w = out["payoff_window"]
    if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or not 1 <= w <= 2 ** 20 or w & (w - 1):
        bad("payoff_window", "a power of two from 1 to 2**20 (rounds)")
    init = out["initial"]
    if init != "random" and init not in names:
        bad("initial", "'random' or the name of a format: " + ", ".join(map(str, names)))
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigErrors(problems)
    return out


def format_names(opts: dict) -> list[str]:
    return [f["name"] for f in opts["formats"]]


def hardware(cfg: dict) -> society.Hardware:
    """One model instance: the ``model`` and ``gpu`` groups of ``cfg`` and the instance size of the
    LLM preset (``cfg['substrate']`` when it is ``llm``, else the shipped ``conf/substrate/llm.yaml``:
    ``experiment=standardization`` runs the generic substrate)."""
    from sim.core.config import CONF_DIR

    sub = cfg.get("substrate")
    if not (isinstance(sub, dict) and sub.get("name") == "llm"):
        sub = yaml.safe_load((CONF_DIR / "substrate" / "llm.yaml").read_text())
    return society.read_hardware(dict(cfg, substrate=sub))


# ------------------------------------------------------------------------------ costs (host, numpy)


def state_bytes_per_token(model: specs.ModelSpec, state: str) -> float:
    """Bytes held per handed-over token in a state: token IDs, per-layer hidden states, or the KV cache."""
    if state == "text":
        return TOKEN_ID_BYTES
    if state == "hidden_states":
        return float(model.n_layers * model.d_model * model.bytes_per_kv)
    return float(model.kv_bytes_per_token)


def kv_projection_flops_per_token(model: specs.ModelSpec) -> float:
    """FLOPs to recompute one token's K and V in every layer from its hidden states (HCache):
    ``2 n_layers d_model (2 n_kv_heads head_dim)``."""
    return 2.0 * model.n_layers * model.d_model * 2.0 * model.n_kv_heads * model.head_dim


def _decode_joules_per_token(hw: society.Hardware, context: float, staged_bytes: float = 0.0) -> tuple[float, float]:
    """(J per decoded token, batch) of a steady batch of sequences at ``context`` tokens, each also
    holding ``staged_bytes`` of hand-over state in the KV room."""
    kv = hw.model.kv_bytes_per_token
    batch = min(hw.max_batch, hw.kv_capacity * kv / (kv * context + staged_bytes))
    t = specs.instance_step_time(hw.model, hw.gpu, batch, batch * context, hw.n_gpus)
    return hw.power_decode_w * t / batch, batch


def _quantise(x):
    return np.round(np.asarray(x, np.float64) / QUANTUM) * QUANTUM


def cost_table(hw: society.Hardware, opts: dict, conversion_cost: float | None = None) -> dict:
    """What hand-offs cost for the formats of ``opts`` (see the module docstring): ``send`` (F,) J,
    ``recv`` (F, F) J and ``recv_tokens`` (F, F) tokens prefilled, indexed [sender, receiver]
    (quantised to :data:`QUANTUM`), ``task`` (F, F) = send + recv (J per task), and the parts:
    ``tokens`` (F,) handed-over tokens in each format, ``bytes_per_token`` (F,), ``prefill`` (F,) J
    of a full re-prefill, ``take_in`` (F,) J of a matched take-in, ``decode`` (F,) J of the answer,
    ``batch`` (F,) and ``batch_unstaged`` (F,) sequences, ``cheapest`` (the format with the lowest
    matched cost per task). ``conversion_cost`` overrides the option."""
    c = float(opts["conversion_cost"] if conversion_cost is None else conversion_cost)
    if not 0.0 <= c <= 1.0:
        raise ConfigError("conversion_cost", conversion_cost, "a fraction in [0, 1] of the re-prefill a mismatch pays")
    m = hw.model
    c0, h, o = float(opts["context_tokens"]), float(opts["handoff_tokens"]), float(opts["output_tokens"])
    fmts = opts["formats"]
    n = len(fmts)
    tokens, nbytes, full, take, take_tok, decode, send, batch, batch0 = (np.zeros(n) for _ in range(9))
    j_per_flop = hw.power_prefill_w / hw.flops
    for k, f in enumerate(fmts):
        tokens[k] = h * f["token_factor"]
        nbytes[k] = state_bytes_per_token(m, f["state"]) if f["bytes_per_token"] is None else f["bytes_per_token"]
        full[k] = specs.prefill_flops(m, tokens[k], c0) * j_per_flop
        if f["state"] == "text":
            take[k], take_tok[k] = full[k], tokens[k]
        elif f["state"] == "hidden_states":
            take[k] = kv_projection_flops_per_token(m) * tokens[k] * j_per_flop
        ctx = c0 + tokens[k] + 0.5 * o
        j0, batch0[k] = _decode_joules_per_token(hw, ctx)
        j1, batch[k] = _decode_joules_per_token(hw, ctx, opts["staged_per_sequence"] * tokens[k] * nbytes[k])
        decode[k] = o * j0
        send[k] = o * (j1 - j0)
    same = np.eye(n, dtype=bool)
    recv = np.where(same, take[None, :], (take + c * (full - take))[None, :]) + decode[None, :]
    recv_tok = np.where(same, take_tok[None, :], (take_tok + c * (tokens - take_tok))[None, :])
    send, recv, recv_tok = _quantise(send), _quantise(recv), _quantise(recv_tok)
    matched = send + np.diag(recv)
    return {"send": send, "recv": recv, "recv_tokens": recv_tok, "task": send[:, None] + recv, "tokens": tokens,
            "bytes_per_token": nbytes, "prefill": full, "take_in": take, "decode": decode, "batch": batch,
            "batch_unstaged": batch0, "conversion_cost": c, "cheapest": int(np.argmin(matched)),
            "matched_task": matched}


# ------------------------------------------------------------------------------ the economy (JAX)


@pytree_dataclass
class FormatState:
    fmt: object  # (N,) int32: the format each instance uses
    payoff: object  # (N,) minus the exponential average of joules per hand-off (J)
    switches: object  # (N,) int32: cumulative format changes
    step: object  # int32 scalar: the round just finished (0: the initial state)


@pytree_dataclass
class FormatParams:
    send: object  # (F,) J per hand-off sent, by the sender's format
    recv: object  # (F, F) J per hand-off taken in, [sender format, receiver format]
    recv_tokens: object  # (F, F) tokens prefilled per hand-off taken in
    revise: object  # probability per instance per round of a revision: 1 - exp(-rate)
    selection: object  # Fermi selection on the relative payoff gap
    mutation: object  # probability that a revision picks a random format
    decay: object  # 1 / payoff_window (a power of two)
    nbr_start: object  # (N,) int32 CSR neighbour table (sim.core.differentiation.neighbour_table)
    nbr_count: object  # (N,) int32 degree
    nbr_index: object  # (2E + 1,) int32 neighbours grouped by instance, one padding entry


# what a batch of rows varies (leading axis) and what it shares (the graph)
ROW_AXES = FormatParams(send=0, recv=0, recv_tokens=0, revise=0, selection=0, mutation=0, decay=0,
                        nbr_start=None, nbr_count=None, nbr_index=None)


def make_params(src, dst, n: int, table: dict, opts: dict, *, rate: float | None = None,
                mutation: float | None = None, index_size: int | None = None) -> FormatParams:
    """Host parameters of one economy on the graph ``(src, dst)`` of ``n`` instances with the costs
    of :func:`cost_table`; ``rate``/``mutation`` override the options (0 and 0: frozen formats).
    ``index_size`` pads the neighbour list (never read past a degree) so that graphs with the same
    number of instances share one compiled program."""
    start, count, index, _row, _weight = neighbour_table(src, dst, n)
    if index_size is not None and index_size > index.size:
        index = np.concatenate([index, np.zeros(index_size - index.size, index.dtype)])
    f = np.float64
    rate = opts["rate"] if rate is None else rate
    return FormatParams(send=np.asarray(table["send"], f), recv=np.asarray(table["recv"], f),
                        recv_tokens=np.asarray(table["recv_tokens"], f), revise=f(-math.expm1(-float(rate))),
                        selection=f(opts["selection"]), mutation=f(opts["mutation"] if mutation is None else mutation),
                        decay=f(1.0 / int(opts["payoff_window"])), nbr_start=start, nbr_count=count, nbr_index=index)


def stack_rows(rows: Sequence[FormatParams]) -> FormatParams:
    """Row parameters (one graph) stacked along a leading axis where :data:`ROW_AXES` batches."""
    first = rows[0]
    out = {}
    for name in FormatParams.__dataclass_fields__:
        if getattr(ROW_AXES, name) is None:
            out[name] = getattr(first, name)
        else:
            out[name] = np.stack([np.asarray(getattr(r, name)) for r in rows])
    return FormatParams(**out)


def initial_formats(key, n: int, n_formats: int):
    """Formats at round 0, uniform (purpose :data:`HANDOFF`, round 0). Traceable."""
    u = rng.uniforms(key, 0, HANDOFF, jnp.arange(n, dtype=jnp.uint32))
    return jnp.minimum(jnp.floor(u * n_formats).astype(jnp.int32), n_formats - 1)


def init_state(fmt) -> FormatState:
    fmt = jnp.asarray(fmt, jnp.int32)
    n = fmt.shape[0]
    return FormatState(fmt=fmt, payoff=jnp.zeros(n, jnp.float64), switches=jnp.zeros(n, jnp.int32), step=jnp.int32(0))


def _pick(params: FormatParams, u):
    """A uniformly drawn neighbour of every instance (itself where it has none)."""
    cnt = params.nbr_count
    k = jnp.minimum(jnp.floor(u * cnt).astype(jnp.int32), jnp.maximum(cnt - 1, 0))
    return jnp.where(cnt > 0, params.nbr_index[params.nbr_start + k], jnp.arange(cnt.shape[0], dtype=jnp.int32))


def step(state: FormatState, params: FormatParams, key):
    """One round: hand-offs, payoffs, revisions. Returns (state, record of the round: ``counts``
    (F,) instances per format after the revisions, ``joules`` and ``tokens`` per hand-off of the
    round)."""
    n = state.fmt.shape[0]
    n_formats = params.send.shape[0]
    t = state.step + 1
    ids = jnp.arange(n, dtype=jnp.uint32)
    f = state.fmt
    sends = params.nbr_count > 0
    to = _pick(params, rng.uniforms(key, t, HANDOFF, ids))
    # costs are multiples of QUANTUM far below 2^53 of it: every sum below is exact in any order
    recv_j = jnp.where(sends, params.recv[f, f[to]], 0.0)
    recv_tok = jnp.where(sends, params.recv_tokens[f, f[to]], 0.0)
    send_j = jnp.where(sends, params.send[f], 0.0)
    got_j = jax.ops.segment_sum(recv_j, to, num_segments=n)
    got_n = jax.ops.segment_sum(sends.astype(jnp.int32), to, num_segments=n)
    count = sends.astype(jnp.int32) + got_n
    sample = (send_j + got_j) / jnp.maximum(count, 1).astype(jnp.float64)
    # decay is a power of two: one rounding, with or without a fused multiply-add
    payoff = jnp.where(count > 0, state.payoff + params.decay * (-sample - state.payoff), state.payoff)

    u_event, u_nbr, u_acc, u_mut = (rng.uniforms(key, t, p, ids) for p in (EVENT, NEIGHBOUR, ACCEPT, MUTATE))
    act = u_event < params.revise
    j = _pick(params, u_nbr)
    scale = params.selection * (jnp.abs(payoff[j]) + jnp.abs(payoff)) + TINY
    p = 1.0 / (1.0 + jnp.exp(-(payoff[j] - payoff) / scale))
    mutate = act & (u_mut < params.mutation)
    pick = jnp.minimum(jnp.floor(jnp.where(mutate, u_mut / jnp.maximum(params.mutation, TINY), 0.0) * n_formats)
                       .astype(jnp.int32), n_formats - 1)
    imitate = act & ~mutate & sends & (u_acc < p)
    new = jnp.where(mutate, pick, jnp.where(imitate, f[j], f)).astype(jnp.int32)

    handoffs = jnp.maximum(jnp.sum(sends), 1).astype(jnp.float64)
    # counts, not shares: XLA turns a division by the constant n into a product with 1/n (one ulp off)
    record = {"counts": jnp.sum(new[:, None] == jnp.arange(n_formats)[None, :], axis=0, dtype=jnp.int32),
              "joules": (jnp.sum(send_j) + jnp.sum(recv_j)) / handoffs, "tokens": jnp.sum(recv_tok) / handoffs}
    out = FormatState(fmt=new, payoff=payoff, switches=state.switches + (new != f).astype(jnp.int32), step=t)
    return out, record


def simulate(state: FormatState, params: FormatParams, key, rounds: int):
    """``rounds`` rounds with ``lax.scan``: (final state, records with a leading round axis)."""
    return jax.lax.scan(lambda s, _: step(s, params, key), state, None, length=rounds)


CHUNK = 200  # rounds per compiled scan: runs of any multiple of it share one executable


@functools.partial(jax.jit, static_argnames=("rounds",))
def advance_rows(states: FormatState, params: FormatParams, keys, rounds: int):
    """:func:`simulate` vmapped over rows (states, row parameters of :func:`stack_rows`, keys)."""
    return jax.vmap(lambda s, p, k: simulate(s, p, k, rounds), in_axes=(0, ROW_AXES, 0))(states, params, keys)


def run_rows(fmt0, params: FormatParams, keys, rounds: int):
    """Rows (replicates x settings) vmapped: ``fmt0`` (R, N) initial formats, ``params`` stacked by
    :func:`stack_rows`, ``keys`` (R, 2). The rounds run in scans of :data:`CHUNK` (and one of the
    remainder), so runs of different lengths reuse the compiled scan. Returns (final states,
    records with axes (R, rounds, ...))."""
    states = jax.vmap(init_state)(jnp.asarray(fmt0))
    parts, left = [], int(rounds)
    while left > 0:
        k = min(CHUNK, left)
        states, rec = advance_rows(states, params, keys, k)
        parts.append(rec)
        left -= k
    return states, jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=1), *parts)


_initial_rows = jax.jit(jax.vmap(initial_formats, in_axes=(0, None, None)), static_argnums=(1, 2))


# ------------------------------------------------------------------------------ runs and outcomes


def run(graph_or_edges, opts: dict, hw: society.Hardware, *, conversion_costs=None, replicates: int = 4, seed: int = 0,
        modes: Sequence[str] = MODES, n_instances: int | None = None, index_size: int | None = None) -> dict:
    """The format economy on one graph: every (conversion cost, mode, replicate) row in one compiled
    call. ``modes``: ``adaptive`` (random start, revising), ``one`` (every instance on the cheapest
    matched format, frozen), ``mixed`` (random start, frozen). Replicate r uses
    ``sim.rng.replicate_keys(seed, replicates)[r]`` in every row (the same initial formats in
    ``adaptive`` and ``mixed``). Returns numpy arrays with leading axes (costs, modes, replicates):
    ``shares`` (..., rounds, F), ``joules``/``tokens`` (..., rounds), ``final`` formats (..., N),
    ``switches`` (..., N), plus ``tables`` (one :func:`cost_table` per cost), ``names``.
    ``index_size``: as in :func:`make_params`."""
    from sim.core.kiyotaki_wright import edges_of

    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise ConfigError("modes", list(modes), "a non-empty list of: " + ", ".join(MODES))
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ConfigError("replicates", replicates, "an integer >= 1")
    src, dst, n = edges_of(graph_or_edges, n_instances)
    costs = [opts["conversion_cost"]] if conversion_costs is None else [float(c) for c in conversion_costs]
    tables = [cost_table(hw, opts, c) for c in costs]
    names = format_names(opts)
    n_formats = len(names)
    keys = rng.replicate_keys(seed, replicates)
    random0 = np.asarray(_initial_rows(keys, n, n_formats))
    start = None if opts["initial"] == "random" else names.index(opts["initial"])
    rows, fmt0, row_keys = [], [], []
    for table in tables:
        for mode in modes:
            frozen = mode != "adaptive"
            p = make_params(src, dst, n, table, opts, rate=0.0 if frozen else None, mutation=0.0 if frozen else None,
                            index_size=index_size)
            for r in range(replicates):
                rows.append(p)
                row_keys.append(keys[r])
                if mode == "one":
                    fmt0.append(np.full(n, table["cheapest"], np.int32))
                elif start is not None:
                    fmt0.append(np.full(n, start, np.int32))
                else:
                    fmt0.append(random0[r])
    final, rec = run_rows(jnp.asarray(np.stack(fmt0)), stack_rows(rows), jnp.stack(row_keys), int(opts["rounds"]))
    shape = (len(costs), len(modes), replicates)
    rec = jax.device_get(rec)
    return {"shares": (np.asarray(rec["counts"]) / n).reshape(shape + rec["counts"].shape[1:]),
            "joules": np.asarray(rec["joules"]).reshape(shape + rec["joules"].shape[1:]),
            "tokens": np.asarray(rec["tokens"]).reshape(shape + rec["tokens"].shape[1:]),
            "final": np.asarray(final.fmt).reshape(shape + (n,)),
            "switches": np.asarray(final.switches).reshape(shape + (n,)),
            "tables": tables, "names": names, "modes": list(modes), "conversion_costs": costs, "n": n}


def outcomes(res: dict, tail: float = END) -> dict:
    """Per row (leading axes of ``res``): ``share_end`` (F,) the mean share over the last ``tail``
    of the rounds (shares flicker under mutation), ``herfindahl`` of it, ``dominant_share_end``,
    ``winner``, ``time_to_standard`` (rounds; inf: never), ``dominant_share`` over time, and the
    cluster's ``joules``/``tokens`` per hand-off over the last :data:`TAIL` of the rounds."""
    share = res["shares"]
    rounds = share.shape[-2]
    k = max(1, int(round(tail * rounds)))
    end = share[..., -k:, :].mean(-2)
    half = max(1, int(round(TAIL * rounds)))
    times = np.arange(1, rounds + 1)
    return {"share_end": end, "herfindahl": car.herfindahl(end), "dominant_share_end": end.max(-1),
            "winner": end.argmax(-1), "time_to_standard": car.time_to_standard(share.max(-1), times),
            "dominant_share": share.max(-1), "joules": res["joules"][..., -half:].mean(-1),
            "tokens": res["tokens"][..., -half:].mean(-1)}


# ------------------------------------------------------------------------------ experiment=standardization


def experiment(cfg: dict, opts: dict, graphs: dict, conversion_costs, replicates: int, seed: int) -> dict:
    """The format economy over ``graphs`` (topology name -> networkx graph) and the conversion
    costs of ``experiment=standardization`` (its ``conversion_costs`` grid is the fraction of the
    re-prefill a mismatched hand-off pays), ``replicates`` per point: one compiled call per
    topology. Returns what :func:`dataset`, :func:`summary` and :func:`report` read."""
    import time

    hw = hardware(cfg)
    t0 = time.perf_counter()
    size = max(2 * g.number_of_edges() + 1 for g in graphs.values())  # one compiled program for every topology
    runs = {kind: run(g, opts, hw, conversion_costs=conversion_costs, replicates=replicates, seed=seed,
                      index_size=size) for kind, g in graphs.items()}
    first = next(iter(runs.values()))
    return {"hw": hw, "opts": opts, "runs": runs, "outcomes": {k: outcomes(r) for k, r in runs.items()},
            "tables": first["tables"], "names": first["names"], "conversion_costs": first["conversion_costs"],
            "replicates": replicates, "n": first["n"], "wall_s": time.perf_counter() - t0}


def _reduce(o: dict, n_formats: int) -> dict:
    """Per conversion cost (axis 0): the adaptive cluster over replicates, and every mode's cost."""
    ad = MODES.index("adaptive")
    wins = (o["winner"][:, ad, :, None] == np.arange(n_formats)).mean(1)  # (C, F)
    return {"herfindahl": o["herfindahl"][:, ad].mean(-1),
            "standardised_fraction": (o["dominant_share_end"][:, ad] >= car.STANDARD).mean(-1),
            "time_to_standard": np.median(o["time_to_standard"][:, ad], axis=-1),
            "winner_fraction": wins, "share_end": o["share_end"][:, ad].mean(1),
            "joules_per_handoff": o["joules"].mean(-1), "tokens_per_handoff": o["tokens"].mean(-1),  # (C, modes)
            "dominant_share_t": o["dominant_share"][:, ad].mean(1)}  # (C, rounds)


def dataset(exp: dict):
    """``llm_formats.nc``: the adaptive cluster's outcomes per topology x conversion cost, the
    clusters' joules and re-prefilled tokens per hand-off per mode, the dominant share per round,
    and the cost table (J per task, [conversion cost, sender, receiver])."""
    import xarray as xr

    names, costs, tops = exp["names"], exp["conversion_costs"], list(exp["runs"])
    red = {k: _reduce(o, len(names)) for k, o in exp["outcomes"].items()}
    rounds = red[tops[0]]["dominant_share_t"].shape[-1]
    dims = {"herfindahl": (), "standardised_fraction": (), "time_to_standard": (), "winner_fraction": ("format",),
            "share_end": ("format",), "joules_per_handoff": ("mode",), "tokens_per_handoff": ("mode",),
            "dominant_share_t": ("round",)}
    data = {f"llm_{k}": (("topology", "conversion_cost") + d, np.array([red[t][k] for t in tops])) for k, d in dims.items()}
    tables = exp["tables"]
    data["llm_task_joules"] = (("conversion_cost", "sender", "receiver"), np.array([t["task"] for t in tables]))
    data["llm_recv_tokens"] = (("conversion_cost", "sender", "receiver"), np.array([t["recv_tokens"] for t in tables]))
    for k in ("send", "prefill", "take_in", "decode", "batch", "bytes_per_token", "tokens"):
        data[f"llm_{k}"] = (("format",), np.asarray(tables[0][k], np.float64))
    hw, opts = exp["hw"], exp["opts"]
    attrs = {"model": hw.model.name, "gpu": hw.gpu.name, "gpus_per_model": hw.n_gpus, "instances": exp["n"],
             "replicates": exp["replicates"], "rounds": int(opts["rounds"]), "time_unit": "hand-off rounds",
             **{k: float(opts[k]) for k in ("handoff_tokens", "context_tokens", "output_tokens", "staged_per_sequence",
                                             "rate", "selection", "mutation")},
             "payoff_window": int(opts["payoff_window"]), "format_states": [f["state"] for f in opts["formats"]],
             "token_factors": [f["token_factor"] for f in opts["formats"]]}
    coords = {"topology": tops, "conversion_cost": costs, "format": names, "sender": names, "receiver": names,
              "mode": list(MODES), "round": np.arange(1, rounds + 1)}
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    long = {"llm_herfindahl": "sum of squared format shares at the end, adaptive cluster (1/F mixed, 1 one standard)",
            "llm_standardised_fraction": "replicates with one format used by >= 90% of instances at the end",
            "llm_time_to_standard": "median first round the dominant format reaches 90% (inf: never)",
            "llm_winner_fraction": "replicates in which each format is the most used at the end",
            "llm_joules_per_handoff": "J per hand-off (sending, taking in, answering) over the last half of the rounds",
            "llm_tokens_per_handoff": "tokens re-prefilled per hand-off over the last half of the rounds",
            "llm_task_joules": "J per task handed from a sender of one format to a receiver of another",
            "llm_send": "J per hand-off sent: the staged state's cost in batch (the storage cost)"}
    for name, text in long.items():
        ds[name].attrs["long_name"] = text
    ds["llm_time_to_standard"].attrs["units"] = "rounds"
    return ds


def table(ds):
    """One row per topology x conversion cost: the adaptive outcomes and every mode's cost (a
    pandas DataFrame for ``llm_formats.parquet``)."""
    import pandas as pd

    rows = []
    names, modes = list(ds["format"].values), list(ds["mode"].values)
    for top in ds["topology"].values:
        for c in ds["conversion_cost"].values:
            sel = ds.sel(topology=top, conversion_cost=c)
            row = {"topology": str(top), "conversion_cost": float(c)}
            for k in ("herfindahl", "standardised_fraction", "time_to_standard"):
                row[k] = float(sel[f"llm_{k}"])
            for f in names:
                row[f"wins_{f}"] = float(sel["llm_winner_fraction"].sel(format=f))
                row[f"share_{f}"] = float(sel["llm_share_end"].sel(format=f))
            for m in modes:
                row[f"joules_per_handoff_{m}"] = float(sel["llm_joules_per_handoff"].sel(mode=m))
                row[f"tokens_per_handoff_{m}"] = float(sel["llm_tokens_per_handoff"].sel(mode=m))
            rows.append(row)
    return pd.DataFrame(rows)


def summary(ds) -> dict:
    """``llm_``-prefixed entries of the experiment's summary.json (names end with their unit:
    ``_j``, ``_rounds``; declared in ``sim.experiments.standardization.OUTCOME_UNITS``)."""
    names = list(ds["format"].values)
    lo, hi = ds["conversion_cost"].values[0], ds["conversion_cost"].values[-1]
    matched = np.diagonal(ds["llm_task_joules"].sel(conversion_cost=hi).values)  # the same at every cost
    out = {"llm_model": ds.attrs["model"], "llm_gpu": ds.attrs["gpu"], "llm_formats": names,
           "llm_cheapest_format": names[int(np.argmin(matched))],
           **{f"llm_task_energy_matched_{f}_j": float(v) for f, v in zip(names, matched)}}
    for top in ds["topology"].values:
        tag = f"llm_{top}"
        at = lambda name, c: ds[name].sel(topology=top, conversion_cost=c)  # noqa: E731
        out[f"{tag}_herfindahl_at_lowest_cost"] = float(at("llm_herfindahl", lo))
        out[f"{tag}_herfindahl_at_highest_cost"] = float(at("llm_herfindahl", hi))
        out[f"{tag}_standardised_at_highest_cost"] = float(at("llm_standardised_fraction", hi))
        out[f"{tag}_time_to_standard_at_highest_cost_rounds"] = float(at("llm_time_to_standard", hi))
        wins = at("llm_winner_fraction", hi).values
        out[f"{tag}_winner_at_highest_cost"] = names[int(wins.argmax())]  # a tie: the lower index
        out.update({f"{tag}_wins_{f}_at_highest_cost": float(w) for f, w in zip(names, wins)})
        for m in MODES:
            out[f"{tag}_energy_per_handoff_{m}_at_highest_cost_j"] = float(at("llm_joules_per_handoff", hi).sel(mode=m))
    return out


def report(ds, wall_s: float) -> list[str]:
    """Lines for the experiment's report: per topology and conversion cost, the Herfindahl index
    (share standardised), the winner, and joules per hand-off adaptive / one format / mixed."""
    names = list(ds["format"].values)
    a = ds.attrs
    lines = [f"LLM message formats ({a['model']} on {a['gpu']}; {a['instances']} instances, {a['rounds']} hand-off "
             f"rounds, {a['replicates']} replicates; H = {a['handoff_tokens']:g} tokens handed over; wall {wall_s:.1f} s). "
             "J per task, matched format: " + ", ".join(
                 f"{f} {v:.2f}" for f, v in zip(names, np.diagonal(ds['llm_task_joules'].values[-1])))]
    lines.append("  conversion cost = fraction of the re-prefill a mismatched hand-off pays; Herfindahl (standardised), "
                 "J per hand-off adaptive | one format | mixed, replicates each format wins:")
    for top in ds["topology"].values:
        lines.append(f"  {top} (even mix: {1 / len(names):.2f}):")
        for c in ds["conversion_cost"].values:
            sel = ds.sel(topology=top, conversion_cost=c)
            j = sel["llm_joules_per_handoff"].values
            wins = " ".join(f"{f} {w:.0%}" for f, w in zip(names, sel["llm_winner_fraction"].values) if w > 0)
            h, std = float(sel["llm_herfindahl"]), float(sel["llm_standardised_fraction"])
            lines.append(f"    cost {c:4.2g}: {h:4.2f} ({std:.0%}) J {j[0]:6.2f} | {j[1]:6.2f} | {j[2]:6.2f}; wins: {wins}")
    return lines


# ------------------------------------------------------------------------------ plain-Python reference


class Reference:
    """The same economy instance by instance with Python floats and ints, drawing the engine's
    numbers through :func:`sim.rng.host_uniforms` (one vectorised call per purpose and round)."""

    def __init__(self, params: FormatParams, key, fmt0):
        p = jax.device_get(params)
        self.key = key
        self.send = np.asarray(p.send, np.float64).tolist()
        self.recv = np.asarray(p.recv, np.float64).tolist()
        self.recv_tokens = np.asarray(p.recv_tokens, np.float64).tolist()
        self.revise, self.selection = float(p.revise), float(p.selection)
        self.mutation, self.decay = float(p.mutation), float(p.decay)
        start, count, index = (np.asarray(a).tolist() for a in (p.nbr_start, p.nbr_count, p.nbr_index))
        self.nbrs = [index[a:a + c] for a, c in zip(start, count)]
        self.fmt = [int(x) for x in np.asarray(fmt0)]
        self.n, self.k = len(self.fmt), len(self.send)
        self.payoff = [0.0] * self.n
        self.switches = [0] * self.n
        self.t = 0
        self.records: list[dict] = []

    def _neighbour(self, i: int, u: float) -> int:
        nb = self.nbrs[i]
        return nb[min(int(math.floor(u * len(nb))), len(nb) - 1)] if nb else i

    def step(self) -> None:
        n, t, f = self.n, self.t + 1, self.fmt
        draw = lambda purpose: rng.host_uniforms(self.key, t, purpose, n).tolist()  # noqa: E731
        u_send = draw(HANDOFF)
        joules, count = [0.0] * n, [0] * n
        total_j, total_tok, handoffs = 0.0, 0.0, 0
        for i in range(n):
            if not self.nbrs[i]:
                continue
            j = self._neighbour(i, u_send[i])
            joules[i] += self.send[f[i]]
            joules[j] += self.recv[f[i]][f[j]]
            count[i] += 1
            count[j] += 1
            total_j += self.send[f[i]] + self.recv[f[i]][f[j]]
            total_tok += self.recv_tokens[f[i]][f[j]]
            handoffs += 1
        for i in range(n):
            if count[i]:
                self.payoff[i] = self.payoff[i] + self.decay * (-(joules[i] / count[i]) - self.payoff[i])
        u_event, u_nbr, u_acc, u_mut = draw(EVENT), draw(NEIGHBOUR), draw(ACCEPT), draw(MUTATE)
        new = list(f)
        for i in range(n):
            if not u_event[i] < self.revise:
                continue
            if u_mut[i] < self.mutation:
                new[i] = min(int(math.floor(u_mut[i] / self.mutation * self.k)), self.k - 1)
                continue
            if not self.nbrs[i]:
                continue
            j = self._neighbour(i, u_nbr[i])
            scale = self.selection * (abs(self.payoff[j]) + abs(self.payoff[i])) + TINY
            z = -(self.payoff[j] - self.payoff[i]) / scale
            try:
                p = 1.0 / (1.0 + math.exp(z))
            except OverflowError:  # the engine's exp gives inf, so p = 0
                p = 0.0
            if u_acc[i] < p:
                new[i] = f[j]
        for i in range(n):
            self.switches[i] += int(new[i] != f[i])
        self.fmt = new
        self.t = t
        h = max(handoffs, 1)
        self.records.append({"counts": [sum(1 for x in new if x == k) for k in range(self.k)],
                             "joules": total_j / h, "tokens": total_tok / h})

    def state(self) -> FormatState:
        return FormatState(fmt=np.array(self.fmt, np.int32), payoff=np.array(self.payoff, np.float64),
                           switches=np.array(self.switches, np.int32), step=np.int32(self.t))


def reference_run(params: FormatParams, key, fmt0, rounds: int) -> Reference:
    """:class:`Reference` from ``fmt0`` through ``rounds`` rounds."""
    ref = Reference(params, key, fmt0)
    for _ in range(int(rounds)):
        ref.step()
    return ref


__all__ = ["HANDOFF", "EVENT", "NEIGHBOUR", "ACCEPT", "MUTATE", "PURPOSES", "STATES", "MODES", "QUANTUM", "DEFAULTS",
           "DEFAULT_FORMATS", "FormatState", "FormatParams", "ROW_AXES", "read_config", "format_names", "hardware",
           "state_bytes_per_token", "kv_projection_flops_per_token", "cost_table", "make_params", "stack_rows",
           "initial_formats", "init_state", "step", "simulate", "CHUNK", "advance_rows", "run_rows", "run", "outcomes",
           "Reference", "reference_run", "experiment", "dataset", "table", "summary", "report"]
