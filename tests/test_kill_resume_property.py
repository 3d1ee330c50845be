"""Kill-and-resume over random kill points and every substrate (issue 16): a run killed with
SIGKILL at a checkpoint drawn from a seeded RNG, then resumed, ends bit-identical to a run that
was never interrupted.

Each substrate (biology; LLM serving through ``experiment=serving``; generic) runs a tiny stochastic
config: 3 cells on a ring, 2 replicates, 6 chunks of 10 steps, a checkpoint after every chunk.
For each substrate ``KILL_RESUME_TRIALS`` (default 2) distinct kill points are drawn with
``random.Random(KILL_RESUME_SEED)`` (default 16) from every (k, phase): the child process
(:func:`_support.kill_at_checkpoint`) SIGKILLs itself at its k-th checkpoint, either once
``state.npz`` is in place (``after``, k = 1..6: k = 6 is a run that computed everything and died
before writing its results) or while ``state.npz`` is being written (``mid-write``, k = 2..6: the
records of chunk k are on disk, the committed checkpoint is k-1's). The run is then resumed
(``sim.app.resume_run``, the body of ``python -m sim resume=DIR``) and compared with the
uninterrupted run of the same config: ``results.nc`` bit for bit and ``summary.json`` but for its
timings. Other draws: ``KILL_RESUME_SEED=7 KILL_RESUME_TRIALS=11 pytest tests/test_kill_resume_property.py``
(11 = every kill point).
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest

from _support import TISSUE, assert_same_results, kill_at_checkpoint
from sim import checkpoint
from sim.app import execute, resume_run
from sim.substrates.llm.build import compose

SEED = int(os.environ.get("KILL_RESUME_SEED", "16"))
TRIALS = int(os.environ.get("KILL_RESUME_TRIALS", "2"))
RECORD_EVERY, N_CHUNKS = 10, 6  # chunk_records=1: a chunk is one record of 10 steps
COMMON = ["replicates=2", f"steps={RECORD_EVERY * N_CHUNKS}", f"record_every={RECORD_EVERY}", "chunk_records=1",
          "checkpoint_every=1", "figures=false", "output.float32=false"]  # float64 records: every bit compared
SUBSTRATES = {  # stochastic on purpose: failures and births (bio), Poisson arrivals, drops, tools (llm), failures (generic)
    "bio": ["substrate=bio", "topology=ring", "topology.n_cells=3", "+params.hazard0=0.05", "+params.birth_rate=0.5"],
    "llm": ["experiment=serving", "topology=ring", "topology.n_cells=3", "substrate.chain_slots=8",
            "substrate.queue_slots=16", "substrate.max_batch=6", "substrate.arrivals.rate_per_s=20",
            "substrate.tools.p_per_token=0.01"],
    "generic": ["substrate=generic", "topology=ring", "topology.n_cells=3"],
}
KILL_POINTS = [(k, "after") for k in range(1, N_CHUNKS + 1)] + [(k, "mid-write") for k in range(2, N_CHUNKS + 1)]


def draws() -> list:
    """(substrate, k, phase) of every trial: distinct kill points per substrate, from the seeded RNG."""
    rng = random.Random(SEED)
    return [(name, k, phase) for name in SUBSTRATES
            for k, phase in rng.sample(KILL_POINTS, min(TRIALS, len(KILL_POINTS)))]


def overrides(name: str) -> list:
    return [TISSUE] + SUBSTRATES[name] + COMMON  # a plain run (llm: experiment=serving, which comes later, wins)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """name -> the folder of an uninterrupted run of that substrate's config (in-process, made once)."""
    done = {}

    def get(name):
        if name not in done:
            out = tmp_path_factory.mktemp(f"whole-{name}")
            assert execute(compose(overrides(name)), out, quiet=True) == 0
            assert not (out / checkpoint.CHECKPOINT_DIR).exists()
            done[name] = out
        return done[name]

    return get


def test_the_draws_are_seeded_and_distinct():
    assert draws() == draws()
    for name in SUBSTRATES:
        points = [(k, p) for n, k, p in draws() if n == name]
        assert len(points) == len(set(points)) == min(TRIALS, len(KILL_POINTS))


@pytest.mark.parametrize("name, k, phase", [pytest.param(*d, id=f"{d[0]}-k{d[1]}-{d[2]}") for d in draws()])
def test_sigkill_at_a_random_checkpoint_then_resume_is_bit_identical(name, k, phase, tmp_path, uninterrupted):
    whole = uninterrupted(name)
    run_dir = tmp_path / "run"
    killed = kill_at_checkpoint(tmp_path / "child.py", overrides(name), run_dir, k, phase)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (run_dir / "results.nc").exists() and not (run_dir / "summary.json").exists()
    committed = k if phase == "after" else k - 1
    state = checkpoint.load(run_dir)
    assert (state.n_chunks, state.steps_done) == (committed, committed * RECORD_EVERY)

    assert resume_run(run_dir, quiet=True) == 0
    assert_same_results(whole, run_dir)
    assert not (run_dir / checkpoint.CHECKPOINT_DIR).exists()
    assert not [p for p in Path(run_dir).rglob(".tmp-*")]  # the killed write's temporary is gone
