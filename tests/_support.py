"""Helpers shared by the test modules (not a test file: pytest puts tests/ on sys.path)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

from sim.core.config import CONF_DIR  # the shipped configs (sim/conf)

ROOT = Path(__file__).resolve().parents[1]


def bio_substrate() -> dict:
    """The shipped biology preset as a plain dict (a fresh copy each call)."""
    return yaml.safe_load((CONF_DIR / "substrate" / "bio.yaml").read_text())


def quiet_bio_substrate(**chains) -> dict:
    """The biology preset without producer wear, failure or biogenesis (a deterministic supply),
    with optional overrides of its ``chains`` section."""
    sub = bio_substrate()
    prod = sub["producers"]
    prod["hazard_per_s"] = 0.0
    prod["birth_per_s"] = 0.0
    for kind in prod["kinds"].values():
        kind["damage_per_s"] = 0.0
    sub["chains"].update(chains)
    return sub


def child_env(drop=(), **extra) -> dict:
    """The environment of a child process: this one's without the names in ``drop``, JAX on CPU,
    Hydra's short errors, this checkout importable from any working directory, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(HYDRA_FULL_ERROR="0", JAX_PLATFORMS="cpu", PYTHONPATH=path, **extra)
    return env


def run_child(args, timeout=180, cwd=ROOT, env=None):
    """``python ARGS`` in a fresh process (in ``cwd``, with ``env`` or :func:`child_env`)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env or child_env(), capture_output=True, text=True,
                          timeout=timeout)


# Many `python -m sim` argvs through sim.app.entry in ONE child process (one JAX start-up for all):
# reads {name: argv} from the JSON file argv[1], prints {name: {code, stderr}} as the last stdout line;
# with "--layouts", also the device layouts of the engine's executable cache (tests/test_sharding.py).
ENTRY_DRIVER = """
import contextlib, io, json, sys
from sim.app import entry
results, layouts = {}, "--layouts" in sys.argv[2:]  # (read now: every case replaces sys.argv)
for name, argv in json.loads(open(sys.argv[1]).read()).items():
    err, code = io.StringIO(), 0
    sys.argv = ["sim", *argv]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            entry()
        except SystemExit as exc:
            code = exc.code
    results[name] = {"code": code, "stderr": err.getvalue()}
if layouts:
    from sim.core import engine
    results["layouts"] = sorted({str(k[-1]) for k in engine.CACHE._table})
print(json.dumps(results))
"""


def run_entries(cases: dict, folder: Path, timeout=300, env=None, layouts: bool = False) -> dict:
    """{name: {"code", "stderr"}} of every case (name -> argv) run by :data:`ENTRY_DRIVER` in one child
    (its files written into ``folder``); the child itself must exit 0."""
    (folder / "entry_driver.py").write_text(ENTRY_DRIVER)
    (folder / "cases.json").write_text(json.dumps(cases))
    args = [str(folder / "entry_driver.py"), str(folder / "cases.json")] + (["--layouts"] if layouts else [])
    res = run_child(args, timeout=timeout, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def assert_same_results(a: Path, b: Path) -> None:
    """Bit-identical ``results.nc`` (every variable, coordinate and attribute) and ``summary.json``
    (but for the wall-clock and compile times) of run folders ``a`` and ``b``."""
    da, db = xr.load_dataset(a / "results.nc"), xr.load_dataset(b / "results.nc")
    xr.testing.assert_identical(da, db)
    for name in list(da.data_vars) + list(da.coords):
        assert np.array_equal(da[name].values, db[name].values), name
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    for key in ("wall_s", "compile_s", "first_chunk_s"):  # clock readings, not results
        sa.pop(key, None), sb.pop(key, None)
    assert sa == sb


class Stop(BaseException):
    """Stands for a kill in in-process tests (``sim.app.execute`` does not catch BaseException)."""


def stop_after_checkpoint(monkeypatch, n_chunks: int) -> None:
    """Make the run stop (raise :class:`Stop`) right after its checkpoint of chunk ``n_chunks``."""
    from sim import checkpoint

    original = checkpoint.Checkpointer.__call__

    def call(self, state, done, keys, rec):
        original(self, state, done, keys, rec)
        if self.n_chunks == n_chunks:
            raise Stop

    monkeypatch.setattr(checkpoint.Checkpointer, "__call__", call)


# a child `python child.py OVERRIDES` that runs sim like `python -m sim` and SIGKILLs itself
KILL_BETWEEN_CHECKPOINTS = """
import os, signal, sys
import sim.checkpoint as ck
original = ck.Checkpointer.__call__
def call(self, state, done, keys, rec):
    original(self, state, done, keys, rec)
    if self.n_chunks == 3:  # chunk 3 computed, its checkpoint (after chunk 4) not yet written
        os.kill(os.getpid(), signal.SIGKILL)
ck.Checkpointer.__call__ = call
from sim.app import entry
sys.argv = ["sim"] + sys.argv[1:]
entry()
"""


def with_fault(substrate_name: str, process: str, at_step: int, change):
    """A copy of a registered substrate whose ``process`` is followed, at step ``at_step`` only, by
    ``change(state) -> state`` (fault injection: the engine compiles the copy as a new program)."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from sim import substrates

    sub = substrates.get(substrate_name)
    procs = list(sub.processes)
    i = [n for n, _ in procs].index(process)
    original = procs[i][1]

    def faulty(state, params, key=None):
        s = original(state, params, key)
        bad = change(s)
        return jax.tree_util.tree_map(lambda x, y: jnp.where(s.step == at_step, x, y), bad, s)

    procs[i] = (process, faulty)
    return dataclasses.replace(sub, processes=tuple(procs))


def inject(monkeypatch, faulty_substrate) -> None:
    """Register ``faulty_substrate`` under its name for the rest of a test (restored at teardown)."""
    from sim import substrates

    substrates.get(faulty_substrate.name)  # (a built-in loads first, so teardown restores it)
    monkeypatch.setitem(substrates._REGISTRY, faulty_substrate.name, faulty_substrate)


# Many faulty `python -m sim` argvs through sim.app.entry in ONE child process: reads {name: {substrate,
# process, at_step, change (an expression of the state s), argv}} from the JSON file argv[1]; each
# case's substrate is registered with its fault for that case only; prints {name: {code, stderr}}.
FAULTY_ENTRIES = """
import contextlib, io, json, sys
sys.path.insert(0, {tests!r})
import jax.numpy as jnp
from _support import with_fault
from sim import substrates
from sim.app import entry
from sim.pytree import replace
results = {{}}
for name, case in json.loads(open(sys.argv[1]).read()).items():
    change = eval("lambda s: " + case["change"], {{"jnp": jnp, "replace": replace}})
    err, code = io.StringIO(), 0
    sys.argv = ["sim", *case["argv"]]
    with substrates.override(with_fault(case["substrate"], case["process"], case["at_step"], change)):
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                entry()
            except SystemExit as exc:
                code = exc.code
    results[name] = {{"code": code, "stderr": err.getvalue()}}
print(json.dumps(results))
"""


def run_faulty_entries(cases: dict, folder: Path, timeout=600) -> dict:
    """{name: {"code", "stderr"}} of every case (name -> {substrate, process, at_step, change, argv}:
    ``python -m sim ARGV`` with ``change`` applied after ``process`` at step ``at_step``, see
    :data:`FAULTY_ENTRIES`), all in one child (one JAX start-up); the child itself must exit 0."""
    (folder / "faulty_entries.py").write_text(FAULTY_ENTRIES.format(tests=str(ROOT / "tests")))
    (folder / "faulty_cases.json").write_text(json.dumps(cases))
    res = run_child([str(folder / "faulty_entries.py"), str(folder / "faulty_cases.json")], timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ bad-input catalogue (issue 16)
# Generated from the shipped yaml files at call time (a key added to conf/ gets its bad values
# without an edit here): tests/test_bad_input_catalogue.py runs it in-process, bench/bad_inputs.py
# through the command line.

import dataclasses as _dc
import functools as _functools
import math as _math
import zlib as _zlib


@_dc.dataclass(frozen=True)
class BadInput:
    """One bad command line: ``argv`` (the context that makes ``key`` matter, then the bad
    override), the ``key`` its refusal must name, the generation ``rule`` and the yaml ``source``."""

    argv: tuple
    key: str
    rule: str
    source: str

    @property
    def id(self) -> str:
        return f"{self.source}:{self.argv[-1]}"


# free text (any string is a valid value): never given a "bad choice" string; also the ``name`` of
# every group but ``substrate`` (whose name picks the substrate)
CATALOGUE_LABEL_KEYS = ("experiment.name", "substrate.currency", "work_unit")
# generated values that are valid inputs after all (dropped from the catalogue): id -> why
CATALOGUE_VALID = {
    "substrate/llm.yaml:substrate.arrivals.output_median_tokens=1.5": "the median of a lognormal: any real >= 1",
    "substrate/llm.yaml:substrate.arrivals.prompt_median_tokens=1.5": "the median of a lognormal: any real >= 1",
    "substrate/llm.yaml:substrate.initial.output_tokens=1.5": "a target output length (real: the engine counts fractions)",
    "substrate/llm.yaml:substrate.memory.threshold_tokens=1.5": "a history length threshold: any real >= 0",
    "experiment/cascade.yaml:cascade.memory.threshold_tokens=1.5": "a history length threshold: any real > 0",
    "experiment/cascade.yaml:cascade.window_fit_min=1.5": "a bound of the fitted lengths: any real > 0",
    "experiment/cascade.yaml:cascade.loop.memory_threshold_tokens=1.5": "a history length threshold: any real > 0",
    "experiment/cascade.yaml:cascade.long_context_min=1.5": "a bound of the fitted lengths: any real > 0",
    "experiment/analogy.yaml:analogy.cascade.short_max_tokens=1.5": "a bound of the fitted lengths: any real > 0",
    "experiment/analogy.yaml:analogy.cascade.long_min_tokens=1.5": "a bound of the fitted lengths: any real > 0",
    # a folder path is used as given (sim.core.cache.resolve): a relative one is relative to the working
    # directory (hydra.job.chdir is false); 'bogus_choice' is a folder name like any other
    "config.yaml:compile_cache=bogus_choice": "a relative folder for the compilation cache",
    # bytes per weight / per KV element are averages over a format (sim.substrates.llm.specs: any real > 0):
    # 4-bit weights with group scales ~0.53, FP8 weights with BF16 layers or FP8 V with BF16 K ~1.5
    "model/llama2_7b.yaml:model.bytes_per_param=1.5": "average bytes per weight: any real > 0 (mixed formats)",
    "model/llama2_7b.yaml:model.bytes_per_kv=1.5": "average bytes per KV element: any real > 0 (mixed formats)",
    # a producer's ceiling is a positive number (kJ/mol) or 'pmf' (sim.substrates.bio.build._ceiling_kj):
    # glycolysis ships 98.0; a number for the mitochondrion replaces its proton-motive-force ceiling
    "substrate/bio.yaml:substrate.producers.kinds.mitochondrion.ceiling_kj_per_mol=5": "a positive ceiling in kJ/mol",
    # the memory module's cost in prefill passes over the history it compresses (sim.substrates.llm.kernels):
    # a summariser that reads the history and writes a summary costs more than one pass; the rule is >= 0
    "substrate/llm.yaml:substrate.memory.cost_fraction=1.5": "a cost in prefill passes: any real >= 0",
}
# number leaves that may be negative (free energies of reactions), outside the substrates (whose
# numbers' rules are declared: Substrate.config_rules)
CATALOGUE_SIGNED_WORDS = ("dg",)
# number leaves that are fractions / probabilities in [0, 1] (by name; outside the substrates too)
CATALOGUE_FRACTION_WORDS = ("fraction", "efficiency", "utilization", "energy_charge", "prob", "p_per_token",
                            "health", "conf_level", "stress_threshold")
CATALOGUE_NON_FINITE = ("nan", "inf", "-inf")


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _fmt_override(value) -> str:
    return value if isinstance(value, str) else repr(value)


@_functools.lru_cache(maxsize=None)
def _preset_substrate(conf_dir: str, stem: str):
    """The substrate a preset without a ``name`` of its own configures: the name of the preset Hydra
    composes (one built on another through its defaults list, e.g. ``bio_tissue`` on ``bio``)."""
    from sim.core.config import compose

    try:
        return compose(["experiment=tissue", f"substrate={stem}"], config_dir=conf_dir)["substrate"].get("name")
    except Exception:  # (not composable here: the words guess)
        return None


def _declared_rule(name, key: str):
    """The rule substrate ``name`` declares for ``key`` (``substrate.<dotted>``,
    ``Substrate.config_rules``), read instead of guessed from the key's name; None where it has none."""
    from sim import substrates
    from sim.core.substrate import rule_for

    try:
        sub = substrates.get(name)
    except Exception:  # (a preset naming no registered substrate: the words guess)
        return None
    return rule_for(sub.config_rules, key.split(".", 1)[1])


def _bound_rules(rule, value) -> list:
    """(rule, override value) pairs outside the bounds a declared rule sets (shipped value ``value``)."""
    out = []
    if rule.minimum is not None and rule.minimum >= 0:
        neg = -value if isinstance(value, (int, float)) and value > 0 else (-1 if isinstance(value, int) else -0.5)
        out.append(("negative number", _fmt_override(neg)))
    if rule.maximum is not None and rule.maximum <= 0:  # a released free energy
        out.append(("positive number", "5.0"))
    elif rule.maximum == 1 and not rule.integer:
        out.append(("fraction above 1", "1.5"))
    elif rule.maximum is not None:
        out.append(("number above its maximum", _fmt_override(rule.maximum + 1)))
    return out


def _value_rules(key: str, value, declared=None) -> list:
    """(rule, override value) pairs that are bad for a leaf whose shipped value is ``value``;
    ``declared``: the rule its substrate declares for it (:func:`_declared_rule`), else the key's
    words decide what is bad."""
    leaf = _leaf(key)
    out = []
    if isinstance(value, bool):
        out.append(("string for a bool", "maybe"))
    elif isinstance(value, (int, float)):
        out.append(("string for a number", "abc"))
        if declared.integer if declared is not None else isinstance(value, int):
            out.append(("float for an integer", "1.5"))
        else:
            pick = CATALOGUE_NON_FINITE[_zlib.crc32(key.encode()) % len(CATALOGUE_NON_FINITE)]
            out.append(("non-finite number", pick))
        if declared is not None:
            out += _bound_rules(declared, value)
        else:
            if not any(w in leaf for w in CATALOGUE_SIGNED_WORDS):
                neg = -value if value > 0 else (-1 if isinstance(value, int) else -0.5)
                out.append(("negative number", _fmt_override(neg)))
            if isinstance(value, float) and 0 <= value <= 1 and (leaf == "p" or any(w in leaf for w in CATALOGUE_FRACTION_WORDS)):
                out.append(("fraction above 1", "1.5"))
    elif isinstance(value, str):
        if value == "???":  # a mandatory path
            out.append(("missing file", "/nonexistent/currency-sim/graph.txt"))
        elif not (any(key == k or leaf == k for k in CATALOGUE_LABEL_KEYS)
                  or (leaf == "name" and key.count(".") == 1 and not key.startswith("substrate."))):
            out.append(("unknown choice", "bogus_choice"))
            if declared is None:
                out.append(("number for a name", "5"))
            else:  # a word where a number may stand too (a producer's ceiling: a number or 'pmf')
                out += _bound_rules(declared, value)[:1]
    elif value is None:
        if key == "resume":
            out.append(("missing run folder", "/nonexistent/currency-sim/run"))
        else:
            out.append(("string for an optional value", "abc"))
    elif isinstance(value, list):
        out.append(("scalar for a list", "abc"))
        out.append(("strings in a list", "[a,b]"))
        if value and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            out.append(("negative list element", "[" + ",".join(["-1"] + [_fmt_override(x) for x in value[1:]]) + "]"))
    return out


def _catalogue_walk(node, prefix, all_kinds=True):
    """(dotted key, value) of every leaf and (dotted key, dict) of every mapping, depth first; of a
    ``kinds`` mapping (kinds named by the user, each with the same keys) only the first kind unless
    ``all_kinds``."""
    if isinstance(node, dict):
        if prefix:
            yield prefix, node
        items = list(node.items())
        if not all_kinds and _leaf(prefix) == "kinds" and items and all(isinstance(v, dict) for _, v in items):
            items = items[:1]
        for k, v in items:
            yield from _catalogue_walk(v, f"{prefix}.{k}" if prefix else str(k), all_kinds)
    else:
        yield prefix, node


def _load_yaml(path: Path) -> dict:
    """A config file as Hydra reads it (OmegaConf's loader: ``6.74e9`` is a float, not a string)."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return data if isinstance(data, dict) else {}


def _catalogue_sources(conf_dir: Path, edge_list: str):
    """(source name, package prefix, context overrides, yaml data) of every shipped config file."""
    top = _load_yaml(conf_dir / "config.yaml")
    yield "config.yaml", "", [], {k: v for k, v in top.items() if k not in ("defaults", "hydra")}
    for group_dir in sorted(p for p in conf_dir.iterdir() if p.is_dir()):
        group = group_dir.name
        for path in sorted(group_dir.glob("*.yaml")):
            data = _load_yaml(path)
            data.pop("defaults", None)
            option = path.stem
            if group == "experiment":
                prefix, context = "", [f"experiment={option}"]
            elif group == "substrate":  # the LLM preset is run by experiment=serving
                prefix, context = group, (["experiment=serving"] if option == "llm" else [f"substrate={option}"])
            elif group in ("model", "gpu"):  # read by the LLM experiments
                prefix, context = group, ["experiment=serving", f"{group}={option}"]
            else:
                prefix = group
                context = [f"{group}={option}"] + ([f"topology.path={edge_list}"] if option == "file" else [])
            yield f"{group}/{path.name}", prefix, context, data


def _in_a_plain_run(argv) -> tuple:
    """``argv`` as the catalogue runs it: an entry without an experiment (conf/config.yaml's keys, the
    substrate / topology / differentiation groups) gets ``experiment=tissue`` first, so a generic-substrate
    key is not refused as "substrate: bio for experiment=analogy" (the default experiment); a ``resume=``
    entry stays alone (a resumed run takes no other override). Entry ids (source:override) do not change."""
    argv = tuple(argv)
    if any(a.startswith(("experiment=", "resume=")) for a in argv):
        return argv
    return (TISSUE, *argv)


def bad_input_catalogue(edge_list, *, full: bool = False, conf_dir: Path | None = None) -> list:
    """Bad command lines generated from the shipped configs (``conf/config.yaml`` and every
    ``conf/<group>/*.yaml``), each a :class:`BadInput` that must be refused (exit 2, one line naming
    its key) before anything is compiled.

    For every leaf the rules of its type apply (:func:`_value_rules`: a string for a number or a
    bool, a float for an integer, NaN/inf, a negative for anything but a free energy, a fraction
    above 1, an unknown choice or a number for a name, a scalar or strings for a list; for a
    substrate's number what its declared rule makes bad, not what its name suggests: a float where
    an integer is declared, a negative, a positive free energy, a value above the maximum); for every
    mapping, a scalar in its place and an unknown key beside its keys (added with ``+``). ``full``:
    every rule of every leaf (~2.5x as many); otherwise one rule per leaf, picked by a hash of the
    key (stable when keys are added elsewhere), so that every rule is used across the catalogue.
    A key is generated once per group (the ``model`` and ``gpu`` options share their keys; keys an
    experiment file sets at the top level and that ``config.yaml`` has are generated from it; the
    ``topology`` keys of an experiment belong to the topology group); each substrate has its own
    keys, generated from its first preset (``generic.yaml``, not again from ``generic_tissue.yaml``). ``edge_list``: a valid edge-list file for ``topology=file``."""
    conf_dir = Path(conf_dir or CONF_DIR)
    out, seen = [], set()
    for source, prefix, context, data in _catalogue_sources(conf_dir, str(edge_list)):
        group = source.split("/")[0] if "/" in source else ""
        for key, value in _catalogue_walk(data, prefix, all_kinds=full):
            if group == "experiment" and (key.split(".")[0] in ("topology",) or key in ("experiment.name",)):
                continue
            # presets of one substrate (generic, generic_tissue) share its keys and its checks
            owner = (f"substrate:{data.get('name', source)}" if group == "substrate"
                     else ("config.yaml" if group in ("", "experiment") else group))
            if (owner, key) in seen:
                continue
            seen.add((owner, key))
            ctx = [c for c in context if not c.startswith(f"{key}=")]
            if isinstance(value, dict):
                rules = [("unknown key", f"{key}.zz_unknown", f"+{key}.zz_unknown=1"),
                         ("scalar for a mapping", key, f"{key}=5")]
            else:
                declared = None
                if group == "substrate":
                    name = data.get("name") or _preset_substrate(str(conf_dir), Path(source).stem)
                    declared = _declared_rule(name, key)
                rules = [(rule, key, f"{key}={v}") for rule, v in _value_rules(key, value, declared)]
            if len(rules) > 1 and not full:
                rules = [rules[_zlib.crc32(key.encode()) % len(rules)]]
            for rule, named, override in rules:
                entry = BadInput(_in_a_plain_run(ctx + [override]), named, rule, source)
                if entry.id not in CATALOGUE_VALID:
                    out.append(entry)
    out.append(BadInput(_in_a_plain_run(["+zz_unknown=1"]), "zz_unknown", "unknown key", "config.yaml"))  # beside the top-level keys
    return out


# ------------------------------------------------------------------------------ kills at a chosen checkpoint (issue 16)
# a child `python child.py OVERRIDES` that runs sim like `python -m sim` and SIGKILLs itself at the
# checkpoint the environment names: KILL_AT_CHECKPOINT=k (the k-th state.npz the run writes) and
# KILL_PHASE=after (once it is in place: checkpoint k committed) or mid-write (state.npz k half
# written to its temporary, never renamed: the records file of k is there, checkpoint k-1 is the
# committed one)
KILL_AT_CHECKPOINT = """
import os, signal, sys
import numpy as np
import sim.checkpoint as ck
from sim.io import atomic_path
at, phase = int(os.environ["KILL_AT_CHECKPOINT"]), os.environ.get("KILL_PHASE", "after")
original = ck._write_npz
states = []
def write(path, arrays):
    if path.name == ck.STATE_FILE:
        states.append(path)
        if len(states) == at and phase == "mid-write":
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
                os.kill(os.getpid(), signal.SIGKILL)
    original(path, arrays)
    if path.name == ck.STATE_FILE and len(states) == at:
        os.kill(os.getpid(), signal.SIGKILL)
ck._write_npz = write
from sim.app import entry
sys.argv = ["sim"] + sys.argv[1:]
entry()
"""


def kill_at_checkpoint(script: Path, overrides, run_dir: Path, k: int, phase: str = "after", timeout=180):
    """Run ``python -m sim OVERRIDES hydra.run.dir=RUN_DIR`` in a child that SIGKILLs itself at its
    ``k``-th checkpoint (``phase``: see :data:`KILL_AT_CHECKPOINT`); returns the finished process."""
    script = Path(script)
    if not script.exists():
        script.write_text(KILL_AT_CHECKPOINT)
    env = child_env(KILL_AT_CHECKPOINT=str(k), KILL_PHASE=phase)
    return run_child([str(script), *overrides, f"hydra.run.dir={run_dir}"], timeout=timeout, env=env)


# ------------------------------------------------------------------------------ the default experiment (issue 11)
# `python -m sim` with no experiment=... runs the analogy table (conf/config.yaml's defaults list). A
# test of a plain run of the configured substrate (a tissue) names it with this override; it also
# keeps analogy.yaml's top-level values (topology.n_cells=16, ...) out of that test's config.
TISSUE = "experiment=tissue"

def llm_busy(n_cells: int = 3, slots: int = 8, batch: int = 6, kv_tokens: int = 3000, memory_tokens: int = 600,
             seed: int = 7) -> list:
    """Overrides of a small busy LLM cluster: chains, tools, memory, routing, agent loops and hops
    all happen within ~100 steps (``slots`` chain and queue slots per instance; a small KV cache, so
    requests wait and routing matters)."""
    return [
        TISSUE, "substrate=llm", "topology=ring", f"topology.n_cells={n_cells}", "dt=0.02", f"seed={seed}",
        f"substrate.chain_slots={slots}", f"substrate.queue_slots={slots}", f"substrate.max_batch={batch}",
        f"substrate.kv_capacity_tokens={kv_tokens}",
        "model.max_context=2048",  # (a cache must hold one full context)
        "substrate.arrivals.rate_per_s=20", "substrate.arrivals.prompt_median_tokens=200",
        "substrate.arrivals.prompt_sigma=0.5", "substrate.arrivals.output_median_tokens=40",
        "substrate.arrivals.output_sigma=0.5",
        "substrate.tools.p_per_token=0.02", "substrate.tools.latency_s=0.1", "substrate.tools.tokens=64",
        f"substrate.memory.threshold_tokens={memory_tokens}", "substrate.memory.factor=2",
        "substrate.agent.followup_prob=0.5", "substrate.agent.max_turns=3", "substrate.agent.hops=2",
    ]


# the one of tests/test_llm_reference.py and tests/test_llm_kinds.py
LLM_BUSY = llm_busy()


def llm_reference_states(model, steps: int, replicates: int) -> list:
    """The plain-Python LLM reference's state after ``steps`` steps, per replicate (the engine's
    replicate ``r`` has the reference's draws of replicate ``r``)."""
    from sim.substrates.llm.reference import ReferenceLLM

    out = []
    for r in range(replicates):
        ref = ReferenceLLM(model, replicate=r)
        for _ in range(steps):
            ref.step()
        out.append(ref.state())
    return out
