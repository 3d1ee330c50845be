"""Refusals of bad LLM serving values (``experiment=serving``): a warm-up outside [0, 1), a run
without arrivals, a negative or non-numeric rate, a Poisson truncation that would lose arrivals, a
probability above 1, a model or GPU value out of range, weights that do not fit the GPU, a KV cache
smaller than one full context, a flag that is not a boolean, a substrate other than llm, and several
at once: one line each naming its key, in order, exit 2, nothing run. (What every substrate's numbers
may be is declared and tested in tests/test_refusals_rules.py.)"""

from __future__ import annotations

import json

import pytest

from _support import run_entries
from sim.app import EXIT_CONFIG, execute
from sim.core.config import compose

# (overrides, keys named, one line each, in order)
REFUSALS = {
    "warmup": (["serving.warmup_fraction=1.5"], ["serving.warmup_fraction"]),
    "warmup_type": (["serving.warmup_fraction=soon"], ["serving.warmup_fraction"]),
    "no_arrivals": (["substrate.arrivals.rate_per_s=0"], ["substrate.arrivals.rate_per_s"]),
    "negative_rate": (["substrate.arrivals.rate_per_s=-2"], ["substrate.arrivals.rate_per_s"]),
    "rate_type": (["substrate.arrivals.rate_per_s=lots"], ["substrate.arrivals.rate_per_s"]),
    "poisson_truncation": (["substrate.arrivals.rate_per_s=5000"], ["substrate.arrivals.max_per_step"]),
    "probability": (["substrate.tools.p_per_token=2"], ["substrate.tools.p_per_token"]),
    "model_value": (["model.n_layers=0"], ["model.n_layers"]),
    "gpu_value": (["gpu.hbm_gb=-80"], ["gpu.hbm_gb"]),
    "weights_do_not_fit": (["model=llama3_70b", "gpu=a100"], ["model"]),
    "cache_below_one_context": (["substrate.kv_capacity_tokens=4000"], ["substrate.kv_capacity_tokens"]),
    "flag": (["substrate.routing=3"], ["substrate.routing"]),
    "not_llm": (["substrate=bio"], ["substrate"]),
    "several": (
        ["substrate.agent.hops=0", "substrate.memory.factor=1", "steps=-10", "serving.warmup_fraction=-1"],
        ["steps", "substrate.memory.factor", "substrate.agent.hops", "serving.warmup_fraction"],
    ),
}


def _refusal_args(name):
    return ["experiment=serving", "steps=400", "record_every=10", "replicates=1", "figures=false", *REFUSALS[name][0]]


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_bad_llm_values_are_refused_one_line_each(tmp_path, capsys, name):
    capsys.readouterr()
    assert execute(compose(_refusal_args(name)), tmp_path, quiet=True) == EXIT_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    keys = REFUSALS[name][1]
    assert len(err) == len(keys), err
    for line, key in zip(err, keys):
        assert line.startswith(f"error: invalid config: {key}="), err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "invalid config" in summary["reason"]
    assert not (tmp_path / "results.nc").exists()


def test_bad_llm_values_exit_code_2_from_the_command_line(tmp_path):
    cases = {name: _refusal_args(name) + [f"hydra.run.dir={tmp_path}/{name}"]
             for name in ("warmup", "model_value", "several")}
    cases["model_name"] = ["experiment=serving", "model=gpt5", f"hydra.run.dir={tmp_path}/model_name"]
    cases["gpu_name"] = ["experiment=serving", "gpu=tpu", f"hydra.run.dir={tmp_path}/gpu_name"]
    got = run_entries(cases, tmp_path, timeout=180)
    expected = {name: REFUSALS[name][1] for name in ("warmup", "model_value", "several")}
    expected.update(model_name=["model"], gpu_name=["gpu"])
    for name, keys in expected.items():
        assert got[name]["code"] == EXIT_CONFIG, (name, got[name])
        lines = got[name]["stderr"].strip().splitlines()
        assert [ln.split("=", 1)[0] for ln in lines] == [f"error: invalid config: {k}" for k in keys], (name, lines)
        assert "Traceback" not in got[name]["stderr"]
