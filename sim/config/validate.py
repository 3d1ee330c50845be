"""Value checks on a composed config: one clear line per problem, naming key, value and what is allowed.

Run before any compilation. Checks: types (through the structured schemas in
:mod:`sim.config.schema`, key by key so every wrong key is reported), known names (backend,
precision, topology kind and format, parameter names), ranges (dt > 0; every number of the
substrate section by the rule its substrate declares for that key, ``Substrate.config_rules``: a
substrate says what its keys mean, none is guessed from its name), and stability of the explicit
step: transport needs
dt * g * max_degree * max(permeability) < 1 (else a cell can send more than it has); kinetics
need dt well below the fastest pool relaxation time, estimated as
dt * max(sum V_prod / K_ADP, sum V_cons / K_ATP, uptake) <= 0.5.

Every group is strict. ``topology`` and ``experiment`` are typed by the schemas (an unknown key is
refused by the merge into them); the free-form groups ``substrate``, ``model``, ``gpu`` and the
experiment sections ``roofline``, ``serving``, ``cascade``, ``analogy`` (whose keys Hydra accepts
with ``+``, so a typo such as ``+substrate.arrivals.rate_per_sec=50`` used to run with the default
rate) are compared with the shipped yaml files of their group (:func:`check_group_keys`): the
option named by the group's ``name`` (``substrate.name: bio`` -> ``conf/substrate/bio.yaml``), or
the union over the group's options where no option has that name, or, for the experiment
sections, the union over ``conf/experiment/*.yaml``. Producer and consumer ``kinds`` are named by
the user; each kind may hold the keys any shipped kind holds. A ``substrate`` whose name is not a
shipped option (a substrate written in Python, not from ``conf/``) is not compared: there is no
yaml file that says what it holds. A single value where the yaml file has a section
(``substrate.memory=5``) is refused naming the section, and a problem inside a refused section is
not named again (its readers would call every key inside it missing). ``seed`` must fit ``jax.random.PRNGKey`` (signed 64 bits) and
``first_replicate + replicates`` the uint32 replicate counter that is folded into each key.

Every problem found is collected; :class:`ConfigErrors` (a :class:`~sim.errors.ConfigError`)
carries them all, one line each.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from sim.config.schema import RunSchema
from sim.core import codegen, sharding
from sim.core.config import CONF_DIR
from sim.errors import ConfigError

STRICT_GROUPS = ("substrate", "model", "gpu", "differentiation", "carriers")  # free-form groups checked against conf/<group>/*.yaml
EXPERIMENT_SECTIONS = ("roofline", "serving", "cascade", "analogy", "study", "sensitivity", "society", "homeostasis",
                       "multicellular", "robustness", "calibrate", "standardization")  # set by conf/experiment/*.yaml
MAX_SEED = 2**63 - 1  # jax.random.PRNGKey(seed) converts the seed to a signed 64-bit integer
REPLICATE_LIMIT = 2**32  # replicate numbers are folded into the key as uint32 (fold_in)
BACKENDS = ("jax", "mesa")
PRECISIONS = ("float64", "float32")
# params.<name> overrides (sim.substrates.bio.params.Params fields): (lower, lower_strict, upper) or None = any finite
_POS, _NONNEG, _FRACTION, _NEG = (0.0, True, None), (0.0, False, None), (0.0, False, 1.0), "negative"
PARAM_RULES = {
    "dt": _POS, "temperature_k": _POS, "volume_l": _POS, "dg0_kj": _NEG, "k_ak": _POS,
    "external_substrate": _NONNEG, "supply_scale": _NONNEG, "demand_scale": _NONNEG,
    "uptake_scale": _NONNEG, "conductance_scale": _NONNEG, "p_yield": _POS, "p_substrate_dg_kj": _NEG,
    "p_ceiling_kj": _POS, "p_k_s": _POS, "p_k_adp": _POS, "p_k_pi": _POS, "p_damage": _NONNEG,
    "hazard0": _NONNEG, "hazard_beta": _NONNEG, "repair_rate": _NONNEG, "repair_cost": _NONNEG,
    "birth_rate": _NONNEG, "birth_min_ec": _FRACTION, "birth_cost": _NONNEG,
    "adp_bound": _NONNEG, "amp_bound": _NONNEG, "creatine_total": _NONNEG, "k_ck": _POS,
    "parallel_activation": (0.0, False, 2.0),
    "stress_threshold": _FRACTION, "stress_death_s": _POS, "stress_recovery": _NONNEG,
}
# vectors (per producer kind, per species, per junction): a scalar override would change their
# shape; they are set in the substrate preset (substrate.producers.kinds.<kind>.<key>, ...)
NOT_OVERRIDABLE = (
    "edges", "permeability", "p_yield", "p_substrate_dg_kj", "p_ceiling_kj", "p_k_s", "p_k_adp", "p_k_pi", "p_damage",
)
# sections of a substrate preset that must be mappings (the builder reads keys inside them)
SUBSTRATE_SECTIONS = (
    "initial", "thermo", "supply", "producers", "producers.kinds", "consumers", "consumers.kinds", "cell",
    "transport", "transport.permeability", "bound", "buffer",
)


def _under(key: str, refused) -> bool:
    """Whether ``key`` lies inside a section already refused (``substrate.memory=5`` makes every
    ``substrate.memory.*`` reader complain too: those lines are consequences, not problems)."""
    return any(key.startswith(f"{k}.") for k in refused)


class ConfigErrors(ConfigError):
    """Several config problems at once; ``problems`` holds one :class:`ConfigError` per line (a
    problem inside a refused section is dropped, whoever collected the list)."""

    def __init__(self, problems: list[ConfigError]):
        keys = {p.key for p in problems}
        problems = [p for p in problems if not _under(p.key, keys)]
        first = problems[0]
        super().__init__(first.key, first.value, first.allowed)
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(str(ConfigError.__str__(p)) for p in self.problems)


def problems_of(exc: ConfigError) -> list[ConfigError]:
    return list(getattr(exc, "problems", [exc]))


class _Collector:
    def __init__(self):
        self.problems: list[ConfigError] = []
        self.bad_keys: set[str] = set()

    def add(self, key, value, allowed):
        self.add_error(ConfigError(key, value, allowed))

    def add_error(self, exc: ConfigError):
        for p in problems_of(exc):
            if _under(p.key, self.bad_keys):
                continue
            self.problems.append(p)
            self.bad_keys.add(p.key)

    def raise_if_any(self):
        if self.problems:
            raise ConfigErrors(self.problems)


def _walk(node, prefix):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, node


def _nest(dotted: str, value):
    out = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _schema_keys(node, dotted: str) -> list[str]:
    parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    sub = OmegaConf.select(node, parent) if parent else node
    try:
        return sorted(str(k) for k in sub.keys())
    except Exception:  # pragma: no cover - not a mapping
        return []


def _check_types(cfg: dict, out: _Collector) -> None:
    """Merge each leaf (outside ``substrate``, whose numbers its declared rules check) into the schema."""
    schema = OmegaConf.structured(RunSchema)
    for key, value in _walk({k: v for k, v in cfg.items() if k not in ("hydra", "substrate")}, ""):
        if key in ("params", "topology", "experiment") and value == {}:
            continue
        if key.startswith("params."):
            continue  # free-form names, checked against sim.substrates.bio.params.Params below
        if key in ("devices", "vector_width"):
            continue  # "auto" or an integer: checked in validate() (sim.core.sharding, sim.core.codegen own the rules)
        if key == "progress" or key.split(".")[0] == "output":
            continue  # checked by _check_run_options (sim.progress, sim.io own the rules)
        try:
            OmegaConf.merge(schema, _nest(key, value))
        except ConfigKeyError:
            out.add(key, value, "one of the known keys: " + ", ".join(_schema_keys(schema, key)))
        except OmegaConfBaseException as exc:
            msg = str(exc).splitlines()[0]
            out.add(key, value, f"a value of the schema's type ({msg})")


# ------------------------------------------------------------------------------ strict groups


def _union(a, b):
    """Key-wise union of two yaml trees (a mapping wins over a scalar: it allows more)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _union(out[k], v) if k in out else v
        return out
    return a if isinstance(a, dict) else b


def _template(node):
    """A yaml tree as a key template: ``kinds`` mappings become ``{"*": union of the kinds}``."""
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "kinds" and isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            merged = {}
            for kind in v.values():
                merged = _union(merged, kind)
            out[k] = {"*": _template(merged)}
        else:
            out[k] = _template(v)
    return out


@functools.lru_cache(maxsize=None)
def _shipped(group: str) -> tuple:
    """((option name, key template), ...) of ``conf/<group>/*.yaml`` (read once per process)."""
    options = []
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict):
            data.pop("defaults", None)
            options.append((path.stem, _template(data)))
    return tuple(options)


@functools.lru_cache(maxsize=None)
def _experiment_sections() -> dict:
    """Section -> key template: the union over ``conf/experiment/*.yaml`` of each section."""
    out: dict = {}
    for _, data in _shipped("experiment"):
        for section in EXPERIMENT_SECTIONS:
            if isinstance(data.get(section), dict):
                out[section] = _union(out.get(section, {}), data[section])
    return out


def _group_template(group: str, node: dict):
    """(template, where) for a composed group; None where it cannot be known (see the docstring)."""
    options = _shipped(group)
    if not options:
        return None
    name = node.get("name")
    for stem, data in options:
        if data.get("name", stem) == name:
            return data, f"conf/{group}/{stem}.yaml"
    if group == "substrate":
        return None  # a substrate written in Python: its keys are its own
    merged: dict = {}
    for _, data in options:
        merged = _union(merged, data)
    return merged, f"conf/{group}/*.yaml"


def _unknown_keys(node: dict, template: dict, prefix: str, where: str, out: _Collector) -> None:
    for k, v in node.items():
        key = f"{prefix}.{k}"
        if k in template:
            t = template[k]
        elif "*" in template and len(template) == 1:  # a kind named by the user
            t = template["*"]
        else:
            allowed = ", ".join(sorted(str(x) for x in template if x != "*")) or "none"
            for leaf, value in _walk(v, key):
                out.add(leaf, value, f"a key of {prefix} in {where}: {allowed}")
            continue
        if isinstance(t, dict) and v is not None and not isinstance(v, dict):
            # else its readers would name every key inside it as missing; null is left to them
            # (an optional section such as substrate.chains means "absent")
            out.add(key, v, f"a mapping (a section of {where}), not a single value")
        elif isinstance(v, dict) and isinstance(t, dict):
            _unknown_keys(v, t, key, where, out)


def _check_group_keys(cfg: dict, out: _Collector) -> None:
    for group in STRICT_GROUPS:
        node = cfg.get(group)
        if isinstance(node, dict):
            found = _group_template(group, node)
            if found is not None:
                _unknown_keys(node, found[0], group, found[1], out)
    sections = _experiment_sections()
    for section, template in sections.items():
        node = cfg.get(section)
        if node is not None and not isinstance(node, dict):
            out.add(section, node, f"a mapping (the {section} section of conf/experiment/*.yaml), not a single value")
            continue
        if not isinstance(node, dict):
            continue
        template = dict(template)
        if section == "analogy":  # its llm_substrate comes from the substrate group (a defaults entry)
            template.pop("llm_substrate", None)
            sub = node.get("llm_substrate")
            found = _group_template("substrate", sub) if isinstance(sub, dict) else None
            if found is not None:
                _unknown_keys(sub, found[0], "analogy.llm_substrate", found[1], out)
            node = {k: v for k, v in node.items() if k != "llm_substrate"}
        _unknown_keys(node, template, section, "conf/experiment/*.yaml", out)


def check_group_keys(cfg: dict) -> None:
    """Refuse keys that no shipped yaml file of their group has (see the module docstring), every
    one at once: ``invalid config: KEY=VALUE; allowed: a key of GROUP in conf/...: k1, k2, ...``.
    Run by :func:`validate`, and by ``sim.app`` on the whole composed config before a run starts
    (it also sees ``analogy``, which the analogy experiment splits off before validating)."""
    out = _Collector()
    _check_group_keys(cfg, out)
    out.raise_if_any()


def _int_at_least(cfg, key, minimum, out: _Collector):
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        out.add(key, v, f"an integer >= {minimum}")
        return None
    return v


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value) -> bool:
    return _is_number(value) and math.isfinite(value)


def _check_params(params, out: _Collector) -> None:
    from sim.substrates.bio.params import Params

    names = sorted(f.name for f in dataclasses.fields(Params) if f.name not in NOT_OVERRIDABLE)
    if params is None or "params" in out.bad_keys:  # (the schema check already named it)
        return
    if not isinstance(params, dict):
        out.add("params", params, "a mapping of parameter name -> number")
        return
    for name, value in params.items():
        key = f"params.{name}"
        if name in NOT_OVERRIDABLE:
            out.add(key, value, "a scalar parameter (this one is a vector: set it in the substrate preset); "
                    "one of " + ", ".join(names))
            continue
        if name not in names:
            out.add(key, value, "a parameter of sim.substrates.bio.params.Params: " + ", ".join(names))
            continue
        if not _number(value):
            out.add(key, value, "a finite number")
            continue
        rule = PARAM_RULES.get(name)
        if rule == _NEG:
            if value > 0:
                out.add(key, value, "a number <= 0 (kJ/mol released: free energies of hydrolysis are negative)")
            continue
        if rule is None:
            continue
        lo, strict, hi = rule
        if value < lo or (strict and value == lo) or (hi is not None and value > hi):
            allowed = f"a number {'>' if strict else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
            out.add(key, value, allowed)


def _check_run_options(cfg: dict, out: _Collector) -> None:
    """``progress`` (:func:`sim.progress.parse_mode`) and the ``output`` section
    (:func:`sim.io.output_problems`; variable names are checked against the run's dataset in sim.api)."""
    from sim.io import output_problems
    from sim.progress import parse_mode

    try:
        parse_mode(cfg.get("progress"))
    except ConfigError as exc:
        out.add_error(exc)
    for problem in output_problems(cfg):
        out.add_error(problem)


def _check_topology(topo, out: _Collector) -> None:
    from sim.topology import FORMATS, KINDS

    if not isinstance(topo, dict):
        out.add("topology", topo, "a topology config group")
        return
    kind = topo.get("kind")
    if "topology.kind" not in out.bad_keys and kind not in KINDS:
        out.add("topology.kind", kind, "one of " + ", ".join(KINDS))
    if kind == "file":
        if "topology.format" not in out.bad_keys and topo.get("format", "auto") not in FORMATS:
            out.add("topology.format", topo.get("format"), "one of " + ", ".join(FORMATS))
    elif kind in KINDS and kind != "single" and "topology.n_cells" not in out.bad_keys:
        n = topo.get("n_cells")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            out.add("topology.n_cells", n, "an integer >= 1")
    p = topo.get("p")
    if p is not None and "topology.p" not in out.bad_keys and not (_number(p) and 0 <= p <= 1):
        out.add("topology.p", p, "a probability in [0, 1]")


def _check_substrate_sections(sub, out: _Collector) -> None:
    if not isinstance(sub, dict):
        out.add("substrate", sub, "a substrate preset (a mapping; pick one with substrate=bio|generic)")
        return
    for dotted in SUBSTRATE_SECTIONS:
        node, parts = sub, dotted.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or parts[-1] not in node:
            continue  # missing keys are named by the builder
        value = node[parts[-1]]
        if f"substrate.{dotted}" in out.bad_keys:
            continue  # named by the key check (a single value where the preset has a section)
        if not isinstance(value, dict):
            out.add(f"substrate.{dotted}", value, "a mapping (a section of the substrate preset), not a single value")
        elif dotted.endswith("kinds"):
            for kind, kcfg in value.items():
                if not isinstance(kcfg, dict) and f"substrate.{dotted}.{kind}" not in out.bad_keys:
                    out.add(f"substrate.{dotted}.{kind}", kcfg, "a mapping of the kind's parameters")


def validate(cfg: dict) -> None:
    """Raise :class:`ConfigErrors` listing every problem found in the composed (plain) config."""
    out = _Collector()
    _check_types(cfg, out)
    bad = out.bad_keys
    backend = cfg.get("backend")
    if "backend" not in bad and backend not in BACKENDS:
        out.add("backend", backend, "one of " + ", ".join(BACKENDS))
    if "precision" not in bad and cfg.get("precision") not in PRECISIONS:
        out.add("precision", cfg.get("precision"), "one of " + ", ".join(PRECISIONS))
    ints = {}
    for key, minimum in (("seed", 0), ("steps", 1), ("record_every", 1), ("replicates", 1),
                         ("chunk_records", 1), ("checkpoint_every", 0), ("first_replicate", 0)):
        if key not in bad and (key in cfg or key not in ("checkpoint_every", "first_replicate")):
            ints[key] = _int_at_least(cfg, key, minimum, out)
    seed = ints.get("seed")
    if seed is not None and seed > MAX_SEED:
        out.add("seed", seed, f"an integer in [0, 2**63 - 1 = {MAX_SEED}] (jax.random.PRNGKey takes a signed 64-bit seed)")
    first, reps = ints.get("first_replicate"), ints.get("replicates")
    if reps is not None and reps > REPLICATE_LIMIT:
        out.add("replicates", reps, "an integer in [1, 2**32] (replicate numbers are uint32)")
    elif first is not None and reps is not None and first + reps > REPLICATE_LIMIT:
        out.add(
            "first_replicate", first,
            f"an integer in [0, 2**32 - replicates = {REPLICATE_LIMIT - reps}] (replicates first_replicate .. "
            "first_replicate + replicates - 1 are folded into the PRNG key as uint32; larger numbers would wrap)",
        )
    steps, every = ints.get("steps"), ints.get("record_every")
    if steps and every and steps % every:
        out.add("steps", steps, f"a multiple of record_every={every}")
    dt = cfg.get("dt")
    if "dt" not in bad and not (_number(dt) and dt > 0):
        out.add("dt", dt, "a finite time step > 0 (s)")
    if ints.get("checkpoint_every") and backend == "mesa":
        out.add("checkpoint_every", cfg.get("checkpoint_every"), "0 with backend=mesa (the reference backend does not checkpoint)")
    resume = cfg.get("resume")
    if "resume" not in bad and resume is not None and not (isinstance(resume, str) and resume):
        out.add("resume", resume, "null or the path of a run folder with a checkpoint")
    if "devices" in cfg and not sharding.valid(cfg["devices"]):
        out.add("devices", cfg["devices"], sharding.ALLOWED)
    if "vector_width" in cfg and not codegen.valid(cfg["vector_width"]):
        out.add("vector_width", cfg["vector_width"], codegen.ALLOWED)
    _check_params(cfg.get("params"), out)
    _check_run_options(cfg, out)
    _check_topology(cfg.get("topology") or {}, out)
    _check_group_keys(cfg, out)

    sub = cfg.get("substrate") or {}
    _check_substrate_sections(sub, out)
    _check_substrate_numbers(sub, out)
    out.raise_if_any()


def _substrate_rules(sub) -> tuple:
    """The ``config_rules`` of the substrate a config names; none for a name that is not registered
    (refused where the substrate is looked up, by the one lookup that names the options)."""
    from sim import substrates

    name = sub.get("name") if isinstance(sub, dict) else None
    if not isinstance(name, str):
        return ()
    try:
        return substrates.get(name).config_rules
    except ConfigError:
        return ()


def _check_substrate_numbers(sub, out: _Collector) -> None:
    """Every number (and list of numbers) of the substrate section: finite, and within the rule its
    substrate declares for the key. Strings, flags and nulls are their readers' to refuse (a
    number's key may also take a word, such as a ceiling's ``pmf``). A number without a declared
    rule is only required to be finite here; tests/test_refusals_rules.py keeps every shipped
    number declared."""
    from sim.core.substrate import rule_for

    if not isinstance(sub, dict):
        return
    rules = _substrate_rules(sub)
    for key, value in _walk(sub, "substrate"):
        numbers = value if isinstance(value, list) else [value]
        if key in out.bad_keys or not numbers or not all(_is_number(v) for v in numbers):
            continue  # (an unknown key is named once)
        if not all(math.isfinite(v) for v in numbers):
            out.add(key, value, "a finite number")
            continue
        rule = rule_for(rules, key.split(".", 1)[1])
        problem = rule.problem(key, value) if rule is not None else None
        if problem is not None:
            out.add_error(problem)


def _differentiates(cfg: dict) -> bool:
    from sim.core.differentiation import is_active, read_config

    return is_active(read_config(cfg))


def check_stability(model, cfg: dict) -> None:
    """Stability of the explicit step for a built model (needs the graph and parameters)."""
    import numpy as np

    out = _Collector()
    p = model.params
    dt = float(p.dt)
    g = np.asarray(p.edges.conductance) * float(p.conductance_scale)
    if g.size:
        deg = np.bincount(np.concatenate([p.edges.src, p.edges.dst]), minlength=model.n_cells).max()
        courant = dt * g.max() * deg * float(np.max(p.permeability))
        if not courant < 1.0:
            out.add(
                "dt", dt,
                f"dt * conductance * max_degree * permeability < 1 for stable transport (it is {courant:.3g}: "
                f"conductance {g.max():.3g}/s, max degree {deg}); lower dt or substrate.transport.conductance_per_s",
            )
    s = model.state
    # differentiation: a producer (theta 1) or worker (theta 0) cell has up to 2^alpha x the capacity
    diff = getattr(p, "diff", None)
    peak = max(1.0, 2.0 ** float(np.max(p.diff.alpha))) if diff is not None and _differentiates(cfg) else 1.0
    v_prod = float(np.max(np.sum(np.where(s.producers.alive, s.producers.vmax, 0.0), axis=1))) * float(p.supply_scale)
    v_prod *= peak
    k_adp = float(np.min(p.p_k_adp))
    v_cons = float(np.max(np.sum(s.consumers.vmax, axis=1) * s.cells.demand_mult)) * float(p.demand_scale) * peak
    k_atp = float(np.min(s.consumers.km))
    uptake = float(np.max(s.cells.uptake)) * float(p.uptake_scale)
    with np.errstate(all="ignore"):
        rate = max(v_prod / k_adp, v_cons / k_atp, uptake)
    if not dt * rate <= 0.5:
        out.add(
            "dt", dt,
            f"dt <= {0.5 / rate:.3g} s (half the fastest pool relaxation time, 1/{rate:.3g} s) for a stable explicit step",
        )
    out.raise_if_any()


# ------------------------------------------------------------------------------ LLM preset


def validate_llm(cfg: dict) -> None:
    """:func:`validate` plus the LLM preset's own keys, every problem at once (one line each).

    Run by LLM experiments (``experiment=serving``) before anything is built or compiled. Beyond
    the generic checks: the substrate must be ``llm``; ``model.*`` and ``gpu.*`` positive (group
    names are refused by the command line before composing); every number of the substrate preset
    in its range (``sim.substrates.llm.build.SUBSTRATE_NUMBERS``, the substrate's declared rules, shared
    with the builder) and its flags
    booleans; for ``experiment.kind=serving`` also ``serving.warmup_fraction`` in [0, 1) and
    ``substrate.arrivals.rate_per_s > 0`` (a serving run without arrivals has no steady state:
    Little's law and J/token are undefined). A key the generic checks already named is not named
    twice. Cross-checks that need built values (the weights fit the GPU, the Poisson truncation,
    the initial batch fits the KV cache) are left to ``sim.substrates.llm.build.build_llm``.
    """
    from sim.substrates.llm.build import config_problems

    out = _Collector()
    try:
        validate(cfg)
    except ConfigError as exc:
        out.add_error(exc)
    sub = cfg.get("substrate")
    kind = (cfg.get("experiment") or {}).get("kind") if isinstance(cfg.get("experiment"), dict) else None
    if not isinstance(sub, dict) or sub.get("name") != "llm":
        name = sub.get("name") if isinstance(sub, dict) else sub
        if "substrate" not in out.bad_keys:
            out.add("substrate", name, f"llm for experiment.kind={kind} (substrate=llm)")
        out.raise_if_any()
    for problem in config_problems(cfg):
        if problem.key not in out.bad_keys:
            out.add_error(problem)
    if kind == "serving":
        serving = cfg.get("serving")
        w = serving.get("warmup_fraction", 0.25) if isinstance(serving, dict) else serving
        if not isinstance(serving, dict):
            out.add("serving", serving, "a mapping with warmup_fraction")
        elif isinstance(w, bool) or not _number(w) or not 0 <= w < 1:
            out.add("serving.warmup_fraction", w, "a fraction in [0, 1) (the part of the run before the steady window)")
        rate = (sub.get("arrivals") or {}).get("rate_per_s") if isinstance(sub.get("arrivals"), dict) else None
        key = "substrate.arrivals.rate_per_s"
        if key not in out.bad_keys and _number(rate) and rate <= 0:
            out.add(key, rate, "a rate > 0 (requests/s per model instance) for experiment=serving")
    out.raise_if_any()
