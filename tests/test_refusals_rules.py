"""Each substrate declares what every number of its config means (``Substrate.config_rules``) and the
validation applies that declaration (:func:`sim.config.validate.validate`), instead of guessing
from a key's name: a number of a shipped preset without a declared rule fails here, so a key added
to ``conf/substrate/`` cannot go unchecked by accident, and a rule that names no shipped key (a typo)
fails too. Every declared bound is refused by the validation, every problem at once, each naming
its key; the shipped presets keep every rule."""

from __future__ import annotations

import copy
import functools
import math

import pytest
from sim import substrates
from sim.config.validate import problems_of, validate
from sim.core.config import CONF_DIR, compose
from sim.core.substrate import Rule, rule_for
from sim.errors import ConfigError

PRESETS = sorted(p.stem for p in (CONF_DIR / "substrate").glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _composed(stem: str) -> dict:
    return compose(["experiment=tissue", f"substrate={stem}"])["substrate"]


def _preset(stem: str) -> dict:
    """A shipped preset as a run gets it (composed by Hydra: a preset may start from another one
    through its defaults list, and ``1.66e+9`` is a number, not a string); a fresh copy."""
    return copy.deepcopy(_composed(stem))


def _leaves(node, prefix=""):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, node


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numeric(value) -> bool:
    """A number, a non-empty list of numbers, or null (an optional number left unset)."""
    if isinstance(value, list):
        return bool(value) and all(_is_number(v) for v in value)
    return value is None or _is_number(value)


def _numbers(stem: str) -> dict:
    return {key: value for key, value in _leaves(_preset(stem)) if _numeric(value)}


def _sub(stem: str):
    return substrates.get(_preset(stem)["name"])


def test_every_registered_substrate_with_a_preset_declares_rules():
    named = {_preset(stem)["name"] for stem in PRESETS}
    assert named == set(substrates.BUILTIN), named
    for name in named:
        rules = substrates.get(name).config_rules
        assert rules and all(isinstance(r, Rule) for _, r in rules), name


@pytest.mark.parametrize("stem", PRESETS)
def test_every_number_of_a_shipped_preset_has_a_declared_rule(stem):
    sub = _sub(stem)
    numbers = _numbers(stem)
    assert numbers
    missing = sorted(key for key in numbers if rule_for(sub.config_rules, key) is None)
    assert not missing, f"conf/substrate/{stem}.yaml: numbers without a rule in {sub.name}'s config_rules: {missing}"
    unset = sorted(key for key, v in numbers.items() if v is None and not rule_for(sub.config_rules, key).optional)
    assert not unset, f"null in conf/substrate/{stem}.yaml where the rule does not allow it: {unset}"


@pytest.mark.parametrize("name", sorted(substrates.BUILTIN))
def test_every_declared_rule_names_a_shipped_key(name):
    keys = [key for stem in PRESETS if _preset(stem)["name"] == name for key in _numbers(stem)]
    for pattern, _ in substrates.get(name).config_rules:
        assert any(rule_for([(pattern, True)], key) for key in keys), f"{name}: rule {pattern!r} matches no shipped key"


def _outside(rule: Rule, shipped):
    """Values that break ``rule`` (one per bound it declares), for a key whose shipped value is ``shipped``."""
    out = []
    if rule.minimum is not None:
        out.append(rule.minimum if rule.strict else rule.minimum - 1)
    if rule.maximum is not None:
        out.append(rule.maximum + 1)
    if rule.integer:
        out.append((rule.minimum or 0) + 1.5)
    if isinstance(shipped, list):
        out = [[v] + list(shipped[1:]) for v in out]
    return out


def _config(stem: str) -> dict:
    over = ["experiment=serving"] if stem == "llm" else ["experiment=tissue", f"substrate={stem}"]
    return compose(over)


def _set(cfg: dict, key: str, value) -> None:
    node = cfg["substrate"]
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value


@pytest.mark.parametrize("stem", PRESETS)
def test_every_declared_bound_is_refused_naming_its_key_all_at_once(stem):
    """The shipped preset passes; with the first (then the second, ...) value outside each key's
    rule set in every key at once, the validation names exactly those keys, each once."""
    sub = _sub(stem)
    base = _config(stem)
    validate(base)  # the shipped preset keeps its rules
    rules = {key: rule_for(sub.config_rules, key) for key, v in _numbers(stem).items() if v is not None}
    bad = {key: _outside(rule, _numbers(stem)[key]) for key, rule in rules.items()}
    assert sum(map(len, bad.values())) >= len(rules)  # every rule declares something to refuse
    for i in range(max(map(len, bad.values()))):
        cfg = copy.deepcopy(base)
        changed = {key: values[i] for key, values in bad.items() if i < len(values)}
        for key, value in changed.items():
            _set(cfg, key, value)
        with pytest.raises(ConfigError) as info:
            validate(cfg)
        named = [p.key for p in problems_of(info.value)]
        assert sorted(named) == sorted(f"substrate.{k}" for k in changed), (i, named)


def test_a_non_finite_number_is_named_for_any_substrate_and_key():
    for stem in ("bio", "generic", "llm"):
        cfg = _config(stem)
        key = next(k for k, v in _numbers(stem).items() if _is_number(v))
        _set(cfg, key, math.nan)
        with pytest.raises(ConfigError) as info:
            validate(cfg)
        assert [str(p) for p in problems_of(info.value)] == [f"invalid config: substrate.{key}=nan; allowed: a finite number"]


@pytest.mark.parametrize("key, value, allowed", [
    # the words the validation used before the rules were declared, kept for what they describe
    ("supply.uptake_per_s", -1, "a number >= 0 (rates, capacities, affinities and amounts cannot be negative)"),
    ("initial.energy_charge", 1.5, "a fraction in [0, 1]"),
    ("thermo.dg0_kj_per_mol", 30, "a negative standard free energy (kJ/mol): ATP hydrolysis releases energy"),
    # keys a name could not tell (unchecked before the rules, or checked by a wrong guess)
    ("producers.birth_set_energy_charge", 1.5, "a fraction in [0, 1]"),
    ("supply.uptake_cv", -0.5, "a number >= 0 (rates, capacities, affinities and amounts cannot be negative)"),
    ("producers.kinds.glycolysis.yield", 0, "a number > 0"),
    ("producers.kinds.glycolysis.substrate_dg_kj_per_mol", 196.0, "a number <= 0 (kJ/mol released"),
    ("consumers.kinds.ca_pump.tier", 3, "an integer tier 0, 1 or 2"),
    ("consumers.tier_reserve_mm", [0.0, -1.0, 1.0], "a list of 3 numbers >= 0 (mM, tiers 0, 1, 2)"),
    ("initial.glucose_mm", 1e39, "a concentration >= 0 and <= 1000 mM"),
])
def test_biology_refusals_say_what_the_key_means(key, value, allowed):
    cfg = _config("bio")
    _set(cfg, key, value)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    (problem,) = problems_of(info.value)
    assert problem.key == f"substrate.{key}" and problem.allowed.startswith(allowed), str(problem)


def test_a_substrate_without_declared_rules_only_needs_finite_numbers():
    """A substrate written in Python may declare no rules (``config_rules=()``): its numbers are
    checked for finiteness only, and its own ``validate`` says the rest."""
    import dataclasses

    cfg = _config("generic")
    _set(cfg, "producers.k_substrate", -3.0)
    with pytest.raises(ConfigError):
        validate(cfg)
    bare = dataclasses.replace(substrates.get("generic"), config_rules=())
    with substrates.override(bare):
        validate(cfg)  # (generic's own validate refuses it: tests/test_generic_substrate.py)
        _set(cfg, "producers.k_substrate", math.inf)
        with pytest.raises(ConfigError):
            validate(cfg)
