"""Session set-up: every test run gets its own, empty JAX compilation cache (``compile_cache: auto``
resolves under ``$XDG_CACHE_HOME``), so whether a test compiles never depends on an earlier run
of the suite, while the child processes of one run share it (they compile the same shapes)."""

import os
import shutil
import tempfile

_CACHE_HOME = tempfile.mkdtemp(prefix="currency-sim-tests-")
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE_HOME, ignore_errors=True)
