"""Reliability of the LLM serving experiment: checkpoint/resume (also after SIGKILL), the numerical
guard naming step, model instance, quantity and process, and refusals of bad LLM config values.

Modelled on ``tests/test_reliability.py`` (the tissue run). The runs are small (3 model
instances on a ring, 16 chain slots, 400 steps of 20 ms) but stochastic and busy: Poisson
arrivals above the stability limit (queues overflow, requests are dropped), routing, tools,
agent loops, agentic hops and a memory module all act during them, so the PRNG stream and every
ledger matter for the bit-identity checks. The kill is deterministic: the child process sends
itself SIGKILL right after a chunk that was not checkpointed.
"""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import sim  # noqa: F401  (float64)
from _support import Stop as _Stop
from _support import KILL_BETWEEN_CHECKPOINTS, assert_same_results, run_child, run_entries
from _support import stop_after_checkpoint as _stop_after
from _support import fault_child_script, inject, with_fault
from sim import checkpoint
from sim.core import engine
from sim import substrates
from sim.api import run
from sim.app import EXIT_CONFIG, EXIT_NUMERICAL, execute, resume_run
from sim.errors import ConfigError, NumericalError
from sim.substrates.llm.build import build_llm, compose
from sim.pytree import replace

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    "experiment=serving", "topology=ring", "topology.n_cells=3", "replicates=2", "steps=400", "record_every=10",
    "chunk_records=5", "substrate.chain_slots=16", "substrate.queue_slots=32", "substrate.max_batch=12",
    "substrate.arrivals.rate_per_s=20", "substrate.tools.p_per_token=0.01", "substrate.agent.followup_prob=0.3",
    "substrate.agent.max_turns=3", "substrate.agent.hops=2", "substrate.memory.threshold_tokens=2000",
    "figures=false",
]
KILL_RUN = SMALL + ["checkpoint_every=2"]  # 8 chunks of 50 steps; checkpoints after chunks 2, 4, 6, 8
FAULT_RUN = SMALL[:-1] + ["steps=100", "chunk_records=1", "checkpoint_every=1", "figures=false"]  # chunks of 10 steps


def load(path) -> xr.Dataset:
    return xr.load_dataset(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted serving run of KILL_RUN (in-process): the yardstick for resumed runs."""
    out = tmp_path_factory.mktemp("llm_reference")
    assert execute(compose(KILL_RUN), out, quiet=True) == 0
    assert not (out / "checkpoint").exists()  # removed once the results hold everything
    s = json.loads((out / "summary.json").read_text())
    # the run exercises what the bit-identity is to cover
    assert s["dropped"] > 0 and s["routed"] > 0 and s["tool_calls"] > 0 and s["memory_compressions"] > 0
    assert load(out / "results.nc").sizes == {"replicate": 2, "time": 40, "cell": 3}
    return out


# ------------------------------------------------------------------------------ checkpoint / resume

def test_serving_sigkill_and_resume_is_bit_identical(tmp_path, reference):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(KILL_BETWEEN_CHECKPOINTS))
    run_dir = tmp_path / "run"
    killed = run_child([str(script), *KILL_RUN, f"hydra.run.dir={run_dir}"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run_dir / "results.nc").exists()
    ck = checkpoint.load(run_dir)
    assert ck.steps_done == 100 and ck.n_chunks == 2  # the checkpoint after chunks 1-2
    assert ck.config["experiment"]["kind"] == "serving"
    assert ck.records["kv_free"].shape == (2, 10, 3)
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == [
        "config.json", "records-0000000-0000002.npz", "state.npz"
    ]

    resumed = run_child(["-m", "sim", f"resume={run_dir}"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_results(reference, run_dir)
    assert not (run_dir / "checkpoint").exists()


def test_serving_resume_in_process_finished_checkpoint_and_refusals(monkeypatch, tmp_path, reference, capsys):
    for stop_at, name, done in ((6, "mid", 300), (8, "end", 400)):
        run_dir = tmp_path / name
        with monkeypatch.context() as m:
            _stop_after(m, stop_at)
            with pytest.raises(_Stop):
                execute(compose(KILL_RUN), run_dir, quiet=True)
        assert checkpoint.load(run_dir).steps_done == done
        assert resume_run(run_dir, quiet=True) == 0
        assert_same_results(reference, run_dir)
    # a checkpoint whose stored config no longer fits its state is refused, one line naming resume
    run_dir = tmp_path / "edited"
    with monkeypatch.context() as m:
        _stop_after(m, 2)
        with pytest.raises(_Stop):
            execute(compose(KILL_RUN), run_dir, quiet=True)
    cfg_file = run_dir / "checkpoint" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["substrate"]["chain_slots"] = 8
    cfg_file.write_text(json.dumps(cfg))
    capsys.readouterr()
    assert resume_run(run_dir, quiet=True) == EXIT_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: invalid config: resume=") and "a checkpoint of this model" in err[0]


def test_other_llm_experiments_still_refuse_checkpoints():
    for kind in ("roofline", "cascade"):
        for key, value in (("checkpoint_every", 2), ("resume", "/tmp/somewhere")):
            cfg = compose([f"experiment={kind}", f"{key}={value}"])
            with pytest.raises(ConfigError) as info:
                run(cfg)
            assert info.value.key == key and "only tissue, serving runs checkpoint and resume" in str(info.value)


# ------------------------------------------------------------------------------ numerical guard


@pytest.fixture
def clean_compiled():
    yield
    engine.clear_caches()


def _inject(monkeypatch, process: str, at_step: int, cell: int, change) -> None:
    """Register an LLM substrate whose ``process`` applies ``change(state, cell)`` at one step."""
    inject(monkeypatch, with_fault("llm", process, at_step, lambda s: change(s, cell)))


def _energy_drop(s, cell):  # the energy ledger of one model instance goes back (and below zero)
    return replace(s, ledger=replace(s.ledger, energy_j=s.ledger.energy_j.at[cell].set(-5.0)))


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:All-NaN slice")  # (a short run: no completions yet)
def test_bad_llm_value_stops_run_naming_step_cell_quantity_process(monkeypatch, clean_compiled, tmp_path):
    """(A NaN/Inf KV cache is named from the command line below, a broken KV balance further down.)"""
    process, step, cell, quantity = "admission", 52, 1, "energy_j"
    _inject(monkeypatch, process, step, cell, _energy_drop)
    code = execute(compose(FAULT_RUN), tmp_path, quiet=True)
    assert code == EXIT_NUMERICAL
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    got = (summary["failure_step"], summary["failure_cell"], summary["failure_quantity"], summary["failure_process"])
    assert got == (step, cell, quantity, process)
    assert summary["failure_replicate"] == 0
    reason = summary["reason"]
    for part in (f"step {step}", f"cell {cell}", f"quantity {quantity}", f"process {process}"):
        assert part in reason, reason
    # everything computed before the bad chunk is kept: chunks end at steps 10, 20, ...
    good = step // 10
    ds = load(tmp_path / "results.nc")
    assert ds.sizes["time"] == good
    np.testing.assert_allclose(ds["time"].values, np.arange(1, good + 1) * 10 * 0.02)
    assert np.isfinite(ds["kv_free"].values).all() and (ds["energy_j"].values >= 0).all()
    # the checkpoint of the failed run stays (for inspection); it holds the good chunks
    assert checkpoint.load(tmp_path).steps_done == good * 10


def test_chunk_check_names_the_kv_balance(monkeypatch, clean_compiled):
    """A process that books KV without a chain holding it (occupied + free != capacity, both still
    finite and >= 0) is named too, with the imbalance as the value."""

    def leak(s, cell):
        return replace(s, cells=replace(s.cells, kv_free=s.cells.kv_free.at[cell].add(-100.0)))

    _inject(monkeypatch, "tools", 14, 0, leak)
    llm = build_llm(compose(FAULT_RUN))
    res = engine.run(substrates.get("llm"), llm.state, llm.params, seed=llm.seed, steps=100, record_every=10, replicates=2,
                     chunk_records=1)
    err = res.error
    assert isinstance(err, NumericalError) and err.compartment == "model instance"
    assert (err.step, err.cell, err.quantity, err.process) == (14, 0, "kv_balance", "tools")
    assert err.value == pytest.approx(-100.0, abs=1e-6)
    assert res.steps_done == 10 and res.records["kv_free"].shape == (2, 1, 3)


NUMERICAL_CHILD_CHANGE = """
def change(s):
    return replace(s, cells=replace(s.cells, kv_free=s.cells.kv_free.at[1].set(jnp.inf)))
"""


def test_llm_numerical_failure_exit_code_3_from_the_command_line(tmp_path):
    script = fault_child_script(tmp_path / "child.py", "llm", "finish", 25, NUMERICAL_CHILD_CHANGE)
    out = tmp_path / "run"
    res = run_child([str(script), *FAULT_RUN, f"hydra.run.dir={out}"])
    assert res.returncode == EXIT_NUMERICAL, res.stderr
    line = "numerical failure at step 25, replicate 0, cell 1 (model instance), quantity kv_free, process finish"
    assert line in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failure_process"] == "finish"
    assert load(out / "results.nc").sizes["time"] == 2


# ------------------------------------------------------------------------------ config refusals

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


def test_first_replicate_is_that_replicate_of_the_ensemble(reference):
    """``first_replicate=1 replicates=1`` draws as replicate 1 of the two-replicate run (a sweep can
    split an ensemble across jobs): the same random events, the same numbers to round-off (the
    last bit may differ with the batch size, see sim/determinism.py)."""
    out = run(compose([a for a in SMALL if not a.startswith("replicates=")] + ["replicates=1", "first_replicate=1"]))
    assert out.summary["status"] == "ok" and out.summary["first_replicate"] == 1
    ds, ref = out.dataset, load(reference / "results.nc")
    assert list(ds["replicate"].values) == [1]
    for name in ref.data_vars:
        a, b = ds[name].values[0], ref[name].values[1]
        if name in ("queue_len", "batch", "decoding", "in_system", "arrived", "dropped", "completed", "turns_done",
                    "tool_calls", "compressions", "routed_out"):
            assert np.array_equal(a, b), name
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)
