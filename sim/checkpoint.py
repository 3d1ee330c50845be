"""Checkpoints of a JAX engine run, and resuming a killed run to the bit-identical result.

Layout inside the run folder (every file written atomically through :mod:`sim.io`)::

    checkpoint/config.json                 the resolved config of the run (written first, when
                                           the run starts; never rewritten by a resume)
    checkpoint/records-<c0>-<c1>.npz       the records of chunks c0 .. c1-1 (each written once)
    checkpoint/state.npz                   the commit point: state leaves, PRNG keys, steps done,
                                           chunks done, the list of records files, and the
                                           config hash and code version it belongs to

``state.npz`` is replaced only after the records files it lists exist, so a run killed at any
moment (even while writing) leaves a consistent checkpoint: the last ``state.npz`` and the
records files it names. Records files it does not name, and ``.tmp-*`` files, are leftovers of
a write that was interrupted; resuming removes them.

The PRNG position of a run is its per-replicate keys (``fold_in(PRNGKey(seed), r)``) and the
step counter inside the state: every draw is derived from (key, step, purpose, agent id), so
restoring both restores the stream exactly. A resumed run uses the stored config (not the
current defaults) and the same chunk length, so it executes the same compiled chunk function on
the same inputs: its ``results.nc`` is bit-identical to that of an uninterrupted run.

A checkpoint belongs to one config and one version of the code, and says so: ``state.npz``'s
meta holds ``config_sha256`` (:func:`config_hash` of ``config.json``'s content) and
``code_version`` (:func:`code_version`: this package's ``__version__`` and jax's, the two things a
bit-identical continuation depends on beyond the config). The hash lives inside the commit point,
so ``config.json`` and ``state.npz`` cannot disagree silently: :func:`load_config` (and so
:func:`load` and ``sim.app.resume_run``) refuses a checkpoint whose ``config.json`` was edited or
replaced (by a hand, or by another run written into the same folder), one written by another code
version, and :func:`resumable_run` refuses to continue it with a config other than its own (only
``debug`` may differ). A fresh run is never written over another run's checkpoint: the
:class:`Checkpointer` of a run that is not a resume refuses a folder whose ``checkpoint/`` holds a
``state.npz`` (``sim.app`` refuses such a folder earlier still, before writing anything into it),
because replacing it would lose the computed chunks of the other run and mixing them is what made
a resume combine one run's state with another's config. A ``checkpoint/`` without ``state.npz``
(a run killed before its first checkpoint) holds nothing computed and is simply reused.

Nothing here depends on the preset: the state is any PyTree (the biology ``State`` or the LLM
``LLMState``) and the records any dict of ``(replicate, time, ...)`` arrays.
:func:`resumable_run` is the driver that checkpoints and resumes an engine run (the tissue run,
``sim.api._run_jax``, and ``experiment=serving``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np

from sim.errors import ConfigError
from sim.io import atomic_path, interrupts_deferred, json_text, to_json_value, write_text

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.npz"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 2  # 2: config_sha256 and code_version in the meta (1 had neither: not resumable)
MAY_DIFFER_ON_RESUME = ("resume", "debug", "progress")  # keys outside the config hash (sim.app.RESUME_OVERRIDABLE)


def _stored(cfg: dict) -> dict:
    """The part of a run config that a checkpoint stores and hashes."""
    return {k: v for k, v in cfg.items() if k not in MAY_DIFFER_ON_RESUME}


def config_hash(cfg: dict) -> str:
    """sha256 of the config as ``config.json`` holds it (keys sorted, compact; ``resume`` and
    ``debug`` left out), so the hash of the written config and of the config read back agree."""
    canon = json.dumps(to_json_value(_stored(cfg)), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def code_version() -> str:
    """The version of the code a checkpoint belongs to: a resume continues the same compiled
    computation, so it needs the same simulator and the same jax (whose kernels round). The
    simulator is named by its version AND the hash of its source (every ``.py`` file of ``sim``):
    a state layout can change without a version bump (the LLM queues became ring buffers), and a
    checkpoint of the old layout would resume into wrong results without a word."""
    import sim
    from sim.core.executable_store import source_hash

    return f"sim {sim.__version__} (source {source_hash()[:16]}); jax {jax.__version__}"


def _write_npz(path: Path, arrays: dict) -> None:
    # a Ctrl-C / SIGTERM arriving mid-write is delivered once the file is complete (sim.io)
    with interrupts_deferred(), atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, **arrays)


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


def holds_checkpoint(run_dir) -> bool:
    """Whether ``run_dir`` holds a committed checkpoint (``checkpoint/state.npz``) of some run."""
    return (Path(run_dir) / CHECKPOINT_DIR / STATE_FILE).exists()


def occupied_refusal(run_dir, key: str = "run_dir") -> ConfigError:
    """The refusal of a fresh run aimed at a folder that holds another run's checkpoint."""
    return ConfigError(
        key, str(run_dir),
        f"a folder without another run's checkpoint (it holds {CHECKPOINT_DIR}/{STATE_FILE} of an unfinished run: "
        f"continue that run with resume={run_dir}, discard it by removing {CHECKPOINT_DIR}/ there, or choose "
        "another folder; nothing was written)",
    )


FINISHED_MARKS = ("summary.json", "results.nc")  # what a run that ended (ok or not) leaves behind


def holds_finished_run(run_dir) -> bool:
    """Whether ``run_dir`` holds what an ended run wrote: every run that ends writes its
    ``summary.json`` (a file; anything else there is not a run's)."""
    return (Path(run_dir) / "summary.json").is_file()


def finished_refusal(run_dir, key: str = "run_dir") -> ConfigError:
    """The refusal of a fresh run aimed at a folder holding an ended run (its files are not touched)."""
    return ConfigError(
        key, str(run_dir),
        "a folder without an ended run (it holds " + " and ".join(n for n in FINISHED_MARKS if (Path(run_dir) / n).is_file())
        + " of a run that ended: choose another folder, or remove them there; nothing was written)",
    )


class Checkpointer:
    """Engine ``checkpoint`` callback: collects each chunk's records, saves every ``every`` chunks.

    A fresh run (``prior`` None) writes ``config.json`` (replacing one left by a run killed before
    its first checkpoint) and refuses a folder that holds a committed checkpoint (see the module
    docstring); a resumed run keeps the checkpoint's ``config.json`` and config hash."""

    def __init__(self, run_dir, cfg: dict, every: int, prior: Checkpoint | None = None):
        self.dir = Path(run_dir) / CHECKPOINT_DIR
        self.every = int(every)
        self.pending: list[dict] = []
        self.files: list[str] = list(prior.files) if prior else []
        self.n_chunks = prior.n_chunks if prior else 0
        self.start_step = prior.steps_done if prior else 0
        self.saved = 0
        self.code_version = code_version()
        if prior is not None:
            self.config_hash = prior.config_hash
            return
        if holds_checkpoint(run_dir):
            raise occupied_refusal(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        text = json_text(_stored(cfg), sort_keys=False)  # kinds keep their order
        self.config_hash = config_hash(json.loads(text))  # what a reader of config.json will hash
        write_text(self.dir / CONFIG_FILE, text)

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
            "config_sha256": self.config_hash, "code_version": self.code_version,
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
    config_hash: str = ""  # config_sha256 of the meta (checked against config.json by load_config)
    code_version: str = ""  # the code version that wrote it (checked against this one)

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
    if (p / CHECKPOINT_DIR / CONFIG_FILE).is_file() or (p / CONFIG_FILE).is_file():
        raise ConfigError(
            "resume", str(path),
            f"a run folder holding {CHECKPOINT_DIR}/{STATE_FILE} (this run checkpointed but was stopped before "
            "its first checkpoint was written: nothing to continue from, start it again)",
        )
    if (p / "summary.json").is_file():
        raise ConfigError(
            "resume", str(path),
            f"a run folder holding {CHECKPOINT_DIR}/{STATE_FILE} (this run ended: a run that ends removes its "
            "checkpoint, and its results are in the folder)",
        )
    raise ConfigError(
        "resume", str(path),
        f"a run folder holding {CHECKPOINT_DIR}/{STATE_FILE} (run it with checkpoint_every > 0 to make it "
        "resumable)",
    )


def _read_meta(d: Path, path) -> dict:
    """The meta of ``state.npz`` (only that member is read), refusing a damaged or foreign file."""
    try:
        with np.load(d / STATE_FILE, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
        if not isinstance(meta, dict):
            raise ValueError("its meta is not a mapping")
    except Exception as exc:
        raise ConfigError("resume", str(path), f"an intact checkpoint ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != FORMAT_VERSION:
        raise ConfigError(
            "resume", str(path),
            f"an intact checkpoint of format {FORMAT_VERSION} (this one has format {meta.get('format')}: "
            "written by another version of the code; resume it with that version)",
        )
    return meta


def load_config(path) -> dict:
    """The stored config of the checkpoint at ``path``, after checking that it is the config the
    checkpoint's ``state.npz`` was written with (its ``config_sha256``) and that this code wrote it
    (``code_version``); any mismatch is refused with a ConfigError naming ``resume``."""
    d = find(path)
    meta = _read_meta(d, path)
    try:
        cfg = json.loads((d / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("resume", str(path), f"a readable {CONFIG_FILE} ({type(exc).__name__}: {exc})") from None
    if not isinstance(cfg, dict):
        raise ConfigError("resume", str(path), f"a {CONFIG_FILE} holding a config mapping")
    got, want = config_hash(cfg), meta.get("config_sha256")
    if got != want:
        raise ConfigError(
            "resume", str(path),
            f"a checkpoint of this model and config: {CHECKPOINT_DIR}/{CONFIG_FILE} (sha256 {got[:12]}) is not the "
            f"config its {STATE_FILE} was written with (sha256 {str(want)[:12]}): it was edited or replaced",
        )
    if meta.get("code_version") != code_version():
        raise ConfigError(
            "resume", str(path),
            f"a checkpoint written by this code ({code_version()}); it was written by {meta.get('code_version')}: "
            "resume it with that version, or start a new run",
        )
    return cfg


def load(path) -> Checkpoint:
    """Read a checkpoint (refusing a damaged one with a ConfigError naming ``resume``)."""
    d = find(path)
    cfg = load_config(d)
    try:
        with np.load(d / STATE_FILE, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT_VERSION or meta.get("config_sha256") != config_hash(cfg):
                raise ValueError(f"{STATE_FILE} changed while it was read")
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
                      keys, leaves, records, str(meta["config_sha256"]), str(meta["code_version"]))


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


def _first_difference(a, b, prefix=""):
    """The dotted key of the first difference between two JSON-like configs (None if equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in a or k not in b:
                return key
            found = _first_difference(a[k], b[k], key)
            if found is not None:
                return found
        return None
    return None if a == b else (prefix or "config")


def check_same_config(ckpt: Checkpoint, cfg: dict) -> None:
    """Refuse to continue ``ckpt`` with a config other than its own (``resume``, ``debug`` aside)."""
    if config_hash(cfg) == ckpt.config_hash:
        return
    mine = json.loads(json.dumps(to_json_value(_stored(cfg)), allow_nan=False))
    key = _first_difference(_stored(ckpt.config), mine) or "config"
    raise ConfigError(
        "resume", str(ckpt.run_dir),
        f"the config the checkpoint was written with (this run's config differs at {key}; "
        f"a resumed run keeps its stored config, only {', '.join(MAY_DIFFER_ON_RESUME[1:])} may change)",
    )


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
    step). A resume is refused (ConfigError naming ``resume``) unless ``cfg`` is the checkpoint's
    own config (``debug`` aside) and this code version wrote it; a fresh checkpointing run is
    refused (ConfigError naming ``run_dir``) if ``run_dir`` holds another run's checkpoint."""
    from sim.core import engine

    steps, every, reps = int(cfg["steps"]), int(cfg["record_every"]), int(cfg["replicates"])
    # one chunk length for the whole run, also when resumed part-way (same compiled function)
    chunk = engine.chunk_length(steps // every, int(cfg.get("chunk_records", 100)))
    keys, start, ckpt = None, 0, None
    if cfg.get("resume"):
        ckpt = load(cfg["resume"])
        check_same_config(ckpt, cfg)
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
