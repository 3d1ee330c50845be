"""Sweep analysis (README, "Sweeps"): typed override columns, ``sim.load_sweep``, the sweep figures,
the job lines and exit code of a sweep, and ``python -m sim.plot`` on run, sweep and other folders.

One tiny real sweep (generic substrate, 4 cells, 20 steps; ``topology=ring,grid`` keep one compiled
shape) is shared by the module, run in this process through ``sim.app.entry`` (all ``python -m sim``
calls: a child process would spend seconds importing JAX again); the figure and typing details run
on tables built by hand.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import signal
import sys
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml

from _support import TISSUE

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import sim  # noqa: E402
from sim import plot, sweep  # noqa: E402
from sim.sweep_figures import draw, plan  # noqa: E402

SWEEP = [TISSUE, "substrate=generic", "topology.n_cells=4", "steps=20", "record_every=10", "replicates=2",
         "figures=false", "params.demand_scale=0.5,1.5,-1", "topology=ring,grid"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """(sweep folder, result: returncode, stdout, stderr) of the shared sweep: 6 jobs, the two with
    demand -1 refused."""
    from sim.app import entry

    folder = tmp_path_factory.mktemp("sweep") / "sw"
    out, err, code = io.StringIO(), io.StringIO(), 0
    argv, sigterm = sys.argv, signal.getsignal(signal.SIGTERM)  # (entry sets both for its own process)
    sys.argv = ["sim", "-m", *SWEEP, f"hydra.sweep.dir={folder}"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            entry()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
        signal.signal(signal.SIGTERM, sigterm)
    return folder, SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_sweep_shows_each_job_and_exits_4_after_writing_the_table_with_its_failures(swept):
    folder, res = swept
    assert res.returncode == 4, res.stderr[-3000:]
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("[job ")]
    assert lines == [f"[job {i}] params.demand_scale={d} topology={t}"
                     for i, (d, t) in enumerate(itertools.product(["0.5", "1.5", "-1"], ["ring", "grid"]))]
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["0", "1", "2", "3", "4", "5"]  # Hydra's names
    table = pd.read_parquet(folder / "summary.parquet")
    assert list(table["status"]) == ["ok"] * 4 + ["failed"] * 2
    assert table["reason"].iloc[4].startswith("invalid config: params.demand_scale=-1")
    assert "sweep: 6 jobs (2 failed)" in res.stdout
    assert not (folder / "figures").exists()  # figures=false: no sweep figures either


def test_override_columns_are_typed_in_the_parquet_table(swept):
    folder, _ = swept
    table = pd.read_parquet(folder / "summary.parquet")
    assert table["override.params.demand_scale"].dtype == np.float64
    assert list(table["override.params.demand_scale"]) == [0.5, 0.5, 1.5, 1.5, -1.0, -1.0]
    assert table["override.topology.n_cells"].dtype == np.int64 and table["override.steps"].dtype == np.int64
    assert table["override.figures"].dtype == bool and not table["override.figures"].any()
    assert pd.api.types.is_string_dtype(table["override.topology"])
    assert list(table["override.topology"]) == ["ring", "grid"] * 3
    assert table["job"].dtype == np.int64


def test_override_column_types_follow_hydras_grammar(tmp_path):
    def job(i, overrides):
        (tmp_path / str(i) / ".hydra").mkdir(parents=True)
        (tmp_path / str(i) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (tmp_path / str(i) / "summary.json").write_text(json.dumps({"status": "ok", "y": i}))

    job(0, ["a=1", "b=1", "c=true", "d='1'", "e=[1,2]", "f=x", "g=null"])
    job(1, ["a=2", "b=2.5", "c=false", "d='2'", "e=[3]", "f=1", "g=3"])
    job(2, ["a=3", "b=1e-3", "c=true", "d=abc", "e=[]"])  # no f, no g: missing in this row
    df = sweep.collect(tmp_path)
    back = pd.read_parquet(tmp_path / "summary.parquet")
    for t in (df, back):
        assert t["override.a"].dtype == np.int64 and list(t["override.a"]) == [1, 2, 3]
        assert t["override.b"].dtype == np.float64 and list(t["override.b"]) == [1.0, 2.5, 0.001]
        assert t["override.c"].dtype == bool and list(t["override.c"]) == [True, False, True]
        assert list(t["override.d"]) == ["1", "2", "abc"]  # quoted numbers stay strings
        assert list(t["override.e"]) == ["[1,2]", "[3]", "[]"]  # lists keep the override's text
        assert t["override.f"].tolist()[:2] == ["x", "1"] and pd.isna(t["override.f"].tolist()[2])
        assert str(t["override.g"].dtype) == "Int64" and t["override.g"].isna().tolist() == [True, False, True]
    # a table written before the columns were typed reads back typed
    old = pd.DataFrame({"job": [0, 1], "override.x": ["0.5", "2"], "override.t": ["ring", "grid"], "status": "ok"})
    typed = sweep.retype_overrides(old)
    assert typed["override.x"].dtype == np.float64 and list(typed["override.t"]) == ["ring", "grid"]


def test_load_sweep_stacks_results_along_job_with_typed_coordinates(swept):
    folder, _ = swept
    loaded = sim.load_sweep(folder)
    ds, table = loaded
    assert loaded.parameters == ["params.demand_scale", "topology"]
    assert len(table) == 6 and table["override.params.demand_scale"].dtype == np.float64
    assert list(ds["job"].values) == [0, 1, 2, 3]  # the failed jobs wrote no results.nc: table rows only
    assert ds["params.demand_scale"].dims == ("job",) and ds["params.demand_scale"].dtype == np.float64
    assert list(ds["params.demand_scale"].values) == [0.5, 0.5, 1.5, 1.5]
    assert ds["topology"].dtype.kind == "U" and list(ds["topology"].values) == ["ring", "grid", "ring", "grid"]
    assert {"job", "replicate", "time", "cell"} <= set(ds["charged_fraction"].dims)
    assert ds.sizes["replicate"] == 2 and ds.sizes["cell"] == 4
    assert "steps=20" in ds.attrs["sweep_fixed"]
    # a higher demand leaves less charged currency, on either graph
    cf = ds["charged_fraction"].isel(time=-1).mean(("replicate", "cell"))
    for topo in ("ring", "grid"):
        lo, hi = (cf.where((ds["topology"] == topo) & (ds["params.demand_scale"] == d), drop=True).item()
                  for d in (0.5, 1.5))
        assert hi < lo
    with pytest.raises(ValueError, match="not-a-sweep"):
        sim.load_sweep(folder.parent / "not-a-sweep")


def test_sweep_figure_of_the_two_parameter_sweep(swept):
    folder, _ = swept
    table = sweep.read_table(folder)
    figs = draw(table, sweep.swept_parameters(table, folder))
    try:
        assert [name for name, _ in figs] == ["sweep_params.demand_scale.png"]  # one numeric parameter
        fig = figs[0][1]
        p = plan(table, ["params.demand_scale", "topology"])
        assert p.numeric == ["params.demand_scale"] and p.categorical == ["topology"]
        assert "charged_fraction" in p.outcomes and "wall_s" not in p.outcomes
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
        assert len(panels) == len(p.outcomes)
        for ax, outcome in zip(panels, p.outcomes):
            assert ax.get_xlabel() == "params.demand_scale" and ax.get_ylabel() == outcome
            assert len(ax.get_lines()) == 2  # one line per topology
            for line in ax.get_lines():
                assert list(line.get_xdata()) == [0.5, 1.5]  # the refused -1 jobs are not drawn
        legend = [t.get_text() for t in panels[0].get_legend().get_texts()]
        assert legend == ["topology=grid", "topology=ring"]
        assert "2 of 6 jobs failed" in fig._suptitle.get_text()
    finally:
        for _, f in figs:
            plt.close(f)
    # the command line writes it
    assert plot.main([str(folder)]) == 0
    assert (folder / "figures" / "sweep_params.demand_scale.png").read_bytes()[:4] == b"\x89PNG"


def _hand_table() -> pd.DataFrame:
    rows = []
    for j, (a, b, topo, seed) in enumerate(itertools.product([0.5, 1.0, 2.0], [4, 8], ["ring", "grid"], [0, 1, 2])):
        rows.append({"job": j, "override.params.demand_scale": a, "override.topology.n_cells": b,
                     "override.topology": topo, "override.seed": seed, "override.steps": 20,
                     "status": "ok", "out": a * b + seed, "flag": a > 1, "wall_s": 0.1 * j})
    return pd.DataFrame(rows)


def test_heatmap_for_two_numeric_parameters_and_band_over_seeds():
    table = _hand_table()
    figs = dict(draw(table))
    try:
        assert sorted(figs) == ["sweep_params.demand_scale.png", "sweep_params.demand_scale__topology.n_cells.png",
                                "sweep_topology.n_cells.png"]
        p = plan(table)
        assert p.pooled == ["seed"] and p.outcomes == ["out", "flag"]
        line = figs["sweep_params.demand_scale.png"]
        ax = line.axes[0]
        assert len(ax.get_lines()) == 4  # 2 n_cells x 2 topologies
        assert len(ax.collections) == 4  # a band per line (3 seeds per point)
        first = ax.get_lines()[0]  # n_cells=4, grid: mean over seeds 0, 1, 2 of a * 4 + seed
        assert np.allclose(first.get_ydata(), [0.5 * 4 + 1, 1.0 * 4 + 1, 2.0 * 4 + 1])
        heat = figs["sweep_params.demand_scale__topology.n_cells.png"]
        maps = [ax for ax in heat.axes if ax.images]
        assert len(maps) == 4  # (out, flag) x (grid, ring)
        assert all(ax.get_xlabel() == "params.demand_scale" and ax.get_ylabel() == "topology.n_cells" for ax in maps)
        grid = maps[0].images[0].get_array()
        assert grid.shape == (2, 3) and np.allclose(grid[0], [0.5 * 4 + 1, 1.0 * 4 + 1, 2.0 * 4 + 1])
    finally:
        for f in figs.values():
            plt.close(f)


def test_sweep_callback_draws_the_figures_after_the_table_unless_figures_false(tmp_path, capsys):
    for folder, figures in ((tmp_path / "on", True), (tmp_path / "off", False)):
        for i, (x, topo) in enumerate(itertools.product([1, 2], ["ring", "grid"])):
            job = folder / str(i)
            (job / ".hydra").mkdir(parents=True)
            (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"x={x}", f"topology={topo}"]))
            (job / "summary.json").write_text(json.dumps({"status": "ok", "y": x * (2 if topo == "ring" else 3)}))
        state = sweep.Outcome(sweep_dir=folder, figures=figures)
        sweep._collect_into(state)
        assert state.table_written and state.exit_code == 0
    assert (tmp_path / "on" / "figures" / "sweep_x.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "off" / "figures").exists()
    assert f"sweep figure: {tmp_path / 'on' / 'figures' / 'sweep_x.png'}" in capsys.readouterr().out


def test_job_line_names_the_swept_values(tmp_path):
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"overrides": {"task": ["steps=20", "params.demand_scale=0.5,1.5", "topology=ring,small_world"]}}}))
    assert sweep.job_line(3, ["steps=20", "params.demand_scale=1.5", "topology=ring"], tmp_path) == \
        "[job 3] params.demand_scale=1.5 topology=ring"
    assert sweep.job_line(0, ["steps=20"], tmp_path / "none") == "[job 0] steps=20"  # no multirun.yaml: all


def test_plot_help_prints_usage_and_exits_0(capsys):
    # (in this process: `python -m sim.plot` is `sys.exit(main())`, and a child would cost seconds)
    with pytest.raises(SystemExit) as exc:
        plot.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m sim.plot") and "sweep folder" in out and "exit codes: 0 ok, 2" in out


def test_plot_refuses_a_folder_that_is_neither_run_nor_sweep(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    assert plot.main([str(tmp_path / "notes")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: PATH='{tmp_path / 'notes'}': neither a run nor a sweep folder")
    assert plot.main([str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        plot.main([str(tmp_path), "extra"])
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_plot_redraws_a_run_with_its_own_figure_writer(swept, tmp_path, capsys):
    folder, _ = swept
    job = folder / "0"  # a sweep job is a plain generic run: the generic substrate's figure
    assert plot.main([str(job)]) == 0
    assert sorted(p.name for p in (job / "figures").iterdir()) == ["generic.png", "network.png"]
    # an experiment with its own figures: roofline, from its config (nothing is simulated again)
    from sim.core.config import compose

    run = tmp_path / "roofline"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(compose(["experiment=roofline"])))
    (run / "summary.json").write_text(json.dumps({"status": "ok", "experiment": "roofline"}))
    assert plot.main([str(run)]) == 0
    assert [p.name for p in (run / "figures").iterdir()] == ["roofline.png"]
    # a plain run without results.nc: one line naming the file
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "summary.json").write_text(json.dumps({"status": "failed", "reason": "boom", "experiment": "tissue"}))
    capsys.readouterr()
    assert plot.main([str(failed)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.nc is missing" in err[0] and "boom" in err[0]
