"""``python -m sim`` refuses invalid configs with exit code 2 and one line per problem naming the key.

All cases fail before anything is compiled (group choice, Hydra override grammar, unknown key,
schema type, value range, topology file, capacity, stability, resume). Importing JAX and Hydra
costs a process about a second, so the cases are batched: one child process runs the command-line
entry point (``sim.app.entry``, all that ``python -m sim`` calls) once per case and reports each
exit code and stderr. A representative subset also runs as separate ``python -m sim`` processes.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _support import TISSUE, run_child, run_entries

ROOT = Path(__file__).resolve().parent.parent
FAST = [TISSUE, "steps=20", "record_every=10", "replicates=1", "figures=false"]

# id -> (arguments, keys named in order, one per error line)
CASES = {
    "group_choice": (["substrate=foo"], ["substrate"]),
    "group_choice_in_sweep": (["-m", "topology=ring,hexagon"], ["topology"]),
    "override_grammar": (["steps"], ["steps"]),
    "unknown_key": (["stepz=10"], ["stepz"]),
    "unknown_key_in_sweep": (["-m", "stepz=1,2"], ["stepz"]),
    "unknown_nested_key": (["substrate.transport.conductance=1"], ["substrate.transport.conductance"]),
    "appended_unknown_key": (["+foo=1"], ["foo"]),
    "type_int": (["steps=abc"], ["steps"]),
    "type_float": (["dt=fast"], ["dt"]),
    "type_int_not_float": (["replicates=1.5"], ["replicates"]),
    "type_bool": (["debug=maybe"], ["debug"]),
    "type_list": (["seed=[1,2]"], ["seed"]),
    "type_nested": (["topology.n_cells=many"], ["topology.n_cells"]),
    "type_substrate": (["substrate.producers.capacity_per_cell=lots"], ["substrate.producers.capacity_per_cell"]),
    "range_steps": (["steps=-5"], ["steps"]),
    "steps_multiple_of_record_every": (["steps=105", "record_every=10"], ["steps"]),
    "range_seed": (["seed=-1"], ["seed"]),
    "range_chunk_records": (["chunk_records=0"], ["chunk_records"]),
    "range_checkpoint_every": (["checkpoint_every=-1"], ["checkpoint_every"]),
    "range_first_replicate": (["first_replicate=-3"], ["first_replicate"]),
    "type_first_replicate": (["first_replicate=last"], ["first_replicate"]),
    "first_replicate_with_experiment": (["experiment=roofline", "first_replicate=3"], ["first_replicate"]),
    "checkpoint_with_mesa": (["backend=mesa", "checkpoint_every=2"], ["checkpoint_every"]),
    "checkpoint_with_experiment": (["experiment=roofline", "checkpoint_every=2"], ["checkpoint_every"]),
    "name_backend": (["backend=torch"], ["backend"]),
    "name_precision": (["precision=float16"], ["precision"]),
    "name_param": (["+params.bogus=1"], ["params.bogus"]),
    "vector_param": (["+params.p_yield=2"], ["params.p_yield"]),
    "range_param": (["params.supply_scale=-1"], ["params.supply_scale"]),
    "range_param_sign": (["+params.dg0_kj=30"], ["params.dg0_kj"]),
    "range_param_fraction": (["+params.stress_threshold=2"], ["params.stress_threshold"]),
    "name_topology_kind": (["topology.kind=hexagon"], ["topology.kind"]),
    "range_n_cells": (["topology=ring", "topology.n_cells=0"], ["topology.n_cells"]),
    "range_probability": (["topology.p=1.5"], ["topology.p"]),
    "enormous_tissue": (["topology=complete", "topology.n_cells=100000"], ["topology.n_cells"]),
    "disconnected": (
        ["topology=erdos_renyi", "topology.p=0", "topology.require_connected=true"], ["topology.require_connected"]
    ),
    "name_experiment_kind": (["experiment.kind=bogus"], ["experiment.kind"]),
    "topology_file_missing": (["topology=file", "topology.path={tmp}/nope.graphml"], ["topology.path"]),
    "topology_file_unset": (["topology=file"], ["topology.path"]),
    "topology_file_malformed": (["topology=file", "topology.path={tmp}/bad.graphml"], ["topology.path"]),
    "topology_file_self_loops": (["topology=file", "topology.path={tmp}/loops.txt"], ["topology.path"]),
    "topology_file_empty": (["topology=file", "topology.path={tmp}/empty.txt"], ["topology.path"]),
    "capacity": (["substrate.producers.capacity_per_cell=2"], ["substrate.producers.capacity_per_cell"]),
    "range_substrate": (["substrate.transport.conductance_per_s=-1"], ["substrate.transport.conductance_per_s"]),
    "range_substrate_fraction": (["substrate.initial.energy_charge=1.5"], ["substrate.initial.energy_charge"]),
    "substrate_section": (["substrate.producers=3"], ["substrate.producers"]),
    "birth_kind": (["substrate.producers.birth_kind=ribosome"], ["substrate.producers.birth_kind"]),
    "stability_transport": (["substrate.transport.conductance_per_s=100"], ["dt"]),
    "stability_both": (["dt=10"], ["dt", "dt"]),
    "several_problems": (["steps=-5", "backend=torch", "dt=0"], ["backend", "steps", "dt"]),
    "unresolvable": (["steps=${oops}"], ["steps"]),
    "resume_missing": (["resume={tmp}/no-such-run"], ["resume"]),
    "resume_without_checkpoint": (["resume={tmp}"], ["resume"]),
    "resume_with_override": (["resume={tmp}", "steps=10"], ["steps"]),
}


def _files(tmp: Path) -> None:
    (tmp / "bad.graphml").write_text("<graphml><graph edgedefault='undirected'><node id='a'/>")
    (tmp / "loops.txt").write_text("1 1\n2 2\n")
    (tmp / "empty.txt").write_text("")


def _run(args, cwd, timeout=120, module=True):
    return run_child(["-m", "sim", *args] if module else list(args), timeout=timeout, cwd=cwd)


DIRECT = ["group_choice", "unknown_key", "type_int", "several_problems", "stability_both", "topology_file_malformed",
          "resume_with_override"]


def _argv(name, i, tmp):
    args = [a.replace("{tmp}", str(tmp)) for a in CASES[name][0]]
    if any(a.startswith("resume=") for a in args):
        return args  # a resumed run takes its config from the run folder: nothing else may be set
    out = f"hydra.sweep.dir={tmp}/sweep{i}" if "-m" in args else f"hydra.run.dir={tmp}/run{i}"
    return FAST + args + [out]  # the case's own overrides come last and win


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    _files(tmp)
    return tmp


@pytest.fixture(scope="module")
def batched(tmp):
    cases = {name: _argv(name, i, tmp) for i, name in enumerate(CASES)}
    return run_entries(cases, tmp)


@pytest.fixture(scope="module")
def direct(tmp):
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_run, _argv(name, 1000 + i, tmp), ROOT) for i, name in enumerate(DIRECT)}
        return {name: f.result() for name, f in futures.items()}


def check_refusal(code, stderr, keys):
    assert code == 2, (code, stderr[-2000:])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and "HYDRA_FULL_ERROR" not in stderr, stderr
    assert len(lines) == len(keys), lines  # one line per problem, nothing else
    for line, key in zip(lines, keys):
        assert line.startswith(f"error: invalid config: {key}="), line
        assert "; allowed: " in line


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_exit_2_naming_the_key(batched, case):
    check_refusal(batched[case]["code"], batched[case]["stderr"], CASES[case][1])


@pytest.mark.parametrize("case", DIRECT)
def test_python_m_sim_refuses_with_exit_2(direct, case):
    check_refusal(direct[case].returncode, direct[case].stderr, CASES[case][1])


def test_debug_true_shows_the_traceback(tmp_path):
    res = _run([TISSUE, "steps=abc", "debug=true", f"hydra.run.dir={tmp_path}"], ROOT)
    assert res.returncode == 2
    assert res.stderr.splitlines()[0].startswith("error: invalid config: steps=")
    assert "Traceback (most recent call last)" in res.stderr


def test_a_valid_run_exits_0_and_writes_its_folder(tmp_path):
    res = _run([TISSUE, "topology=ring", "topology.n_cells=4", "steps=40", "replicates=1", "figures=false",
                f"hydra.run.dir={tmp_path}"], ROOT)
    assert res.returncode == 0, res.stderr
    assert {"results.nc", "summary.json", ".hydra"} <= {p.name for p in tmp_path.iterdir()}
    assert not (tmp_path / "checkpoint").exists()


def test_help_is_the_projects_own():
    """`python -m sim --help`: what the project is, its groups (every shipped option), examples, exit codes."""
    from _support import run_child

    res = run_child(["-m", "sim", "--help"], timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert out.startswith("currency-sim: an agent-based") and "== Configuration groups (group=option) ==" in out
    assert "carriers: competing, nucleotides, one" in out and "standardization" in out
    assert "Examples:" in out and "python -m sim.plot" in out and "exit code 2" in out
