"""Scientific fidelity of the LLM preset (issue 11, round two): achieved rather than peak rates, a
utilisation-dependent power draw, the vLLM memory budget on 80 GiB, attention FLOPs counting both
QK^T and AV, and the tensor-parallel all-reduces. Ranges and sources: docs/references.md (LLM
serving)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim  # noqa: F401  (float64)
from _support import TISSUE
from sim.api import run
from sim.substrates.llm import kernels, specs
from sim.substrates.llm.build import build_llm, compose

GIB = 2**30


def spec(model="llama3_8b", gpu="h100"):
    cfg = compose([TISSUE, f"model={model}", f"gpu={gpu}"])
    return specs.model_spec(cfg), specs.gpu_spec(cfg)


def calculator(batch, context, *extra):
    return run(compose(["experiment=roofline", f"batch={batch}", f"context={context}", *extra])).summary


@pytest.fixture(scope="module")
def batch_1():
    return calculator(1, 1024)


@pytest.fixture(scope="module")
def batch_64():
    return calculator(64, 2048)


def test_batch_1_throughput_and_energy_in_measured_range(batch_1):
    s = batch_1
    # measured single-stream decode of 8B bf16 models runs at 60-80% of the HBM ceiling (Databricks
    # 2023 MBU; 77% for Llama-3.1-8B on A100, vLLM): 0.6-0.8 x 3.35 TB/s / 16.2 GB = 124-166 tok/s
    assert 110.0 <= s["output_tokens_per_s"] <= 170.0
    assert s["output_tokens_per_s"] < 3.35e12 / (16.06e9 + 1024 * 131072)  # below the peak-bandwidth roofline
    # idle-to-TDP power over that throughput bounds J/token at batch 1 to ~0.5-6 J; ~2.6 J/token
    # measured for a 7B model on H100 at batch 1 (docs/references.md)
    assert 2.0 <= s["energy_per_output_token_j"] <= 5.0
    assert s["output_tokens_per_s"] == pytest.approx(s["analytic_output_tokens_per_s"], rel=1e-9)
    assert s["energy_per_output_token_j"] == pytest.approx(s["engine_decode_state_energy_per_output_token_j"], rel=1e-9)
    assert s["hbm_bandwidth_utilization"] == pytest.approx(0.65, rel=1e-6)  # memory-bound: the achieved fraction


def test_batch_64_energy_in_ml_energy_range(batch_64):
    s = batch_64
    # ML.ENERGY leaderboard: Llama-3.1-8B on H100 at batch 64, 0.12 (vLLM 0.11) - 0.20 (vLLM 0.5.4) J/token
    assert 0.10 <= s["energy_per_output_token_j"] <= 0.25
    # peak-rate roofline gave ~6,450 tok/s, 25-65% above measured; 0.12-0.20 J/token at 400-700 W
    assert 3000.0 <= s["output_tokens_per_s"] <= 5500.0
    assert s["energy_per_output_token_j"] == pytest.approx(s["engine_decode_state_energy_per_output_token_j"], rel=1e-9)
    assert s["power_w"] == pytest.approx(75.0 + (700.0 - 75.0) * 0.65)  # idle + (TDP - idle) x utilisation
    at_tdp = calculator(64, 2048, "roofline.power_state=tdp")["energy_per_output_token_j"]
    assert at_tdp == pytest.approx(s["energy_per_output_token_j"] * 700.0 / s["power_w"], rel=1e-9)


def test_power_depends_on_utilisation():
    _, g = spec()
    assert g.tdp_w == 700.0 and g.power_idle_w == 75.0
    assert g.power_at(0.0) == 75.0 and g.power_at(1.0) == 700.0 and g.power_at(0.5) == pytest.approx(387.5)
    assert g.power("prefill") == pytest.approx(75.0 + 625.0 * g.compute_efficiency)
    assert g.power("decode") == pytest.approx(75.0 + 625.0 * g.bandwidth_efficiency)
    assert 0.5 <= g.compute_efficiency <= 0.7 and 0.6 <= g.bandwidth_efficiency <= 0.8


def test_kv_bytes_per_token_exact():
    for name, (layers, kv_heads, head_dim) in {"llama3_8b": (32, 8, 128), "llama3_70b": (80, 8, 128),
                                               "llama2_7b": (32, 32, 128)}.items():
        m, _ = spec(name)
        assert m.kv_bytes_per_token == 2 * layers * kv_heads * head_dim * 2


def test_80_gib_capacity_arithmetic():
    m, g = spec()
    assert g.hbm_bytes == 80 * GIB
    expected = (0.9 * 80 * GIB - 8.03e9 * 2 - 2.0 * GIB) / (128 * 1024)
    assert specs.kv_capacity_tokens(m, g) == pytest.approx(expected, rel=1e-12)
    assert 450_000 < expected < 452_000
    llm = build_llm(compose([TISSUE, "model=llama3_8b", "gpu=h100", "topology=single", "substrate=llm"]))
    assert llm.kv_capacity == math.floor(expected)
    # the reserve is a config value: no reserve gives back 2 GiB of KV
    llm0 = build_llm(compose([TISSUE, "model=llama3_8b", "gpu=h100", "topology=single", "substrate=llm",
                              "substrate.activation_reserve_gib=0"]))
    assert llm0.kv_capacity == math.floor(expected + 2.0 * GIB / (128 * 1024))


def test_attention_flops_count_qk_and_av():
    m, _ = spec()
    L = 4096.0
    assert specs.decode_flops(m, 1, L) - specs.decode_flops(m, 1, 0.0) == 4 * 32 * 4096 * L
    assert m.flops_per_token_per_ctx == 4 * m.n_layers * m.d_model
    P = 1000.0
    assert specs.prefill_flops(m, P) == pytest.approx(2 * m.n_params * P + 2 * 32 * 4096 * P * P, rel=1e-15)
    llm = build_llm(compose([TISSUE, "model=llama3_8b", "gpu=h100", "topology=single", "substrate=llm"]))
    assert float(kernels.prefill_flops(llm.params, P)) == pytest.approx(specs.prefill_flops(m, P), rel=1e-15)
    # the crossover where attention overtakes the weights over a whole chain: 2 c0 / c1 = N / (n_layer d)
    assert 2 * m.flops_per_token / m.flops_per_token_per_ctx == pytest.approx(8.03e9 / (32 * 4096))


@pytest.mark.parametrize("n_gpus", [4, 8])
def test_70b_tensor_parallel_pays_allreduce(n_gpus):
    m, g = spec("llama3_70b")
    for batch in (1, 64):
        p = specs.roofline_point(m, g, batch, 2048, n_gpus=n_gpus)
        ring = 2.0 * (n_gpus - 1) / n_gpus * batch * 8192 * 2 / 450e9
        t_ar = 2 * 80 * (ring + 5e-6)
        assert p["allreduce_time_s"] == pytest.approx(t_ar, rel=1e-12)
        assert p["step_time_s"] == pytest.approx(p["perfect_scaling_step_time_s"] + t_ar, rel=1e-12)
        assert p["step_time_s"] > p["perfect_scaling_step_time_s"]
    # doubling the GPUs halves the roofline part only: the all-reduces do not shrink
    p4, p8 = (specs.roofline_point(m, g, 1, 2048, n_gpus=n) for n in (4, 8))
    assert p8["perfect_scaling_step_time_s"] == pytest.approx(p4["perfect_scaling_step_time_s"] / 2, rel=1e-12)
    assert p8["tokens_per_s"] < 2 * p4["tokens_per_s"]


def test_70b_engine_reproduces_allreduce_on_4_gpus():
    s = calculator(8, 2048, "model=llama3_70b", "substrate.gpus_per_model=4")
    assert s["status"] == "ok"
    assert s["output_tokens_per_s"] == pytest.approx(s["analytic_output_tokens_per_s"], rel=1e-9)
    assert s["allreduce_time_s"] > 0
    assert s["step_time_s"] == pytest.approx(s["perfect_scaling_step_time_s"] + s["allreduce_time_s"], rel=1e-9)
    assert np.isfinite(s["energy_per_output_token_j"])
