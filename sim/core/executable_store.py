"""A content-addressed disk store of the engine's compiled chunk programs (issue 14).

JAX's persistent compilation cache (:mod:`sim.core.cache`) answers only after a program has been
traced and lowered, and tracing ``jit(vmap(scan(step)))`` is most of a warm process's start-up
(a warm 1-step biology run spent 1.4 s in ``compile_s`` on this 2-core machine, almost all of it
in ``jit_lower``/tracing, cProfile). This store keeps the SERIALIZED EXECUTABLE itself
(:func:`jax.experimental.serialize_executable.serialize`, with its input and output tree
structures), keyed on everything that decides the program, so a warm process loads it
(``deserialize_and_load``, ~0.1 s) and traces nothing.

The key (:func:`program_key`) must make a stale executable impossible to run. It holds:

- the content of every ``.py`` file of the ``sim`` package (one SHA-256, once per process,
  :func:`source_hash`): any edit to any kernel, the engine or a helper is another key; a process
  during which a source file changed neither loads nor stores (:func:`sources_changed_since_start`:
  the code it runs may predate the edit);
- a stable token of the substrate (:func:`substrate_token`): only the built-in substrate values and
  the variants the core derives from them by name (``differentiation.rule``, ``carriers.rule``)
  have one; any other value (a user's substrate, a copy with a fault injected) gets None and is
  compiled as before, never stored;
- the jax, jaxlib, numpy and Python versions, every JAX config value that can change a program
  (:data:`_CONFIG_IGNORED` lists the few that cannot: cache, logging, dump settings), ``XLA_FLAGS``,
  the XLA compile options the engine passes (:data:`sim.core.ops.COMPILE_OPTIONS`);
- the backend: platform, platform version, device kind, device count, process count, and on Linux
  the CPU model and instruction-set flags (an executable compiled for AVX-512 must not load on a
  machine without it, e.g. a home folder shared over the network);
- the chunk's own key: chunk length, record interval, parameter batching axes, reduction order,
  and the full signature of ``(state, params, keys)``: tree structure, shapes, dtypes, weak types.

Only one-device runs are stored (``layout`` None, every argument on the default device); a run
split over several devices compiles as before.

Files: ``<compile_cache folder>/executables/<key>.exe``, written to a temporary file and
``os.replace``-d (parallel sweep jobs share the folder; a reader sees a whole file or none). A file
holds a header line (format, the full key digest, the payload's length and SHA-256) and the pickled
payload; a file that is truncated, corrupt, for another key, or fails to load is reported once
(a warning), deleted, and the program compiled as usual. Files over :data:`MAX_BYTES` are neither
written nor read; beyond :data:`MAX_FILES` files the least recently used are removed. Nothing here
can fail a run: every error falls back to compiling.

A file written from an executable that JAX's own cache had deserialised would load and then fail
when run (XLA:CPU keeps no object code for it: "Function ... not found"), so the engine stores only
a freshly compiled executable (when JAX's cache served the program, it compiles it once more under
another name, :func:`jax_cache_hits`), and the first call of every loaded executable is checked to
its end (:class:`FirstCallChecked`): if it fails, the file is deleted and the program compiled.

Trust: loading an executable runs what it contains (JAX's warning on ``deserialize_and_load``), so
the folder must be as private as the code: it is created with mode 700 (an existing one of this
user's is made so), and a folder another user owns or may write into is not used (one warning).
Switch the store off alone with ``CURRENCY_SIM_EXECUTABLE_STORE=off`` (it is off whenever
``compile_cache`` is off).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import platform
import stat
import sys
import tempfile
import time
import warnings
from pathlib import Path

FORMAT = 1  # bump when the file layout or the key's contents change
MAGIC = b"currency-sim executable "
MAX_BYTES = 256 * 2**20  # one executable of the shipped substrates is 0.5-3 MB; a larger file is not kept
MAX_FILES = 256  # least recently used files beyond this are removed after a write
SUFFIX = ".exe"
ENV_SWITCH = "CURRENCY_SIM_EXECUTABLE_STORE"  # "off"/"0"/"false": this store off, JAX's cache still on

# JAX config values that cannot change a compiled program (where the caches live, logging, dumps,
# error-message details, transfer guards, timeouts): a name holding one of these words (whole
# "_"-separated words: ``jax_log_compiles`` is ignored, ``jax_use_hlo_logistic_lowering`` is not).
# Every other value is part of the key, so a config option a later jax adds is in it by default.
_CONFIG_IGNORED = ("compilation_cache", "persistent_cache", "log", "logging", "dump", "pprint", "traceback",
                   "tracebacks", "transfer_guard", "timeout", "explain_cache_misses", "captured_constants",
                   "include_debug_info", "source_url", "hlo_source_file", "tracer_error")


def _ignored(name: str) -> bool:
    padded = f"_{name}_"
    return any(f"_{word}_" in padded for word in _CONFIG_IGNORED)


_WARNED: set = set()


def _warn(what: str, detail: str) -> None:
    """One warning per kind of problem and process (a sweep must not print one per job step)."""
    if what in _WARNED:
        return
    _WARNED.add(what)
    try:
        warnings.warn(f"executable store: {detail}", RuntimeWarning, stacklevel=3)
    except Exception:  # noqa: BLE001  (warnings turned into errors must not fail the run either)
        pass


# ------------------------------------------------------------------------------ the key


def source_hash_of(root: Path) -> str:
    """SHA-256 over the relative path and content of every ``.py`` file under ``root`` (sorted)."""
    h = hashlib.sha256()
    for path in sorted(Path(root).rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def _package_root() -> Path:
    import sim

    return Path(sim.__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """:func:`source_hash_of` the installed ``sim`` package, once per process (~3 ms for its ~100 files)."""
    return source_hash_of(_package_root())


def _process_start() -> float:
    """Wall-clock time this process started (Linux ``/proc``), else when this module was imported;
    one second earlier, for clock granularity."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: starttime
    except (OSError, ValueError, IndexError, AttributeError):
        age = time.time() - _IMPORTED
    return time.time() - age - 1.0


_IMPORTED = time.time()


def sources_changed_since_start(root: Path | None = None) -> bool:
    """True when a ``.py`` file of ``sim`` was modified after this process started: the code running
    may then not be the source hashed (a module imported before the edit), so the process neither
    loads nor stores executables (an edit during a run, e.g. in a development checkout)."""
    start = _process_start()
    try:
        return any(p.stat().st_mtime > start for p in Path(root or _package_root()).rglob("*.py"))
    except OSError:
        return True


def substrate_token(substrate) -> str | None:
    """A name that stands for exactly this substrate's program in every process, or None.

    A built-in substrate value (``sim.substrates.BUILTIN``'s module's ``SUBSTRATE``) and the variants
    :func:`sim.api.substrate_of` derives from it (the adaptation process of a differentiation rule,
    the carrier processes of a carrier rule; both memoised, so the same object every time) are
    recognised by IDENTITY: what their step does is then fixed by the source (in the key) and the
    names. Anything else, e.g. ``dataclasses.replace(SUBSTRATE, processes=...)`` or a user's
    substrate, has no token: its functions may close over anything."""
    import importlib

    from sim import substrates
    from sim.core import carriers, differentiation

    name = getattr(substrate, "name", None)
    module = substrates.BUILTIN.get(name) if isinstance(name, str) else None
    if module is None:
        return None
    try:
        base = importlib.import_module(module).SUBSTRATE
    except Exception:  # noqa: BLE001  (no token: compile as before)
        return None
    rules = differentiation.RULES if base.differentiation is not None else ("fixed",)
    for d_rule in rules:
        adapted = differentiation.adaptive(base, d_rule)
        token = f"{name}|differentiation={d_rule}"
        if substrate is adapted:
            return token + "|carriers=one"
        if adapted.carriers is not None:
            for c_rule in carriers.RULES:
                if substrate is carriers.with_carriers(adapted, c_rule):
                    return token + f"|carriers={c_rule}"
    return None


def _config_values() -> dict:
    import jax

    out = {}
    for name in sorted(jax.config.values):
        if _ignored(name):
            continue
        try:
            value = getattr(jax.config, name)  # the value in effect (thread-local contexts included)
        except AttributeError:
            value = jax.config.values[name]
        out[name] = repr(value)
    return out


def _cpu() -> str:
    """CPU model and instruction-set flags (Linux), else the machine type."""
    model = flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not model and line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif not flags and line.startswith(("flags", "Features")):
                    flags = hashlib.sha256(line.split(":", 1)[1].strip().encode()).hexdigest()
                if model and flags:
                    break
    except OSError:
        pass
    return f"{platform.machine()}|{model}|{flags}"


@functools.lru_cache(maxsize=4)
def _static_environment(backend_id: int) -> dict:
    """What the program depends on that cannot change while the process runs (once per backend):
    source, versions, the compile options the engine passes, the devices, the CPU."""
    import jax
    import jaxlib
    import numpy as np

    from sim.core import ops

    devices = jax.devices()
    return {
        "format": FORMAT, "source": source_hash(), "python": sys.version, "jax": jax.__version__,
        "jaxlib": jaxlib.__version__, "numpy": np.__version__, "compile_options": sorted(ops.COMPILE_OPTIONS.items()),
        "platform": devices[0].platform, "platform_version": devices[0].client.platform_version,
        "device_kind": devices[0].device_kind, "device_count": len(devices), "process_count": jax.process_count(),
        "cpu": _cpu(),
    }


def environment() -> dict:
    """Everything outside the arguments that the program depends on: :func:`_static_environment`,
    the JAX config in effect now (a ``with jax.numpy_rank_promotion(...)`` block included) and
    ``XLA_FLAGS`` (read when the backend started; the project never changes it after)."""
    import jax

    return {**_static_environment(id(jax.devices()[0].client)), "config": _config_values(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _leaf(x) -> list:
    """Shape, dtype in the program, and weak type (a Python scalar promotes differently)."""
    import numpy as np

    from sim.core.engine import dtype_name

    weak = isinstance(x, (bool, int, float, complex)) or bool(getattr(x, "weak_type", False))
    return [list(np.shape(x)), dtype_name(x), weak]


def _on_default_device(leaves) -> bool:
    import jax

    default = jax.devices()[0]
    for x in leaves:
        devices = getattr(x, "devices", None)
        if devices is not None and callable(devices) and devices() != {default}:
            return False
    return True


def program_key(substrate, *, chunk: int, record_every: int, params_axes, fixed_order: bool, args,
                layout=None, compile_options: dict | None = None, known: tuple = ()) -> str | None:
    """The store key (hex SHA-256) of a chunk program, or None when it must not be stored: the
    store is off (or its folder unusable), no stable substrate token, several devices, an argument
    off the default device, or any error. ``compile_options``: XLA options on top of
    ``ops.COMPILE_OPTIONS`` (the vector width, :mod:`sim.core.codegen`), part of the key; ``known``:
    the facts the program was traced with (:mod:`sim.core.known`), part of the key."""
    if folder() is None:
        return None
    try:
        import jax

        token = substrate_token(substrate)
        if token is None or layout is not None:
            return None
        if sources_changed_since_start():
            _warn("source", "a source file of sim changed while this process ran; executables neither loaded "
                            "nor stored")
            return None
        flat = []
        for tree in args:
            leaves, treedef = jax.tree_util.tree_flatten(tree)
            if not _on_default_device(leaves):
                return None
            flat.append([str(treedef), [_leaf(x) for x in leaves]])
        if params_axes is None or isinstance(params_axes, int):
            axes = repr(params_axes)
        else:
            leaves, treedef = jax.tree_util.tree_flatten(params_axes, is_leaf=lambda a: a is None)
            axes = [str(treedef), repr(leaves)]
        desc = {"env": environment(), "substrate": token, "chunk": int(chunk),
                "record_every": int(record_every), "params_axes": axes, "fixed_order": bool(fixed_order),
                "args": flat, "extra_compile_options": sorted((compile_options or {}).items()),
                "known": [list(f) for f in known]}
        return hashlib.sha256(json.dumps(desc, sort_keys=True, default=repr).encode()).hexdigest()
    except Exception as exc:  # noqa: BLE001  (never fail a run because of the store)
        _warn("key", f"no key for this program ({type(exc).__name__}: {exc}); compiling it as usual")
        return None


# ------------------------------------------------------------------------------ the folder


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "on").strip().lower() not in ("off", "0", "false", "no")


def folder() -> Path | None:
    """The store's folder (``executables`` under the compile-cache folder in use), created private
    (mode 700), or None when off, not creatable, or not private: owned by another user, or writable
    by group or others when this user cannot make it private."""
    from sim.core import cache

    if not enabled():
        return None
    where = cache.executables_dir()
    if where is None:
        return None
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = where.stat()
        if hasattr(os, "getuid") and st.st_uid == os.getuid() and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            where.chmod(0o700)  # ours, made by an older run or under a group-writable umask
            st = where.stat()
    except OSError as exc:
        _warn("folder", f"cannot use {where} ({exc.strerror}); compiling as usual")
        return None
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        _warn("trust", f"{where} is not private to this user (another owner, or group/other write permission); "
                       "not loading executables from it; compiling as usual")
        return None
    return where


def path_of(key: str, where: Path) -> Path:
    return where / f"{key}{SUFFIX}"


# ------------------------------------------------------------------------------ reading and writing


def _header(key: str, payload: bytes) -> bytes:
    info = {"format": FORMAT, "key": key, "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    return MAGIC + json.dumps(info, sort_keys=True).encode() + b"\n"


def _payload(data: bytes, key: str) -> bytes:
    """The payload of a file's bytes, checked against its header; ValueError if anything is off."""
    if not data.startswith(MAGIC):
        raise ValueError("not an executable file of this project")
    line, sep, payload = data[len(MAGIC):].partition(b"\n")
    if not sep:
        raise ValueError("truncated header")
    info = json.loads(line)
    if info.get("format") != FORMAT or info.get("key") != key:
        raise ValueError("written for another key or format")
    if info.get("bytes") != len(payload) or info.get("sha256") != hashlib.sha256(payload).hexdigest():
        raise ValueError("truncated or corrupt payload")
    return payload


def _drop(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def load(key: str | None):
    """The executable stored under ``key`` (a :class:`jax.stages.Compiled`, called exactly as the
    one :meth:`jax.stages.Lowered.compile` returns), or None: not stored, store off, or unusable
    (then deleted, one warning)."""
    if key is None:
        return None
    where = folder()
    if where is None:
        return None
    path = path_of(key, where)
    try:
        size = path.stat().st_size
    except OSError:
        return None  # not stored (the usual miss)
    try:
        if size > MAX_BYTES + 4096:
            raise ValueError(f"{size} bytes, over the {MAX_BYTES}-byte limit")
        data = path.read_bytes()
        blob, in_tree, out_tree = pickle.loads(_payload(data, key))
        import jax
        from jax.experimental import serialize_executable

        compiled = serialize_executable.deserialize_and_load(blob, in_tree, out_tree, backend=jax.devices()[0].client,
                                                             execution_devices=jax.devices()[:1])
    except Exception as exc:  # noqa: BLE001  (a bad file is never fatal: compile instead)
        _warn("load", f"ignored and deleted {path.name} ({type(exc).__name__}: {exc}); compiling instead")
        _drop(path)
        return None
    try:
        os.utime(path)  # least recently used goes first when the folder is full
    except OSError:
        pass
    return compiled


def save(key: str | None, compiled) -> bool:
    """Store ``compiled`` under ``key`` (atomically: temporary file + ``os.replace``); False when
    not stored: store off, a program JAX cannot serialise or one over :data:`MAX_BYTES` (silently),
    a write error (one warning)."""
    if key is None:
        return False
    where = folder()
    if where is None:
        return False
    try:
        from jax.experimental import serialize_executable

        blob, in_tree, out_tree = serialize_executable.serialize(compiled)
        buf = io.BytesIO()
        pickle.dump((blob, in_tree, out_tree), buf, protocol=pickle.HIGHEST_PROTOCOL)
        payload = buf.getvalue()
    except Exception:  # noqa: BLE001  (a program JAX cannot serialise, e.g. with constants: not stored)
        return False
    if len(payload) > MAX_BYTES:
        return False
    if sources_changed_since_start():  # (again: the program was traced after the key was made)
        _warn("source", "a source file of sim changed while this process ran; executables neither loaded "
                        "nor stored")
        return False
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=where)
        with os.fdopen(fd, "wb") as f:
            f.write(_header(key, payload))
            f.write(payload)
        os.replace(tmp, path_of(key, where))
        tmp = None
    except Exception as exc:  # noqa: BLE001  (never fail a run because of the store)
        _warn("save", f"could not write into {where} ({type(exc).__name__}: {exc}); the run goes on")
        return False
    finally:
        if tmp is not None:
            _drop(Path(tmp))
    _evict(where)
    return True


_HITS: list = [None]  # JAX persistent-cache hits seen by this process (None: not listening yet)


def jax_cache_hits() -> int | None:
    """How many executables JAX's persistent cache has served in this process (a listener on
    ``jax.monitoring``, registered on the first call); None when it cannot be told."""
    if _HITS[0] is None:
        try:
            import jax

            def listener(event: str, **kwargs) -> None:
                if event == "/jax/compilation_cache/cache_hits":
                    _HITS[0] += 1

            _HITS[0] = 0
            jax.monitoring.register_event_listener(listener)
        except Exception:  # noqa: BLE001
            _HITS[0] = None
            return None
    return _HITS[0]


class FirstCallChecked:
    """A loaded executable whose first call is checked to its end (results ready): if it raises,
    its file is deleted, ``fallback()`` compiles the program, and the call runs on that instead
    (the chunk's arguments are not donated, so running it again is safe). A stored executable can
    load and still fail when run (XLA:CPU's "Function ... not found" when a file was written from
    an executable that JAX's own cache had deserialised); this makes even that a fallback, not a
    failed run. Called exactly as :class:`jax.stages.Compiled`; other attributes are the loaded
    executable's."""

    def __init__(self, compiled, key: str, fallback):
        self._compiled, self._key, self._fallback = compiled, key, fallback

    def __call__(self, *args):
        if self._fallback is None:
            return self._compiled(*args)
        import jax

        try:
            out = self._compiled(*args)
            jax.block_until_ready(out)
        except Exception as exc:  # noqa: BLE001
            _warn("run", f"a stored executable ({self._key[:16]}...) failed on its first call "
                         f"({type(exc).__name__}: {str(exc)[:200]}); deleted, compiling instead")
            where = folder()
            if where is not None:
                _drop(path_of(self._key, where))
            fallback, self._fallback = self._fallback, None
            self._compiled = fallback()
            return self._compiled(*args)
        self._fallback = None
        return out

    def __getattr__(self, name):
        return getattr(self._compiled, name)


def _evict(where: Path) -> None:
    """Remove the least recently used files beyond :data:`MAX_FILES` and temporary files older than
    an hour (a file another process removes first is skipped)."""
    try:
        files, now = [], time.time()
        for p in where.glob(f"*{SUFFIX}"):
            try:
                mtime = p.stat().st_mtime
            except OSError:
                continue
            if p.name.startswith(".tmp-"):  # left by a killed writer (a live one takes seconds at most)
                if now - mtime > 3600:
                    _drop(p)
                continue
            files.append((mtime, p))
        if len(files) <= MAX_FILES:
            return
        files.sort()
        for _, p in files[:len(files) - MAX_FILES]:
            _drop(p)
    except OSError:
        pass
