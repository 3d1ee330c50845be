"""Python API: ``sim.simulate(cfg) -> xarray.Dataset`` and ``run(cfg)`` with everything a run makes.

One run path for every substrate (``substrate=bio | llm | generic`` or one a user registered in
:mod:`sim.substrates`): validate, build, run on the JAX engine (:mod:`sim.core.engine`, with
checkpoints and resume, :mod:`sim.checkpoint`) or on the plain-Python reference (``backend=mesa``),
then the substrate's dataset and summary. ``experiment=serving`` is this run on the LLM substrate;
the other experiments (analogy, cascade, roofline) register in :mod:`sim.experiments`.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

from sim import determinism, substrates, topology
from sim.core import cache, codegen, sharding
from sim.core import engine
from sim.errors import ConfigError, NumericalError
from sim.io import check_variables, output_options

RUN_KINDS = ("tissue", "serving")  # experiment kinds that are a plain run of the configured substrate


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
    model: object  # what the substrate built (or the experiment's own model object)
    result: object  # engine.RunResult or anything with .error (None if it succeeded)
    figures: object = None  # optional callable(out_dir) -> list of paths; default: the substrate's figures
    files: object = None  # optional callable(out_dir): other outputs (tables), written even with figures=false
    report: str | None = None  # optional text the command line prints before the summary (a table)


def substrate_of(cfg: dict):
    """The substrate a (plain) config runs: the one it names, with the adaptation process of
    ``differentiation.rule`` when that is not ``fixed`` (:func:`sim.core.differentiation.substrate_for`)
    and the carrier processes when ``carriers.n > 1`` (:func:`sim.core.carriers.substrate_for`)."""
    from sim.core import carriers, differentiation

    def substrate_for(found, cfg):
        return carriers.substrate_for(differentiation.substrate_for(found, cfg), cfg)

    sub = cfg.get("substrate")
    if not isinstance(sub, dict):
        return substrate_for(substrates.get(sub), cfg)
    # a composed preset: the bad value is its name key (`substrate.name=5`), not the group choice
    name = sub.get("name")
    try:
        found = substrates.get(name)
    except ConfigError as exc:
        raise ConfigError("substrate.name", name, exc.allowed) from None
    return substrate_for(found, cfg)


def prepare(cfg):
    """Validate and build; raises ConfigError before any compilation. Returns (plain cfg, substrate, built)."""
    cfg = as_plain(cfg)
    sub = substrate_of(cfg)
    sub.validate(cfg)
    # before anything touches JAX: the no-FMA flag is read when the backend starts (sim.determinism)
    determinism.configure(cfg.get("deterministic_reductions") is True)
    cache.configure(cfg.get("compile_cache", "auto"))
    sharding.configure(cfg.get("devices", 1))  # sim.simulate honours devices as the command line does
    codegen.configure(cfg.get("vector_width", codegen.AUTO))
    return cfg, sub, sub.build(cfg)


def run_reference(sub, built, cfg) -> engine.RunResult:
    """Reference backend: the substrate's plain-Python stepper, replicate by replicate; the same
    records as the engine."""
    steps, every = int(cfg["steps"]), int(cfg["record_every"])
    per_rep, finals = [], []
    t0 = time.perf_counter()
    first = int(cfg.get("first_replicate", 0) or 0)
    fields = sub.record_fields
    for r in range(first, first + int(cfg["replicates"])):
        ref = sub.reference(built, r)
        recs = []
        for s in range(steps):
            ref.step()
            if (s + 1) % every == 0:
                recs.append(jax.device_get(sub.observe(ref.state())))
        per_rep.append({k: np.stack([np.asarray(x[k]) for x in recs]) for k in fields})
        finals.append(ref.state())
    wall = time.perf_counter() - t0
    records = {k: np.stack([p[k] for p in per_rep]) for k in fields}
    state = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *finals)
    dt = float(np.asarray(built.params.dt).reshape(-1)[0])
    times = np.arange(1, steps // every + 1) * every * dt
    return engine.RunResult(state, records, times, steps, wall, 0.0, None)


def run_engine(sub, built, cfg, on_chunk=None, run_dir=None) -> engine.RunResult:
    """The engine run of a config, checkpointing into ``run_dir`` and resuming from ``cfg['resume']``."""
    from sim import checkpoint

    def run_fn(state, **kw):
        return engine.run(sub, state, built.params, seed=built.seed, record_every=int(cfg["record_every"]),
                          replicates=int(cfg["replicates"]), first_replicate=int(cfg.get("first_replicate", 0) or 0),
                          on_chunk=on_chunk, **kw)

    return checkpoint.resumable_run(run_fn, built.state, cfg, run_dir, fields=sub.record_fields,
                                    dt=float(np.asarray(built.params.dt).reshape(-1)[0]))


def _determinism_summary() -> dict:
    status = determinism.current()
    return {"deterministic_reductions": status.fixed_order_sums, "bitwise_batch_invariant": status.bitwise}


def failure_summary(err) -> dict:
    """The summary entries that say why a run failed (and where, for a numerical failure)."""
    out = {"status": "failed", "reason": str(err)}
    if isinstance(err, NumericalError):
        out.update(failure_step=err.step, failure_cell=err.cell, failure_quantity=err.quantity,
                   failure_process=err.process, failure_replicate=err.replicate)
    return out


def _run_experiment(kind: str, plain: dict, run_dir, progress=None) -> RunOutput:
    from sim import experiments

    # first, before anything starts the JAX backend (sim.determinism); validation refuses a non-bool
    determinism.configure(plain.get("deterministic_reductions") is True)
    cache.configure(plain.get("compile_cache", "auto"))
    sharding.configure(plain.get("devices", 1))
    codegen.configure(plain.get("vector_width", codegen.AUTO))
    fn = experiments.get(kind)
    if fn is None:
        raise ConfigError("experiment.kind", kind, "one of " + ", ".join(sorted(set(experiments.kinds()) | set(RUN_KINDS))))
    for key in ("checkpoint_every", "resume"):
        if plain.get(key):
            raise ConfigError(key, plain[key], f"{'0' if key == 'checkpoint_every' else 'null'} with "
                              f"experiment.kind={kind} (only {', '.join(RUN_KINDS)} runs checkpoint and resume)")
    if plain.get("first_replicate"):
        raise ConfigError("first_replicate", plain["first_replicate"],
                          f"0 with experiment.kind={kind} (only {', '.join(RUN_KINDS)} runs split an ensemble)")
    options = output_options(plain)
    if options.selects:  # an experiment's results.nc is its own table; names would only be checked after the run
        key = "output.variables" if options.variables is not None else "output.cells"
        raise ConfigError(key, (plain.get("output") or {}).get(key.split(".")[1]),
                          f"all with experiment.kind={kind} (only {', '.join(RUN_KINDS)} runs select variables or "
                          "summarise cells; compress and float32 apply to every results.nc)")
    if progress is not None:
        progress.start()
    out = fn(plain)
    out.summary.update(_determinism_summary())
    return out


def probe_dataset(sub, built, cfg: dict):
    """The dataset ``sub.to_dataset`` makes for this config, before the run: one replicate, one
    record (of ones: the record is only traced with ``jax.eval_shape``, ~0.04 s once JAX is up,
    where running ``observe`` would compile it), the initial state as the final one. What
    ``output.variables`` may name; figure code can be tried on it."""
    state = engine.broadcast_state(built.state, 1)
    shapes = jax.eval_shape(jax.vmap(sub.observe), state)
    records = {k: np.ones((shapes[k].shape[0], 1) + tuple(shapes[k].shape[1:]), shapes[k].dtype)
               for k in sub.record_fields}
    dt = float(np.asarray(built.params.dt).reshape(-1)[0])
    probe = engine.RunResult(jax.device_get(state), records, np.array([dt]), 1, 0.0, 0.0, None)
    return sub.to_dataset(built, probe, cfg)


def dataset_variables(sub, built, cfg: dict) -> list[str]:
    """The names of the variables of this config's dataset (:func:`probe_dataset`)."""
    return [str(name) for name in probe_dataset(sub, built, cfg).data_vars]


TIME_UNITS = {"bio": "s", "llm": "s"}  # the time axis of these substrates; others (generic) are dimensionless


def process_age_s() -> float | None:
    """Seconds since this process started (Linux ``/proc``: start time in clock ticks after boot
    against the uptime), None where that cannot be read. It counts the interpreter's own start and
    every import, which a timer started in Python would miss."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: starttime
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _chunk_hook(on_chunk, progress, first: dict):
    """The engine's per-chunk hook: the caller's and the progress reporter's, and the process age
    at the end of the first chunk into ``first["s"]`` (the start-up to a first result)."""
    hooks = [h for h in (on_chunk, progress.on_chunk if progress is not None else None) if h is not None]

    def hook(state, done, keys):
        if "s" not in first:
            first["s"] = process_age_s()
        for h in hooks:
            h(state, done, keys)

    return hook


def run(cfg, on_chunk=None, *, run_dir=None, progress=None) -> RunOutput:
    """Validate, build and run a config. With ``run_dir`` and ``checkpoint_every > 0`` the engine run
    checkpoints into ``run_dir/checkpoint``; ``cfg['resume']`` (a run folder) continues from its
    checkpoint (the caller passes the checkpoint's stored config, see :func:`sim.app.resume_run`).
    ``progress``: a :class:`sim.progress.Progress`, started once the config is accepted and fed by
    the engine's per-chunk hook. ``output.variables`` names are checked here, before compiling."""
    plain = as_plain(cfg)
    kind = (plain.get("experiment") or {}).get("kind", "tissue")
    if kind not in RUN_KINDS:
        return _run_experiment(kind, plain, run_dir, progress)
    if kind == "serving" and substrate_of(plain).name != "llm":
        raise ConfigError("substrate", substrate_of(plain).name, "llm for experiment.kind=serving (substrate=llm)")
    cfg, sub, built = prepare(plain)
    options = output_options(cfg)
    if options.variables is not None:
        check_variables(options, dataset_variables(sub, built, cfg))
    mesa = cfg.get("backend", "jax") == "mesa"
    if mesa and cfg.get("resume"):
        raise ConfigError("resume", cfg["resume"], "null with backend=mesa (the reference backend does not checkpoint)")
    if progress is not None:  # (the reference backend has no chunks: it gets the folder line only)
        progress.begin(int(cfg["steps"]), float(np.asarray(built.params.dt).reshape(-1)[0]),
                       TIME_UNITS.get(sub.name, ""), cells=built.n_cells * int(cfg["replicates"]))
    first: dict = {}
    if mesa:
        result = run_reference(sub, built, cfg)
    else:
        result = run_engine(sub, built, cfg, on_chunk=_chunk_hook(on_chunk, progress, first), run_dir=run_dir)
    result.state = jax.device_get(result.state)
    ds = sub.to_dataset(built, result, cfg) if result.steps_done > 0 else None
    ds = topology.label_cells(ds, getattr(built, "graph", None))  # a graph file's node labels name the cells
    summary = sub.summarize(built, result, cfg) if result.steps_done > 0 else {"status": "failed"}
    summary.update(_determinism_summary(), first_replicate=int(cfg.get("first_replicate", 0) or 0))
    if first.get("s") is not None:  # process start (interpreter, imports, config, build, compile) -> first chunk done
        summary["first_chunk_s"] = float(first["s"])
    if result.error is not None:
        summary.update(failure_summary(result.error))
    figures = None
    if ds is not None and sub.figures is not None:
        figures = lambda out_dir: sub.figures(ds, out_dir)  # noqa: E731
    return RunOutput(ds, summary, built, result, figures=figures)


def simulate(cfg=None, *, overrides=None):
    """Run a config and return its ``xarray.Dataset`` (dims replicate, time, cell, ...).

    ``cfg``: a composed config (dict or DictConfig, e.g. from :func:`sim.load_config`); or
    ``overrides``: Hydra overrides of the shipped configs, ``sim.simulate(overrides=["experiment=tissue",
    "steps=200"])`` (nothing given: the shipped default, the analogy experiment). A failed run raises
    its error (:class:`~sim.errors.NumericalError`, ...)."""
    if cfg is not None and overrides is not None:
        raise ConfigError("overrides", overrides, "None when a composed cfg is given (compose it with them: "
                          "sim.load_config(overrides))")
    if cfg is None:
        from sim.core.config import load_config

        cfg = load_config(() if overrides is None else overrides)
    out = run(cfg)
    error = getattr(out.result, "error", None)
    if error is not None:
        raise error
    return out.dataset
