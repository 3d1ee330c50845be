"""Python API: ``sim.simulate(cfg) -> xarray.Dataset`` and ``run(cfg)`` with everything a run makes."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from sim import determinism, engine
from sim.config.validate import check_stability, validate
from sim.errors import ConfigError, NumericalError
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
    files: object = None  # optional callable(out_dir): other outputs (tables), written even with figures=false
    report: str | None = None  # optional text the command line prints before the summary (a table)


def prepare(cfg):
    """Validate and build; raises ConfigError before any compilation."""
    cfg = as_plain(cfg)
    validate(cfg)
    # before anything touches JAX: the no-FMA flag is read when the backend starts (sim.determinism)
    determinism.configure(bool(cfg.get("deterministic_reductions", False)))
    sub_name = (cfg.get("substrate") or {}).get("name")
    if sub_name == "llm":
        from sim.errors import ConfigError

        raise ConfigError(
            "substrate", sub_name,
            "bio or generic for a tissue run; the LLM preset runs with experiment=serving, roofline or cascade",
        )
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
    first = int(cfg.get("first_replicate", 0) or 0)
    for r in range(first, first + int(cfg["replicates"])):
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


def _run_jax(model, cfg, on_chunk=None, run_dir=None) -> engine.RunResult:
    """The engine run of a config, checkpointing into ``run_dir`` and resuming from ``cfg['resume']``."""
    from sim import checkpoint

    def run_fn(state, **kw):
        return engine.run(state, model.params, seed=model.seed, record_every=int(cfg["record_every"]),
                          replicates=int(cfg["replicates"]), first_replicate=int(cfg.get("first_replicate", 0) or 0),
                          on_chunk=on_chunk, **kw)

    return checkpoint.resumable_run(run_fn, model.state, cfg, run_dir, fields=engine.RECORD_FIELDS,
                                    dt=float(np.asarray(model.params.dt).reshape(-1)[0]))


def _determinism_summary(cfg: dict) -> dict:
    status = determinism.current()
    return {"deterministic_reductions": status.fixed_order_sums, "bitwise_batch_invariant": status.bitwise}


def run(cfg, on_chunk=None, *, run_dir=None) -> RunOutput:
    """Validate, build and run a config. With ``run_dir`` and ``checkpoint_every > 0`` the JAX run
    checkpoints into ``run_dir/checkpoint``; ``cfg['resume']`` (a run folder) continues from its
    checkpoint (the caller passes the checkpoint's stored config, see :func:`sim.app.resume_run`)."""
    plain = as_plain(cfg)
    kind = (plain.get("experiment") or {}).get("kind", "tissue")
    if kind != "tissue":  # (a tissue run configures in prepare, after validating)
        from sim import experiments

        # first, before anything starts the JAX backend (sim.determinism); validation refuses a non-bool
        determinism.configure(plain.get("deterministic_reductions") is True)

        fn = experiments.get(kind)
        if fn is None:
            raise ConfigError("experiment.kind", kind, "one of " + ", ".join(experiments.kinds()))
        if getattr(fn, "checkpoints", False):  # the experiment checkpoints and resumes in run_dir itself
            out = fn(plain, run_dir=run_dir)
        else:
            able = ", ".join(["tissue"] + sorted(k for k, f in experiments.REGISTRY.items() if getattr(f, "checkpoints", False)))
            for key in ("checkpoint_every", "resume"):
                if plain.get(key):
                    raise ConfigError(key, plain[key], f"{'0' if key == 'checkpoint_every' else 'null'} with "
                                      f"experiment.kind={kind} (only {able} runs checkpoint and resume)")
            if plain.get("first_replicate"):
                raise ConfigError("first_replicate", plain["first_replicate"],
                                  f"0 with experiment.kind={kind} (only tissue and serving runs split an ensemble)")
            out = fn(plain)
        out.summary.update(_determinism_summary(plain))
        return out
    cfg, model = prepare(cfg)
    if cfg.get("backend", "jax") == "mesa":
        if cfg.get("resume"):
            raise ConfigError("resume", cfg["resume"], "null with backend=mesa (the reference backend does not checkpoint)")
        result = _run_mesa(model, cfg)
    else:
        result = _run_jax(model, cfg, on_chunk=on_chunk, run_dir=run_dir)
    result.state = jax.device_get(result.state)
    ds = to_dataset(model, result, cfg) if result.steps_done > 0 else None
    summary = summarize(model, result, model.state) if result.steps_done > 0 else {"status": "failed"}
    summary.update(_determinism_summary(cfg), first_replicate=int(cfg.get("first_replicate", 0) or 0))
    if result.error is not None:
        summary["status"] = "failed"
        summary["reason"] = str(result.error)
        err = result.error
        if isinstance(err, NumericalError):
            summary.update(
                failure_step=err.step, failure_cell=err.cell, failure_species=err.species,
                failure_process=err.process, failure_replicate=err.replicate,
            )
    return RunOutput(ds, summary, model, result)


def simulate(cfg):
    """Run the configured tissue and return its ``xarray.Dataset`` (dims replicate, time, cell, ...)."""
    out = run(cfg)
    if out.result.error is not None:
        raise out.result.error
    return out.dataset
