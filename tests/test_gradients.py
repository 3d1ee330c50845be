"""Gradients through the simulator (sim.core.gradients) and experiment=calibrate.

Forward-mode Jacobians and jax.grad match central finite differences to 1e-4 relative (float64)
for biology and generic; calibration recovers known parameters from data generated with them to
within 1%; configurations without a gradient (random events on, LLM serving, unknown or event
parameters) are refused with one ConfigError naming key, value and what is allowed.
Small configs (3-4 cells, 200-300 steps): the whole module runs in well under a minute."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest

import sim  # noqa: F401  (float64)
from sim.api import run
from sim.core import gradients as gr
from sim.core.config import compose
from sim.errors import ConfigError

jax.config.update("jax_enable_x64", True)

GENERIC = ["experiment=tissue", "substrate=generic", "topology=ring", "topology.n_cells=3", "steps=200",
           "record_every=10", "substrate.producers.hazard=0", "substrate.producers.birth_rate=0"]
BIO = ["experiment=tissue", "topology=ring", "topology.n_cells=3", "steps=200", "record_every=10"]
CALIBRATE_GENERIC = ["experiment=calibrate", "substrate=generic", "topology.n_cells=3", "steps=300"]


def points_and_derivatives(m, x, rel_step=1e-5, batched=True):
    """(outcomes at ``x``, forward-mode Jacobian at ``x``, central differences at ``x``, outcomes at
    every point) from ONE compiled :meth:`Differentiable.value_and_jacobian` evaluated at ``x`` and
    the shifted points ``x +- h e_j``: ``batched``, as one ``vmap`` over the points (which checks that
    the outcome function vmaps), else point by point (less to trace for a large step)."""
    x = np.asarray(x, np.float64)
    h = rel_step * np.abs(x)
    points = np.concatenate([x[None], x + np.diag(h), x - np.diag(h)])
    if batched:
        y, jac = (np.asarray(a) for a in jax.jit(jax.vmap(m.value_and_jacobian))(points))
    else:
        f = jax.jit(m.value_and_jacobian)
        pairs = [f(p) for p in points]
        y, jac = np.stack([np.asarray(a) for a, _ in pairs]), np.stack([np.asarray(b) for _, b in pairs])
    n = x.size
    fd = ((y[1:n + 1] - y[n + 1:]) / (2 * h[:, None])).T
    return y[0], jac[0], fd, y


def assert_relative(a, b, rtol):
    err = np.abs(a - b) / np.abs(b)
    assert np.all(err < rtol), f"relative error {err.max():.3g} >= {rtol}\n{a}\nvs finite differences\n{b}"
    return float(err.max())


def test_generic_grad_and_jacobian_match_central_differences():
    params = ["supply_scale", "demand_scale", "k_discharged", "external"]
    outcomes = ["mean_last:charged_fraction", "mean:production_rate", "final:turnover_time"]
    m = gr.differentiable(compose(GENERIC), params, outcomes)
    assert m.switched_off == () and m.names == tuple(params)
    x0 = m.x0 * np.array([1.2, 0.9, 1.1, 1.3])  # off the configured point (all 1.0)
    y, jac, fd, every = points_and_derivatives(m, x0)
    grad = np.asarray(jax.jit(jax.grad(lambda x: m.outcomes(x)[0]))(x0))  # reverse mode, one outcome
    print("generic jacfwd vs FD, max rel error", assert_relative(jac, fd, 1e-4))
    print("generic grad vs FD, max rel error", assert_relative(grad, fd[0], 1e-4))
    np.testing.assert_allclose(grad, jac[0], rtol=1e-10)
    assert np.all(np.isfinite(y)) and len(np.unique(every[:, 0])) == len(every)  # every vmapped point its own


def test_bio_jacobian_matches_central_differences():
    params = ["supply_scale", "p_k_adp.mitochondrion", "dg0_kj", "k_ak"]
    outcomes = ["mean_last:energy_charge", "mean_last:production_rate", "final:turnover_time"]
    m = gr.differentiable(compose(BIO), params, outcomes, events="off")
    assert {k for k, _, _ in m.switched_off} == {"substrate.producers.hazard_per_s", "substrate.producers.birth_per_s",
                                                  "substrate.chains.consumer"}
    assert [p.sign for p in m.parameters] == [1, 1, -1, 1] and m.parameters[1].unit == "mM"
    x0 = m.x0 * np.array([1.1, 1.2, 1.0, 1.0])
    y, jac, fd, _ = points_and_derivatives(m, x0, batched=False)
    print("bio outcomes", y, "\njacobian\n", jac)
    print("bio jacfwd vs FD, max rel error", assert_relative(jac, fd, 1e-4))
    assert jac[0, 0] > 0 and jac[0, 1] < 0  # more capacity raises the energy charge, a higher K_ADP lowers it


FIT = ["calibrate.params={supply_scale: 1.0, demand_scale: 1.0}",
       "calibrate.outcomes=[mean_last:charged_fraction,mean_last:production_rate]",
       "calibrate.series={quantity: a}"]


def test_calibration_recovers_generic_parameters(tmp_path):
    truth = {"supply_scale": 1.4, "demand_scale": 0.7}
    out = run(compose([*CALIBRATE_GENERIC, *FIT, "calibrate.truth={supply_scale: 1.4, demand_scale: 0.7}"]))
    s = out.summary
    assert s["status"] == "ok" and s["converged"] and s["switched_off"] == ["substrate.producers.hazard",
                                                                             "substrate.producers.birth_rate"]
    for name, value in truth.items():
        print(name, s[f"fit {name}"], "+-", s[f"se {name}"], "rel error", s[f"rel_error {name}"])
        assert abs(s[f"fit {name}"] / value - 1) < 0.01
        assert 0 < s[f"se {name}"] < 0.05 * value  # Gauss-Newton standard errors, at 1% measurement error
    assert s["loss_final"] < 1e-12 * s["loss_start"] and s["data_points"] == 2 + 30
    out.files(tmp_path)
    out.figures(tmp_path)
    assert (tmp_path / "figures" / "loss.png").stat().st_size > 0
    fit = pd.read_csv(tmp_path / "calibration.csv")
    assert list(fit["param"]) == list(truth) and {"se_gauss_newton", "ci95_low", "ci95_high"} <= set(fit.columns)
    loss = pd.read_csv(tmp_path / "loss.csv")
    assert len(loss) == s["iterations"] + 1 and loss["loss"].iloc[-1] < loss["loss"].iloc[0]
    ds = out.dataset
    assert ds["fit"].sel(param="demand_scale").item() == pytest.approx(0.7, rel=0.01)

    # the same data as measurements: the outcomes' values and the series as a CSV file, no truth
    csv = tmp_path / "measured.csv"
    pd.DataFrame({"time": ds["series_time"].values, "value": ds["series_data"].values}).to_csv(csv, index=False)
    values = ",".join(repr(float(v)) for v in ds["target"].values)
    again = run(compose([*CALIBRATE_GENERIC, *FIT[:2], f"calibrate.values=[{values}]",
                         f"calibrate.series={{quantity: a, file: '{csv}'}}"]))
    a = again.summary
    assert a["converged"] and "truth supply_scale" not in a
    for name, value in truth.items():
        assert abs(a[f"fit {name}"] / value - 1) < 0.01


def _one_line(err) -> str:
    text = str(err.value)
    assert len(text.splitlines()) == 1, text
    return text


def test_unknown_and_event_parameters_are_refused():
    cfg = compose(GENERIC)
    with pytest.raises(ConfigError) as err:
        gr.differentiable(cfg, ["no_such_param"], ["final:a"])
    text = _one_line(err)
    assert err.value.key == "gradients.params" and err.value.value == "no_such_param"
    assert "supply_scale" in text and "k_discharged" in text
    with pytest.raises(ConfigError) as err:
        gr.differentiable(cfg, ["hazard"], [])
    assert err.value.key == "gradients.params" and "random producer failures" in _one_line(err)
    with pytest.raises(ConfigError) as err:  # through the experiment: the key is the mapping entry
        run(compose([*CALIBRATE_GENERIC, "calibrate.params={no_such_param: 2.0}"]))
    assert err.value.key == "calibrate.params.no_such_param" and err.value.value == 2.0
    with pytest.raises(ConfigError) as err:
        gr.differentiable(cfg, ["supply_scale"], ["mean_last:no_such_quantity"])
    assert err.value.key == "gradients.outcomes" and "charged_fraction" in _one_line(err)


def test_configurations_with_random_events_are_refused():
    with pytest.raises(ConfigError) as err:  # generic preset: failures on
        gr.differentiable(compose([*GENERIC, "substrate.producers.hazard=0.2"]), ["supply_scale"], [])
    text = _one_line(err)
    assert err.value.key == "substrate.producers.hazard" and err.value.value == 0.2
    assert "0.0 on the gradient path" in text
    with pytest.raises(ConfigError) as err:  # the experiment, told not to switch them off
        run(compose([*CALIBRATE_GENERIC, "calibrate.events_off=false", "substrate.producers.birth_rate=0"]))
    assert err.value.key == "substrate.producers.hazard" and "calibrate.events_off=true" in _one_line(err)
    bio = [*BIO, "substrate.producers.hazard_per_s=0", "substrate.producers.birth_per_s=0"]
    with pytest.raises(ConfigError) as err:  # biology: ribosome chains initiate and terminate at random
        gr.differentiable(compose(bio), ["supply_scale"], [])
    assert err.value.key == "substrate.chains.consumer" and err.value.value == "protein_synthesis"
    assert "null on the gradient path" in _one_line(err)
    with pytest.raises(ConfigError) as err:  # adaptation of theta draws at random: never switched off
        gr.differentiable(compose([*GENERIC, "differentiation=imitation"]), ["supply_scale"], [], events="off")
    assert err.value.key == "differentiation.rule" and err.value.value == "imitation"


def test_llm_serving_is_refused():
    with pytest.raises(ConfigError) as err:
        run(compose(["experiment=calibrate", "substrate=llm"]))
    text = _one_line(err)
    assert err.value.key == "substrate" and err.value.value == "llm"
    assert "discrete queues" in text and "bio, generic" in text
