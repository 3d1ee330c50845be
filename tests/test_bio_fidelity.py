"""Scientific fidelity of the biology preset (issue 11, round two): biogenesis driven by energy stress.

Biogenesis responds to a slow energy-charge signal falling below a set point (AMPK -> PGC-1alpha;
sim/substrates/bio/kernels/fate.py, calibration in conf/substrate/bio.yaml), so:
- the DEFAULT resting cell is stationary: producers and energy charge change by < 0.5% between
  1,000 s and 5,000 s (mean of 16 replicates; each time is the mean of the records of the 500 s
  before it, so one failure caught mid-replacement at a single instant does not decide the test);
- a sustained 2x demand ends with MORE producers than rest (the old threshold rule made fewer).
Runs topology=single, 16 replicates vmapped in one engine call per condition (~40 s here).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import sim  # noqa: F401  (float64)
import sim.api
from sim.core import engine
from sim.core.config import compose
from sim.substrates.bio import SUBSTRATE as BIO
from sim.substrates.bio.state import ADP, AMP, ATP

REPS = 16
DT = 0.02
RECORD_EVERY = 1250  # 25 s
REST_STEPS = 250_000  # 5,000 s


def _model():
    cfg = compose(["topology=single", f"steps={REST_STEPS}", f"replicates={REPS}", f"dt={DT}", f"record_every={RECORD_EVERY}"])
    return sim.api.prepare(cfg)[2]


def _run(model, steps, demand_scale=1.0):
    params = dataclasses.replace(model.params, demand_scale=np.asarray(demand_scale, np.float64))
    r = engine.run(BIO, model.state, params, seed=0, steps=steps, record_every=RECORD_EVERY, replicates=REPS)
    assert r.error is None
    n = r.records["n_producers"][:, :, 0].astype(float)  # (replicate, record)
    p = r.records["pools"][:, :, 0, :]
    ec = (p[..., ATP] + 0.5 * p[..., ADP]) / (p[..., ATP] + p[..., ADP] + p[..., AMP])
    return np.asarray(r.times), n, ec


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def rest(model):
    return _run(model, REST_STEPS)


def _window(times, x, t_end, width=500.0):
    sel = (times > t_end - width - 1e-9) & (times <= t_end + 1e-9)
    return float(x[:, sel].mean())


def test_resting_cell_is_stationary(rest, model):
    times, n, ec = rest
    n0 = int(np.asarray(model.state.producers.alive)[0].sum())
    n1, n5 = _window(times, n, 1000.0), _window(times, n, 5000.0)
    e1, e5 = _window(times, ec, 1000.0), _window(times, ec, 5000.0)
    assert abs(n5 / n1 - 1.0) < 0.005, (n1, n5)
    assert abs(e5 / e1 - 1.0) < 0.005, (e1, e5)
    # births replace failures: the count stays where it starts
    assert abs(n5 / n0 - 1.0) < 0.01, (n0, n5)


def test_sustained_demand_adds_producers(rest, model):
    times, n2, _ = _run(model, 50_000, demand_scale=2.0)  # 1,000 s at 2x demand
    _, n_rest, _ = rest
    n0 = int(np.asarray(model.state.producers.alive)[0].sum())
    assert n2[:, -1].mean() > n_rest[:, -1].mean() + 1.0, (n2[:, -1].mean(), n_rest[:, -1].mean())
    assert n2[:, -1].mean() > n0
