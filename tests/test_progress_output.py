"""Issue 15 ("a tool people enjoy"): progress of long runs, results.nc of a sensible size, the whole
summary printed.

The progress reporter is tested with a fake clock and stream (no JAX); the output options and the
printed summary on two in-process runs of the cheapest config (a 4-cell generic ring: the second
reuses the first's executable); bad ``output``/``progress`` values through ``sim.app.execute`` (one
line each, exit 2, before anything compiles).
"""

from __future__ import annotations

import io
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
from _support import TISSUE

from sim.errors import ConfigError
from sim.io import OutputOptions, output_options, output_problems, write_netcdf
from sim.progress import Progress, parse_mode

CHEAP = [TISSUE, "substrate=generic", "topology=ring", "topology.n_cells=4", "steps=20", "replicates=2"]
UNITS_OF_BIOLOGY = ("mM", "kJ/mol", "molecules", "(J)")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _state(step):
    return SimpleNamespace(step=np.full((2,), step))


# ------------------------------------------------------------------------------ progress


def test_progress_modes_parse_and_refuse():
    assert parse_mode("auto") == "auto" and parse_mode(None) == "auto"
    assert parse_mode(True) == "true" and parse_mode(False) == "false" and parse_mode("TRUE") == "true"
    for bad in ("maybe", 1, [True]):
        with pytest.raises(ConfigError) as info:
            parse_mode(bad)
        assert info.value.key == "progress" and "auto, true or false" in str(info.value)


def test_progress_lines_steps_time_rate_eta_throttled_and_final():
    clock, out = Clock(), io.StringIO()
    p = Progress("runs/tissue/X", True, stream=out, clock=clock)
    p.start()
    assert out.getvalue() == "sim: run folder runs/tissue/X\n"  # the folder first, before any compute
    p.begin(100, 0.5, "s")
    for i, done in enumerate(range(10, 101, 10)):
        clock.now += 30.0 if i == 0 else 0.9  # compiling, then 0.9 s per chunk of 10 steps
        p.on_chunk(_state(done), done)
    p.close()
    lines = out.getvalue().splitlines()[1:]
    # first chunk (no rate: it held the compile), then one line per >= 2 s, and always the last
    assert [ln.split("/")[0] for ln in lines] == ["sim: 10", "sim: 40", "sim: 70", "sim: 100"], lines
    assert "ETA after the next chunk" in lines[0] and "steps/s" not in lines[0]
    assert lines[1].startswith("sim: 40/100 steps (40%)") and "t 20 s" in lines[1]
    assert "11.1 steps/s" in lines[1] and "ETA 5.4 s" in lines[1]  # 10 steps per 0.9 s; 60 steps left
    assert lines[-1].startswith("sim: 100/100 steps (100%)") and lines[-1].endswith("done")
    assert "wall 38 s" in lines[-1]


def test_progress_counts_from_the_state_step_after_a_resume():
    out = io.StringIO()
    p = Progress("r", "true", stream=out, clock=Clock(), min_interval_s=0.0)
    p.begin(100, 1.0, "")  # a dimensionless (generic) time: no unit
    p.on_chunk(_state(70), 20)  # a resumed run: 50 steps before, 20 in this call
    assert "70/100 steps (70%)  t 70  wall" in out.getvalue()


def test_progress_false_and_piped_or_ci_auto_print_nothing():
    for mode, tty, ci, expected in (("false", True, False, ""), ("auto", False, False, ""),
                                    ("auto", True, True, "")):  # piped, or in CI
        out = io.StringIO()
        p = Progress("r", mode, stream=out, tty=tty, ci=ci)
        p.start()
        p.begin(20, 1.0, "s")
        p.on_chunk(_state(20), 20)
        p.close()
        assert out.getvalue() == expected, (mode, tty, ci)


def test_progress_auto_on_a_terminal_draws_one_bar_in_place():
    clock, out = Clock(), io.StringIO()
    p = Progress("r", "auto", stream=out, tty=True, ci=False, clock=clock)
    p.start()
    p.begin(100, 1.0, "s", cells=50)
    for i, done in enumerate(range(25, 101, 25)):
        clock.now += 10.0 if i == 0 else 2.5  # compiling, then 2.5 s per 25 steps
        p.on_chunk(_state(done), done)
    p.close()
    text = out.getvalue()
    assert text.startswith("sim: run folder r\n") and text.endswith("\n")
    body = text.split("\n", 1)[1]
    assert body.count("\n") == 1 and body.count("\r") == 4  # one line, redrawn per report, ended once
    last = body.rsplit("\r", 1)[1]
    assert last.startswith("sim: [####################] 100%  100/100 steps") and "done" in last
    assert "10 steps/s" in last and "5e+02 cell-updates/s" in last  # 10 steps/s x 50 cells


def test_a_run_on_a_pseudo_terminal_shows_its_bar_and_piped_prints_no_progress(tmp_path):
    """``python -m sim`` with stderr on a pseudo-terminal draws the bar; piped, only the folder line."""
    import os
    import pty
    import subprocess
    import sys

    from _support import ROOT, child_env

    args = [sys.executable, "-m", "sim", "experiment=tissue", "substrate=generic", "topology=ring",
            "topology.n_cells=4", "steps=400", "record_every=10", "chunk_records=5", "replicates=1", "figures=false"]
    env = child_env(drop=("CI",))
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(args + [f"hydra.run.dir={tmp_path / 'tty'}"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=180) == 0
    finally:
        os.close(master)
    tty = b"".join(chunks).decode(errors="replace")
    assert "run folder" in tty and "\r" in tty and "] 100%  400/400 steps" in tty and "cell-updates/s" in tty
    piped = subprocess.run(args + [f"hydra.run.dir={tmp_path / 'pipe'}"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=180)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr


# ------------------------------------------------------------------------------ output options


@pytest.mark.parametrize("section,key", [
    ({"compress": 11}, "output.compress"),
    ({"compress": "high"}, "output.compress"),
    ({"variables": "energy_charge"}, "output.variables"),
    ({"variables": []}, "output.variables"),
    ({"variables": ["a", "a"]}, "output.variables"),
    ({"cells": "mean"}, "output.cells"),
    ({"float32": "yes"}, "output.float32"),
    ({"bogus": 1}, "output.bogus"),
])
def test_bad_output_options_name_the_key(section, key):
    problems = output_problems({"output": section})
    assert [p.key for p in problems] == [key]
    assert "; allowed: " in str(problems[0])


def test_output_options_defaults_and_parsing():
    assert output_options({}) == OutputOptions(compress=4, variables=None, cells="all", float32=True)
    got = output_options({"output": {"compress": False, "variables": ["a"], "cells": "summary", "float32": True}})
    assert got == OutputOptions(compress=0, variables=("a",), cells="summary", float32=True) and got.selects
    assert output_options({"output": {"compress": True}}).compress == 4
    assert output_options({"output": {"float32": False}}).float32 is False  # float64 kept, as a choice
    assert [p.key for p in output_problems({"output": 5})] == ["output"]


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from sim.core.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="test"):
        return compose(config_name="config", overrides=list(overrides))


def test_validate_collects_output_and_progress_problems():
    from omegaconf import OmegaConf

    from sim.config.validate import problems_of, validate

    cfg = OmegaConf.to_container(_compose(*CHEAP, "progress=maybe", "output.cells=every", "output.compress=-1",
                                          "steps=-3"), resolve=True)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert {p.key for p in problems_of(info.value)} == {"progress", "output.cells", "output.compress", "steps"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two in-process runs of CHEAP (the second reuses the compiled chunk): default output with
    progress=true, then a selected, summarised float32 output with progress=auto."""
    import contextlib

    from sim.app import execute

    tmp = tmp_path_factory.mktemp("output")
    got = {}
    for name, extra in (("full", ["progress=true"]),
                        ("small", ["output.variables=[a,charged_fraction,spent]", "output.cells=summary",
                                   "output.float32=true"])):
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = execute(_compose(*CHEAP, *extra), tmp / name)
        got[name] = {"code": code, "stderr": err.getvalue(), "stdout": out.getvalue(), "dir": tmp / name,
                     "ds": xr.load_dataset(tmp / name / "results.nc")}
    return got


def test_progress_true_prints_folder_then_chunks_and_auto_stays_quiet(runs):
    full = runs["full"]
    assert full["code"] == 0, full["stderr"]
    lines = full["stderr"].splitlines()
    assert lines[0] == f"sim: run folder {full['dir']}"
    assert lines[1].startswith("sim: 20/20 steps (100%)  t 0.4  wall") and lines[1].endswith("done")
    assert lines[2].startswith("sim: writing results.nc (") and lines[2].endswith("MB in memory) and figures")
    assert len(lines) == 3
    small = runs["small"]  # auto, not a terminal: nothing on stderr
    assert small["code"] == 0 and small["stderr"] == "", small["stderr"]


def test_results_nc_is_float32_and_compressed_by_default(runs, tmp_path):
    # a tiny run stays contiguous (chunk indexes would make it larger); its records are float32
    small = runs["full"]["ds"]
    assert small["a"].encoding.get("zlib") is not True and small["a"].dtype == np.float32
    assert small["time"].dtype == np.float64  # coordinates keep their dtype: time stamps stay exact
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=(2, 200, 50)), axis=1)  # (replicate, time, cell): 160 kB, smooth
    ds = xr.Dataset({"x": (("replicate", "time", "cell"), walk, {"units": "1"}),
                     "alive": (("replicate", "time", "cell"), np.ones((2, 200, 50), np.int8))},
                    coords={"time": np.arange(200) * 0.5})
    write_netcdf(tmp_path / "default.nc", ds)
    write_netcdf(tmp_path / "f64.nc", ds, OutputOptions(float32=False))
    write_netcdf(tmp_path / "plain.nc", ds, OutputOptions(compress=0, float32=False))
    got = xr.load_dataset(tmp_path / "default.nc")
    assert got["x"].encoding["zlib"] is True and got["x"].encoding["shuffle"] is True
    assert got["x"].dtype == np.float32 and got["alive"].dtype == np.int8
    assert np.array_equal(got["x"].values, walk.astype(np.float32))  # float32 rounding, nothing else lost
    assert np.max(np.abs(got["x"].values - walk) / np.abs(walk)) <= 2.0 ** -24  # round to nearest
    np.testing.assert_array_equal(got["time"].values, ds["time"].values)
    sizes = {n: (tmp_path / f"{n}.nc").stat().st_size for n in ("default", "f64", "plain")}
    assert sizes["default"] < sizes["f64"] < sizes["plain"], sizes
    # a variable float32 cannot hold (beyond its range, or below its normal numbers) stays float64
    wide = ds.assign(big=ds["x"] * 1e300, tiny=ds["x"] * 1e-300)
    write_netcdf(tmp_path / "wide.nc", wide)
    back = xr.load_dataset(tmp_path / "wide.nc")
    assert back["x"].dtype == np.float32 and back["big"].dtype == back["tiny"].dtype == np.float64
    assert np.array_equal(back["big"].values, wide["big"].values)
    # output.float32=false: float64 compressed losslessly, bit for bit
    f64 = xr.load_dataset(tmp_path / "f64.nc")
    xr.testing.assert_identical(f64, ds)
    assert np.array_equal(f64["x"].values, walk)
    # read back and written with compress=0, the file's encoding does not carry over
    write_netcdf(tmp_path / "again.nc", f64, OutputOptions(compress=0, float32=False))
    assert (tmp_path / "again.nc").stat().st_size == sizes["plain"]


def test_selected_variables_cell_summary_and_float32(runs):
    full, small = runs["full"]["ds"], runs["small"]["ds"]
    assert set(small.data_vars) == {"a", "a_cell_std", "charged_fraction", "charged_fraction_cell_std",
                                    "spent", "spent_cell_std"}
    assert "cell" not in small.dims and small.attrs["n_cells"] == 4
    assert small["a"].dtype == np.float32 and small["a"].encoding["dtype"] == np.float32
    np.testing.assert_allclose(small["a"].values, full["a"].mean("cell").values, rtol=1e-6)
    np.testing.assert_allclose(small["a_cell_std"].values, full["a"].std("cell").values, rtol=1e-5, atol=1e-7)
    assert small["a"].attrs["cell_reduction"] == "mean over 4 cells" and small["a"].attrs["units"] == "1"
    # summary.json is computed from every cell, whatever results.nc keeps
    a = json.loads((runs["full"]["dir"] / "summary.json").read_text())
    b = json.loads((runs["small"]["dir"] / "summary.json").read_text())
    assert a["currency_spent_units"] == b["currency_spent_units"]


def test_printed_summary_shows_every_key_without_biology_units(runs):
    full = runs["full"]
    summary = json.loads((full["dir"] / "summary.json").read_text())
    printed = full["stdout"]
    assert printed.splitlines()[0] == f"run: {full['dir']}"
    missing = [k for k, v in summary.items() if isinstance(v, (int, float, str, bool)) and k not in printed]
    assert not missing, missing  # (once it stopped after 20 keys)
    assert not [u for u in UNITS_OF_BIOLOGY if u in printed], printed  # the generic substrate is dimensionless


def test_print_summary_groups_an_analogy_sized_summary():
    import contextlib

    from sim.app import group_summary, print_summary

    summary = {"status": "ok", **{f"bio_x{i}": float(i) for i in range(25)}, "output_tokens_per_s": 900.0,
               "energy_per_output_token_j": 0.5, "billed_usd": 0.1, "stability_reason": "a long reason " * 3,
               "wall_s": 3.0}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_summary(summary, "runs/analogy/X")
    text = out.getvalue()
    assert all(k in text for k in summary), text
    groups = dict(group_summary(summary))
    assert groups["outcome"][0] == ("status", "ok")
    assert ("output_tokens_per_s", "900") in groups["currency"]
    assert ("energy_per_output_token_j", "0.5") in groups["energy and cost"]
    assert ("wall_s", "3") in groups["run"] and len(groups["other"]) == 25
    assert max(len(line) for line in text.splitlines()) <= 160


REFUSALS = {  # name -> (overrides, key, a piece of what is allowed)
    "progress": (["progress=maybe"], "progress", "auto, true or false"),
    "compress": (["output.compress=11"], "output.compress", "zlib level 0-9"),
    "unknown_key": (["+output.level=3"], "output.level", "compress, variables, cells, float32"),
    "unknown_variable": (["output.variables=[a,bogus]"], "output.variables", "charged_fraction"),
    "section": (["output=abc"], "output", "a mapping"),
    "experiment_cells": (["experiment=roofline", "output.cells=summary"], "output.cells", "experiment.kind=roofline"),
}


def _one_refusal(code, stderr, name):
    _, key, allowed = REFUSALS[name]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2, (name, code, stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: invalid config: {key}="), (name, lines)
    assert allowed in lines[0], (name, lines[0])


@pytest.mark.parametrize("name", list(REFUSALS))
def test_bad_output_and_progress_are_refused_with_one_line_before_compiling(name, tmp_path, capsys, monkeypatch):
    """Through sim.app.execute, what ``python -m sim`` runs after composing (Hydra composes every
    one of these; test_cli.py covers the entry point's exit code 2 for a refusal)."""
    from sim.app import execute
    from sim.core import engine

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled before refusing")

    monkeypatch.setattr(engine, "chunk_executable", no_compiling)
    code = execute(_compose(*CHEAP, *REFUSALS[name][0]), tmp_path / "run")
    _one_refusal(code, capsys.readouterr().err, name)
    assert not (tmp_path / "run" / "results.nc").exists()
