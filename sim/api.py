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


def _merge_records(prior: dict | None, new: dict) -> dict:
    if prior is None:
        return new
    return {k: prior[k] if new.get(k) is None else np.concatenate([prior[k], new[k]], axis=1) for k in prior}


def _run_jax(model, cfg, on_chunk=None, run_dir=None) -> engine.RunResult:
    """The engine run of a config, checkpointing into ``run_dir`` and resuming from ``cfg['resume']``."""
    from sim import checkpoint

    steps, every, reps = int(cfg["steps"]), int(cfg["record_every"]), int(cfg["replicates"])
    # one chunk length for the whole run, also when resumed part-way (same compiled function)
    chunk = engine.chunk_length(steps // every, int(cfg.get("chunk_records", 100)))
    state0, keys, start, ckpt = model.state, None, 0, None
    if cfg.get("resume"):
        ckpt = checkpoint.load(cfg["resume"])
        state0 = checkpoint.restore_state(ckpt, model.state, reps)
        keys, start = jax.numpy.asarray(ckpt.keys), ckpt.steps_done
        if start > steps or start % (chunk * every):
            raise ConfigError("resume", str(cfg["resume"]), f"a checkpoint of this run ({start} steps done of {steps})")
    every_n = int(cfg.get("checkpoint_every", 0) or 0)
    writer = checkpoint.Checkpointer(run_dir, cfg, every_n, prior=ckpt) if every_n and run_dir is not None else None
    if start < steps:
        result = engine.run(
            state0, model.params, seed=model.seed, steps=steps - start, record_every=every, replicates=reps,
            chunk_records=chunk, on_chunk=on_chunk, start_step=start, keys=keys, checkpoint=writer,
            first_replicate=int(cfg.get("first_replicate", 0) or 0),
        )
    else:  # the checkpoint is of a finished run: nothing left to compute
        result = engine.RunResult(state0, {k: None for k in engine.RECORD_FIELDS}, np.zeros(0), 0, 0.0, 0.0)
    if ckpt is not None:
        result.records = _merge_records(ckpt.records, result.records)
        result.steps_done += start
    n_rec = result.steps_done // every
    result.times = np.arange(1, n_rec + 1) * every * float(np.asarray(model.params.dt).reshape(-1)[0])
    return result


def run(cfg, on_chunk=None, *, run_dir=None) -> RunOutput:
    """Validate, build and run a config. With ``run_dir`` and ``checkpoint_every > 0`` the JAX run
    checkpoints into ``run_dir/checkpoint``; ``cfg['resume']`` (a run folder) continues from its
    checkpoint (the caller passes the checkpoint's stored config, see :func:`sim.app.resume_run`)."""
    kind = (as_plain(cfg).get("experiment") or {}).get("kind", "tissue")
    if kind != "tissue":
        from sim import experiments

        fn = experiments.get(kind)
        if fn is None:
            raise ConfigError("experiment.kind", kind, "one of " + ", ".join(experiments.kinds()))
        plain = as_plain(cfg)
        for key in ("checkpoint_every", "resume"):
            if plain.get(key):
                raise ConfigError(key, plain[key], f"{'0' if key == 'checkpoint_every' else 'null'} with "
                                  f"experiment.kind={kind} (only tissue runs checkpoint and resume)")
        return fn(plain)
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
    status = determinism.current()
    summary.update(first_replicate=int(cfg.get("first_replicate", 0) or 0),
                   deterministic_reductions=status.fixed_order_sums, bitwise_batch_invariant=status.bitwise)
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
