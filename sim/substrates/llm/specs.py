"""Model and GPU specifications, the decode roofline and the KV-cache capacity.

Every formula here is shared by the JAX kernels, the plain-Python reference and the serving
calculator (``xp`` is ``numpy``, ``jax.numpy`` or ``math``-like scalars), so the three agree
by construction. Units: FLOP, bytes, s, W, tokens.

- Forward FLOPs per generated token at context ``L``: ``2N + 2 n_layer d_model L`` (Kaplan et al.
  2020, Table 1, with ``d_attn = d_model``).
- One decode iteration over ``B`` active streams holding ``sum(L)`` tokens of context:
  ``t = max((2N B + 2 n_layer d sum(L)) / F_peak, (W_bytes + kv_bytes sum(L)) / BW)``: weights are
  read once per iteration, the KV cache of every active stream once (roofline).
- Prefill of a prompt of ``P`` tokens after ``c`` tokens already cached:
  ``2N P + n_layer d ((c + P)^2 - c^2)`` FLOPs (``c = 0``: ``2N P + n_layer d P^2``), compute-bound.
- KV bytes per token: ``2 n_layer n_kv_heads head_dim bytes_per_kv`` (Vidur memory planner).
- KV capacity (tokens): ``(u * HBM - W_bytes) / kv_bytes`` with ``u = 0.9`` (vLLM's default
  ``gpu_memory_utilization``); ~427k tokens for Llama-3-8B on an 80 GB GPU (derived; docs/references.md).
"""

from __future__ import annotations

import dataclasses
import math

from sim.errors import ConfigError

GB = 1e9  # NVIDIA quotes HBM in decimal GB; the ~427k-token KV capacity (docs/references.md) uses 80e9 bytes


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A dense decoder-only transformer. Sources in ``conf/model/*.yaml``."""

    name: str
    n_params: float  # N
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    bytes_per_param: float
    bytes_per_kv: float
    max_context: int  # tokens
    vocab_size: int

    @property
    def weight_bytes(self) -> float:
        return self.n_params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:
        return 2.0 * self.n_layers * self.n_kv_heads * self.head_dim * self.bytes_per_kv

    @property
    def flops_per_token(self) -> float:
        """c0: FLOPs of one token independent of context (2N)."""
        return 2.0 * self.n_params

    @property
    def flops_per_token_per_ctx(self) -> float:
        """c1: extra FLOPs of one token per token of context (2 n_layer d_model)."""
        return 2.0 * self.n_layers * self.d_model

    @property
    def bits_per_token(self) -> float:
        """Information per token stated as log2(vocabulary size) (Llama-3: 16.97 bits)."""
        return math.log2(self.vocab_size)


@dataclasses.dataclass(frozen=True)
class GpuSpec:
    """One accelerator. Sources in ``conf/gpu/*.yaml``."""

    name: str
    peak_flops: float  # FLOP/s dense bf16
    hbm_bytes: float
    bandwidth: float  # bytes/s
    power_idle_w: float
    power_prefill_w: float
    power_decode_w: float
    tdp_w: float

    def power(self, state: str) -> float:
        table = {"idle": self.power_idle_w, "prefill": self.power_prefill_w, "decode": self.power_decode_w,
                 "tdp": self.tdp_w}
        if state not in table:
            raise ConfigError("roofline.power_state", state, "one of " + ", ".join(table))
        return table[state]


MODEL_KEYS = {
    "n_params": float, "n_layers": int, "d_model": int, "n_heads": int, "n_kv_heads": int, "head_dim": int,
    "bytes_per_param": float, "bytes_per_kv": float, "max_context": int, "vocab_size": int,
}
GPU_KEYS = {
    "peak_tflops": float, "hbm_gb": float, "bandwidth_tb_s": float, "tdp_w": float,
}
POWER_KEYS = ("idle_w", "prefill_w", "decode_w")


def _positive(node: dict, group: str, key: str, kind):
    v = node.get(key) if isinstance(node, dict) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{group}.{key}", v, "a finite number > 0")
    if kind is int and float(v) != int(v):
        raise ConfigError(f"{group}.{key}", v, "a positive integer")
    return kind(v)


def model_spec(cfg: dict) -> ModelSpec:
    node = cfg.get("model")
    if not isinstance(node, dict):
        raise ConfigError("model", node, "a model config (model=llama3_8b | llama3_70b | llama2_7b)")
    vals = {k: _positive(node, "model", k, t) for k, t in MODEL_KEYS.items()}
    if vals["n_kv_heads"] > vals["n_heads"]:
        raise ConfigError("model.n_kv_heads", vals["n_kv_heads"], f"at most model.n_heads={vals['n_heads']}")
    return ModelSpec(name=str(node.get("name", "model")), **vals)


def gpu_spec(cfg: dict) -> GpuSpec:
    node = cfg.get("gpu")
    if not isinstance(node, dict):
        raise ConfigError("gpu", node, "a GPU config (gpu=h100 | h200 | a100)")
    vals = {k: _positive(node, "gpu", k, t) for k, t in GPU_KEYS.items()}
    power = node.get("power") or {}
    pw = {}
    for k in POWER_KEYS:
        v = power.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"gpu.power.{k}", v, "a finite power >= 0 (W)")
        pw[k] = float(v)
    return GpuSpec(
        name=str(node.get("name", "gpu")),
        peak_flops=vals["peak_tflops"] * 1e12,
        hbm_bytes=vals["hbm_gb"] * GB,
        bandwidth=vals["bandwidth_tb_s"] * 1e12,
        power_idle_w=pw["idle_w"], power_prefill_w=pw["prefill_w"], power_decode_w=pw["decode_w"],
        tdp_w=vals["tdp_w"],
    )


# ---- formulas (xp-generic: numpy, jax.numpy, or Python floats with xp=None) -------------------


def _max(a, b, xp):
    return max(a, b) if xp is None else xp.maximum(a, b)


def decode_flops(model: ModelSpec, batch, sum_ctx):
    """FLOPs of one decode iteration: 2N B + 2 n_layer d sum(L)."""
    return model.flops_per_token * batch + model.flops_per_token_per_ctx * sum_ctx


def decode_bytes(model: ModelSpec, sum_ctx):
    """Bytes read by one decode iteration: weights once + the KV cache of every active stream."""
    return model.weight_bytes + model.kv_bytes_per_token * sum_ctx


def decode_step_time(model: ModelSpec, peak_flops, bandwidth, batch, sum_ctx, xp=None):
    """Roofline time (s) of one decode iteration (``peak_flops``, ``bandwidth`` of the whole instance)."""
    return _max(decode_flops(model, batch, sum_ctx) / peak_flops, decode_bytes(model, sum_ctx) / bandwidth, xp)


def prefill_flops(model: ModelSpec, tokens, cached=0.0):
    """FLOPs to prefill ``tokens`` new tokens after ``cached`` ones: 2N P + n_layer d ((c+P)^2 - c^2)."""
    half_c1 = 0.5 * model.flops_per_token_per_ctx  # n_layer d
    return model.flops_per_token * tokens + half_c1 * (tokens * tokens + 2.0 * cached * tokens)


def kv_capacity_tokens(model: ModelSpec, gpu: GpuSpec, n_gpus: int = 1, utilization: float = 0.9) -> float:
    """Tokens of KV cache that fit: (u * HBM - weights) / KV bytes per token (may be <= 0)."""
    return (utilization * gpu.hbm_bytes * n_gpus - model.weight_bytes) / model.kv_bytes_per_token


def check_fits(model: ModelSpec, gpu: GpuSpec, n_gpus: int = 1, utilization: float = 0.9) -> float:
    """KV capacity in tokens; ConfigError naming the values when the weights leave no room for a
    single full context."""
    usable = utilization * gpu.hbm_bytes * n_gpus
    if model.weight_bytes >= usable:
        raise ConfigError(
            "model", model.name,
            f"a model whose weights fit in the GPU memory: {model.name} needs {model.weight_bytes / GB:.1f} GB of "
            f"weights but {n_gpus} x {gpu.name} gives {usable / GB:.1f} GB usable ({utilization:.0%} of "
            f"{n_gpus * gpu.hbm_bytes / GB:.0f} GB); pick a larger gpu or raise substrate.gpus_per_model",
        )
    cap = kv_capacity_tokens(model, gpu, n_gpus, utilization)
    if cap < model.max_context:
        raise ConfigError(
            "model", model.name,
            f"a model that leaves KV room for one full context on {n_gpus} x {gpu.name}: "
            f"{cap:.0f} tokens of KV cache < max_context {model.max_context}",
        )
    return cap


def roofline_point(model: ModelSpec, gpu: GpuSpec, batch: int, context: float, n_gpus: int = 1,
                   power_state: str = "decode") -> dict:
    """The serving calculator: one fixed batch at a fixed context (every stream holds ``context``)."""
    f, bw = gpu.peak_flops * n_gpus, gpu.bandwidth * n_gpus
    sum_ctx = batch * context
    t = decode_step_time(model, f, bw, batch, sum_ctx)
    flops = decode_flops(model, batch, sum_ctx)
    nbytes = decode_bytes(model, sum_ctx)
    power = gpu.power(power_state) * n_gpus
    return {
        "step_time_s": t,
        "tokens_per_s": batch / t,
        "joules_per_token": power * t / batch,
        "power_w": power,
        "arithmetic_intensity_flop_per_byte": flops / nbytes,
        "ridge_flop_per_byte": f / bw,
        "memory_bound": bool(nbytes / bw >= flops / f),
        "attention_flop_share": model.flops_per_token_per_ctx * sum_ctx / flops,
    }
