"""The LLM preset on Mesa agents: ``LLMCurrencyModel`` with the JAX backend and the plain-Python
(agent-by-agent) backend agree in float64 with decode streams, tools, memory modules, routing,
agent loops and hops active; the DataCollector and AgentSet queries work on both."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import sim  # noqa: F401  (float64)
from _support import llm_busy
from sim.substrates.llm.build import build_llm, compose
from sim.substrates.llm.reference import ReferenceLLM
from sim.mesa_model import (
    DecodeStreamAgent,
    GPUAgent,
    LLMCurrencyModel,
    MemoryAgent,
    ModelInstanceAgent,
    ToolAgent,
)

RUN, STEPS = 120, 30  # one run(RUN) (a lax.scan on JAX), then STEPS single step() calls
OVERRIDES = llm_busy(n_cells=4, slots=6, batch=5, kv_tokens=2500, memory_tokens=500, seed=11)


def _advance(m):
    m.run(RUN)
    for _ in range(STEPS):
        m.step()
    return m


@pytest.fixture(scope="module")
def cfg():
    return compose(OVERRIDES)


@pytest.fixture(scope="module")
def models(cfg):
    jx = _advance(LLMCurrencyModel(cfg, backend="jax", replicate=1))
    ms = _advance(LLMCurrencyModel(cfg, backend="mesa", replicate=1, shuffle=True))
    return jx, ms


def _compare(a, b, tol=1e-9):
    worst = 0.0
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        name = jax.tree_util.keystr(path)
        assert x.shape == y.shape, name
        if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
            assert np.array_equal(x, y), name
        else:
            err = np.abs(x - y) / np.maximum(np.abs(y), 1.0)
            assert err.max(initial=0.0) < tol, (name, err.max())
            worst = max(worst, float(err.max(initial=0.0)))
    return worst


def test_backends_agree(models):
    jx, ms = models
    assert jx.steps_taken == ms.steps_taken == RUN + STEPS
    assert int(jx.state.step) == int(ms.state.step) == RUN + STEPS
    assert jax.tree_util.tree_structure(jx.state) == jax.tree_util.tree_structure(ms.state)
    _compare(jx.state, ms.state)
    # the agents' attributes agree too (instances, streams, GPUs, tools, memory)
    for kind, attrs in (
        (ModelInstanceAgent, ("kv_free", "kv_occupied", "debt_s", "queue_len", "batch", "in_system", "tokens_out")),
        (DecodeStreamAgent, ("active", "base", "out", "context", "target", "tool_wait", "turn", "hop", "born")),
        (GPUAgent, ("alive", "power_state")),
        (ToolAgent, ("tool_calls", "tool_tokens", "waiting")),
        (MemoryAgent, ("compressions", "tokens_removed", "flops")),
    ):
        a, b = jx.agents_by_type[kind], ms.agents_by_type[kind]
        for attr in attrs:
            x, y = a.get(attr), b.get(attr)
            if isinstance(x[0], float):
                np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9, err_msg=f"{kind.__name__}.{attr}")
            else:
                assert x == y, f"{kind.__name__}.{attr}"


def test_mesa_backend_is_the_reference(cfg, models):
    """The agent-stepped backend (shuffled call order) reproduces ReferenceLLM.step exactly."""
    _, ms = models
    ref = ReferenceLLM(build_llm(cfg), replicate=1)
    for _ in range(RUN + STEPS):
        ref.step()
    assert _compare(ms.state, ref.state(), tol=1e-15) == 0.0


def test_every_process_ran(models):
    _, ms = models
    led = ms.state.ledger
    for name in ("tool_calls", "tool_tokens", "compressions", "routed_out", "routed_in", "handoffs",
                 "dropped", "completed", "admitted"):
        assert np.sum(getattr(led, name)) > 0, name
    assert np.sum(led.turns_done) > np.sum(led.completed)  # follow-up turns happened
    # the KV cache balances on every instance (agents' view)
    for m in models:
        for h in m.instance_agents:
            assert h.kv_free + h.kv_occupied == pytest.approx(h.kv_capacity, rel=1e-12)
            assert h.kv_free >= -1e-9
            assert h.kv_occupied == pytest.approx(sum(s.context for s in h.members["decode_stream"]), rel=1e-12)
        assert sum(t.tool_calls for t in m.tool_agents) == np.sum(led.tool_calls)
        assert sum(k.compressions for k in m.memory_agents) == np.sum(led.compressions)


def test_datacollector_and_agentsets(models):
    jx, ms = models
    dfs = [m.datacollector.get_model_vars_dataframe() for m in models]
    assert len(dfs[0]) == len(dfs[1]) == 2 + STEPS  # construction, end of run(), each step()
    for col in ("tokens_out", "kv_occupied", "in_system", "completed", "tool_calls"):
        np.testing.assert_allclose(dfs[0][col].to_numpy(), dfs[1][col].to_numpy(), rtol=1e-9, err_msg=col)
    assert dfs[0]["tokens_out"].iloc[-1] > dfs[0]["tokens_out"].iloc[0] == 0
    assert (dfs[0]["kv_occupied"] > 0).any() and (dfs[0]["in_system"] > 0).any()
    inst = [m.datacollector.get_agenttype_vars_dataframe(ModelInstanceAgent) for m in models]
    np.testing.assert_allclose(inst[0]["kv_free"].to_numpy(), inst[1]["kv_free"].to_numpy(), rtol=1e-9)

    for m in models:
        streams = m.agents_by_type[DecodeStreamAgent]
        assert len(streams) == m.n_cells * m.n_stream_slots == 24
        assert len(m.agents_by_type[GPUAgent]) == m.n_cells * m.n_gpu_slots
        active = streams.select(lambda a: a.active)
        assert len(active) == int(m.state.chains.active.sum())
        by_cell = streams.groupby("cell_index")
        assert sorted(by_cell.groups) == list(range(m.n_cells))
        occ = by_cell.agg("context", sum)
        np.testing.assert_allclose([occ[i] for i in range(m.n_cells)],
                                   [h.kv_occupied for h in m.instance_agents], rtol=1e-12)
        states = m.agents_by_type[GPUAgent].groupby("power_state").count()
        assert sum(states.values()) == m.n_cells * m.n_gpu_slots
        # instances sit on the tissue's Network space (a ring: two neighbours each)
        for h in m.instance_agents:
            assert h.cell in m.space.all_cells and len(h.cell.neighborhood) == 2
            assert h in h.cell.agents

    # same selections on both backends
    def busy(m):
        return sorted((a.cell_index, a.slot) for a in m.agents_by_type[DecodeStreamAgent].select(
            lambda a: a.waiting_for_tool))
    assert busy(jx) == busy(ms)


def test_bad_backend(cfg):
    from sim.errors import ConfigError

    with pytest.raises(ConfigError):
        LLMCurrencyModel(cfg, backend="torch")
    with pytest.raises(TypeError):
        LLMCurrencyModel()
