"""``experiment=analogy``: the structural table of biology and LLM serving, every row one definition
applied to both substrates, labelled emergent / set by parameters / by definition, every number with
its spread over replicates; its files, its ranges (docs/references.md) and its refusals.

A reduced config (6 cells, 2 LLM and 4 biology replicates, 20 s + 30 s) keeps it short; the row
definitions themselves are checked on small hand-made inputs."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import sim  # noqa: F401  (float64)
from _support import run_child
from sim.api import run
from sim.app import EXIT_CONFIG, execute
from sim.constants import landauer_j
from sim.core.config import CONF_DIR
from sim.errors import ConfigError
from sim.experiments import analogy_rows as rows
from sim.experiments.analogy_rows import DEFINITION, EMERGENT, ROWS, SET, Spread, View, Window
from sim.substrates.llm.build import compose

SMALL = ["experiment=analogy", "topology.n_cells=6", "replicates=2", "analogy.bio_replicates=4",
         "analogy.step_time_s=20", "analogy.after_s=30", "analogy.window_s=10", "chunk_records=50"]
STATS = ("", "_std", "_ci_low", "_ci_high", "_n")


def _run(tmp_path_factory, name, extra=(), quiet=True):
    out = tmp_path_factory.mktemp(name)
    code = execute(compose(SMALL + list(extra)), out, quiet=quiet)
    return code, out, json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def analogy_run(tmp_path_factory):
    # results.nc in float64: the trajectories are compared with a plain run's to 1e-12 below
    return _run(tmp_path_factory, "analogy", extra=["output.float32=false"])


def _row_values(s: dict, side: str, labels=(EMERGENT, SET, DEFINITION)) -> dict:
    return {f"{side}_{r.key}{x}": s[f"{side}_{r.key}{x}"] for r in ROWS if r.label(side) in labels for x in STATS}


# ---- the row definitions, on hand-made inputs ------------------------------------------------------


def _view(substrate="bio", tau=2.0, reps=3) -> View:
    """A made-up run: charged pool relaxing exponentially (time constant ``tau``) from 800 to 500 of
    a carrier of 1000 after a step at t = 10 s; 100 units made per s before, 160 after."""
    t = np.arange(0.0, 80.0 + 1e-9, 0.1)
    i_step = int(round(10.0 / 0.1))
    x = np.where(t <= 10.0, 800.0, 500.0 + 300.0 * np.exp(-(t - 10.0) / tau))
    jitter = np.array([0.0, 1.0, -1.0])[:reps, None]  # replicates differ by a constant
    pool = x[None, :] + jitter
    pre, post = np.arange(i_step - 49, i_step + 1), np.arange(t.size - 50, t.size)

    def window(index, start, rate, energy_per_unit):
        span = t[index[-1]] - t[start]
        made = np.full(reps, rate * span) + np.arange(reps)
        return Window(index=index, start=start, produced=made, input_energy_j=made * energy_per_unit,
                      stored_energy_j=0.5 * made * energy_per_unit, work=made / 4.0, work_currency=made)

    return View(substrate=substrate, unit="u", temperature_k=300.0, times=t, pool=pool,
                capacity=np.full_like(pool, 1000.0), i_step=i_step, before=window(pre, pre[0] - 1, 100.0, 2e-19),
                after=window(post, post[0] - 1, 160.0, 2e-19), settled=np.ones(reps, bool),
                cascade_short=1.0, cascade_long=2.0)


def test_rows_on_a_hand_made_run():
    v = _view()
    assert rows.fraction_before(v) == pytest.approx([0.8, 0.801, 0.799])
    assert rows.fraction_after(v) == pytest.approx([0.5, 0.501, 0.499])
    # turnover: the charged pool over the production rate (100 units/s over a 5 s window, +1 unit per replicate)
    assert rows.turnover_before(v) == pytest.approx([800 / 100.0, 801 / (100 + 1 / 5.0), 799 / (100 + 2 / 5.0)])
    assert rows.input_energy_per_unit(v) == pytest.approx(np.full(3, 2e-19))
    assert rows.input_energy_per_unit_kt(v) == pytest.approx(np.full(3, 2e-19 / landauer_j(300.0)))
    assert rows.stored_fraction(v) == pytest.approx(np.full(3, 0.5))
    assert rows.currency_per_work(v) == pytest.approx(np.full(3, 4.0))
    # 63% of an exponential approach: one time constant, up to the interpolation between records
    assert rows.relaxation(v) == pytest.approx(np.full(3, 2.0), abs=0.01)
    assert rows.relaxation(_view(tau=5.0)) == pytest.approx(np.full(3, 5.0), abs=0.02)
    # no new steady state (the substrate says so): left out, not a number
    unsettled = dataclasses.replace(v, settled=np.array([True, False, True]))
    assert np.isnan(rows.relaxation(unsettled)[1]) and rows.evaluate(rows.row("relaxation_s"), unsettled).n == 2


def test_every_row_is_one_definition_for_both_sides():
    """The table applies each row's one function to both Views: the same numbers give the same
    values on both sides, and every compared row is then alike with ratio 1."""
    bio, llm = _view("bio"), dataclasses.replace(_view("llm"), unit="token")
    entries = rows.table({"bio": bio, "llm": llm}, alike_factor=2.0)
    assert [e["row"] for e in entries] == list(ROWS)
    for e in entries:
        assert e["bio"] == e["llm"], e["row"].key
        if e["row"].compared:
            assert e["verdict"] == "alike" and e["factor"] == pytest.approx(1.0), e["row"].key
        else:
            assert e["verdict"] == "not compared"
    # a slower relaxation on one side shows up on that side only, in the ratio of the verdict
    slow = rows.table({"bio": bio, "llm": dataclasses.replace(_view("llm", tau=8.0))}, alike_factor=2.0)
    relax = next(e for e in slow if e["row"].key == "relaxation_s")
    assert relax["verdict"] == "differs" and relax["factor"] == pytest.approx(4.0, rel=0.01)


def test_spread_and_verdicts():
    s = rows.spread([1.0, 2.0, 3.0, float("nan")])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)
    assert s.high - s.mean == pytest.approx(4.302652729911275 / math.sqrt(3))  # t(0.975, 2) x sd / sqrt(n)
    assert rows.spread([5.0]).n == 1 and math.isnan(rows.spread([5.0]).low)
    tight = lambda m: Spread(m, 0.01 * abs(m), m - 0.01 * abs(m), m + 0.01 * abs(m), 8)  # noqa: E731
    assert rows.verdict(tight(1.0), tight(1.5), 2.0)["verdict"] == "alike"
    assert rows.verdict(tight(1.0), tight(3.0), 2.0)["verdict"] == "differs"
    assert rows.verdict(tight(1.0), tight(-3.0), 2.0)["verdict"] == "opposite sign"
    wide = Spread(1.9, 0.5, 1.2, 2.6, 3)
    v = rows.verdict(tight(1.0), wide, 2.0)
    assert v["verdict"] == "undecided" and v["factor_low"] < 2.0 < v["factor_high"]


# ---- the experiment --------------------------------------------------------------------------------


def test_runs_and_writes_its_files(analogy_run):
    code, out, s = analogy_run
    assert code == 0, s.get("reason")
    assert s["status"] == "ok" and s["experiment"] == "analogy"
    for name in ("analogy_table.md", "analogy_table.csv", "analogy_table.parquet", "results.nc", "summary.json",
                 "figures/analogy.png"):
        assert (out / name).is_file(), name
    table = list(csv.DictReader(io.StringIO((out / "analogy_table.csv").read_text())))
    assert [r["key"] for r in table] == [r.key for r in ROWS]
    pq = pd.read_parquet(out / "analogy_table.parquet")
    assert list(pq["key"]) == [r.key for r in ROWS] and pq["bio_mean"].dtype == float
    np.testing.assert_array_equal(pq["llm_n"].to_numpy(), [s[f"llm_{r.key}_n"] for r in ROWS])
    md = (out / "analogy_table.md").read_text()
    for r in ROWS:
        assert f"| {r.name} | {r.row_label} |" in md
    ds = xr.load_dataset(out / "results.nc")
    assert ds["time_bio"].attrs["units"] == "s" and ds["time_llm"].attrs["units"] == "s"
    assert {"bio_pools", "bio_energy_charge", "llm_kv_free", "llm_kv_free_fraction", "cascade_bio_cost",
            "cascade_llm_cost", "bio_charged_fraction", "llm_charged_fraction", "table_mean"} <= set(ds.data_vars)
    assert ds["bio_charged_fraction"].dims == ("replicate_bio", "time_bio") and ds.sizes["replicate_bio"] == 4
    assert ds.sizes["replicate_llm"] == 2
    np.testing.assert_allclose(ds["table_mean"].sel(side="bio").values, [s[f"bio_{r.key}"] for r in ROWS])
    assert ds.attrs["table_md"] == md and ds.attrs["table_csv"] == (out / "analogy_table.csv").read_text()


def test_every_row_has_a_label_and_a_spread(analogy_run):
    _, _, s = analogy_run
    for r in ROWS:
        for side, reps in (("bio", s["bio_replicates"]), ("llm", s["llm_replicates"])):
            assert r.label(side) in (EMERGENT, SET, DEFINITION)
            mean, sd, lo, hi, n = (s[f"{side}_{r.key}{x}"] for x in STATS)
            if r.key == "relaxation_s" and n == 0:  # (no replicate settled within after_s: said, not guessed)
                assert side == "llm" and mean is None and not s["llm_new_steady_state"]
                continue
            assert mean is not None and math.isfinite(mean), f"{side}_{r.key}"
            if r.exact or r.label(side) == DEFINITION:
                continue
            if r.key != "relaxation_s":  # (replicates without a new steady state are left out of its n)
                assert n == reps, f"{side}_{r.key}"
            if n >= 2:
                assert sd >= 0 and lo <= mean <= hi, f"{side}_{r.key}"
    assert s["bio_relaxation_s_n"] >= 3 and s["bio_relaxation_s_ci_high"] - s["bio_relaxation_s_ci_low"] < s["bio_relaxation_s"]
    for r in ROWS:  # verdicts only where both sides are emergent
        assert (f"{r.key}_verdict" in s) == (r.bio == EMERGENT and r.llm == EMERGENT), r.key


def _numbers(node, out: set):
    if isinstance(node, dict):
        for v in node.values():
            _numbers(v, out)
    elif isinstance(node, list):
        for v in node:
            _numbers(v, out)
    elif isinstance(node, (int, float)) and not isinstance(node, bool) and node != 0:
        out.add(float(node))
    return out


def test_no_emergent_row_equals_a_configured_constant(analogy_run):
    _, _, s = analogy_run
    constants = _numbers(compose(SMALL), set())
    assert {4.0, 0.02, 2.0} <= constants  # (atp_per_aa, dt, step_factor: the collection works)
    for r in ROWS:
        for side in ("bio", "llm"):
            if r.label(side) == EMERGENT:
                v = s[f"{side}_{r.key}"]
                hit = [c for c in constants if v is not None and math.isclose(v, c, rel_tol=1e-6)]
                assert not hit, f"{side}_{r.key} = {v} equals configured {hit}"


def test_rows_set_by_parameters_follow_their_parameters(analogy_run):
    _, _, s = analogy_run
    sub = compose(SMALL)["substrate"]
    ch, kinds = sub["chains"], sub["producers"]["kinds"]
    # ATP per amino acid: elongation + initiation shared over the protein
    assert s["bio_currency_per_work"] == pytest.approx(ch["atp_per_aa"] + ch["initiation_atp"] / ch["mean_length_aa"],
                                                       rel=2e-3)
    # glucose free energy per ATP: a mix of each producer kind's abs(dG) / yield
    per_atp = [abs(k["substrate_dg_kj_per_mol"]) / k["yield"] * 1e3 / 6.02214076e23 for k in kinds.values()]
    assert min(per_atp) * (1 - 1e-9) <= s["bio_input_energy_per_unit_j"] <= max(per_atp) * (1 + 1e-9)
    assert s["bio_cascade_exponent_short"] == pytest.approx(1.0, abs=1e-3)
    assert s["bio_cascade_exponent_long"] == pytest.approx(1.0, abs=1e-3)
    assert s["llm_cascade_exponent_short"] == pytest.approx(1.0, abs=0.05) and s["llm_cascade_exponent_long"] > 1.8
    assert s["llm_stored_energy_fraction"] == 0.0 and s["llm_cascade_long_extrapolated"]


def test_values_in_published_ranges(analogy_run):
    _, _, s = analogy_run
    assert 3.0 < s["bio_turnover_s"] < 60.0  # ATP pool turnover ~6-18 s (Attwell & Laughlin 2001; Gao 2019)
    assert 0.8 < s["bio_energy_charge_before"] < 0.99  # energy charge 0.8-0.95 (Atkinson 1968)
    assert s["bio_energy_charge_before"] < s["bio_charged_fraction_before"]  # (ATP alone, of the free pools)
    assert 0.3 < s["bio_stored_energy_fraction"] < 0.7  # ~30 ATP x 50-60 kJ/mol of 2870 kJ/mol glucose
    assert 20.0 < s["bio_input_energy_per_unit_kt"] < 60.0  # ~96 kJ/mol per ATP = ~54 kT ln 2 at 310 K
    assert 1e-3 < s["llm_input_energy_per_unit_j"] < 1.0  # J per token written; ~0.1-0.2 J per OUTPUT token (ML.ENERGY)
    assert s["llm_input_energy_per_unit_kt"] > 1e15 * s["bio_input_energy_per_unit_kt"]
    assert s["bio_carrier_balance_error"] < 1e-10 and s["llm_carrier_balance_error"] < 1e-10
    # Little's law on tokens: a token is held for part of its request's time in the system
    assert 0.2 < s["llm_turnover_s"] / s["llm_mean_time_in_system_before_s"] < 5.0


def test_demand_step_discharges_the_cell_and_fills_the_cache(analogy_run):
    """Demand spends ATP faster than it is made (the charged fraction falls), while more requests
    in flight hold more tokens (the occupied KV rises): the two carriers answer with opposite signs."""
    _, _, s = analogy_run
    assert s["bio_charged_fraction_after"] < s["bio_charged_fraction_before"]
    assert s["bio_atp_after_mm"] < s["bio_atp_before_mm"]
    assert s["llm_charged_fraction_after"] > s["llm_charged_fraction_before"]
    assert s["llm_kv_occupied_after_tokens"] > s["llm_kv_occupied_before_tokens"]
    assert s["bio_response_rel_change_ci_high"] < 0 < s["llm_response_rel_change"]
    assert s["response_rel_change_verdict"] in ("opposite sign", "undecided")
    assert s["bio_relaxation_s"] > 0 and s["bio_new_steady_state"] and s["llm_stable_after"]
    assert s["llm_arrival_rate_after_req_per_s"] > 1.5 * s["llm_arrival_rate_before_req_per_s"]
    assert s["bio_turnover_after_s"] < s["bio_turnover_s"]  # a faster flux through a smaller pool


def test_atp_per_residue_moves_only_the_biology_rows_it_should(analogy_run, tmp_path_factory, capsys):
    """atp_per_aa sets biology's currency per unit of work; the chains' ATP flux is the consumer's
    capacity (the cohort shrinks instead), so biology's emergent rows hardly move, and nothing on
    the LLM side moves at all. (Run with figures=false: the table is an output, not a figure.)"""
    _, _, base = analogy_run
    capsys.readouterr()
    code, out, s = _run(tmp_path_factory, "atp6", ["substrate.chains.atp_per_aa=6", "figures=false"], quiet=False)
    assert code == 0, s.get("reason")
    assert (out / "analogy_table.md").read_text() in capsys.readouterr().out
    assert (out / "analogy_table.csv").is_file() and not (out / "figures").exists()
    assert _row_values(s, "llm") == _row_values(base, "llm")
    assert s["bio_currency_per_work"] / base["bio_currency_per_work"] == pytest.approx(6.005 / 4.005, rel=2e-3)
    for r in ROWS:
        if r.bio == EMERGENT:
            assert s[f"bio_{r.key}"] == pytest.approx(base[f"bio_{r.key}"], rel=0.02), r.key


def test_gpu_change_leaves_biology_unchanged(analogy_run, tmp_path_factory, monkeypatch):
    """(The same run checks the hook for a deterministic biology relaxation time: reported beside
    the replicate estimate, with the biology model and its stepped parameters.)"""
    from sim.experiments import analogy

    _, _, base = analogy_run
    seen = {}

    def reference(model, stepped, opt):
        seen.update(ratio=float(np.asarray(stepped.demand_scale) / np.asarray(model.params.demand_scale)))
        return 3.5

    monkeypatch.setattr(analogy, "RELAXATION_REFERENCE", reference)
    code, out, s = _run(tmp_path_factory, "h200", ["gpu=h200", "figures=false"])
    assert code == 0, s.get("reason")
    assert s["bio_relaxation_reference_s"] == 3.5 and seen["ratio"] == pytest.approx(2.0)
    assert "deterministic reference: 3.5 s" in (out / "analogy_table.md").read_text()
    assert s["gpu"] != base["gpu"]
    assert _row_values(s, "bio") == _row_values(base, "bio")
    # emergent LLM rows move: another memory and bandwidth, another cache occupancy and energy per token
    assert s["llm_input_energy_per_unit_j"] != pytest.approx(base["llm_input_energy_per_unit_j"], rel=1e-3)
    assert s["llm_charged_fraction_before"] < base["llm_charged_fraction_before"]  # (a larger cache)


def test_biology_before_the_step_is_the_plain_tissue_run(analogy_run):
    _, out, s = analogy_run
    cfg = compose(SMALL)
    every, dt = cfg["record_every"], cfg["dt"]
    n = int(round(s["step_time_s"] / (dt * every)))
    cfg["replicates"] = cfg["analogy"]["bio_replicates"]
    assert cfg.pop("analogy")["bio_biogenesis"] is False  # the analogy runs biology without biogenesis:
    cfg["substrate"]["producers"]["birth_per_s"] = 0.0  # (failed producers stay failed)
    cfg["experiment"] = {"name": "tissue", "kind": "tissue"}
    cfg["steps"] = n * every
    plain = run(cfg).dataset
    ds = xr.load_dataset(out / "results.nc")
    a = ds["bio_pools"].isel(time_bio=slice(0, n)).values
    b = plain["pools"].values
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds["time_bio"].values[:n], plain["time"].values, rtol=0, atol=1e-12)


def test_records_are_flat_numbers(analogy_run):
    _, out, _ = analogy_run
    recs = pd.read_parquet(out / "analogy_table.parquet").to_dict("records")
    assert len(recs) == len(ROWS)
    assert {"key", "label", "bio_label", "bio_mean", "bio_std", "bio_ci_low", "bio_ci_high", "bio_n", "llm_mean",
            "verdict", "factor", "factor_low", "factor_high", "definition"} <= set(recs[0])
    for rec in recs:
        assert isinstance(rec["bio_n"], (int, np.integer)) and isinstance(rec["verdict"], str)


@pytest.mark.parametrize("override,key", [
    ("analogy.step_factor=0", "analogy.step_factor"),
    ("analogy.step_factor=-2", "analogy.step_factor"),
    ("analogy.step_factor=abc", "analogy.step_factor"),
    ("analogy.step_factor=null", "analogy.step_factor"),
    ("analogy.window_s=0.3", "analogy.window_s"),
    ("analogy.alike_factor=1", "analogy.alike_factor"),
    ("analogy.bio_replicates=1", "analogy.bio_replicates"),
    ("replicates=1", "replicates"),
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


def test_the_analogy_is_the_default_experiment():
    """`python -m sim` / `make run` with no experiment=... run the analogy; experiment=tissue is the
    plain run, without the analogy's top-level values (its 16 cells, its analogy section)."""
    from _support import TISSUE
    import yaml

    default = compose([])
    assert default["experiment"] == {"name": "analogy", "kind": "analogy"}
    assert default["topology"]["n_cells"] == 16 and "analogy" in default
    plain = compose([TISSUE])
    shipped = yaml.safe_load((CONF_DIR / "topology" / "small_world.yaml").read_text())
    assert plain["experiment"] == {"name": "tissue", "kind": "tissue"} and "analogy" not in plain
    assert plain["topology"]["n_cells"] == shipped["n_cells"]


def test_no_checkpoints():
    with pytest.raises(ConfigError) as info:
        run(compose(SMALL + ["checkpoint_every=2"]))
    assert info.value.key == "checkpoint_every"


def test_bad_step_factor_exit_code_2_from_the_command_line(tmp_path):
    res = run_child(["-m", "sim", *SMALL, "analogy.step_factor=-1", f"hydra.run.dir={tmp_path}/run"])
    assert res.returncode == EXIT_CONFIG, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid config: analogy.step_factor=-1"), lines
