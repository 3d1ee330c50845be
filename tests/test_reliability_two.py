"""Reliability, round two (issue 16): each test fails on the code before the fix it guards.

1. a checkpoint carries its config hash and code version; a fresh run never lands on another
   run's checkpoint; a resume refuses an edited config, another code version or another config;
2. the edge-list loader is linear (no per-line edge count) and keeps every refusal;
3. a sweep always writes its table (non-finite outcomes as IEEE floats) and exits non-zero after
   writing it when a job failed;
4. a failed write says ``status: failed`` and loses nothing computed;
5. unknown keys under substrate, model, gpu and the experiment sections are refused;
6. ``seed`` and ``first_replicate`` beyond what the PRNG takes are refused; ``resume=null`` is no resume.

In-process runs go through ``sim.app.execute``/``resume_run`` (the job body of ``python -m sim``);
command-line refusals are batched into one child process (as in tests/test_cli.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import sim
from _support import TISSUE, Stop, assert_same_results, run_child, run_entries, stop_after_checkpoint
from sim import checkpoint, sweep, topology
from sim.app import CONF_DIR, EXIT_CONFIG, EXIT_FAILED, FALLBACK_RESULTS, execute, resume_run
from sim.config.validate import check_group_keys, validate
from sim.errors import ConfigError
from sim.io import read_json, write_json

ROOT = Path(__file__).resolve().parent.parent
# a tiny tissue: 4 chunks of 10 steps, a checkpoint after every chunk
RUN = [TISSUE, "topology=ring", "topology.n_cells=4", "replicates=1", "steps=40", "record_every=10", "chunk_records=1",
       "figures=false", "checkpoint_every=1", "output.float32=false"]  # float64 records: resumed runs compared bit for bit


def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="test"):
        return compose(config_name="config", overrides=list(overrides))


def _killed(monkeypatch, run_dir: Path, *overrides, after: int = 2) -> None:
    """A run of RUN (+ overrides) stopped right after its checkpoint of chunk ``after``."""
    with monkeypatch.context() as m:
        stop_after_checkpoint(m, after)
        with pytest.raises(Stop):
            execute(compose_cfg(*RUN, *overrides), run_dir, quiet=True)
    assert checkpoint.load(run_dir).steps_done == 10 * after


def _one_line(stderr: str, key: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: invalid config: {key}=") and "; allowed: " in lines[0], lines[0]
    assert "Traceback" not in stderr
    return lines[0]


def _listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of RUN with params.demand_scale=1.0 (the yardstick of resumed runs)."""
    out = tmp_path_factory.mktemp("reference")
    assert execute(compose_cfg(*RUN, "params.demand_scale=1.0"), out, quiet=True) == 0
    return out


# ------------------------------------------------------------------------------ 1. config + version


def test_checkpoint_meta_carries_config_hash_and_code_version(monkeypatch, tmp_path):
    _killed(monkeypatch, tmp_path / "run")
    ck_dir = tmp_path / "run" / "checkpoint"
    with np.load(ck_dir / "state.npz") as z:
        meta = json.loads(str(z["meta"]))
    cfg = json.loads((ck_dir / "config.json").read_text())
    assert meta["config_sha256"] == checkpoint.config_hash(cfg)
    assert meta["code_version"] == checkpoint.code_version() and sim.__version__ in meta["code_version"]
    assert "resume" not in cfg and "debug" not in cfg  # (the two keys a resume may set)


def test_fresh_run_into_a_folder_with_another_runs_checkpoint_is_refused(monkeypatch, tmp_path, reference, capsys):
    """The issue's repro: run 1 (demand 1.0) killed after a checkpoint; run 2 (demand 1.5) aimed at the
    same folder used to write its state next to run 1's config.json, and the resume mixed them. Run 2
    is now refused (in-process and from the command line) without writing anything, and the resume
    continues run 1 bit-identically."""
    run_dir = tmp_path / "run"
    _killed(monkeypatch, run_dir, "params.demand_scale=1.0")
    before = _listing(run_dir)
    capsys.readouterr()
    assert execute(compose_cfg(*RUN, "params.demand_scale=1.5"), run_dir, quiet=True) == EXIT_CONFIG
    line = _one_line(capsys.readouterr().err, "hydra.run.dir")
    assert repr(str(run_dir)) in line and "resume=" in line
    res = run_child(["-m", "sim", *RUN, "params.demand_scale=1.5", f"hydra.run.dir={run_dir}"])
    assert res.returncode == EXIT_CONFIG, res.stderr
    assert repr(str(run_dir)) in _one_line(res.stderr, "hydra.run.dir")
    assert _listing(run_dir) == before  # not even .hydra/ was written
    assert resume_run(run_dir, quiet=True) == 0
    assert_same_results(reference, run_dir)


def test_resume_refuses_an_edited_config_json(monkeypatch, tmp_path, capsys):
    """An edit that still fits the model (same shapes) used to resume silently with the new value."""
    run_dir = tmp_path / "run"
    _killed(monkeypatch, run_dir)
    cfg_file = run_dir / "checkpoint" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["params"]["demand_scale"] = 1.5
    cfg_file.write_text(json.dumps(cfg))
    capsys.readouterr()
    assert resume_run(run_dir, quiet=True) == EXIT_CONFIG
    line = _one_line(capsys.readouterr().err, "resume")
    assert "config.json" in line and "edited or replaced" in line
    with pytest.raises(ConfigError) as info:
        checkpoint.load(run_dir)
    assert info.value.key == "resume"
    assert not (run_dir / "results.nc").exists() and not (run_dir / "summary.json").exists()


def test_resume_refuses_another_code_version(monkeypatch, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _killed(monkeypatch, run_dir)
    monkeypatch.setattr(sim, "__version__", "99.0.0")
    capsys.readouterr()
    assert resume_run(run_dir, quiet=True) == EXIT_CONFIG
    line = _one_line(capsys.readouterr().err, "resume")
    assert "sim 99.0.0" in line and "written by" in line
    monkeypatch.undo()
    assert resume_run(run_dir, quiet=True) == 0  # the same checkpoint with its own code version


def test_resume_with_a_config_other_than_the_checkpoints_is_refused(monkeypatch, tmp_path, capsys):
    """``sim.api.run``/``execute`` with ``resume`` set and a config of its own (not the stored one)."""
    run_dir = tmp_path / "run"
    _killed(monkeypatch, run_dir)
    capsys.readouterr()
    cfg = compose_cfg(*RUN, "params.demand_scale=1.5", f"resume={run_dir}")
    assert execute(cfg, run_dir, quiet=True) == EXIT_CONFIG
    line = _one_line(capsys.readouterr().err, "resume")
    assert "params.demand_scale" in line
    assert checkpoint.load(run_dir).steps_done == 20  # the checkpoint is untouched


def test_a_folder_whose_run_died_before_its_first_checkpoint_is_reused(tmp_path):
    """``checkpoint/`` without ``state.npz`` holds nothing computed: a fresh run replaces its config."""
    run_dir = tmp_path / "run"
    write_json(run_dir / "checkpoint" / "config.json", {"steps": 1})
    assert execute(compose_cfg(*RUN), run_dir, quiet=True) == 0
    assert (run_dir / "results.nc").is_file() and not (run_dir / "checkpoint").exists()


# ------------------------------------------------------------------------------ 2. edge-list loader


def test_edgelist_loader_is_linear_and_exact(tmp_path, monkeypatch):
    """50k lines load with the right nodes and junctions, and the graph's edges are never counted per
    line (``Graph.number_of_edges`` walks every node: per line it made the loader quadratic)."""
    rng = np.random.default_rng(3)
    n, lines = 5000, 50_000
    u = rng.integers(0, n, lines)
    v = rng.integers(0, n, lines)
    text = "# tissue\n" + "".join(f"{a} {b}{' 0.5' if i % 7 == 0 else ''}\n" for i, (a, b) in enumerate(zip(u, v)))
    path = tmp_path / "big.txt"
    path.write_text(text)
    expected = nx.Graph()
    expected.add_edges_from(zip(u.tolist(), v.tolist()))
    expected.remove_edges_from(list(nx.selfloop_edges(expected)))

    calls = []
    original = nx.Graph.number_of_edges

    def counted(self, *a, **k):
        calls.append(1)
        if len(calls) > 50:
            raise AssertionError("Graph.number_of_edges called per line")
        return original(self, *a, **k)

    monkeypatch.setattr(nx.Graph, "number_of_edges", counted)
    g = topology.load_graph_file(str(path))
    assert len(calls) <= 5
    monkeypatch.undo()
    assert set(g.nodes) == set(expected.nodes) and all(isinstance(x, int) for x in g.nodes)
    assert g.number_of_edges() == expected.number_of_edges()
    assert {frozenset(e) for e in g.edges} == {frozenset(e) for e in expected.edges}
    assert not list(nx.selfloop_edges(g))
    src, dst = topology.edge_arrays(topology.build_graph({"kind": "file", "path": str(path)}))
    assert len(src) == expected.number_of_edges() and (src < dst).all()


def test_edgelist_caps_count_distinct_junctions(tmp_path, monkeypatch):
    """More lines than the cap but few distinct junctions (duplicates both ways, self-loops) load;
    one distinct junction too many is refused at its line."""
    monkeypatch.setattr(topology, "MAX_FILE_EDGES", 5)
    lines = ["0 1", "1 0", "1 2", "2 1", "0 1", "3 3", "3 3", "2 3", "1 0", "0 2"]  # 5 distinct (with 3-3)
    ok = topology.load_graph_file(str(_write(tmp_path, "ok.txt", "\n".join(lines))))
    assert ok.number_of_edges() == 4 and sorted(ok.nodes) == [0, 1, 2, 3]  # the self-loop dropped
    with pytest.raises(ConfigError) as info:
        topology.load_graph_file(str(_write(tmp_path, "over.txt", "\n".join(lines + ["0 3", "1 2 x"]))))
    assert info.value.key == "topology.path" and "at most 5 edges" in info.value.allowed  # (before line 12)
    monkeypatch.setattr(topology, "MAX_FILE_NODES", 3)
    with pytest.raises(ConfigError) as info:
        topology.load_graph_file(str(_write(tmp_path, "nodes.txt", "a b\nb c\nc d\n")))
    assert "at most 3 nodes" in info.value.allowed


def test_edgelist_labels_and_order(tmp_path):
    g = topology.load_graph_file(str(_write(tmp_path, "s.txt", "b c\na b\nc c\n")))
    assert list(g.nodes) == ["b", "c", "a"] and g.number_of_edges() == 2  # first appearance, strings kept
    g = topology.load_graph_file(str(_write(tmp_path, "i.txt", "10 2\n2 01\n")))
    assert list(g.nodes) == [10, 2, 1]
    g = topology.load_graph_file(str(_write(tmp_path, "d.txt", "1 01\n")))  # "01" and "1": both kept as strings
    assert sorted(g.nodes) == ["01", "1"]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ 3. sweep table


def _job(sweep_dir: Path, i: int, overrides: list[str], summary: dict | None) -> None:
    job = sweep_dir / str(i)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if summary is not None:
        write_json(job / "summary.json", summary)


def test_non_finite_outcomes_keep_the_sweep_table(tmp_path):
    _job(tmp_path, 0, ["x=1"], {"status": "ok", "landauer_ratio": float("inf"), "gain": float("-inf"), "n": 3})
    _job(tmp_path, 1, ["x=2"], {"status": "ok", "landauer_ratio": 8.6e18, "gain": float("nan"), "n": 4.5})
    _job(tmp_path, 2, ["x=3"], {"status": "failed", "reason": "boom"})
    _job(tmp_path, 3, ["x=4"], None)  # killed: no summary.json
    (tmp_path / "4" / ".hydra").mkdir(parents=True)
    (tmp_path / "4" / "summary.json").write_text('{"status": "ok", "landauer')  # truncated by hand
    # one representation: strict JSON on disk, IEEE floats when read back
    text = (tmp_path / "0" / "summary.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON literal {c}"))
    assert read_json(tmp_path / "0" / "summary.json")["landauer_ratio"] == float("inf")
    df = sweep.collect(tmp_path)
    table = pd.read_parquet(tmp_path / "summary.parquet")
    assert len(table) == 5 and list(table["job"]) == [0, 1, 2, 3, 4]
    for name in ("landauer_ratio", "gain", "n"):
        assert table[name].dtype == np.float64, name
    assert table["landauer_ratio"][0] == np.inf and table["gain"][0] == -np.inf and np.isnan(table["gain"][1])
    assert list(table["status"]) == ["ok", "ok", "failed", "failed", "failed"]
    assert "did not finish" in table["reason"][3] and "unreadable summary.json" in table["reason"][4]
    assert len(df) == 5


def test_a_column_pyarrow_cannot_type_is_kept_as_strings(tmp_path):
    _job(tmp_path, 0, [], {"status": "ok", "odd": 1.5})
    _job(tmp_path, 1, [], {"status": "ok", "odd": "text"})
    sweep.collect(tmp_path)
    assert list(pd.read_parquet(tmp_path / "summary.parquet")["odd"]) == ["1.5", "text"]


def test_sweep_with_inf_outcome_and_a_failed_job_writes_its_table_then_exits_4(tmp_path):
    """The issue's natural trigger (a serving job with almost no arrivals has landauer_ratio inf)
    plus a job that fails: the table holds all three rows, and the sweep exits 4 after writing it."""
    sweep_dir = tmp_path / "sweep"
    res = run_child(["-m", "sim", "-m", "experiment=serving", "steps=300", "replicates=1", "figures=false",
                     "substrate.arrivals.rate_per_s=0.001,5.5,-1", f"hydra.sweep.dir={sweep_dir}"], timeout=300)
    assert res.returncode == EXIT_FAILED, res.stderr[-3000:]
    table = pd.read_parquet(sweep_dir / "summary.parquet")
    assert len(table) == 3 and list(table["status"]) == ["ok", "ok", "failed"]
    assert table["landauer_ratio"].dtype == np.float64 and np.isinf(table["landauer_ratio"][0])
    assert "substrate.arrivals.rate_per_s" in table["reason"][2]
    assert "UserWarning" not in res.stderr and "sweep: 3 jobs (1 failed)" in res.stdout


# ------------------------------------------------------------------------------ 4. failed writes


def test_failed_results_write_says_failed_and_keeps_checkpoint_and_arrays(tmp_path, reference):
    run_dir = tmp_path / "run"
    (run_dir / "results.nc").mkdir(parents=True)  # results.nc cannot be written
    assert execute(compose_cfg(*RUN, "params.demand_scale=1.0"), run_dir, quiet=True) == EXIT_FAILED
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "results.nc" in summary["reason"] and FALLBACK_RESULTS in summary["reason"]
    assert checkpoint.load(run_dir).steps_done == 40  # the checkpoint stays (a resume can rewrite the results)
    want = xr.load_dataset(reference / "results.nc")
    with np.load(run_dir / FALLBACK_RESULTS) as z:
        meta = json.loads(str(z["__meta__"]))
        for name in want.data_vars:
            assert np.array_equal(z[name], want[name].values), name
            assert meta["variables"][name]["dims"] == list(want[name].dims)
    (run_dir / "results.nc").rmdir()
    assert resume_run(run_dir, quiet=True) == 0  # and the run finishes from it
    assert_same_results(reference, run_dir)


def test_failed_summary_write_exits_4_and_keeps_results(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "summary.json").mkdir(parents=True)
    assert execute(compose_cfg(*RUN), run_dir, quiet=True) == EXIT_FAILED
    assert "writing summary.json failed" in capsys.readouterr().err
    assert (run_dir / "results.nc").is_file() and checkpoint.load(run_dir).steps_done == 40


# ------------------------------------------------------------------------------ 5, 6. refusals

# id -> (arguments, key named)
CASES = {
    "substrate_bio": (["+substrate.consumers.demand_total_mm_per_sec=5"], "substrate.consumers.demand_total_mm_per_sec"),
    "substrate_llm": (["experiment=serving", "+substrate.arrivals.rate_per_sec=50"], "substrate.arrivals.rate_per_sec"),
    "substrate_kind": (["+substrate.producers.kinds.mitochondrion.vmax=1"], "substrate.producers.kinds.mitochondrion.vmax"),
    "gpu": (["+gpu.hbm_gib=200"], "gpu.hbm_gib"),
    "model": (["experiment=roofline", "+model.n_layer=3"], "model.n_layer"),
    "roofline": (["experiment=roofline", "+roofline.power=decode"], "roofline.power"),
    "cascade": (["experiment=cascade", "+cascade.loop.turnz=1"], "cascade.loop.turnz"),
    "serving": (["experiment=serving", "+serving.warmup=0.1"], "serving.warmup"),
    "analogy": (["experiment=analogy", "+analogy.stepfactor=2"], "analogy.stepfactor"),
    "analogy_llm": (["experiment=analogy", "+analogy.llm_substrate.arrivals.rate=1"], "analogy.llm_substrate.arrivals.rate"),
    "in_sweep": (["-m", "+gpu.hbm_gib=1,2"], "gpu.hbm_gib"),
    "seed_too_big": (["seed=9223372036854775808"], "seed"),
    "first_replicate_wraps": (["first_replicate=4294967295", "replicates=2"], "first_replicate"),
    "first_replicate_too_big": (["first_replicate=4294967296"], "first_replicate"),
}
OK_CASES = {  # runs that must go through (exit 0)
    "seed_max": ["seed=9223372036854775807"],
    "last_replicates": ["first_replicate=4294967294", "replicates=2"],
    "resume_null": ["resume=null"],
}
FAST = [TISSUE, "topology=ring", "topology.n_cells=4", "steps=20", "record_every=10", "replicates=1", "figures=false"]



@pytest.fixture(scope="module")
def batched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refusals")
    cases = {}
    for name, argv in {**{k: v[0] for k, v in CASES.items()}, **OK_CASES}.items():
        out = f"hydra.sweep.dir={tmp}/{name}" if "-m" in argv else f"hydra.run.dir={tmp}/{name}"
        cases[name] = FAST + argv + [out]
    return tmp, run_entries(cases, tmp)


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_exit_2_naming_the_key(batched, case):
    tmp, results = batched
    got = results[case]
    assert got["code"] == EXIT_CONFIG, got
    _one_line(got["stderr"], CASES[case][1])
    if CASES[case][1] not in ("seed", "first_replicate"):  # (values: refused by the job's validation)
        assert not (tmp / case).exists()  # unknown keys: refused before a run (or sweep) folder is made


@pytest.mark.parametrize("case", list(OK_CASES))
def test_runs_at_the_limits_and_resume_null(batched, case):
    tmp, results = batched
    assert results[case]["code"] == 0, results[case]
    assert json.loads((tmp / case / "summary.json").read_text())["status"] == "ok"


def test_allowed_keys_are_named():
    cfg = OmegaConf.to_container(compose_cfg(TISSUE, "+gpu.hbm_gib=200",
                                              "+substrate.consumers.demand_total_mm_per_sec=5"))
    with pytest.raises(ConfigError) as info:
        validate(cfg)  # (the API path: validate names them too, with every other problem)
    lines = str(info.value).splitlines()
    assert any(line.startswith("invalid config: gpu.hbm_gib=200; allowed: a key of gpu in conf/gpu/h100.yaml: ")
               and "hbm_gb" in line for line in lines), lines
    assert any("substrate.consumers.demand_total_mm_per_sec=5" in line and "demand_total_mm_per_s" in line
               for line in lines), lines


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
@pytest.mark.parametrize("substrate", sorted(p.stem for p in (CONF_DIR / "substrate").glob("*.yaml")))
def test_every_shipped_config_passes_the_key_check(experiment, substrate):
    """No false refusals: every shipped experiment with every substrate, model and GPU option."""
    for model, gpu in zip(sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")),
                          sorted(p.stem for p in (CONF_DIR / "gpu").glob("*.yaml"))):
        overrides = [f"experiment={experiment}", f"model={model}", f"gpu={gpu}"]
        if experiment in ("tissue", "analogy"):
            overrides.append(f"substrate={substrate}")
        check_group_keys(OmegaConf.to_container(compose_cfg(*overrides), resolve=False))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
