"""Refusals of physically impossible values and of unusable output folders (issue 16, items 7-8):
one line naming the key (or the folder), exit 2 for a config value, exit 4 for an I/O problem,
nothing computed."""

import pytest

from _support import TISSUE, run_child

BASE = ["-m", "sim", TISSUE, "topology=ring", "topology.n_cells=3", "steps=20", "replicates=1", "figures=false"]


@pytest.mark.parametrize("over, key", [
    (["substrate.thermo.dg0_kj_per_mol=30"], "substrate.thermo.dg0_kj_per_mol"),
    (["substrate.supply.external_glucose_mm=1e308"], "substrate.supply.external_glucose_mm"),
    (["substrate.initial.glucose_mm=1e39", "precision=float32"], "substrate.initial.glucose_mm"),
    (["precision=float32", "+params.external_substrate=1e39"], "precision"),
])
def test_impossible_values_are_refused_before_anything_runs(tmp_path, over, key):
    res = run_child([*BASE, *over, f"hydra.run.dir={tmp_path / 'run'}"])
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: invalid config: {key}="), res.stderr
    assert not (tmp_path / "run" / "results.nc").exists()


def test_an_output_folder_that_cannot_be_made_is_an_io_error_in_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    for folder in (tmp_path / "a_file" / "run", "/proc/currency-sim-cannot-be-here"):
        res = run_child([*BASE, f"hydra.run.dir={folder}"])
        assert res.returncode == 4, res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and f"hydra.run.dir={folder}" in lines[0] and "Traceback" not in res.stderr


def test_an_unparsable_override_names_its_key():
    res = run_child(["-m", "sim", "seed=1", "steps=["])
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: invalid config: steps='['"), res.stderr


def test_resume_says_why_there_is_nothing_to_resume(tmp_path, capsys):
    from sim.app import EXIT_CONFIG, resume_run

    early = tmp_path / "killed_early"
    (early / "checkpoint").mkdir(parents=True)
    (early / "checkpoint" / "config.json").write_text("{}")  # what a run killed before its first checkpoint leaves
    ended = tmp_path / "ended"
    ended.mkdir()
    (ended / "summary.json").write_text('{"status": "ok"}')
    plain = tmp_path / "plain"
    plain.mkdir()
    for folder, why in ((early, "before its first checkpoint"), (ended, "this run ended"),
                        (plain, "checkpoint_every > 0")):
        assert resume_run(folder, quiet=True) == EXIT_CONFIG
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: invalid config: resume='{folder}'") and why in err[0], err
