"""Model and GPU specifications, the decode roofline and the KV-cache capacity.

Every formula here is shared by the JAX kernels, the plain-Python reference and the serving
calculator (``xp`` is ``numpy``, ``jax.numpy`` or ``math``-like scalars), so the three agree
by construction. Units: FLOP, bytes, s, W, tokens.

- Forward FLOPs per generated token at context ``L``: ``2N + 4 n_layer d_model L``: the weights
  (2N) plus attention, ``2 d L`` per layer for the scores ``QK^T`` and ``2 d L`` for ``AV``
  (Kaplan et al. 2020, Table 1, count ``QK^T`` only: ``2 n_layer d L``; the ``AV`` product costs the
  same again).
- Achieved, not peak: compute runs at ``F = compute_efficiency x F_peak`` and memory traffic at
  ``BW = bandwidth_efficiency x BW_peak`` (``conf/gpu``: 0.6 and 0.65 on H100, chosen within the
  ranges real engines reach; docs/references.md).
- One decode iteration over ``B`` active streams holding ``sum(L)`` tokens of context on ``g`` GPUs
  (tensor parallel):
  ``t = max((2N B + 4 n_layer d sum(L)) / (g F), (W_bytes + kv_bytes sum(L)) / (g BW)) + t_ar``:
  weights are read once per iteration, the KV cache of every active stream once (roofline), and
  for ``g > 1`` each layer pays 2 ring all-reduces of the activations (``B d`` values):
  ``t_ar = 2 n_layer (2 (g-1)/g x B d bytes / NVLink + latency)`` (Megatron-LM, Shoeybi et al. 2019).
- Prefill of a prompt of ``P`` tokens after ``c`` tokens already cached:
  ``2N P + 2 n_layer d ((c + P)^2 - c^2)`` FLOPs (``c = 0``: ``2N P + 2 n_layer d P^2``), compute-bound.
- Power: ``idle + (TDP - idle) x u`` with ``u`` the achieved fraction of the resource that binds:
  ``compute_efficiency`` in prefill, ``bandwidth_efficiency`` in (memory-bound) decode.
- KV bytes per token: ``2 n_layer n_kv_heads head_dim bytes_per_kv`` (Vidur memory planner).
- KV capacity (tokens): ``(u * HBM - W_bytes - activation reserve) / kv_bytes`` with ``u = 0.9``
  (vLLM's default ``gpu_memory_utilization``), HBM in bytes (80 GiB on H100) and the activation
  reserve of ``llm.yaml: activation_reserve_gib`` per GPU (vLLM profiles it; chosen constant);
  ~451k tokens for Llama-3-8B on an H100 (derived; docs/references.md).
"""

from __future__ import annotations

import dataclasses
import math

from sim.errors import ConfigError

GB = 1e9  # decimal gigabyte (weights, messages)
GIB = float(2**30)  # binary gibibyte: the H100's and A100's "80 GB" of HBM are 80 GiB (85.9e9 bytes)


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
        """c1: extra FLOPs of one token per token of context: 4 n_layer d_model (QK^T and AV)."""
        return 4.0 * self.n_layers * self.d_model

    @property
    def allreduce_bytes_per_token(self) -> float:
        """Bytes of one stream's activations in one all-reduce: d_model values at bytes_per_param."""
        return self.d_model * self.bytes_per_param

    @property
    def allreduces_per_step(self) -> int:
        """All-reduces of one forward pass under tensor parallelism: 2 per layer (after the attention
        output projection and after the MLP; Megatron-LM, Shoeybi et al. 2019)."""
        return 2 * self.n_layers

    @property
    def bits_per_token(self) -> float:
        """Information per token stated as log2(vocabulary size) (Llama-3: 16.97 bits)."""
        return math.log2(self.vocab_size)


@dataclasses.dataclass(frozen=True)
class GpuSpec:
    """One accelerator. Sources in ``conf/gpu/*.yaml``."""

    name: str
    peak_flops: float  # FLOP/s dense bf16 (datasheet peak)
    hbm_bytes: float
    bandwidth: float  # bytes/s (datasheet peak)
    power_idle_w: float
    tdp_w: float
    compute_efficiency: float = 1.0  # achieved fraction of peak FLOP/s
    bandwidth_efficiency: float = 1.0  # achieved fraction of peak HBM bandwidth
    link_bandwidth: float = 450e9  # bytes/s per direction per GPU (NVLink)
    allreduce_latency_s: float = 5e-6  # fixed cost of one all-reduce

    @property
    def achieved_flops(self) -> float:
        return self.peak_flops * self.compute_efficiency

    @property
    def achieved_bandwidth(self) -> float:
        return self.bandwidth * self.bandwidth_efficiency

    def power_at(self, utilization: float) -> float:
        """W at a utilisation in [0, 1]: idle + (TDP - idle) x u."""
        u = min(max(float(utilization), 0.0), 1.0)
        return self.power_idle_w + (self.tdp_w - self.power_idle_w) * u

    @property
    def power_prefill_w(self) -> float:
        """Prefill is compute-bound: u = compute_efficiency."""
        return self.power_at(self.compute_efficiency)

    @property
    def power_decode_w(self) -> float:
        """Decode is memory-bound: u = bandwidth_efficiency."""
        return self.power_at(self.bandwidth_efficiency)

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
    "peak_tflops": float, "hbm_gb": float, "bandwidth_tb_s": float, "tdp_w": float, "nvlink_gb_s": float,
    "allreduce_latency_us": float,
}
EFFICIENCY_KEYS = ("compute_efficiency", "bandwidth_efficiency")  # fractions in (0, 1]
POWER_KEYS = ("idle_w",)


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
    eff = {}
    for k in EFFICIENCY_KEYS:
        v = node.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= 1:
            raise ConfigError(f"gpu.{k}", v, "a fraction of peak in (0, 1]")
        eff[k] = float(v)
    binary = node.get("hbm_binary", False)
    if not isinstance(binary, bool):
        raise ConfigError("gpu.hbm_binary", binary, "true (hbm_gb is in GiB) or false (decimal GB)")
    power = node.get("power") or {}
    pw = {}
    for k in POWER_KEYS:
        v = power.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"gpu.power.{k}", v, "a finite power >= 0 (W)")
        pw[k] = float(v)
    if pw["idle_w"] > vals["tdp_w"]:
        raise ConfigError("gpu.power.idle_w", pw["idle_w"], f"at most gpu.tdp_w={vals['tdp_w']:g}")
    return GpuSpec(
        name=str(node.get("name", "gpu")),
        peak_flops=vals["peak_tflops"] * 1e12,
        hbm_bytes=vals["hbm_gb"] * (GIB if binary else GB),
        bandwidth=vals["bandwidth_tb_s"] * 1e12,
        power_idle_w=pw["idle_w"], tdp_w=vals["tdp_w"],
        compute_efficiency=eff["compute_efficiency"], bandwidth_efficiency=eff["bandwidth_efficiency"],
        link_bandwidth=vals["nvlink_gb_s"] * GB, allreduce_latency_s=vals["allreduce_latency_us"] * 1e-6,
    )


# ---- formulas (xp-generic: numpy, jax.numpy, or Python floats with xp=None) -------------------


def _max(a, b, xp):
    return max(a, b) if xp is None else xp.maximum(a, b)


def decode_flops(model: ModelSpec, batch, sum_ctx):
    """FLOPs of one decode iteration: 2N B + 4 n_layer d sum(L)."""
    return model.flops_per_token * batch + model.flops_per_token_per_ctx * sum_ctx


def decode_bytes(model: ModelSpec, sum_ctx):
    """Bytes read by one decode iteration: weights once + the KV cache of every active stream."""
    return model.weight_bytes + model.kv_bytes_per_token * sum_ctx


def allreduce_time(model: ModelSpec, gpu: GpuSpec, n_gpus, batch, xp=None):
    """s of the all-reduces of one decode iteration over ``batch`` streams on ``n_gpus`` GPUs
    (tensor parallel): 2 n_layer ring all-reduces of ``batch x d_model`` activations, each
    ``2 (g-1)/g x bytes / link + latency``; 0 on one GPU."""
    ring = 2.0 * (n_gpus - 1.0) / (n_gpus if xp is None else xp.maximum(n_gpus, 1.0))
    each = ring * batch * model.allreduce_bytes_per_token / gpu.link_bandwidth + gpu.allreduce_latency_s
    t = model.allreduces_per_step * each
    if xp is None:
        return t if n_gpus > 1 else 0.0
    return xp.where(n_gpus > 1, t, 0.0)


def decode_step_time(model: ModelSpec, flops, bandwidth, batch, sum_ctx, xp=None, comm_s=0.0):
    """Roofline time (s) of one decode iteration: ``flops`` and ``bandwidth`` are the achieved
    FLOP/s and bytes/s of the whole instance (:attr:`GpuSpec.achieved_flops` x GPUs), ``comm_s`` the
    all-reduce time (:func:`allreduce_time`) added on top."""
    return _max(decode_flops(model, batch, sum_ctx) / flops, decode_bytes(model, sum_ctx) / bandwidth, xp) + comm_s


def instance_step_time(model: ModelSpec, gpu: GpuSpec, batch, sum_ctx, n_gpus: int = 1, xp=None):
    """:func:`decode_step_time` of ``n_gpus`` GPUs of ``gpu`` at their achieved rates, all-reduces included."""
    return decode_step_time(model, gpu.achieved_flops * n_gpus, gpu.achieved_bandwidth * n_gpus, batch, sum_ctx, xp,
                            allreduce_time(model, gpu, n_gpus, batch, xp))


def prefill_flops(model: ModelSpec, tokens, cached=0.0):
    """FLOPs to prefill ``tokens`` new tokens after ``cached`` ones: 2N P + 2 n_layer d ((c+P)^2 - c^2)."""
    half_c1 = 0.5 * model.flops_per_token_per_ctx  # 2 n_layer d
    return model.flops_per_token * tokens + half_c1 * (tokens * tokens + 2.0 * cached * tokens)


ACTIVATION_RESERVE_GIB = 2.0  # default of llm.yaml: activation_reserve_gib (chosen; docs/references.md)


def kv_capacity_tokens(model: ModelSpec, gpu: GpuSpec, n_gpus: int = 1, utilization: float = 0.9,
                       activation_gib: float = ACTIVATION_RESERVE_GIB) -> float:
    """Tokens of KV cache that fit, as vLLM sizes it: (u x HBM - weights - activation reserve) / KV
    bytes per token, the reserve (vLLM's profiled activation peak + non-torch memory) per GPU
    (may be <= 0)."""
    usable = utilization * gpu.hbm_bytes * n_gpus - activation_gib * GIB * n_gpus
    return (usable - model.weight_bytes) / model.kv_bytes_per_token


def check_fits(model: ModelSpec, gpu: GpuSpec, n_gpus: int = 1, utilization: float = 0.9,
               activation_gib: float = ACTIVATION_RESERVE_GIB) -> float:
    """KV capacity in tokens; ConfigError naming the values when the weights leave no room for a
    single full context."""
    usable = utilization * gpu.hbm_bytes * n_gpus - activation_gib * GIB * n_gpus
    if model.weight_bytes >= usable:
        raise ConfigError(
            "model", model.name,
            f"a model whose weights fit in the GPU memory: {model.name} needs {model.weight_bytes / GB:.1f} GB of "
            f"weights but {n_gpus} x {gpu.name} gives {usable / GB:.1f} GB usable ({utilization:.0%} of "
            f"{n_gpus * gpu.hbm_bytes / GB:.1f} GB minus {activation_gib:g} GiB of activations per GPU); pick a "
            "larger gpu or raise substrate.gpus_per_model",
        )
    cap = kv_capacity_tokens(model, gpu, n_gpus, utilization, activation_gib)
    if cap < model.max_context:
        raise ConfigError(
            "model", model.name,
            f"a model that leaves KV room for one full context on {n_gpus} x {gpu.name}: "
            f"{cap:.0f} tokens of KV cache < max_context {model.max_context}",
        )
    return cap


def roofline_point(model: ModelSpec, gpu: GpuSpec, batch: int, context: float, n_gpus: int = 1,
                   power_state: str = "decode") -> dict:
    """The serving calculator: one fixed batch at a fixed context (every stream holds ``context``),
    at the achieved FLOP/s and bandwidth, all-reduces included on several GPUs."""
    f, bw = gpu.achieved_flops * n_gpus, gpu.achieved_bandwidth * n_gpus
    sum_ctx = batch * context
    comm = allreduce_time(model, gpu, n_gpus, batch)
    t = decode_step_time(model, f, bw, batch, sum_ctx, comm_s=comm)
    t_perfect = t - comm
    flops = decode_flops(model, batch, sum_ctx)
    nbytes = decode_bytes(model, sum_ctx)
    power = gpu.power(power_state) * n_gpus
    return {
        "step_time_s": t,
        "allreduce_time_s": comm,
        "perfect_scaling_step_time_s": t_perfect,
        "tokens_per_s": batch / t,
        "joules_per_token": power * t / batch,
        "power_w": power,
        "arithmetic_intensity_flop_per_byte": flops / nbytes,
        "ridge_flop_per_byte": f / bw,
        "memory_bound": bool(nbytes / bw >= flops / f),
        "attention_flop_share": model.flops_per_token_per_ctx * sum_ctx / flops,
        "hbm_bandwidth_utilization": nbytes / (gpu.bandwidth * n_gpus * t),
        "flops_utilization": flops / (gpu.peak_flops * n_gpus * t),
    }
