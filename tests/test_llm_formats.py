"""Message formats between model instances (sim/substrates/llm/formats.py): the LLM side of
standardisation.

- the cost table comes from the roofline (prefill FLOPs, decode step, KV room), not constants: a
  matched KV cache prefills nothing, a mismatch re-prefills, text formats differ only in tokens,
  storage costs vanish without staged states;
- the jitted, vmapped economy equals the plain-Python reference bit for bit;
- formats that cost the same and convert for free stay mixed; with a full re-prefill on a
  mismatch one of them takes over a complete graph; the format with the lowest total cost wins
  when formats differ in storage cost (and with the shipped formats: the KV cache);
- experiment=standardization's ``llm`` option: dataset, table, summary, report;
- bad options are refused with the key, the value and what is allowed.
"""

import jax
import networkx as nx
import numpy as np
import pytest

import sim  # noqa: F401  (float64 everywhere)
from sim import rng
from sim.core.config import compose
from sim.core.kiyotaki_wright import edges_of
from sim.errors import ConfigError
from sim.experiments import standardization as std
from sim.substrates.llm import formats as fm
from sim.substrates.llm import specs

jax.config.update("jax_enable_x64", True)

# every emergence run: 24 instances on a complete graph, 4 formats, 2 conversion costs x 6 replicates
# of the adaptive cluster, 1000 rounds; the experiment test runs 2 costs x 3 modes x 2 replicates on
# 24 instances: 12 rows of one shape, one compilation for all of them
N, ROUNDS, REPLICATES = 24, 1000, 6
COMPLETE = nx.complete_graph(N)


@pytest.fixture(scope="module")
def cfg():
    return compose(["experiment=standardization"])


@pytest.fixture(scope="module")
def hw(cfg):
    return fm.hardware(cfg)


def kv_format(name, multiple=1.0, hw=None):
    """A KV-cache format holding ``multiple`` x the model's KV bytes per token while staged."""
    return {"name": name, "state": "kv_cache", "token_factor": 1.0,
            "bytes_per_token": float(hw.model.kv_bytes_per_token) * multiple}


def emergence(hw, formats, costs, seed=1, **extra):
    opts = fm.read_config({"formats": formats, "rounds": ROUNDS, **extra})
    res = fm.run(COMPLETE, opts, hw, conversion_costs=costs, replicates=REPLICATES, modes=("adaptive",), seed=seed)
    out = fm.outcomes(res)
    return {k: (v[:, 0] if isinstance(v, np.ndarray) else v) for k, v in out.items()}, res


# ------------------------------------------------------------------------------ costs


def test_costs_come_from_the_roofline(hw):
    opts = fm.read_config(None)
    t = fm.cost_table(hw, opts, 1.0)
    names = fm.format_names(opts)
    a, b, emb, kv = (names.index(n) for n in ("text_a", "text_b", "embedding", "kv_cache"))
    m, h, c0 = hw.model, opts["handoff_tokens"], opts["context_tokens"]
    prefill = specs.prefill_flops(m, h, c0) / hw.flops * hw.power_prefill_w
    assert t["prefill"][a] == pytest.approx(prefill, rel=1e-12)
    assert t["tokens"][b] == pytest.approx(h / 0.85, rel=1e-3)  # Llama 2's tokenizer: ~1/0.85 the tokens
    assert t["take_in"][kv] == 0 and t["recv_tokens"][kv, kv] == 0  # a matched KV cache prefills nothing
    assert 0 < t["take_in"][emb] < 0.05 * t["prefill"][emb]  # hidden states: only K and V are recomputed
    # a mismatch re-prefills everything; between two text formats it costs nothing extra
    assert t["recv"][a, kv] - t["recv"][kv, kv] == pytest.approx(t["prefill"][kv], abs=1e-6)
    assert t["recv"][b, a] == t["recv"][a, a] and t["recv_tokens"][kv, a] == h
    assert t["bytes_per_token"][kv] == m.kv_bytes_per_token
    # storage: text's token IDs cost nothing measurable; KV and hidden states shrink the batch
    assert t["send"][a] == 0 and 0 < t["send"][kv] < t["send"][emb]
    assert t["batch"][emb] < t["batch"][kv] < t["batch_unstaged"][kv] == hw.max_batch
    free = fm.cost_table(hw, fm.read_config({"staged_per_sequence": 0}), 1.0)
    assert np.all(free["send"] == 0)
    # conversion cost 0: a mismatch costs what the receiver's own format costs
    np.testing.assert_array_equal(fm.cost_table(hw, opts, 0.0)["recv"], np.broadcast_to(np.diag(t["recv"]), (4, 4)))
    assert names[t["cheapest"]] == "kv_cache"
    # every cost is a multiple of the quantum: sums are exact in any order
    for key in ("send", "recv", "recv_tokens"):
        assert np.all(np.asarray(t[key]) / fm.QUANTUM == np.round(np.asarray(t[key]) / fm.QUANTUM))


# ------------------------------------------------------------------------------ JAX = reference


def test_jax_matches_the_plain_python_reference_exactly(hw):
    """200 rounds (one compiled scan, the shape of the emergence runs: no extra compilation) on a
    small world with one isolated instance, brisk revisions and mutation: formats, payoffs, switch
    counts and per-round records of two replicates equal the reference bit for bit."""
    graph = nx.connected_watts_strogatz_graph(N - 1, 4, 0.3, seed=1)
    graph.add_node(N - 1)
    src, dst, n = edges_of(graph)
    opts = fm.read_config({"rate": 1.0, "mutation": 0.1, "selection": 0.05, "payoff_window": 4})
    table = fm.cost_table(hw, opts, 0.7)
    keys = rng.replicate_keys(5, 2 * REPLICATES)
    fmt0 = np.asarray(jax.vmap(fm.initial_formats, in_axes=(0, None, None))(keys, n, 4))
    params = fm.make_params(src, dst, n, table, opts, index_size=2 * COMPLETE.number_of_edges() + 1)
    final, rec = fm.run_rows(fmt0, fm.stack_rows([params] * len(keys)), keys, fm.CHUNK)
    final, rec = jax.device_get(final), jax.device_get(rec)
    assert int(np.sum(final.switches[:2])) > 100 and len(set(fmt0[0].tolist())) > 1
    for r in range(2):
        ref = fm.reference_run(params, keys[r], fmt0[r], fm.CHUNK)
        got = ref.state()
        np.testing.assert_array_equal(final.fmt[r], got.fmt)
        np.testing.assert_array_equal(final.payoff[r], got.payoff)
        np.testing.assert_array_equal(final.switches[r], got.switches)
        assert int(final.step[r]) == int(got.step) == fm.CHUNK
        for key in ("counts", "joules", "tokens"):
            np.testing.assert_array_equal(rec[key][r], np.array([x[key] for x in ref.records]), err_msg=key)
        assert got.payoff[N - 1] == 0.0  # the isolated instance never hands off


# ------------------------------------------------------------------------------ emergence


def test_interchangeable_formats_stay_mixed_and_costly_conversion_standardises(hw):
    """Four KV formats of equal cost (say, incompatible layouts): with conversion free they are
    neutral and stay mixed at the mutation-drift balance; when a mismatch re-prefills the whole
    hand-over, one of them takes over the complete graph."""
    same = [kv_format(f"kv_{k}", 1.0, hw) for k in "abcd"]
    out, res = emergence(hw, same, [0.0, 1.0], mutation=0.05)
    h = out["herfindahl"]
    assert h[0].mean() < 0.55 and (out["dominant_share_end"][0] >= 0.9).mean() <= 1 / 6
    assert (out["dominant_share_end"][1] >= 0.9).mean() >= 5 / 6 and h[1].mean() > h[0].mean() + 0.3
    # the cluster pays for the mixed start and ends near the matched cost
    matched = res["tables"][1]["task"][0, 0]
    assert out["joules"][1].mean() < 1.2 * matched < res["joules"][1, 0][:, :5].mean()


def test_the_format_with_the_lowest_total_cost_wins(hw):
    """Formats that differ only in storage (1, 2, 4, 8 x the KV bytes staged): the cheapest wins when
    conversion is cheap; with the shipped formats and a full re-prefill, the KV cache wins."""
    storage = [kv_format(f"kv_x{m}", m, hw) for m in (1, 2, 4, 8)]
    out, res = emergence(hw, storage, [0.0, 0.3], mutation=0.02)
    assert np.all(np.diff(res["tables"][0]["send"]) > 0)
    assert (out["winner"] == 0).mean(-1).min() >= 5 / 6
    shipped, res = emergence(hw, [dict(f) for f in fm.DEFAULT_FORMATS], [0.0, 1.0], mutation=0.02)
    kv = fm.format_names(fm.read_config(None)).index("kv_cache")
    assert (shipped["winner"][0] == kv).mean() == 1 and (shipped["winner"][1] == kv).mean() >= 4 / 6


# ------------------------------------------------------------------------------ experiment=standardization


def test_standardization_runs_the_llm_economy(cfg, tmp_path):
    from sim.io import write_netcdf

    small = compose(["experiment=standardization", "standardization.llm=true", f"standardization.n_cells={N}",
                     "standardization.replicates=2", "standardization.topologies=[ring,complete]",
                     "standardization.conversion_costs=[0,0.9]", f"standardization.llm_formats.rounds={ROUNDS}"])
    opts = std.read_options(small)
    assert opts["llm"] and not std.read_options(cfg)["llm"]
    ds = std._llm(small, opts)
    assert ds["llm_herfindahl"].dims == ("topology", "conversion_cost")
    assert ds["llm_joules_per_handoff"].dims == ("topology", "conversion_cost", "mode")
    assert ((ds["llm_herfindahl"] >= 0.25 - 1e-12) & (ds["llm_herfindahl"] <= 1)).all()
    j = ds["llm_joules_per_handoff"]
    # forced onto the cheapest format the cluster pays its matched cost exactly; forced mixed, more
    cheapest = float(np.min(np.diagonal(ds["llm_task_joules"].values[0])))
    np.testing.assert_allclose(j.sel(mode="one"), cheapest, rtol=1e-12)
    assert (j.sel(mode="mixed") > j.sel(mode="one")).all()
    s = fm.summary(ds)
    assert s["llm_cheapest_format"] == "kv_cache" and "llm_ring_herfindahl_at_highest_cost" in s
    table = fm.table(ds)
    assert len(table) == 4 and {"joules_per_handoff_adaptive", "wins_kv_cache"} <= set(table.columns)
    lines = fm.report(ds, 1.0)
    assert any("kv_cache" in line for line in lines)
    write_netcdf(tmp_path / "llm_formats.nc", ds)
    assert (tmp_path / "llm_formats.nc").stat().st_size > 0


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("node, key", [
    ({"formats": []}, "llm_formats.formats"),
    ({"formats": [{"name": "a", "state": "text"}, {"name": "a", "state": "kv_cache"}]}, "llm_formats.formats"),
    ({"formats": [{"name": "a", "state": "tokens"}, {"name": "b", "state": "text"}]}, "llm_formats.formats[0].state"),
    ({"formats": [{"name": "a", "state": "text", "token_factor": 0}, {"name": "b", "state": "text"}]},
     "llm_formats.formats[0].token_factor"),
    ({"formats": [{"name": "a", "state": "text", "colour": 1}, {"name": "b", "state": "text"}]},
     "llm_formats.formats[0].colour"),
    ({"formats": [{"name": "a", "state": "text", "bytes_per_token": -1}, {"name": "b", "state": "text"}]},
     "llm_formats.formats[0].bytes_per_token"),
    ({"conversion_cost": 1.5}, "llm_formats.conversion_cost"),
    ({"mutation": -0.1}, "llm_formats.mutation"),
    ({"selection": 0}, "llm_formats.selection"),
    ({"rate": float("nan")}, "llm_formats.rate"),
    ({"payoff_window": 10}, "llm_formats.payoff_window"),
    ({"handoff_tokens": 0}, "llm_formats.handoff_tokens"),
    ({"rounds": 2.5}, "llm_formats.rounds"),
    ({"initial": "morse"}, "llm_formats.initial"),
    ({"speed": 1}, "llm_formats.speed"),
])
def test_bad_format_options_are_refused(node, key):
    with pytest.raises(ConfigError) as err:
        fm.read_config(node)
    assert key in str(err.value) and "allowed" in str(err.value)


def test_bad_standardization_llm_options_are_refused():
    with pytest.raises(ConfigError, match=r"standardization\.llm=.*true or false"):
        std.read_options(compose(["experiment=standardization", "standardization.llm=yes"]))
    with pytest.raises(ConfigError, match=r"standardization\.llm_formats\.mutation=2"):
        std.read_options(compose(["experiment=standardization", "standardization.llm_formats.mutation=2"]))
    with pytest.raises(ConfigError, match="modes"):
        fm.run(COMPLETE, fm.read_config(None), None, modes=("sometimes",))
