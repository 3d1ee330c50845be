"""Ctrl-C (SIGINT) and SIGTERM end a run with one line, exit 128 + signal, a ``summary.json`` that says
``interrupted`` and how to resume, and the checkpoint kept; the resumed run finishes."""

import json
import signal
import subprocess
import sys
import time

import pytest

from _support import ROOT, child_env
from sim.app import resume_run

RUN = ["-m", "sim", "substrate=generic", "topology=ring", "topology.n_cells=4", "steps=60000", "record_every=100",
       "chunk_records=10", "checkpoint_every=1", "replicates=1", "figures=false"]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_says_so_and_can_be_resumed(tmp_path, sig, code):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, *RUN, f"hydra.run.dir={out}"], cwd=ROOT, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = out / "checkpoint" / "state.npz"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert state.exists(), proc.communicate(timeout=60)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"resume={out}" in lines[0], err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and f"resume={out}" in summary["reason"]
    assert state.exists()
    if sig == signal.SIGTERM:  # (one resume is enough to show the folder is intact)
        assert resume_run(out, quiet=True) == 0
        done = json.loads((out / "summary.json").read_text())
        assert done["status"] == "ok" and not (out / "checkpoint").exists()
