"""Python API: ``sim.simulate(cfg) -> xarray.Dataset`` and ``run(cfg)`` with everything a run makes."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from sim import engine
from sim.config.validate import check_stability, validate
from sim.presets import build
from sim.results import summarize, to_dataset


def as_plain(cfg) -> dict:
    """DictConfig or dict -> resolved plain dict (no Hydra node types past this point)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)


@dataclasses.dataclass
class RunOutput:
    dataset: object  # xarray.Dataset (None if nothing was recorded)
    summary: dict
    model: object  # sim.presets.Model (or the experiment's own model object)
    result: object  # engine.RunResult or anything with .error (None if it succeeded)
    figures: object = None  # optional callable(out_dir) -> list of paths; default: run figures


def prepare(cfg):
    """Validate and build; raises ConfigError before any compilation."""
    cfg = as_plain(cfg)
    validate(cfg)
    model = build(cfg, dtype=np.float64)
    check_stability(model, cfg)
    if cfg.get("precision", "float64") == "float32":
        model = dataclasses.replace(
            model, state=engine.cast(model.state, np.float32), params=engine.cast(model.params, np.float32)
        )
    return cfg, model


def _run_mesa(model, cfg) -> engine.RunResult:
    """Reference backend: every agent steps itself in Python; same records as the engine."""
    from sim.mesa_model import CurrencyModel

    steps, every = int(cfg["steps"]), int(cfg["record_every"])
    per_rep, finals = [], []
    t0 = time.perf_counter()
    for r in range(int(cfg["replicates"])):
        m = CurrencyModel(model=model, backend="mesa", replicate=r)
        recs = []
        for s in range(steps):
            m.step()
            if (s + 1) % every == 0:
                recs.append(jax.device_get(engine.observe(m.state)))
        per_rep.append({k: np.stack([x[k] for x in recs]) for k in engine.RECORD_FIELDS})
        finals.append(m.state)
    wall = time.perf_counter() - t0
    records = {k: np.stack([p[k] for p in per_rep]) for k in engine.RECORD_FIELDS}
    state = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *finals)
    times = np.arange(1, steps // every + 1) * every * float(model.params.dt)
    return engine.RunResult(state, records, times, steps, wall, 0.0, None)


def run(cfg, on_chunk=None) -> RunOutput:
    kind = (as_plain(cfg).get("experiment") or {}).get("kind", "tissue")
    if kind != "tissue":
        from sim import experiments

        fn = experiments.get(kind)
        if fn is None:
            from sim.errors import ConfigError

            raise ConfigError("experiment.kind", kind, "one of " + ", ".join(experiments.kinds()))
        return fn(as_plain(cfg))
    cfg, model = prepare(cfg)
    if cfg.get("backend", "jax") == "mesa":
        result = _run_mesa(model, cfg)
    else:
        result = engine.run(
            model.state, model.params, seed=model.seed, steps=int(cfg["steps"]),
            record_every=int(cfg["record_every"]), replicates=int(cfg["replicates"]),
            chunk_records=int(cfg.get("chunk_records", 100)), on_chunk=on_chunk,
        )
    result.state = jax.device_get(result.state)
    ds = to_dataset(model, result, cfg) if result.steps_done > 0 else None
    summary = summarize(model, result, model.state) if result.steps_done > 0 else {"status": "failed"}
    if result.error is not None:
        summary["status"] = "failed"
        summary["reason"] = str(result.error)
    return RunOutput(ds, summary, model, result)


def simulate(cfg):
    """Run the configured tissue and return its ``xarray.Dataset`` (dims replicate, time, cell, ...)."""
    out = run(cfg)
    if out.result.error is not None:
        raise out.result.error
    return out.dataset
