"""``experiment=study``: a batched parameter study of the configured substrate.

``python -m sim experiment=study substrate=bio topology=ring topology.n_cells=3 study.design=lhs study.points=200``
evaluates ``study.points`` points of the parameters in ``study.params`` (name -> ``[low, high]``;
null: the substrate's default set, :data:`DEFAULT_PARAMS`) as a few engine calls of
``study.chunk_points`` points x ``study.replicates_per_point`` replicates each (one compile; see
:mod:`sim.core.study` for how points map to rows and to PRNG keys), and reduces each point to the
outcomes of ``study.outcomes`` (``"<reducer>:<quantity>"``, null: :data:`DEFAULT_OUTCOMES`).
Writes ``results.nc`` (dimension ``point``, one coordinate per parameter, one variable per
outcome), ``study.parquet`` (one row per point) and ``summary.json`` (cost: engine calls, wall and
compile seconds).
"""

from __future__ import annotations

import numpy as np

from sim.api import RunOutput, prepare
from sim.core import study as st
from sim.errors import ConfigError
from sim.experiments import register
from sim.io import CORE_OUTCOMES, COUNT, MAPPING, OF_NAMED, TEXT

DEFAULT_PARAMS = {  # substrate -> fields varied by default, each over [0.5, 2] x its configured value
    "bio": ("demand_scale", "supply_scale", "uptake_scale", "conductance_scale"),
    "generic": ("demand_scale", "supply_scale", "uptake_scale", "conductance_scale"),
    "llm": ("arrival_rate", "prompt_median", "output_median"),
}
DEFAULT_OUTCOMES = {
    "bio": ("mean_last:energy_charge",),
    "generic": ("mean_last:charged_fraction",),
    "llm": ("mean_last:kv_free_fraction",),
}


def _int(section: str, opts: dict, key: str, minimum: int = 1) -> int:
    v = opts.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{section}.{key}", v, f"an integer >= {minimum}")
    return v


def study_setup(cfg: dict, section: str):
    """(cfg, substrate, built, bounds, outcomes, options) of a study-like section, checked."""
    opts = dict(cfg.get(section) or {})
    cfg, sub, built = prepare(cfg)
    spec = opts.get("params")
    if spec is None:
        names = DEFAULT_PARAMS.get(sub.name)
        if names is None:
            raise ConfigError(f"{section}.params", None, f"a mapping name -> [low, high] (no default for substrate {sub.name})")
        spec = {}
        for n in names:
            base = float(np.asarray(getattr(built.params, n)).reshape(-1)[0])
            spec[n] = [0.5 * base, 2.0 * base] if base > 0 else [0.0, 1.0]
    bounds = st.check_params(spec, sub, built.params, built.n_cells, key=f"{section}.params")
    outcomes = opts.get("outcomes")
    if outcomes is None:
        outcomes = list(DEFAULT_OUTCOMES.get(sub.name, ()))
    if isinstance(outcomes, str):
        outcomes = [outcomes]
    if not isinstance(outcomes, (list, tuple)) or not outcomes:
        raise ConfigError(f"{section}.outcomes", outcomes, "a non-empty list of '<reducer>:<quantity>'")
    for o in outcomes:
        st.parse_outcome(o, sub, key=f"{section}.outcomes")
    return cfg, sub, built, bounds, list(outcomes), opts


def run_points(cfg, sub, built, bounds, x, outcomes, opts, section):
    return st.evaluate(
        sub, built, list(bounds), x, outcomes, steps=int(cfg["steps"]), record_every=int(cfg["record_every"]),
        replicates_per_point=_int(section, opts, "replicates_per_point"),
        chunk_points=_int(section, opts, "chunk_points"), seed=built.seed,
        chunk_records=int(cfg.get("chunk_records", 100)),
    )


def cost_summary(res: st.StudyResult, n_points: int, replicates: int) -> dict:
    return {"points": n_points, "replicates_per_point": replicates, "engine_calls": res.calls,
            "wall_s": res.wall_s, "compile_s": res.compile_s, "total_s": res.total_s}


def failure(res: st.StudyResult, names) -> dict:
    x = res.x[res.failed_point]
    where = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, x))
    return {"status": "failed", "reason": f"{res.error} (study point {res.failed_point}: {where})",
            "failed_point": int(res.failed_point)}


# The unit of every key a study's summary can hold (sim.io's naming rule); "<outcome> min/max" is
# in the unit of the outcome it names.
OUTCOME_UNITS = {
    **CORE_OUTCOMES, "design": TEXT, "params": MAPPING, "outcomes": TEXT, "points": COUNT,
    "replicates_per_point": COUNT, "engine_calls": COUNT, "failed_point": COUNT, "* min": OF_NAMED, "* max": OF_NAMED,
}


@register("study")
def run_study(cfg: dict) -> RunOutput:
    cfg, sub, built, bounds, outcomes, opts = study_setup(cfg, "study")
    kind = opts.get("design", "lhs")
    if kind not in st.DESIGNS:
        raise ConfigError("study.design", kind, "one of " + ", ".join(st.DESIGNS))
    points = _int("study", opts, "points")
    x = st.design(kind, bounds, points, seed=int(cfg.get("seed", 0)))
    R = _int("study", opts, "replicates_per_point")
    res = run_points(cfg, sub, built, bounds, x, outcomes, opts, "study")
    attrs = {"substrate": sub.name, "design": kind, "replicates_per_point": R, "seed": int(built.seed),
             "steps": int(cfg["steps"]), "record_every": int(cfg["record_every"]),
             "row_mapping": "replicate r of point i = row i*R + r of its engine call, key of replicate r of the seed"}
    ds = st.to_dataset(res, attrs)
    summary = {"status": "ok", "substrate": sub.name, "design": kind, "params": {k: list(v) for k, v in bounds.items()},
               "outcomes": outcomes, **cost_summary(res, x.shape[0], R)}
    for o, v in res.outcomes.items():
        finite = v[np.isfinite(v)]
        if finite.size:
            summary[f"{o} min"], summary[f"{o} max"] = float(finite.min()), float(finite.max())
    if res.error is not None:
        summary.update(failure(res, list(bounds)))
    df = st.table(res)

    def files(out_dir):
        from pathlib import Path

        from sim.io import write_parquet

        write_parquet(Path(out_dir) / "study.parquet", df)

    report = (f"study: {x.shape[0]} points x {R} replicates of {sub.name} ({kind}), {res.calls} engine call(s), "
              f"wall {res.wall_s:.2f} s, compile {res.compile_s:.2f} s")
    return RunOutput(ds, summary, built, res, figures=lambda out_dir: [], files=files, report=report)
