"""Collect a Hydra multirun into ``summary.parquet`` (one row per job: overrides + outcomes).

Runs as a Hydra callback at the end of a sweep and can be re-run by hand
(``python -m sim.sweep PATH``). Jobs that failed still get a row (``status`` failed, ``reason``),
so one failed job never loses the others' results.

Every file of a sweep folder is written atomically (sim.io; the jobs' ``.hydra/`` by sim.app)
except ``multirun.yaml``: Hydra's BasicSweeper writes it in place (``OmegaConf.save``) before the
first job starts, whatever the launcher, and only a replacement sweeper could change that. A sweep
killed during that write has no job folders and no ``summary.parquet``, so it never looks complete.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import yaml
from hydra.experimental.callback import Callback

from sim.io import write_parquet


def collect(sweep_dir) -> pd.DataFrame:
    sweep_dir = Path(sweep_dir)
    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        row = {"job": int(job.name)}
        ov = job / ".hydra" / "overrides.yaml"
        if ov.is_file():
            for item in yaml.safe_load(ov.read_text()) or []:
                key, _, value = str(item).partition("=")
                row[f"override.{key.lstrip('+~')}"] = value
        summary = job / "summary.json"
        if summary.is_file():
            data = json.loads(summary.read_text())
            row.update({k: v for k, v in data.items() if not isinstance(v, (dict, list))})
        else:
            row.update(status="failed", reason="no summary.json (job did not finish)")
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        write_parquet(sweep_dir / "summary.parquet", df)
    return df


class CollectSweep(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            df = collect(sweep_dir)
            n_failed = int((df.get("status") != "ok").sum()) if not df.empty else 0
            print(f"sweep: {len(df)} jobs ({n_failed} failed) -> {sweep_dir / 'summary.parquet'}")
            try:
                from sim.plot import sweep_figures

                sweep_figures(df, sweep_dir)
            except Exception as exc:  # figures must never lose the table
                print(f"sweep figures skipped: {exc}", file=sys.stderr)


if __name__ == "__main__":
    df = collect(sys.argv[1])
    print(df.to_string())
