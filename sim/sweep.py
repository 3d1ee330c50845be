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

Override columns (``override.<key>``) hold the value each job received, typed as Hydra's override
grammar types it (:func:`parse_override`): ``params.demand_scale=0.5`` -> float, ``seed=1`` -> int,
``figures=false`` -> bool, ``topology=ring`` or a quoted ``x='1'`` -> str. A column is int64 when every
job's value is an int (nullable ``Int64`` when a job has none), float64 when they mix ints and floats,
bool (``boolean``) when all are booleans, str when all are strings; anything else (lists, mappings,
values of different kinds) keeps the override's text, so no value is ever lost to a conversion.
:func:`swept_parameters` says which overrides the sweep varied (those written as a sweep in
``multirun.yaml``, or whose value differs between jobs). Each job prints :func:`job_line` as it
starts. After the table, the callback draws ``figures/sweep_*.png`` (:mod:`sim.sweep_figures`)
unless the sweep set ``figures=false``; a figure that fails is reported and changes neither the
table nor the exit code. :func:`sim.load_sweep` (:mod:`sim.sweep_load`) reads a sweep back.

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


OVERRIDE_PREFIX = "override."
MULTIRUN_FILE = "multirun.yaml"


def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse_override(item: str, parser=None) -> tuple[str, object, str]:
    """``(key, value, text)`` of one job override ``key=value`` as the job received it: the value
    typed by Hydra's grammar (``0.5`` float, ``1`` int, ``true`` bool, ``null`` None, ``'1'`` str,
    ``[1,2]`` list), the text as written. A line Hydra cannot parse keeps its text as the value."""
    item = str(item)
    try:
        (o,) = (parser or _parser()).parse_overrides([item])
    except Exception:  # (not Hydra's grammar: only a hand-written overrides.yaml gets here)
        key, _, text = item.partition("=")
        return key.lstrip("+~"), text, text
    if o.is_delete():
        return o.key_or_group, None, ""
    if o.is_sweep_override():  # (a job's overrides are single values; keep what was written)
        text = item.partition("=")[2]
        return o.key_or_group, text, text
    return o.key_or_group, o.value(), item.partition("=")[2]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def override_column(values: list, texts: list) -> pd.Series:
    """One ``override.*`` column from the jobs' typed values (None: the job has no such override)
    and their texts, typed as the module docstring says."""
    present = [v for v in values if v is not None]
    missing = len(present) < len(values)
    if present and all(isinstance(v, bool) for v in present):
        return pd.Series(values, dtype="boolean" if missing else bool)
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.Series(values, dtype="Int64" if missing else "int64")
    if present and all(_is_number(v) for v in present):
        return pd.Series([math.nan if v is None else float(v) for v in values], dtype="float64")
    if all(isinstance(v, str) for v in present):
        return pd.Series(values, dtype=object).infer_objects()
    return pd.Series([None if v is None else t for v, t in zip(values, texts)], dtype=object).infer_objects()


def _job_overrides(job: Path) -> list[str]:
    ov = job / ".hydra" / "overrides.yaml"
    try:
        items = yaml.safe_load(ov.read_text()) if ov.is_file() else []
    except (OSError, yaml.YAMLError):
        items = []
    return [str(i) for i in items] if isinstance(items, list) else []


def job_folders(sweep_dir) -> list[Path]:
    """The numbered job folders of a sweep, in job order (Hydra names them ``hydra.job.num``)."""
    sweep_dir = Path(sweep_dir)
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def collect(sweep_dir, *, write: bool = True) -> pd.DataFrame:
    """The sweep table of ``sweep_dir`` (also written to ``summary.parquet`` when there are jobs
    and ``write``)."""
    sweep_dir = Path(sweep_dir)
    parser = _parser()
    rows, overrides = [], {}
    jobs = job_folders(sweep_dir)
    for i, job in enumerate(jobs):
        row = {"job": int(job.name)}
        for item in _job_overrides(job):
            key, value, text = parse_override(item, parser)
            overrides.setdefault(key, ([None] * len(jobs), [""] * len(jobs)))
            overrides[key][0][i], overrides[key][1][i] = value, text
        summary = job / "summary.json"
        if summary.is_file():
            row.update(_read_summary(summary))
        else:
            row.update(status="failed", reason="no summary.json (job did not finish)")
        row.setdefault("status", "failed")
        rows.append(row)
    outcomes = _typed(pd.DataFrame(rows))
    if outcomes.empty:
        return outcomes
    columns = {"job": outcomes["job"]}
    for key, (values, texts) in overrides.items():
        columns[OVERRIDE_PREFIX + key] = override_column(values, texts)
    columns.update({name: outcomes[name] for name in outcomes.columns if name != "job"})
    df = pd.DataFrame(columns)
    if write:
        write_parquet(sweep_dir / TABLE, df)
    return df


def retype_overrides(df: pd.DataFrame) -> pd.DataFrame:
    """A table whose ``override.*`` columns are text (a ``summary.parquet`` written before they
    were typed) with those columns typed as :func:`collect` types them."""
    parser = _parser()
    df = df.copy()
    for name in [c for c in df.columns if c.startswith(OVERRIDE_PREFIX)]:
        if df[name].dtype != object and not pd.api.types.is_string_dtype(df[name]):
            continue
        key = name[len(OVERRIDE_PREFIX):]
        parsed = [parse_override(f"{key}={v}", parser) if isinstance(v, str) else (key, None, "")
                  for v in df[name].tolist()]
        df[name] = override_column([p[1] for p in parsed], [p[2] for p in parsed]).set_axis(df.index)
    return df


def read_table(sweep_dir) -> pd.DataFrame:
    """The typed table of a sweep: collected from its job folders (nothing written), or, for a
    folder that holds only ``summary.parquet``, that table with its override columns typed."""
    sweep_dir = Path(sweep_dir)
    if job_folders(sweep_dir):
        return collect(sweep_dir, write=False)
    return retype_overrides(pd.read_parquet(sweep_dir / TABLE))


def sweep_keys(sweep_dir) -> list[str]:
    """The keys written as a sweep (``a=1,2``, ``range(...)``, ``choice(...)``, ``glob(...)``) in
    the sweep's ``multirun.yaml`` (Hydra writes it before the first job starts); [] without one."""
    path = Path(sweep_dir) / MULTIRUN_FILE
    try:
        task = yaml.safe_load(path.read_text())["hydra"]["overrides"]["task"]
        parsed = _parser().parse_overrides([str(t) for t in task])
    except Exception:  # (no file, or not Hydra's: the varying columns still say what was swept)
        return []
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def swept_parameters(df: pd.DataFrame, sweep_dir=None) -> list[str]:
    """The override keys the sweep varied, in column order: written as a sweep in
    ``multirun.yaml`` (when ``sweep_dir`` is given) or taking more than one value in the table."""
    declared = set(sweep_keys(sweep_dir)) if sweep_dir is not None else set()
    out = []
    for name in df.columns:
        if not name.startswith(OVERRIDE_PREFIX):
            continue
        key = name[len(OVERRIDE_PREFIX):]
        if key in declared or df[name].dropna().astype(str).nunique() > 1:
            out.append(key)
    return out


def job_line(num, task_overrides, sweep_dir) -> str:
    """What the console shows as a sweep job starts: ``[job 3] params.demand_scale=1.5 topology=ring``
    (the job's values of the swept keys; every override when the swept keys are unknown)."""
    items = [str(o) for o in task_overrides]
    keys = set(sweep_keys(sweep_dir))
    parser = _parser()
    shown = [o for o in items if parse_override(o, parser)[0] in keys] if keys else items
    return f"[job {num}] " + (" ".join(shown) if shown else "(no overrides)")


@dataclasses.dataclass
class Outcome:
    sweep_dir: Path | None = None
    jobs: int = 0
    failed: int = 0
    table_written: bool = False
    done: bool = False  # on_multirun_end ran
    error: str | None = None  # why the table could not be written
    figures: bool = True  # draw the sweep figures (the sweep's ``figures`` setting)

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
        if not state.figures:
            return
        try:
            from sim.sweep_figures import write_figures

            for path in write_figures(df, state.sweep_dir, swept_parameters(df, state.sweep_dir)):
                print(f"sweep figure: {path}")
        except Exception as exc:  # figures must never lose the table (nor change the exit code)
            print(f"sweep figures skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
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


def _figures_on(config) -> bool:
    """The sweep's ``figures`` setting (``figures=false`` skips the sweep figures as it skips the
    jobs'; a swept ``figures`` draws them)."""
    try:
        return config.get("figures", True) is not False
    except Exception:  # (an unresolvable config: the jobs report it; the figures are only a view)
        return True


class CollectSweep(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        global _outcome
        _outcome = Outcome(sweep_dir=Path(config.hydra.sweep.dir), figures=_figures_on(config))

    def on_multirun_end(self, config, **kwargs) -> None:
        global _outcome
        state = _outcome if _outcome is not None else Outcome()
        state.sweep_dir = Path(config.hydra.sweep.dir)
        state.figures = _figures_on(config)
        state.done = True
        _outcome = state
        if state.sweep_dir.is_dir():
            _collect_into(state)
        else:
            state.error = "no sweep folder"


if __name__ == "__main__":
    df = collect(sys.argv[1])
    print(df.to_string())
