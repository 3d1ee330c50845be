"""Every key of summary.json carries its unit or is declared without one (sim.io's naming rule).

Small configs of every substrate (biology with chains and with carriers, LLM serving, generic with
and without carriers) and of the main experiments run in process; each summary key must be
declared by the substrate's or experiment's ``OUTCOME_UNITS`` and end with its declared unit
(a statistic after it), flags must be booleans and texts strings; the generic substrate never
says mM, kJ/mol, J or molecules. An experiment whose dataset has the tissue's cells (the analogy)
names them with a graph file's node labels.
"""

from __future__ import annotations

import numbers

import numpy as np
import pytest

from sim import io
from sim.api import run
from sim.core.config import compose

TISSUE = ["experiment=tissue", "topology=ring", "topology.n_cells=3", "steps=200", "record_every=50"]


def _tables(name):
    from sim.experiments import analogy, calibrate, cascade, homeostasis, multicellular, robustness, roofline, \
        sensitivity, society, standardization, study
    from sim.substrates.bio import results as bio
    from sim.substrates.generic import results as generic
    from sim.substrates.llm import results as llm

    return {"bio": bio, "llm": llm, "generic": generic, "analogy": analogy, "cascade": cascade,
            "homeostasis": homeostasis, "multicellular": multicellular, "robustness": robustness,
            "standardization": standardization, "study": study, "sensitivity": sensitivity,
            "calibrate": calibrate, "roofline": roofline, "society": society}[name].OUTCOME_UNITS


def _flat(value):
    if isinstance(value, list):
        for v in value:
            yield from _flat(v)
    else:
        yield value


def check(summary: dict, table: str, forbidden=()) -> None:
    assert summary["status"] == "ok", summary.get("reason")
    problems = io.unit_problems(summary, _tables(table), forbidden=forbidden)
    for key, value in summary.items():  # the declared kind fits the value
        unit = io.declared_unit(key, _tables(table))
        if unit == io.FLAG:
            ok = isinstance(value, (bool, np.bool_))
        elif unit == io.TEXT:
            ok = value is None or isinstance(value, str) or (isinstance(value, list)
                                                             and all(isinstance(v, str) for v in value))
        elif unit == io.MAPPING:
            ok = isinstance(value, dict)
        elif unit is not None:  # a number (or a list, or a grid, of numbers) in its unit; None: none exists
            vals = list(_flat(value))
            ok = all(v is None or (isinstance(v, numbers.Number) and not isinstance(v, bool)) for v in vals)
        else:
            continue
        if not ok:
            problems.append(f"{key}: {value!r} is not what {unit!r} declares")
    assert not problems, "\n".join(problems)


SUBSTRATES = {
    "bio": (["substrate=bio", *TISSUE], "bio"),
    "bio_carriers": (["substrate=bio", "carriers=nucleotides", *TISSUE], "bio"),
    "llm": (["substrate=llm", *TISSUE[:2], "topology.n_cells=2", *TISSUE[3:]], "llm"),
    "generic": (["substrate=generic", *TISSUE], "generic"),
    "generic_carriers": (["substrate=generic", "carriers=competing", *TISSUE], "generic"),
}


@pytest.mark.parametrize("case", list(SUBSTRATES))
def test_substrate_summary_names_carry_declared_units(case):
    overrides, table = SUBSTRATES[case]
    summary = run(compose(overrides)).summary
    forbidden = ("mM", "kJ/mol", "J", "molecules") if table == "generic" else ()
    check(summary, table, forbidden)
    if table == "bio":  # the currency in molecules, the work in events of each kind (named in work_units)
        assert summary["currency_produced_molecules"] > 0 and "na_k_pump: Na+ exported" in summary["work_units"]
        assert {"currency_produced", "work_done", "cells_alive_molecules"}.isdisjoint(summary)
    if table == "generic":
        assert summary["currency_unit"] == "units (dimensionless)" and summary["currency_spent_units"] > 0
        assert not any(k.endswith(("_mm", "_j", "_molecules", "_kj_per_mol")) for k in summary)
    if case.endswith("carriers"):
        amount = "_molecules" if table == "bio" else "_units"
        assert f"carrier_decayed{amount}" in summary and "carrier_decayed" not in summary


def test_unit_problems_names_what_is_wrong():
    table = {"energy_j": "J", "relaxation_s": "s", "cells_alive": io.COUNT, "rate_req_per_s": "requests/s",
             "energy_per_output_token_j": "J/output token", "x*": io.DIMENSIONLESS}
    good = {"energy_j": 1.0, "relaxation_s_std": 0.1, "cells_alive": 3, "rate_req_per_s": 2.0,
            "energy_per_output_token_j": 0.3, "x_anything": 1.0}
    assert io.unit_problems(good, {**table, "relaxation_s_std": "s"}) == []
    bad = io.unit_problems({"energy": 1.0, "mystery": 2.0, "x_mm": 1.0}, {"energy": "J", **table},
                           forbidden=("mM",))
    assert bad == ["energy: in J, so it should end with _j", "mystery: no declared unit",
                   "x_mm: ends like a unit this summary must not use"]
    assert io.unit_endings("1/s") == ("_per_s",) and io.unit_endings("kJ/mol") == ("_kj_per_mol", "_per_mol_kj")


def test_every_declared_unit_has_a_spelling():
    for name in ("bio", "llm", "generic", "analogy", "cascade", "homeostasis", "multicellular", "robustness",
                 "standardization", "study", "sensitivity", "calibrate", "roofline", "society"):
        for key, unit in _tables(name).items():
            io.unit_endings(unit)  # a KeyError names a unit without a spelling
            if not any(c in key for c in "*?["):  # a declared name follows the rule itself
                assert io.unit_problems({key: 0.0}, _tables(name)) == [], (name, key, unit)
    assert not any(u in ("mM", "kJ/mol", "J", "molecules") for u in _tables("generic").values())


EXPERIMENTS = {
    "cascade": ["experiment=cascade"],
    "society": ["experiment=society", "society.engine.enabled=true", "society.engine.kind_context_tokens=[300]",
                "society.engine.rates_per_s=[0.5]", "society.engine.steps=100", "substrate.chain_slots=16",
                "substrate.max_batch=16", "substrate.queue_slots=32"],
    "robustness": ["experiment=robustness", "topology.n_cells=12", "steps=1000", "record_every=250"],
    "sensitivity": ["experiment=sensitivity", "substrate=generic", "topology=single", "steps=200",
                    "record_every=50", "sensitivity.method=morris"],
    "calibrate": ["experiment=calibrate", "substrate=generic", "topology.n_cells=3", "steps=300"],
    "study": ["experiment=study", "topology=single", "steps=200", "record_every=50", "study.points=4"],
}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_summary_names_carry_declared_units(name):
    check(run(compose(EXPERIMENTS[name])).summary, name)


def test_analogy_units_and_graph_file_labels(tmp_path):
    """The analogy on an edge list with string labels: its summary's names carry their units, and
    both sides' cells (one dimension ``cell``) are named by the file's labels, sorted."""
    names = ["liver", "heart", "kidney", "lung", "gut", "brain"]
    path = tmp_path / "organs.txt"
    path.write_text("".join(f"{a} {b}\n" for a, b in zip(names, names[1:] + names[:1])))
    out = run(compose(["experiment=analogy", "topology=file", f"topology.path={path}", "topology.n_cells=6",
                       "replicates=2", "analogy.bio_replicates=4", "analogy.step_time_s=20", "analogy.after_s=30",
                       "analogy.window_s=10", "chunk_records=50"]))
    check(out.summary, "analogy")
    assert out.dataset["cell"].values.tolist() == sorted(names)
    assert out.dataset["bio_pools"].sizes["cell"] == out.dataset["llm_kv_free"].sizes["cell"] == 6
