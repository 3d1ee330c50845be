"""Division of labour among model instances (sim.substrates.llm.society, experiment=society):
specialists against generalists on the roofline, the hand-off threshold, agent topologies against
the published token multiples, the JAX accounting against the plain-Python reference, determinism
and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

import sim  # noqa: F401  (float64)
from sim.api import run
from sim.core.config import compose
from sim.errors import ConfigError
from sim.substrates.llm import society as so
from sim.substrates.llm import specs

SMALL = ["experiment=society", "society.sweep.kind_context_tokens=[100,1000,30000]",
         "society.sweep.handoff_tokens=[0,1000,100000]", "society.sweep.n_instances=[2,8]"]


@pytest.fixture(scope="module")
def setup():
    cfg = compose(["experiment=society"])
    return so.read_hardware(cfg), so.read_params(cfg)


def joules(hw, p, theta):
    return so.reference_society(hw, p, theta)["joules"]


def test_generalists_win_above_a_handoff_threshold(setup):
    hw, p = setup
    n = p.n_instances
    long_p = p.replace(kind_context_tokens=30000)
    for q in (p, long_p):
        thr = so.handoff_threshold(hw, q)
        assert 0 < thr < math.inf
        gen = joules(hw, q, [1.0] * n)
        assert joules(hw, q.replace(handoff_tokens=0.5 * thr), [0.0] * n) < gen  # cheap hand-offs: specialists
        assert joules(hw, q.replace(handoff_tokens=1.5 * thr), [0.0] * n) > gen  # dear hand-offs: one generalist
    # longer contexts make specialists worth dearer hand-offs; no misrouting, no threshold
    assert so.handoff_threshold(hw, long_p) > 3 * so.handoff_threshold(hw, p)
    assert so.handoff_threshold(hw, p.replace(p_miss=0.0)) == math.inf
    # the transport cost is what the hand-offs add: P + H tokens each, p_miss of the tasks
    spec = so.reference_society(hw, p, [0.0] * n)
    assert spec["handoff_prob"] == pytest.approx(p.p_miss)
    assert spec["handoff_tokens"] == pytest.approx(p.p_miss * (p.prompt_tokens + p.handoff_tokens))


def test_specialisation_pays_at_long_contexts_not_short(setup):
    hw, p = setup
    K, n = p.n_kinds, p.n_instances

    def gain(q):
        q = q.replace(p_miss=0.0)
        return joules(hw, q, [1.0] * q.n_instances) / joules(hw, q, [0.0] * q.n_instances)

    short, mid, long_ = (gain(p.replace(kind_context_tokens=c)) for c in (100, 4000, 30000))
    assert 1.0 < short < 1.1 < mid < long_ < K  # never more than the K-fold shorter context
    assert so.alpha_effective(short, K, n) < 1.1 and 1.8 < so.alpha_effective(long_, K, n) < 2.0
    # weight reads dominating (one stream per instance: 16 GB of weights per step against ~2 GB of
    # KV cache): the same 4,000-token kind contexts buy almost nothing
    single = dataclass_replace(hw, max_batch=1.0)
    assert so.decode_shares(single, 17000)["weight_read_share"] > 0.85
    q = p.replace(p_miss=0.0)
    g1 = joules(single, q, [1.0] * n) / joules(single, q, [0.0] * n)
    assert 1.0 < g1 < 1.15 < mid
    # N < K: each specialist owns K / N kinds, the gain shrinks to what the split leaves
    assert 1.0 < gain(p.replace(n_instances=2)) < mid
    assert gain(p.replace(n_instances=1)) == pytest.approx(1.0)


def dataclass_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_decode_cost_is_proportional_to_the_sequence_once_the_kv_cache_is_full(setup):
    """Analytic: with the batch set by the KV capacity (B = cap / L) a token costs
    L (W / cap + kv) / BW GPU-seconds, so its cost grows with context even where attention FLOPs
    are a small share."""
    hw, p = setup
    q = p.replace(context_cache_miss=0.0)
    for ctx in (4500.0, 16500.0):
        call = so._ref_call(hw, q, ctx, 1000.0, 200.0)
        L = ctx + 1000.0 + 100.0
        t_pf = specs.prefill_flops(hw.model, 1000.0, ctx) / hw.flops
        per_token = L * (hw.model.weight_bytes / hw.kv_capacity + hw.model.kv_bytes_per_token) / hw.gpu.achieved_bandwidth
        assert call["gpu_s"] == pytest.approx(t_pf + 200.0 * per_token, rel=1e-12)
        assert call["joules"] == pytest.approx(t_pf * hw.gpu.power_prefill_w + 200.0 * per_token * hw.gpu.power_decode_w,
                                               rel=1e-12)
    mix = so.reference_society(hw, p, [0.5] * p.n_instances)["joules"]
    assert joules(hw, p, [0.0] * p.n_instances) < mix < joules(hw, p, [1.0] * p.n_instances)
    assert so.specialization_index([0, 1] * 4) == pytest.approx(1.0) and so.specialization_index([0.3] * 8) == 0.0


def test_agent_topologies_against_the_published_multiples(setup):
    hw, p = setup
    t = so.reference_topologies(hw, p)
    tokens = {k: d["input_tokens"] + d["output_tokens"] for k, d in t.items()}
    # the single agent's input is the agent-loop formula of experiment=cascade over T + 1 calls
    b = p.base_context_tokens + p.kind_context_tokens + p.prompt_tokens
    k = p.step_output_tokens + p.tool_result_tokens
    calls = p.tool_calls + 1
    assert t["single_agent"]["input_tokens"] == calls * b + k * calls * (calls - 1) / 2
    sa = tokens["single_agent"] / tokens["chat"]
    mas = tokens["orchestrator_workers"] / tokens["chat"]
    prefill = t["orchestrator_workers"]["input_tokens"] / t["single_agent"]["input_tokens"]
    assert 2.0 <= sa <= 8.0  # ~4x (Anthropic 2025), within a factor 2
    assert 7.5 <= mas <= 30.0  # ~15x (Anthropic 2025), within a factor 2
    assert 4.0 <= prefill <= 220.0  # Gao et al. 2025
    assert tokens["orchestrator_workers"] > 3 * tokens["single_agent"]
    assert t["orchestrator_workers"]["joules"] > 3 * t["single_agent"]["joules"]
    # workers run in parallel: the latency counts one worker, not W
    assert t["orchestrator_workers"]["latency_s"] < p.workers * t["single_agent"]["latency_s"]
    assert t["orchestrator_workers"]["handoff_tokens"] == p.workers * (p.subtask_tokens + p.handoff_tokens + p.summary_tokens)


def test_jax_equals_the_reference(setup):
    hw, p = setup
    rng = np.random.default_rng(12)
    n_max = 9
    points, ns, thetas, vary = [], [], [], {f: [] for f in ("kind_context_tokens", "handoff_tokens", "p_miss",
                                                              "context_cache_miss", "handoff_latency_s")}
    for n in (1, 2, 3, 4, 5, 8, 9):
        theta = np.zeros(n_max)
        theta[:n] = rng.uniform(0, 1, n)
        q = p.replace(kind_context_tokens=float(rng.uniform(50, 20000)), handoff_tokens=float(rng.uniform(0, 20000)),
                      p_miss=float(rng.uniform(0, 0.5)), context_cache_miss=float(rng.uniform(0, 0.3)),
                      handoff_latency_s=float(rng.uniform(0, 0.2)))
        points.append((q, theta[:n]))
        ns.append(n)
        thetas.append(theta)
        for f in vary:
            vary[f].append(getattr(q, f))
    # the uniform clusters of a small grid, in the same (one compiled) call
    for theta in (0.0, 1.0, 0.3):
        for c in (100.0, 3000.0, 30000.0):
            for h in (0.0, 1000.0, 50000.0):
                for n in (2, 4, 8):
                    q = p.replace(kind_context_tokens=c, handoff_tokens=h)
                    points.append((q, [theta] * n))
                    ns.append(n)
                    thetas.append(np.full(n_max, theta))
                    for f in vary:
                        vary[f].append(getattr(q, f))
    got = so.society_points(hw, p, np.array(thetas), ns, **vary)
    for i, (q, theta) in enumerate(points):
        ref = so.reference_society(hw, q, theta)
        for name, v in ref.items():
            assert got[name][i] == pytest.approx(v, rel=1e-9, abs=1e-12), (i, name)
    contexts, handoffs = [100.0, 3000.0, 30000.0], [0.0, 1000.0, 50000.0]
    q = p.replace(context_cache_miss=0.2)
    tops = so.topology_grid(hw, q, contexts, handoffs)
    for a, c in enumerate(contexts):
        for b, h in enumerate(handoffs):
            ref = so.reference_topologies(hw, q.replace(kind_context_tokens=c, handoff_tokens=h))
            for top, d in ref.items():
                for name, v in d.items():
                    assert tops[top][name][a, b] == pytest.approx(v, rel=1e-9, abs=1e-12), (top, c, h, name)


def test_experiment_runs_and_is_deterministic(tmp_path):
    a = run(compose(SMALL))
    b = run(compose(SMALL))
    xr.testing.assert_identical(a.dataset, b.dataset)
    assert a.summary == b.summary
    s, ds = a.summary, a.dataset
    assert s["status"] == "ok" and s["specialization_gain"] > 1.0
    assert s["gain_longest_context"] > 3.0 > 1.1 > s["gain_shortest_context"]
    net = ds["specialization_gain_net"].sel(n_instances=8)
    assert float(net.sel(context_per_kind=30000, handoff_size=0)) > 1.0  # specialists win
    assert float(net.sel(context_per_kind=30000, handoff_size=100000)) < 1.0  # generalists win
    assert bool(ds["fits"].all()) and bool(ds["beyond_window"].any())
    a.files(tmp_path)
    import pandas as pd

    df = pd.read_parquet(tmp_path / "society.parquet")
    assert set(df.topology) == set(ds["topology"].values)
    chat = df[df.topology == "chat"]
    np.testing.assert_allclose(chat.tokens_vs_chat, 1.0)
    jax_point = so.society_grid(so.read_hardware(compose(SMALL)), so.read_params(compose(SMALL)), [4000.0], [1000.0],
                                [8], 0.0)
    assert float(jax_point["joules"][0, 0, 0]) == pytest.approx(s["specialists_energy_j"], rel=1e-9)


@pytest.mark.parametrize("override, key", [
    ("society.p_miss=1.5", "society.p_miss"),
    ("society.n_kinds=0", "society.n_kinds"),
    ("society.prompt_tokens=1.5", "society.prompt_tokens"),
    ("society.usd_per_gpu_hour=0", "society.usd_per_gpu_hour"),
    ("society.agent.workers=2.5", "society.agent.workers"),
    ("society.theta=[0.1,0.2]", "society.theta"),
    ("society.theta=[0,0,0,0,0,0,0,2]", "society.theta"),
    ("society.sweep.n_instances=[0,4]", "society.sweep.n_instances"),
    ("society.sweep.handoff_tokens=[-1]", "society.sweep.handoff_tokens"),
    ("society.kind_context_tokens=200000", "society.kind_context_tokens"),  # 4 kinds x 200k > the KV cache
    ("society.engine.enabled=yes", "society.engine.enabled"),
    ("society.engine.rates_per_s=[0]", "society.engine.rates_per_s"),
    ("society.engine.steps=0", "society.engine.steps"),
    # the engine's generalists cache 500 + 4 x 120k tokens: more than the KV cache less one context
    ("society.engine.kind_context_tokens=[120000]", "society.engine.kind_context_tokens"),
])
def test_bad_values_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        run(compose(["experiment=society", "society.engine.enabled=true", override]))
    assert info.value.key == key, str(info.value)


def test_engine_mode_runs_the_cluster_with_queues(tmp_path):
    """``society.engine.enabled``: the same cluster on the serving engine (sim.substrates.llm.kinds;
    the physics is tested in tests/test_llm_kinds.py): its table, summary keys and figure."""
    out = run(compose(SMALL + [
        "society.engine.enabled=true", "society.engine.kind_context_tokens=[300,30000]",
        "society.engine.rates_per_s=[0.5]", "society.engine.steps=200", "substrate.chain_slots=32",
        "substrate.max_batch=32", "substrate.queue_slots=64"]))
    s = out.summary
    assert s["engine_errors"] == 0 and s["engine_window_s"] == pytest.approx(10.0)
    assert np.shape(s["engine_specialization_gain"]) == (2, 1)
    assert s["engine_generalists_handoff_tokens_per_task"] == [[0.0], [0.0]]
    assert all(x > 0 for row in s["engine_specialists_handoff_tokens_per_task"] for x in row)
    assert s["engine_specialists_static_tokens_per_task"][0][0] == pytest.approx(1020 + 129 + 0.1 * (1020 + 1000))
    assert "engine c = 30000" in out.report
    out.files(tmp_path)
    import pandas as pd

    table = pd.read_parquet(tmp_path / "society_engine.parquet")
    assert len(table) == 4 and set(table.arrangement) == {"specialists", "generalists"}
    paths = out.figures(tmp_path)
    assert (tmp_path / "figures" / "society_engine.png").exists() and len(paths) == 3
