"""The cascade: cost against length (biology linear, LLM approaching quadratic), agent loops,
memory modules and tool calls; the generic chain kernel against its plain-Python reference."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import sim  # noqa: F401  (float64)
from sim.api import run
from sim.core import chains as ck
from sim.substrates.llm.build import compose


@pytest.fixture(scope="module")
def cascade():
    return run(compose(["experiment=cascade"]))


def test_bio_chains_cost_linear(cascade):
    s = cascade.summary
    assert s["exponent_bio"] == pytest.approx(1.0, abs=0.05)
    assert s["bio_chain_cost_at_400_aa_molecules"] == pytest.approx(1600.0)  # 4 ATP per amino acid


def test_llm_exponent_approaches_two_for_long_contexts(cascade):
    s = cascade.summary
    assert s["exponent_llm_short"] == pytest.approx(1.0, abs=0.05)
    # inside the context window (1,000-8,192 tokens) the cost is still nearly linear
    assert 1.0 < s["exponent_llm_window"] < s["exponent_llm_local_at_window"] < 1.2
    assert s["exponent_llm_window_range_tokens"][1] <= s["llm_context_window_tokens"]
    # 1e6-1e7 tokens is beyond the window: an extrapolation, and reported as one
    assert 1.9 < s["exponent_llm_long"] < 2.0
    assert s["exponent_llm_long_extrapolated"] == s["exponent_llm_long"] and s["long_context_beyond_window"]
    assert "exponent_llm_long" in s["extrapolated_keys"] and "exponent_llm_window" not in s["extrapolated_keys"]
    series = cascade.dataset["series"].values
    length = cascade.dataset["length"].values[series == "llm"]
    cost = cascade.dataset["cost_per_chain"].values[series == "llm"]
    local = np.diff(np.log(cost)) / np.diff(np.log(length))
    assert np.all(np.diff(local) > 0) and local[-1] < 2.0  # rises monotonically towards 2


def test_memory_module_and_tools(cascade):
    s = cascade.summary
    assert s["exponent_llm_memory_long"] == pytest.approx(1.0, abs=0.1)  # capped context: linear again
    assert s["memory_cost_ratio_at_max_length"] < 0.1
    assert s["tools_cost_ratio_at_max_tool_length"] > 1.05  # retrieved tokens make every later token dearer
    assert s["exponent_llm_tools"] > s["exponent_llm_same_range_as_tools"]


def test_agent_loop_input_tokens_exact_and_memory_linear(cascade):
    s = cascade.summary
    T = np.array(s["loop_turns"], float)
    b, k = s["loop_b_tokens"], s["loop_k_tokens"]
    np.testing.assert_array_equal(s["loop_input_tokens"], T * b + k * T * (T - 1) / 2)
    assert s["exponent_loop"] > 1.5
    assert s["exponent_loop_memory"] == pytest.approx(1.0, abs=0.1)
    mem = np.array(s["loop_memory_input_tokens"])
    per_turn = np.diff(mem) / np.diff(T)
    assert per_turn.max() <= 3000 + k  # the history never exceeds the memory threshold + one turn


def test_cascade_dataset_dims(cascade):
    ds = cascade.dataset
    assert {"replicate", "time", "cell"} <= set(ds["chain_spent"].dims)


def test_protein_synthesis_chains():
    """~4 ATP/aa, 5 aa/s, mean length ~400 aa (geometric termination, p_stop = 1/400)."""
    n, slots = 1, 256
    chains, ledger = ck.empty(n, slots)
    p = ck.biology_params(1.0, init_rate=1.0)
    step = jax.jit(lambda c, l, s: ck.chain_step(c, l, p, jax.random.PRNGKey(0), s))
    for s in range(800):
        chains, ledger, _ = step(chains, ledger, s)
    led = jax.device_get(ledger)
    assert float(led.elongation_spent[0] / led.units[0]) == pytest.approx(4.0)
    # geometric lengths with censoring (chains still running at the end): the MLE of the mean
    # length is units made / chains terminated (finished chains alone are biased short)
    mean_len = float(led.units[0] / led.delivered[0])
    assert mean_len == pytest.approx(400.0, rel=0.1)
    assert float(led.units[0]) == pytest.approx(5.0 * 800 * 256, rel=0.05)  # 5 aa/s per ribosome
    assert led.delivered[0] > 200


def test_chain_kernel_matches_reference_with_budget_tools_memory():
    n, slots = 3, 8
    chains, ledger = ck.empty(n, slots)
    p = ck.biology_params(0.5, init_rate=0.2, init_cost=2.0, p_tool=0.01, tool_steps=3, r_tool=20.0,
                          mem_threshold=150.0, mem_cost=0.5, p_stop=1 / 100, n_max=500.0,
                          c1=np.array([0.0, 0.01, 0.02]))
    budget = np.array([1e9, 60.0, 30.0])
    key = jax.random.PRNGKey(3)
    step = jax.jit(lambda c, l, s: ck.chain_step(c, l, p, key, s, budget))
    a, b = (chains, ledger), (chains, ledger)
    spent_ok = True
    for s in range(200):
        c1, l1, sp = step(*a, s)
        a = (c1, l1)
        c2, l2, _ = ck.chain_step_reference(*b, p, key, s, budget)
        b = (c2, l2)
        spent_ok &= bool(np.all(np.asarray(sp) <= budget * (1 + 1e-12)))
    assert spent_ok  # the budget caps the spend
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), rtol=1e-9, atol=1e-12)
    led = b[1]
    assert all(np.sum(getattr(led, f)) > 0 for f in ("tool_calls", "compressions", "delivered", "initiated"))
    assert dataclasses.fields(led)
