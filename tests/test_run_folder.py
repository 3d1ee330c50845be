"""The run-folder and sweep contract of `python -m sim` (README, "What a run writes"), end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr
import yaml

from _support import TISSUE

SMALL = [TISSUE, "steps=200", "record_every=10", "replicates=2", "topology.n_cells=12"]
SUMMARY_KEYS = {
    "currency_produced_molecules", "currency_spent_molecules", "currency_transported_molecules",
    "currency_lost_molecules", "work_done_events", "energy_j",
    "heat_j", "currency_pool_turnover_s", "landauer_ratio", "conservation_error", "energy_charge",
    "dg_atp_kj_per_mol", "status",
}


def _sim(args, cwd, module="sim"):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("fresh")
    out = _sim(SMALL, cwd)
    assert out.returncode == 0, out.stderr
    runs = list((cwd / "runs" / "tissue").iterdir())
    assert len(runs) == 1
    assert "energy charge" in out.stdout and str(runs[0].name) in out.stdout  # the printed summary table
    return runs[0]


def test_run_folder_holds_config_results_summary_figures(run_dir: Path):
    cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert cfg["steps"] == 200 and cfg["substrate"]["name"] == "bio"
    with xr.open_dataset(run_dir / "results.nc") as ds:
        assert {"time", "cell", "replicate"} <= set(ds.dims)
        assert ds.sizes["time"] == 20 and ds.sizes["cell"] == 12 and ds.sizes["replicate"] == 2
        assert ds["pools"].attrs["units"] == "mM" and ds["time"].attrs["units"] == "s"
        assert ds["dg_atp"].attrs["units"] == "kJ/mol"
        ec = ds["energy_charge"].values
        assert ((ec > 0.5) & (ec < 1.0)).all()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert all(not isinstance(v, (dict, list)) for v in summary.values())  # flat
    assert summary["status"] == "ok" and summary["conservation_error"] < 1e-9
    assert 0.8 < summary["energy_charge"] < 0.99 and -65 < summary["dg_atp_kj_per_mol"] < -45
    pngs = sorted((run_dir / "figures").glob("*.png"))
    assert len(pngs) >= 3
    import matplotlib.image as mpimg

    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(p)
        assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01  # a real, non-blank picture


def test_run_folder_hydra_files_are_complete_and_nothing_is_left_over(run_dir: Path):
    """.hydra/{config,hydra,overrides}.yaml are written by sim.app through sim.io (Hydra's own
    in-place writer is off: hydra.output_subdir is null) with the content Hydra gives them; no
    temporary and no lock file stays in a finished run folder."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sim.app import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="test"):
        composed = compose(config_name="config", overrides=SMALL)
    hydra_dir = run_dir / ".hydra"
    assert sorted(p.name for p in hydra_dir.iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert (hydra_dir / "config.yaml").read_text() == OmegaConf.to_yaml(composed)
    assert yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) == SMALL
    hyd = yaml.safe_load((hydra_dir / "hydra.yaml").read_text())["hydra"]
    assert hyd["output_subdir"] == ".hydra" and hyd["overrides"]["task"] == SMALL
    assert Path(hyd["runtime"]["output_dir"]) == run_dir
    leftovers = [p for p in run_dir.rglob("*") if p.name.startswith(".tmp-") or p.name == ".lock"]
    assert not leftovers and not (run_dir / "checkpoint").exists()


def test_plot_command_redraws_figures(run_dir: Path):
    for p in (run_dir / "figures").glob("*.png"):
        p.unlink()
    out = _sim([str(run_dir)], run_dir, module="sim.plot")
    assert out.returncode == 0, out.stderr
    assert len(list((run_dir / "figures").glob("*.png"))) >= 3


def test_sweep_collects_parquet_even_with_a_failed_job(tmp_path):
    # one job asks for a negative demand multiplier: it fails validation, the others must survive;
    # the sweep writes its table and then exits 4 (not 0), so a script sees that a job failed
    out = _sim(["-m", "params.demand_scale=0.5,2,-1", *SMALL, "figures=false"], tmp_path)
    assert out.returncode == 4, out.stderr
    sweeps = list((tmp_path / "runs" / "multirun").iterdir())
    assert len(sweeps) == 1
    df = pd.read_parquet(sweeps[0] / "summary.parquet")
    assert len(df) == 3
    df = df.set_index("override.params.demand_scale")  # typed: the values are numbers
    assert df.loc[0.5, "status"] == "ok" and df.loc[2.0, "status"] == "ok"
    assert df.loc[-1.0, "status"] == "failed" and "params.demand_scale" in df.loc[-1.0, "reason"]
    # a higher demand lowers the energy charge (the rows carry real outcomes)
    assert df.loc[2.0, "energy_charge"] < df.loc[0.5, "energy_charge"]
    for job in ("0", "1", "2"):
        assert (sweeps[0] / job / "summary.json").is_file()


def test_llm_serving_run_folder_and_plot(tmp_path):
    out = _sim(["experiment=serving", "steps=500", "record_every=50", "replicates=1"], tmp_path)
    assert out.returncode == 0, out.stderr
    (run,) = list((tmp_path / "runs" / "serving").iterdir())
    with xr.open_dataset(run / "results.nc") as ds:
        assert {"time", "cell", "replicate"} <= set(ds.dims)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok" and "stable" in summary
    out = _sim([str(run)], run, module="sim.plot")  # the LLM substrate's own figure, not every trajectory
    assert out.returncode == 0, out.stderr
    assert (run / "figures" / "serving.png").read_bytes()[:4] == b"\x89PNG"
    assert not (run / "figures" / "trajectories.png").exists()
