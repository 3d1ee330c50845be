"""Collect a Hydra multirun into ``summary.parquet`` (one row per job: overrides + outcomes).

Runs as a Hydra callback at the end of a sweep and can be re-run by hand
(``python -m sim.sweep PATH``). Jobs that failed still get a row (``status`` failed, ``reason``),
so one failed job never loses the others' results.

The table is always written when the sweep has job folders, whatever the jobs wrote:

* non-finite outcomes are read back as IEEE floats (``summary.json`` spells +-inf ``"inf"`` /
  ``"-inf"`` and NaN ``null``, see :mod:`sim.io`), so a column such as ``landauer_ratio`` of a
  job with no tokens is a float column holding ``inf``, not a mix of strings and floats;
* a column that pyarrow still cannot type (values of different kinds in different jobs, which
  no writer of this project produces) is stored as strings rather than losing the table;
* a job folder without a readable ``summary.json`` gets a ``failed`` row saying so.

Exit code of a sweep. Hydra runs the callback after the last job and then returns normally
(``python -m sim -m`` jobs never call ``sys.exit``; Hydra only warns when a callback raises), so
the callback cannot set the process's exit code itself. It records the outcome here instead
(:func:`outcome`); ``sim.app.entry`` reads it after Hydra returns and exits with
:data:`EXIT_SWEEP_FAILED` (4) when a job failed or the table could not be written, after the table
is on disk. If the sweep was aborted before the callback ran (Hydra stops a sweep at a job that
raised), :func:`finish` collects the table of the jobs that exist and reports the sweep failed.

Every file of a sweep folder is written atomically (sim.io; the jobs' ``.hydra/`` by sim.app)
except ``multirun.yaml``: Hydra's BasicSweeper writes it in place (``OmegaConf.save``) before the
first job starts, whatever the launcher, and only a replacement sweeper could change that. A sweep
killed during that write has no job folders and no ``summary.parquet``, so it never looks complete.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pandas as pd
import yaml
from hydra.experimental.callback import Callback

from sim.io import decode_nonfinite, write_parquet

TABLE = "summary.parquet"
EXIT_SWEEP_FAILED = 4  # sim.app.EXIT_FAILED: a sweep in which a job failed (each job's row says why)


def _row_value(v):
    v = decode_nonfinite(v)
    return math.nan if v is None else v


def _read_summary(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON mapping")
    except (OSError, ValueError) as exc:
        return {"status": "failed", "reason": f"unreadable summary.json ({type(exc).__name__}: {exc})"}
    return {k: _row_value(v) for k, v in data.items() if not isinstance(v, (dict, list))}


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Columns pyarrow can store: all-number columns as float64 (IEEE inf/nan kept), others as
    they are if pyarrow accepts them, else as strings (missing values stay missing)."""
    import pyarrow as pa

    out = {}
    for name in df.columns:
        col = df[name]
        values = [v for v in col.tolist() if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if col.dtype == object and values and all(_numeric(v) for v in values):
            col = col.astype("float64")  # (ints and floats of different jobs; None -> NaN)
        elif col.dtype == object:
            try:
                pa.array(col.tolist(), from_pandas=True)
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                col = col.map(lambda v: v if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
        out[name] = col
    return pd.DataFrame(out, index=df.index)


def collect(sweep_dir) -> pd.DataFrame:
    """The sweep table of ``sweep_dir`` (also written to ``summary.parquet`` when there are jobs)."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        row = {"job": int(job.name)}
        ov = job / ".hydra" / "overrides.yaml"
        try:
            items = yaml.safe_load(ov.read_text()) if ov.is_file() else []
        except (OSError, yaml.YAMLError):
            items = []
        for item in items if isinstance(items, list) else []:
            key, _, value = str(item).partition("=")
            row[f"override.{key.lstrip('+~')}"] = value
        summary = job / "summary.json"
        if summary.is_file():
            row.update(_read_summary(summary))
        else:
            row.update(status="failed", reason="no summary.json (job did not finish)")
        row.setdefault("status", "failed")
        rows.append(row)
    df = _typed(pd.DataFrame(rows))
    if not df.empty:
        write_parquet(sweep_dir / TABLE, df)
    return df


@dataclasses.dataclass
class Outcome:
    sweep_dir: Path | None = None
    jobs: int = 0
    failed: int = 0
    table_written: bool = False
    done: bool = False  # on_multirun_end ran
    error: str | None = None  # why the table could not be written

    @property
    def exit_code(self) -> int:
        return 0 if self.table_written and not self.failed else EXIT_SWEEP_FAILED


_outcome: Outcome | None = None


def reset() -> None:
    """Forget the last sweep (``sim.app.entry`` calls this before each command)."""
    global _outcome
    _outcome = None


def outcome() -> Outcome | None:
    """What the last sweep of this process did (None: no sweep ran)."""
    return _outcome


def _collect_into(state: Outcome) -> None:
    try:
        df = collect(state.sweep_dir)
    except Exception as exc:  # never silently: the sweep exits non-zero and says why
        state.error = f"{type(exc).__name__}: {exc}"
        print(f"error: sweep table not written: {state.error}", file=sys.stderr)
        return
    state.jobs = len(df)
    state.failed = int((df["status"] != "ok").sum()) if not df.empty else 0
    state.table_written = (state.sweep_dir / TABLE).is_file() and not df.empty
    if not df.empty:
        print(f"sweep: {len(df)} jobs ({state.failed} failed) -> {state.sweep_dir / TABLE}")
        try:
            from sim.plot import sweep_figures

            sweep_figures(df, state.sweep_dir)
        except Exception as exc:  # figures must never lose the table
            print(f"sweep figures skipped: {exc}", file=sys.stderr)
    else:
        state.error = "no job folders"
        print(f"error: sweep {state.sweep_dir} has no jobs: no table written", file=sys.stderr)


def finish() -> int:
    """The exit code of the sweep this process ran (0 if none ran or all its jobs are ok). A sweep
    whose end callback never ran (Hydra aborted it) is collected here first."""
    state = _outcome
    if state is None:
        return 0
    if not state.done and state.sweep_dir is not None and state.sweep_dir.is_dir():
        state.done = True
        _collect_into(state)
        state.failed = max(state.failed, 1)  # it was aborted: not every job ran
    return state.exit_code


class CollectSweep(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        global _outcome
        _outcome = Outcome(sweep_dir=Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config, **kwargs) -> None:
        global _outcome
        state = _outcome if _outcome is not None else Outcome()
        state.sweep_dir = Path(config.hydra.sweep.dir)
        state.done = True
        _outcome = state
        if state.sweep_dir.is_dir():
            _collect_into(state)
        else:
            state.error = "no sweep folder"


if __name__ == "__main__":
    df = collect(sys.argv[1])
    print(df.to_string())
