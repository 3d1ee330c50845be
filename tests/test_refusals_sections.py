"""Refusals issue 16's catalogue found missing (each was a strict xfail in
``tests/test_bad_input_catalogue.py``): every one goes through the command line's own path
(``refusal``, compilation made impossible) and must be exit 2 with one line naming its key; plus
the rules behind them: a single value where a section belongs is named as the section and hides its
children, the cascade checks every option before anything is built or run, and an optional section
left null is still allowed."""

from __future__ import annotations

import pytest

from sim import api
from sim.config.validate import ConfigErrors, _Collector, problems_of, validate
from sim.core.config import compose
from sim.errors import ConfigError
from sim.experiments import cascade, sensitivity
from sim.substrates.bio.build import build as build_bio
from test_bad_input_catalogue import no_compilation, refusal

TISSUE = "experiment=tissue"  # (the default experiment is analogy, which takes only substrate=bio)
FIXED = [  # (argv, the key named)
    (["params=5"], "params"),
    (["experiment=analogy", "analogy.llm_substrate.arrivals=5"], "analogy.llm_substrate.arrivals"),
    (["experiment=cascade", "cascade.memory=5"], "cascade.memory"),
    (["experiment=cascade", "cascade.loop=5"], "cascade.loop"),
    (["experiment=cascade", "cascade.memory=null"], "cascade.memory"),  # null passes the key check: named once
    (["experiment=cascade", "cascade.loop=null"], "cascade.loop"),
    ([TISSUE, "substrate=generic", "substrate.transport=5"], "substrate.transport"),
    (["experiment=serving", "substrate.memory=5"], "substrate.memory"),
    (["experiment=serving", "substrate.prices=5"], "substrate.prices"),
    (["experiment=sensitivity", "sensitivity.num_levels=abc"], "sensitivity.num_levels"),
    (["experiment=sensitivity", "sensitivity.num_levels=1.5"], "sensitivity.num_levels"),
    (["experiment=cascade", "cascade.long_context_min=-1000000"], "cascade.long_context_min"),
    (["experiment=cascade", "cascade.window_fit_min=abc"], "cascade.window_fit_min"),
    (["experiment=cascade", "cascade.chain_steps=1.5"], "cascade.chain_steps"),
    (["experiment=cascade", "cascade.chains_per_length=1.5"], "cascade.chains_per_length"),
    (["experiment=cascade", "cascade.tools.tokens=1.5"], "cascade.tools.tokens"),
    (["experiment=cascade", "cascade.loop.prompt_tokens=1.5"], "cascade.loop.prompt_tokens"),
    (["experiment=cascade", "cascade.loop.output_tokens=1.5"], "cascade.loop.output_tokens"),
    (["experiment=cascade", "cascade.loop.followup_tokens=-50"], "cascade.loop.followup_tokens"),
    (["experiment=cascade", "cascade.loop.turns=[a,b]"], "cascade.loop.turns"),
    (["experiment=cascade", "cascade.loop.memory_threshold_tokens=abc"], "cascade.loop.memory_threshold_tokens"),
    (["experiment=cascade", "cascade.loop.memory_factor=abc"], "cascade.loop.memory_factor"),
    ([TISSUE, "substrate=bio", "substrate.name=5"], "substrate.name"),
    ([TISSUE, "substrate=generic", "substrate.name=5"], "substrate.name"),
    (["experiment=serving", "substrate.name=5"], "substrate.name"),
    ([TISSUE, "substrate.producers.kinds.mitochondrion.n_h=abc"], "substrate.producers.kinds.mitochondrion.n_h"),
    ([TISSUE, "substrate.producers.kinds.glycolysis.count=1.5"], "substrate.producers.kinds.glycolysis.count"),
    ([TISSUE, "substrate.producers.capacity_per_cell=16.5"], "substrate.producers.capacity_per_cell"),
    ([TISSUE, "substrate.landauer_bits_per_unit=abc"], "substrate.landauer_bits_per_unit"),
    ([TISSUE, "substrate.landauer_bits_per_unit=-1"], "substrate.landauer_bits_per_unit"),
]


@pytest.mark.parametrize("argv, key", FIXED, ids=[" ".join(a) for a, _ in FIXED])
def test_refused_before_compiling_on_one_line(argv, key, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with no_compilation(monkeypatch) as m:
        code, problems = refusal(argv, tmp_path / "run", m)
    assert code == 2, (code, [str(p) for p in problems])
    assert [p.key for p in problems] == [key], [str(p) for p in problems]


def test_a_refused_section_hides_its_children_whoever_collects():
    inside = ConfigError("substrate.memory.factor", None, "a value (missing from the config)")
    section = ConfigError("substrate.memory", 5, "a mapping")
    other = ConfigError("substrate.memory_x", 1, "a key")  # a sibling whose name starts alike stays
    assert [p.key for p in ConfigErrors([inside, section, other]).problems] == ["substrate.memory", "substrate.memory_x"]
    out = _Collector()
    out.add("cascade.loop", 5, "a mapping")
    out.add_error(ConfigError("cascade.loop.turns", None, "a list"))
    out.add("cascade.loops", 1, "a key")
    assert [p.key for p in out.problems] == ["cascade.loop", "cascade.loops"]


def test_a_scalar_section_is_named_once_with_what_belongs_there():
    cfg = compose([TISSUE, "substrate.transport=5"])
    with pytest.raises(ConfigError) as exc:
        validate(cfg)
    (problem,) = problems_of(exc.value)
    assert (problem.key, problem.value) == ("substrate.transport", 5)
    assert "a mapping (a section of conf/substrate/bio.yaml)" in problem.allowed


def test_an_optional_section_left_null_is_not_a_scalar_section():
    validate(compose([TISSUE, "substrate.chains=null"]))  # null chains: no chains (bio build reads it so)


def test_substrate_of_names_the_key_that_holds_the_bad_name():
    with pytest.raises(ConfigError) as exc:
        api.substrate_of({"substrate": {"name": "nope"}})
    assert exc.value.key == "substrate.name" and exc.value.value == "nope"
    assert "bio" in exc.value.allowed
    with pytest.raises(ConfigError) as exc:
        api.substrate_of({"substrate": "nope"})  # a substrate given by name: the group is the key
    assert exc.value.key == "substrate"


def test_the_cascade_names_every_bad_option_at_once_before_building(monkeypatch):
    def built(*args, **kwargs):
        raise AssertionError("built or ran before the options were checked")

    monkeypatch.setattr(cascade, "build_llm", built)
    monkeypatch.setattr(cascade, "_run_chains", built)
    cfg = compose(["experiment=cascade", "cascade.chain_steps=1.5", "cascade.loop.turns=[0,2]",
                   "cascade.long_context_min=0"])
    with pytest.raises(ConfigError) as exc:
        cascade.run_cascade(cfg)
    assert sorted(p.key for p in problems_of(exc.value)) == [
        "cascade.chain_steps", "cascade.long_context_min", "cascade.loop.turns"]


def test_the_cascade_refuses_a_loop_beyond_the_context_window_before_building(monkeypatch):
    monkeypatch.setattr(cascade, "build_llm", lambda *a, **k: pytest.fail("built before the check"))
    cfg = compose(["experiment=cascade", "cascade.loop.prompt_tokens=8000"])
    with pytest.raises(ConfigError) as exc:
        cascade.agent_loops(cfg)
    assert exc.value.key == "cascade.loop.turns" and exc.value.value == 48
    assert "context window 8192" in exc.value.allowed


def test_the_cascade_takes_a_whole_float_as_an_integer(monkeypatch):
    class Ran(Exception):
        pass

    def ran(chains, ledger, params, key, n_records, record_every):
        assert isinstance(record_every, int) and record_every == 20  # 400 steps // 20, not truncated
        raise Ran

    monkeypatch.setattr(cascade, "_run_chains", ran)
    with pytest.raises(Ran):
        cascade.run_cascade(compose(["experiment=cascade", "cascade.chain_steps=400.0"]))


@pytest.mark.parametrize("levels", ["absent", "4"])
def test_sobol_runs_without_num_levels_and_with_a_good_one(levels, monkeypatch):
    class Sampled(Exception):
        pass

    def sampled(method, problem, n, seed, num_levels=4):
        assert (method, num_levels) == ("sobol", 4)
        raise Sampled

    monkeypatch.setattr(sensitivity, "sample", sampled)
    cfg = compose(["experiment=sensitivity"] + (["~sensitivity.num_levels"] if levels == "absent" else []))
    assert ("num_levels" in cfg["sensitivity"]) == (levels != "absent")
    with pytest.raises(Sampled):
        sensitivity.run_sensitivity(cfg)


@pytest.mark.parametrize("override, key", [
    ("substrate.producers.kinds.mitochondrion.n_h=-1", "substrate.producers.kinds.mitochondrion.n_h"),
    ("substrate.producers.kinds.mitochondrion.count=2.5", "substrate.producers.kinds.mitochondrion.count"),
    ("substrate.landauer_bits_per_unit=0", "substrate.landauer_bits_per_unit"),
])
def test_the_bio_builder_names_the_key(override, key):
    with pytest.raises(ConfigError) as exc:
        build_bio(compose([TISSUE, override]))
    assert exc.value.key == key


def test_the_bio_builder_takes_whole_counts_and_no_landauer_bits():
    cfg = compose([TISSUE, "substrate.producers.kinds.mitochondrion.count=10.0", "topology=ring",
                   "topology.n_cells=2"])
    del cfg["substrate"]["landauer_bits_per_unit"]  # optional: 1 bit per ATP
    model = build_bio(cfg)
    assert int(model.state.producers.alive.sum()) == 2 * 11  # 10 mitochondria + 1 glycolysis per cell
