"""Checkpoints of a JAX engine run, and resuming a killed run to the bit-identical result.

Layout inside the run folder (every file written atomically through :mod:`sim.io`)::

    checkpoint/config.json                 the resolved config of the run (written first, once)
    checkpoint/records-<c0>-<c1>.npz       the records of chunks c0 .. c1-1 (each written once)
    checkpoint/state.npz                   the commit point: state leaves, PRNG keys, steps done,
                                           chunks done and the list of records files

``state.npz`` is replaced only after the records files it lists exist, so a run killed at any
moment (even while writing) leaves a consistent checkpoint: the last ``state.npz`` and the
records files it names. Records files it does not name, and ``.tmp-*`` files, are leftovers of
a write that was interrupted; resuming removes them.

The PRNG position of a run is its per-replicate keys (``fold_in(PRNGKey(seed), r)``) and the
step counter inside the state: every draw is derived from (key, step, purpose, agent id), so
restoring both restores the stream exactly. A resumed run uses the stored config (not the
current defaults) and the same chunk length, so it executes the same compiled chunk function on
the same inputs: its ``results.nc`` is bit-identical to that of an uninterrupted run.

Nothing here depends on the preset: the state is any PyTree (the biology ``State`` or the LLM
``LLMState``) and the records any dict of ``(replicate, time, ...)`` arrays.
:func:`resumable_run` is the driver that checkpoints and resumes an engine run (the tissue run,
``sim.api._run_jax``, and ``experiment=serving``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np

from sim.errors import ConfigError
from sim.io import atomic_path, write_json

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.npz"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1


def _write_npz(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, **arrays)


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


class Checkpointer:
    """Engine ``checkpoint`` callback: collects each chunk's records, saves every ``every`` chunks."""

    def __init__(self, run_dir, cfg: dict, every: int, prior: Checkpoint | None = None):
        self.dir = Path(run_dir) / CHECKPOINT_DIR
        self.every = int(every)
        self.pending: list[dict] = []
        self.files: list[str] = list(prior.files) if prior else []
        self.n_chunks = prior.n_chunks if prior else 0
        self.start_step = prior.steps_done if prior else 0
        self.saved = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        stored = {k: v for k, v in cfg.items() if k != "resume"}
        if not (self.dir / CONFIG_FILE).is_file():
            write_json(self.dir / CONFIG_FILE, stored, sort_keys=False)  # kinds keep their order

    def __call__(self, state, done: int, keys, rec: dict) -> None:
        self.pending.append(rec)
        self.n_chunks += 1
        if self.n_chunks % self.every == 0:
            self.save(state, self.start_step + done, keys)

    def save(self, state, steps_done: int, keys) -> None:
        if self.pending:
            first = self.n_chunks - len(self.pending)
            name = f"records-{first:07d}-{self.n_chunks:07d}.npz"
            fields = self.pending[0].keys()
            _write_npz(self.dir / name, {k: np.concatenate([r[k] for r in self.pending], axis=1) for k in fields})
            self.files.append(name)
            self.pending = []
        leaves = _leaves(state)
        meta = {
            "format": FORMAT_VERSION, "steps_done": int(steps_done), "n_chunks": int(self.n_chunks),
            "records_files": self.files, "n_leaves": len(leaves),
        }
        arrays = {f"leaf_{i:04d}": x for i, x in enumerate(leaves)}
        arrays["keys"] = np.asarray(jax.device_get(keys))
        arrays["meta"] = np.array(json.dumps(meta))
        _write_npz(self.dir / STATE_FILE, arrays)
        self.saved += 1


@dataclasses.dataclass
class Checkpoint:
    dir: Path
    config: dict
    steps_done: int
    n_chunks: int
    files: list
    keys: np.ndarray
    leaves: list
    records: dict | None  # name -> (replicate, time, ...) records of the chunks done

    @property
    def run_dir(self) -> Path:
        return self.dir.parent


def find(path) -> Path:
    """The checkpoint folder of ``path``: a run folder, its ``checkpoint/`` or its ``state.npz``."""
    if not path or not isinstance(path, (str, os.PathLike)):
        raise ConfigError("resume", path, "the path of a run folder holding a checkpoint")
    p = Path(path).expanduser()
    for cand in (p / CHECKPOINT_DIR, p, p.parent if p.name == STATE_FILE else None):
        if cand is not None and (cand / STATE_FILE).is_file() and (cand / CONFIG_FILE).is_file():
            return cand
    if not p.exists():
        raise ConfigError("resume", str(path), "an existing run folder")
    raise ConfigError(
        "resume", str(path),
        f"a run folder holding {CHECKPOINT_DIR}/{STATE_FILE} (run it with checkpoint_every > 0; "
        "a run that finished removes its checkpoint)",
    )


def load_config(path) -> dict:
    d = find(path)
    try:
        cfg = json.loads((d / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("resume", str(path), f"a readable {CONFIG_FILE} ({type(exc).__name__}: {exc})") from None
    if not isinstance(cfg, dict):
        raise ConfigError("resume", str(path), f"a {CONFIG_FILE} holding a config mapping")
    return cfg


def load(path) -> Checkpoint:
    """Read a checkpoint (refusing a damaged one with a ConfigError naming ``resume``)."""
    d = find(path)
    cfg = load_config(d)
    try:
        with np.load(d / STATE_FILE, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {meta.get('format')} (this version reads {FORMAT_VERSION})")
            leaves = [z[f"leaf_{i:04d}"] for i in range(int(meta["n_leaves"]))]
            keys = z["keys"]
        parts = []
        for name in meta["records_files"]:
            with np.load(d / name, allow_pickle=False) as z:
                parts.append({k: z[k] for k in z.files})
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError("resume", str(path), f"an intact checkpoint ({type(exc).__name__}: {exc})") from None
    records = None
    if parts:
        records = {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}
    listed = set(meta["records_files"]) | {STATE_FILE, CONFIG_FILE}
    for leftover in d.iterdir():  # interrupted writes: never part of the checkpoint
        if leftover.name not in listed and (leftover.name.startswith(".tmp-") or leftover.name.startswith("records-")):
            leftover.unlink(missing_ok=True)
    return Checkpoint(d, cfg, int(meta["steps_done"]), int(meta["n_chunks"]), list(meta["records_files"]),
                      keys, leaves, records)


def restore_state(ckpt: Checkpoint, template, replicates: int):
    """Rebuild the batched state from the checkpoint's leaves, checking them against ``template``."""
    t_leaves, treedef = jax.tree_util.tree_flatten(template)
    if len(t_leaves) != len(ckpt.leaves):
        raise ConfigError(
            "resume", str(ckpt.dir),
            f"a checkpoint of this model ({len(ckpt.leaves)} state arrays, expected {len(t_leaves)})",
        )
    for i, (t, x) in enumerate(zip(t_leaves, ckpt.leaves)):
        want = (replicates,) + np.shape(t)
        if x.shape != want or x.dtype != np.asarray(t).dtype:
            raise ConfigError(
                "resume", str(ckpt.dir),
                f"a checkpoint of this model (state array {i} is {x.dtype}{list(x.shape)}, "
                f"expected {np.asarray(t).dtype}{list(want)})",
            )
    if ckpt.keys.shape[0] != replicates:
        raise ConfigError("resume", str(ckpt.dir), f"keys for {replicates} replicates (it has {ckpt.keys.shape[0]})")
    return jax.tree_util.tree_unflatten(treedef, list(ckpt.leaves))


def clear(run_dir) -> None:
    """Remove the checkpoint of a run that finished (its results hold everything)."""
    shutil.rmtree(Path(run_dir) / CHECKPOINT_DIR, ignore_errors=True)


def merge_records(prior: dict | None, new: dict) -> dict:
    """The checkpoint's records followed by those of the continuation (``None``: nothing new)."""
    if prior is None:
        return new
    return {k: prior[k] if new.get(k) is None else np.concatenate([prior[k], new[k]], axis=1) for k in prior}


def resumable_run(run_fn, state, cfg: dict, run_dir=None, *, fields, dt: float):
    """Run an engine for ``cfg`` with checkpoints and resume (the same contract as the tissue run).

    ``run_fn(state, steps=, chunk_records=, start_step=, keys=, checkpoint=)`` is the engine's
    ``run`` with everything else bound (it returns an ``engine.RunResult``); ``state`` is the
    model's initial (unbatched) state, the template a checkpoint is checked against. With
    ``cfg['checkpoint_every'] = N > 0`` and a ``run_dir`` the run checkpoints every N chunks into
    ``run_dir/checkpoint``; with ``cfg['resume']`` it continues from that checkpoint, using the same
    chunk length (so the same compiled chunk function) as the uninterrupted run. The result holds
    the records of the whole run (``fields``: the record names), its steps and times (``dt`` s per
    step)."""
    from sim import engine

    steps, every, reps = int(cfg["steps"]), int(cfg["record_every"]), int(cfg["replicates"])
    # one chunk length for the whole run, also when resumed part-way (same compiled function)
    chunk = engine.chunk_length(steps // every, int(cfg.get("chunk_records", 100)))
    keys, start, ckpt = None, 0, None
    if cfg.get("resume"):
        ckpt = load(cfg["resume"])
        state = restore_state(ckpt, state, reps)
        keys, start = jax.numpy.asarray(ckpt.keys), ckpt.steps_done
        if start > steps or start % (chunk * every):
            raise ConfigError("resume", str(cfg["resume"]), f"a checkpoint of this run ({start} steps done of {steps})")
    every_n = int(cfg.get("checkpoint_every", 0) or 0)
    writer = Checkpointer(run_dir, cfg, every_n, prior=ckpt) if every_n and run_dir is not None else None
    if start < steps:
        result = run_fn(state, steps=steps - start, chunk_records=chunk, start_step=start, keys=keys, checkpoint=writer)
    else:  # the checkpoint is of a finished run: nothing left to compute
        result = engine.RunResult(state, {k: None for k in fields}, np.zeros(0), 0, 0.0, 0.0)
    if ckpt is not None:
        result.records = merge_records(ckpt.records, result.records)
        result.steps_done += start
    n_rec = result.steps_done // every
    result.times = np.arange(1, n_rec + 1) * every * float(dt)
    return result
