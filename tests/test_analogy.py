"""``experiment=analogy``: the structural table with measured numbers (biology and LLM tissues on
one graph, a demand step, the cascade exponents), its files, its ranges (docs/references.md) and its
refusals. A reduced config (6 cells, one replicate, 20 s + 30 s) keeps it short."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import xarray as xr

import sim  # noqa: F401  (float64)
from _support import run_child
from sim.api import run
from sim.app import EXIT_CONFIG, execute
from sim.errors import ConfigError
from sim.experiments.analogy import ROWS
from sim.substrates.llm.build import compose

SMALL = ["experiment=analogy", "topology.n_cells=6", "replicates=1", "analogy.step_time_s=20",
         "analogy.after_s=50", "analogy.window_s=10", "chunk_records=50"]


@pytest.fixture(scope="module")
def analogy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("analogy")
    code = execute(compose(SMALL), out, quiet=True)
    summary = json.loads((out / "summary.json").read_text())
    return code, out, summary


def test_runs_and_writes_its_files(analogy_run, capsys):
    code, out, s = analogy_run
    assert code == 0, s.get("reason")
    assert s["status"] == "ok" and s["experiment"] == "analogy"
    for name in ("analogy_table.md", "analogy_table.csv", "results.nc", "summary.json", "figures/analogy.png"):
        assert (out / name).is_file(), name
    rows = list(csv.reader(io.StringIO((out / "analogy_table.csv").read_text())))
    assert rows[0] == ["quantity", "biology", "LLM", "units", "definition"]
    assert [r[0] for r in rows[1:]] == [name for _, name, _, _ in ROWS]
    md = (out / "analogy_table.md").read_text()
    for _, name, _, _ in ROWS:
        assert f"| {name} |" in md
    ds = xr.load_dataset(out / "results.nc")
    assert ds["time_bio"].attrs["units"] == "s" and ds["time_llm"].attrs["units"] == "s"
    assert {"bio_pools", "bio_energy_charge", "llm_kv_free", "llm_kv_free_fraction", "cascade_bio_cost",
            "cascade_llm_cost"} <= set(ds.data_vars)
    assert ds.attrs["table_md"] == md and ds.attrs["table_csv"] == (out / "analogy_table.csv").read_text()


def test_every_quantity_for_both_presets(analogy_run):
    _, _, s = analogy_run
    for key, _, _, _ in ROWS:
        for pre in ("bio", "llm"):
            v = s.get(f"{pre}_{key}")
            assert v is not None, f"{pre}_{key}"
            if not isinstance(v, str):
                assert math.isfinite(v), f"{pre}_{key}"
    assert s["bio_currency"] == "ATP" and s["llm_currency"] == "token"
    assert s["bio_cells"] == s["llm_cells"] == 6
    assert s["bio_new_steady_state"] and s["llm_stable_after"]


def test_values_in_published_ranges(analogy_run):
    _, _, s = analogy_run
    assert 3.0 < s["bio_turnover_s"] < 60.0  # ATP pool turnover ~6-18 s (Attwell & Laughlin 2001; Gao 2019)
    assert 0.8 < s["bio_charged_fraction_before"] < 0.99  # energy charge 0.8-0.95 (Atkinson 1968)
    assert 1.0 < s["bio_landauer_ratio"] < 100.0  # one ATP ~ 31 kT ln 2 at dG0'; ~30 in vivo
    assert s["llm_landauer_ratio"] > 1e6 * s["bio_landauer_ratio"]
    assert 0.5 < s["bio_fraction_dissipated"] <= 1.0
    assert s["llm_fraction_dissipated"] > 0.999
    assert 0.3 < s["bio_energy_captured_fraction"] < 0.7  # ~30 ATP x 52 kJ/mol of 2870 kJ/mol glucose
    assert s["bio_currency_per_work"] == pytest.approx(4.0, abs=0.05)  # 4 ATP per amino acid (+ initiation)
    assert s["bio_cascade_exponent_long"] == pytest.approx(1.0, abs=0.02)
    assert s["bio_cascade_exponent_short"] == pytest.approx(1.0, abs=0.02)
    assert s["llm_cascade_exponent_long"] > 1.8
    assert s["llm_cascade_exponent_short"] == pytest.approx(1.0, abs=0.05)
    assert s["bio_carrier_balance_error"] < 1e-10 and s["llm_carrier_balance_error"] < 1e-10
    # Little's law on tokens: turnover time of the KV tokens is of the order of the time in system
    assert 0.2 < s["llm_turnover_s"] / s["llm_mean_time_in_system_before_s"] < 5.0


def test_demand_step_discharges_both_carriers(analogy_run):
    _, _, s = analogy_run
    assert s["bio_charged_fraction_after"] < s["bio_charged_fraction_before"]
    assert s["bio_atp_after_mm"] < s["bio_atp_before_mm"]
    assert s["llm_charged_fraction_after"] < s["llm_charged_fraction_before"]
    assert s["llm_kv_occupied_after_tokens"] > s["llm_kv_occupied_before_tokens"]
    assert s["bio_response_rel_change"] < 0 and s["llm_response_rel_change"] < 0
    assert s["bio_relaxation_s"] > 0 and s["llm_relaxation_s"] > 0
    assert s["llm_arrival_rate_after_req_per_s"] > 1.5 * s["llm_arrival_rate_before_req_per_s"]


def test_biology_before_the_step_is_the_plain_tissue_run(analogy_run):
    _, out, s = analogy_run
    cfg = compose(SMALL)
    every, dt = cfg["record_every"], cfg["dt"]
    n = int(round(s["step_time_s"] / (dt * every)))
    cfg.pop("analogy")
    cfg["experiment"] = {"name": "tissue", "kind": "tissue"}
    cfg["steps"] = n * every
    plain = run(cfg).dataset
    ds = xr.load_dataset(out / "results.nc")
    a = ds["bio_pools"].isel(time_bio=slice(0, n)).values
    b = plain["pools"].values
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds["time_bio"].values[:n], plain["time"].values, rtol=0, atol=1e-12)


@pytest.mark.parametrize("override,key", [
    ("analogy.step_factor=0", "analogy.step_factor"),
    ("analogy.step_factor=-2", "analogy.step_factor"),
    ("analogy.step_factor=abc", "analogy.step_factor"),
    ("analogy.step_factor=null", "analogy.step_factor"),
    ("analogy.window_s=0.3", "analogy.window_s"),
    ("analogy.llm_substrate.arrivals.rate_per_s=-1", "analogy.llm_substrate.arrivals.rate_per_s"),
    ("substrate=generic", "substrate"),
])
def test_bad_options_are_refused_one_line(tmp_path, capsys, override, key):
    capsys.readouterr()
    assert execute(compose(SMALL + [override]), tmp_path, quiet=True) == EXIT_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: invalid config: {key}="), err
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"
    assert not (tmp_path / "results.nc").exists()


def test_no_checkpoints():
    with pytest.raises(ConfigError) as info:
        run(compose(SMALL + ["checkpoint_every=2"]))
    assert info.value.key == "checkpoint_every"


def test_bad_step_factor_exit_code_2_from_the_command_line(tmp_path):
    res = run_child(["-m", "sim", *SMALL, "analogy.step_factor=-1", f"hydra.run.dir={tmp_path}/run"])
    assert res.returncode == EXIT_CONFIG, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid config: analogy.step_factor=-1"), lines


def test_tables_are_written_and_printed_without_figures(tmp_path, capsys):
    """The table is an output, not a figure: figures=false still writes it, and the CLI prints it."""
    capsys.readouterr()
    assert execute(compose(SMALL + ["figures=false"]), tmp_path) == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "analogy_table.md").read_text()
    assert md in printed and (tmp_path / "analogy_table.csv").is_file()
    assert not (tmp_path / "figures").exists()
