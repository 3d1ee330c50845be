"""The disk store of the engine's serialized executables (:mod:`sim.core.executable_store`).

Across processes (each a child running ``python -m sim`` argvs through ``sim.app.entry``): a second
process loads the engine's chunk program whole and traces nothing for it (counted twice: the
engine's ``CACHE.traced`` and JAX's own trace events for ``scan_records``), with results
bit-identical to a run without any cache; a change of the key (record interval, the substrate's
carrier processes) misses; a corrupt file falls back to compiling with identical results and is
replaced. In this process: the key's parts (source hash, substrate token, arguments, config), and
the file handling (truncation, another key, the size guard, the output tree of a loaded program).
"""

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim  # noqa: F401  (x64)
from _support import assert_same_results, child_env, run_child, with_fault
from sim import substrates
from sim.core import cache, carriers, differentiation, engine
from sim.core import executable_store as store
from sim.core.config import compose

# runs every argv of a JSON {name: argv} file in this one process, each case with the engine's
# in-process executables cleared (so each goes to the disk store or compiles), and prints per case
# the exit code, the engine's traced/loaded counts, JAX's trace events of the engine's chunk
# function and the store's warnings
DRIVER = """
import contextlib, io, json, sys, warnings
import jax
traces = []
def duration(event, secs, **kw):
    if event == "/jax/core/compile/jaxpr_trace_duration" and "scan_records" in str(kw.get("fun_name", "")):
        traces.append(1)
jax.monitoring.register_event_duration_secs_listener(duration)
from sim.app import entry
from sim.core import engine
results = {}
for name, argv in json.loads(open(sys.argv[1]).read()).items():
    engine.clear_caches()
    t0, l0, n0 = engine.CACHE.traced, engine.CACHE.loaded, len(traces)
    err, code = io.StringIO(), 0
    sys.argv = ["sim", *argv]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \\
            warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            entry()
        except SystemExit as exc:
            code = exc.code
    results[name] = {"code": code, "stderr": err.getvalue()[-2000:], "traced": engine.CACHE.traced - t0,
                     "loaded": engine.CACHE.loaded - l0, "scan_traces": len(traces) - n0,
                     "warnings": [str(w.message) for w in seen if "executable store" in str(w.message)]}
print(json.dumps(results))
"""

BASE = ["experiment=tissue", "substrate=generic", "topology=ring", "topology.n_cells=6", "steps=2",
        "record_every=1", "replicates=2", "figures=false", "progress=false"]


def _drive(tmp: Path, tag: str, cases: dict, cache_home: Path, *extra, env=None) -> dict:
    """Run ``cases`` (name -> extra overrides) in one child; each case writes into tmp/tag/name."""
    argvs = {name: [*BASE, *extra, *over, f"hydra.run.dir={tmp / tag / name}"] for name, over in cases.items()}
    (tmp / "driver.py").write_text(DRIVER)
    (tmp / f"{tag}.json").write_text(json.dumps(argvs))
    res = run_child([str(tmp / "driver.py"), str(tmp / f"{tag}.json")], timeout=300,
                    env=child_env(XDG_CACHE_HOME=str(cache_home), **(env or {})))
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for name, case in out.items():
        assert case["code"] in (0, None), (name, case["stderr"])
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four processes over one cache folder (and one without any cache): the reference, a cold
    run that stores, a warm one that loads (and two programs it has not seen), and, after the
    stored file was corrupted, one that must fall back."""
    tmp = tmp_path_factory.mktemp("store")
    home = tmp / "home"
    folder = home / "currency-sim" / "jax" / "executables"
    out = {"tmp": tmp, "folder": folder}
    out["ref"] = _drive(tmp, "ref", {"base": [], "rec": ["steps=4", "record_every=2"]}, home, "compile_cache=null")
    assert not folder.exists()
    out["cold"] = _drive(tmp, "cold", {"base": []}, home)
    out["stored"] = sorted(p.name for p in folder.glob("*.exe"))
    out["warm"] = _drive(tmp, "warm", {"base": [], "rec": ["steps=4", "record_every=2"],
                                       "carriers": ["carriers.n=2"]}, home)
    out["after_warm"] = sorted(p.name for p in folder.glob("*.exe"))
    (victim,) = [folder / n for n in out["stored"]]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64  # a flipped block in the middle of the payload
    victim.write_bytes(bytes(data))
    out["corrupt"] = _drive(tmp, "corrupt", {"base": [], "again": []}, home)
    out["victim_ok"] = victim.exists() and victim.read_bytes() != bytes(data)
    # the store alone switched off: JAX's cache serves the program, traced once, nothing stored
    new = ["steps=3", "record_every=3"]
    out["off"] = _drive(tmp, "off", {"rec": ["steps=4", "record_every=2"], "new": new}, home,
                        env={store.ENV_SWITCH: "off"})
    out["off_files"] = sorted(p.name for p in folder.glob("*.exe"))
    out["after_off"] = _drive(tmp, "after_off", {"new": new, "again": new}, home)
    return out


def test_a_warm_process_traces_nothing_for_the_engine_and_matches_a_run_without_cache(runs):
    cold, warm, tmp = runs["cold"]["base"], runs["warm"]["base"], runs["tmp"]
    assert runs["ref"]["base"]["loaded"] == 0 and runs["ref"]["base"]["traced"] == 1
    assert cold["traced"] == 1 and cold["loaded"] == 0 and cold["scan_traces"] >= 1
    assert len(runs["stored"]) == 1
    assert warm["loaded"] == 1 and warm["traced"] == 0 and warm["scan_traces"] == 0
    assert warm["warnings"] == [] and cold["warnings"] == []
    assert_same_results(tmp / "ref" / "base", tmp / "warm" / "base")
    assert_same_results(tmp / "ref" / "base", tmp / "cold" / "base")


def test_a_change_of_record_interval_or_substrate_misses(runs):
    warm = runs["warm"]
    for name in ("rec", "carriers"):  # programs the cold process never stored
        assert warm[name]["traced"] == 1 and warm[name]["loaded"] == 0 and warm[name]["scan_traces"] >= 1, name
    assert len(runs["after_warm"]) == 3 and set(runs["stored"]) < set(runs["after_warm"])
    assert_same_results(runs["tmp"] / "ref" / "rec", runs["tmp"] / "warm" / "rec")


def test_a_corrupt_file_is_ignored_once_replaced_and_the_results_are_the_same(runs):
    bad, again = runs["corrupt"]["base"], runs["corrupt"]["again"]
    # (traced twice: JAX's own cache still has the program, and an executable it deserialised cannot
    # be serialised again on XLA:CPU, so a fresh one is compiled for the store)
    assert bad["loaded"] == 0 and bad["traced"] in (1, 2)
    assert len(bad["warnings"]) == 1 and "corrupt" in bad["warnings"][0] and runs["stored"][0] in bad["warnings"][0]
    assert_same_results(runs["tmp"] / "ref" / "base", runs["tmp"] / "corrupt" / "base")
    assert runs["victim_ok"]  # rewritten by the fallback compile
    assert again["loaded"] == 1 and again["traced"] == 0 and again["warnings"] == []  # loads and runs
    assert_same_results(runs["tmp"] / "ref" / "base", runs["tmp"] / "corrupt" / "again")


def test_the_store_switched_off_alone_neither_loads_nor_stores(runs):
    off = runs["off"]
    for name in ("rec", "new"):  # "rec" is stored and in JAX's cache: JAX's cache serves it, traced once
        assert off[name]["traced"] == 1 and off[name]["loaded"] == 0, name
    assert runs["off_files"] == runs["after_warm"]
    # the store on again: JAX's cache has "new" but the store has not, so a fresh compile is stored
    # (a second trace: an executable JAX deserialised cannot be serialised again), and it loads and runs
    new, again = runs["after_off"]["new"], runs["after_off"]["again"]
    assert new["loaded"] == 0 and new["traced"] == 2 and new["warnings"] == []
    assert again["loaded"] == 1 and again["traced"] == 0 and again["warnings"] == []
    assert_same_results(runs["tmp"] / "off" / "new", runs["tmp"] / "after_off" / "again")


# ------------------------------------------------------------------------------ the key, in process


def test_the_source_hash_follows_every_file_content(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "pkg" / "notes.txt").write_text("not code")
    first = store.source_hash_of(tmp_path / "pkg")
    assert store.source_hash_of(tmp_path / "pkg") == first
    (tmp_path / "pkg" / "notes.txt").write_text("changed, still not code")
    assert store.source_hash_of(tmp_path / "pkg") == first
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 3\n")
    changed = store.source_hash_of(tmp_path / "pkg")
    assert changed != first
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 2\n")
    assert store.source_hash_of(tmp_path / "pkg") == first
    (tmp_path / "pkg" / "sub" / "c.py").write_text("")  # a new (empty) module
    assert store.source_hash_of(tmp_path / "pkg") not in (first, changed)
    assert len(store.source_hash()) == 64  # the sim package's own


def test_a_source_file_changed_during_the_process_turns_the_store_off_for_it(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    os.utime(tmp_path / "a.py", (0, 1e9))  # (2001: before this process started)
    assert not store.sources_changed_since_start(tmp_path)
    (tmp_path / "a.py").write_text("x = 2\n")  # edited now, while this process runs
    assert store.sources_changed_since_start(tmp_path)


def test_only_builtin_substrates_and_their_named_variants_have_a_token():
    bio, gen = substrates.get("bio"), substrates.get("generic")
    tokens = {store.substrate_token(s) for s in (
        bio, gen, differentiation.adaptive(gen, "imitation"), carriers.with_carriers(gen, "fixed"),
        carriers.with_carriers(differentiation.adaptive(gen, "gradient"), "imitation"))}
    assert None not in tokens and len(tokens) == 5
    assert store.substrate_token(dataclasses.replace(gen)) is None  # a copy: its functions may be anything
    faulty = with_fault("generic", gen.process_names[0], 1, lambda s: s)
    assert faulty.name == "generic" and store.substrate_token(faulty) is None
    assert store.substrate_token(object()) is None


@pytest.fixture
def folder(tmp_path, monkeypatch):
    where = tmp_path / "executables"
    monkeypatch.setattr(cache, "executables_dir", lambda: where)
    monkeypatch.setattr(store, "_WARNED", set())
    return where


@pytest.fixture(scope="module")
def generic_args():
    sub = substrates.get("generic")
    built = sub.build(compose(BASE))
    state = engine.broadcast_state(built.state, 2)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    return sub, state, built.params, keys


def test_the_program_key_changes_with_what_shapes_the_program(generic_args, folder, monkeypatch):
    sub, state, params, keys = generic_args
    kw = dict(chunk=2, record_every=1, params_axes=None, fixed_order=False, args=(state, params, keys))
    base = store.program_key(sub, **kw)
    assert base is not None and store.program_key(sub, **kw) == base
    state1 = engine.broadcast_state(jax.tree_util.tree_map(lambda x: x[0], state), 3)  # 3 replicates
    f32 = engine.cast(params, jnp.float32)
    others = [store.program_key(sub, **{**kw, **change}) for change in (
        {"chunk": 1}, {"record_every": 2}, {"fixed_order": True}, {"params_axes": 0},
        {"args": (state1, params, jax.random.split(jax.random.PRNGKey(0), 3))}, {"args": (state, f32, keys)})]
    others.append(store.program_key(carriers.with_carriers(sub, "fixed"), **kw))
    with jax.numpy_rank_promotion("raise"):  # any JAX config in effect while tracing
        others.append(store.program_key(sub, **kw))
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX")
    others.append(store.program_key(sub, **kw))
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setattr(store, "source_hash", lambda: "0" * 64)  # another source of sim
    store._static_environment.cache_clear()
    try:
        others.append(store.program_key(sub, **kw))
    finally:
        store._static_environment.cache_clear()
    assert None not in others and len(set(others) | {base}) == len(others) + 1
    # no key (not stored): a substrate without a token, several devices, the store switched off
    assert store.program_key(dataclasses.replace(sub), **kw) is None
    assert store.program_key(sub, **kw, layout=object()) is None
    monkeypatch.setenv(store.ENV_SWITCH, "off")
    assert store.program_key(sub, **kw) is None


# ------------------------------------------------------------------------------ the files, in process


def _tiny():
    """A small compiled program with a nested output tree."""
    x = jnp.arange(4.0)
    return jax.jit(lambda a: (a * 2, {"sum": a.sum(), "pair": (a, a + 1)})).lower(x).compile(), x


KEY = hashlib.sha256(b"a test key").hexdigest()


def test_a_loaded_program_has_the_same_output_tree_and_values(folder):
    compiled, x = _tiny()
    assert store.save(KEY, compiled)
    loaded = store.load(KEY)
    assert loaded is not None
    a, b = compiled(x), loaded(x)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert np.array_equal(u, v)
    assert store.load(hashlib.sha256(b"another key").hexdigest()) is None  # a plain miss
    assert not list(folder.glob(".tmp-*"))  # the temporary file was renamed, not left


@pytest.mark.parametrize("damage", ["truncated", "other key", "garbage"])
def test_an_unusable_file_warns_once_is_deleted_and_is_a_miss(folder, damage):
    compiled, _ = _tiny()
    store.save(KEY, compiled)
    path = store.path_of(KEY, folder)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "other key":
        path.write_bytes(data.replace(KEY.encode(), hashlib.sha256(b"x").hexdigest().encode(), 1))
    else:
        path.write_bytes(b"\x00garbage" * 100)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert store.load(KEY) is None
        assert store.load(KEY) is None  # (gone: a plain miss, no second warning)
    assert len(seen) == 1 and path.name in str(seen[0].message)
    assert not path.exists()


def test_the_size_guard_and_the_off_switch_store_nothing(folder, monkeypatch):
    compiled, _ = _tiny()
    monkeypatch.setattr(store, "MAX_BYTES", 100)
    assert not store.save(KEY, compiled) and not list(folder.glob("*.exe"))
    monkeypatch.setattr(store, "MAX_BYTES", 2**30)
    monkeypatch.setenv(store.ENV_SWITCH, "off")
    assert not store.save(KEY, compiled) and store.load(KEY) is None
    monkeypatch.delenv(store.ENV_SWITCH)
    assert store.save(KEY, compiled) and store.load(KEY) is not None


def test_the_folder_is_made_private_and_one_of_another_user_is_not_used(folder, monkeypatch):
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    assert store.folder() == folder and folder.stat().st_mode & 0o777 == 0o700  # ours: made private
    monkeypatch.setattr(os, "getuid", lambda: folder.stat().st_uid + 1)  # as seen by another user
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert store.folder() is None
    assert len(seen) == 1 and "not private" in str(seen[0].message)


def test_old_files_beyond_the_limit_are_removed(folder, monkeypatch):
    compiled, _ = _tiny()
    monkeypatch.setattr(store, "MAX_FILES", 2)
    keys = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    for i, k in enumerate(keys):
        assert store.save(k, compiled)
        path = store.path_of(k, folder)
        os.utime(path, (1000.0 + i, 1000.0 + i))  # (file times of this test, oldest first)
    store._evict(folder)
    assert sorted(p.name for p in folder.glob("*.exe")) == sorted(store.path_of(k, folder).name for k in keys[1:])


def test_a_stored_executable_that_fails_on_its_first_call_falls_back(folder):
    compiled, x = _tiny()
    store.save(KEY, compiled)

    def broken(*args):
        raise RuntimeError("INTERNAL: Function wrapped_broadcast not found")

    built = []
    checked = store.FirstCallChecked(broken, KEY, lambda: built.append(1) or compiled)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = checked(x)
    assert built == [1] and len(seen) == 1 and "first call" in str(seen[0].message)
    assert np.array_equal(out[0], compiled(x)[0])
    assert not store.path_of(KEY, folder).exists()  # deleted (the fallback's own save rewrites it)
    assert np.array_equal(checked(x)[0], compiled(x)[0]) and built == [1]  # no second fallback
