"""Serving calculator and roofline against docs/references.md (LLM serving), and the refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import sim  # noqa: F401  (float64)
from _support import TISSUE
from sim.api import run
from sim.errors import ConfigError
from sim.substrates.llm import specs
from sim.substrates.llm.build import compose

ROOT = Path(__file__).resolve().parents[1]


def spec(model="llama3_8b", gpu="h100"):
    cfg = compose([TISSUE, f"model={model}", f"gpu={gpu}"])
    return specs.model_spec(cfg), specs.gpu_spec(cfg)


def calculator(batch, context, *extra):
    return run(compose(["experiment=roofline", f"batch={batch}", f"context={context}", *extra])).summary


def test_model_numbers_match_references():
    m, g = spec()
    assert m.kv_bytes_per_token == 128 * 1024  # Llama-3-8B 128 KiB (Vidur)
    assert spec("llama3_70b")[0].kv_bytes_per_token == 320 * 1024
    assert spec("llama2_7b")[0].kv_bytes_per_token == 512 * 1024
    assert g.peak_flops == pytest.approx(989e12) and g.bandwidth == pytest.approx(3.35e12)
    # busy states draw idle + (TDP - idle) x the achieved fraction of peak (0.65 bandwidth, 0.6 FLOP/s)
    assert g.power("decode") == pytest.approx(481.25) and g.power("idle") == 75 and g.power("prefill") == 450


def test_kv_capacity_llama3_8b_80gb():
    m, g = spec()
    # (0.9 x 80 GiB - 16.06 GB of weights - 2 GiB of activations) / 128 KiB
    assert specs.kv_capacity_tokens(m, g) == pytest.approx(451e3, rel=0.01)
    m, g = spec(gpu="h200")
    assert specs.kv_capacity_tokens(m, g) == pytest.approx(829e3, rel=0.01)


# at the achieved 65% of peak HBM bandwidth (docs/references.md): 206 -> 133 tok/s, 4,360 -> 2,830 tok/s
@pytest.mark.parametrize(("batch", "context", "tokens_per_s", "step_s"), [(1, 2048, 133, 7.5e-3), (32, 2048, 2830, 11.3e-3)])
def test_roofline_throughput_engine_and_analytic(batch, context, tokens_per_s, step_s):
    s = calculator(batch, context)
    assert s["status"] == "ok"
    assert s["output_tokens_per_s"] == pytest.approx(tokens_per_s, rel=0.15)
    assert s["step_time_s"] == pytest.approx(step_s, rel=0.15)
    # the engine's measured throughput is the closed-form roofline
    assert s["output_tokens_per_s"] == pytest.approx(s["analytic_output_tokens_per_s"], rel=1e-9)
    assert s["memory_bound"] is True


def test_joules_per_token_batch_64_decode_state():
    s = calculator(64, 2048)
    assert 0.10 <= s["energy_per_output_token_j"] <= 0.25  # ML.ENERGY: 0.12-0.20 J/token measured
    assert s["energy_per_output_token_j"] == pytest.approx(s["engine_decode_state_energy_per_output_token_j"], rel=1e-9)
    at_tdp = calculator(64, 2048, "roofline.power_state=tdp")["energy_per_output_token_j"]
    assert at_tdp == pytest.approx(s["energy_per_output_token_j"] * 700 / 481.25, rel=1e-9)


def test_seventy_b_fits_on_two_gpus():
    m, g = spec("llama3_70b")
    cap = specs.check_fits(m, g, n_gpus=2)
    assert cap > m.max_context
    p = specs.roofline_point(m, g, 1, 2048, n_gpus=2)
    assert 10 < p["tokens_per_s"] < 60  # weights 141 GB over 0.65 x 6.7 TB/s, plus the all-reduces


def test_refuses_weights_that_do_not_fit():
    with pytest.raises(ConfigError) as exc:
        run(compose(["experiment=roofline", "model=llama3_70b", "gpu=h100"]))
    msg = str(exc.value)
    assert "llama3_70b" in msg and "141.1 GB" in msg and "75.2 GB" in msg  # 0.9 x 80 GiB - 2 GiB


def test_refuses_batch_beyond_kv_cache():
    with pytest.raises(ConfigError) as exc:
        run(compose(["experiment=roofline", "batch=512", "context=2048"]))
    msg = str(exc.value)
    assert exc.value.key == "batch" and "512 x 2048" in msg and "450,912" in msg


def test_cli_refusal_exits_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "experiment=roofline", "model=llama3_70b", "gpu=h100",
         f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "llama3_70b" in lines[0] and "GB" in lines[0]
