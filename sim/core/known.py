"""Facts about a run's concrete parameters that a step may use while it is traced.

A process that branches on a parameter (``lax.cond`` on "is there a creatine buffer?") compiles
both branches into every program, although almost every run takes one of them for all of its
steps. The engine instead reads the concrete parameters on the host before it traces a chunk
(``Substrate.known(params)``: a tuple of ``(name, value)`` pairs), traces the step inside
:func:`tracing`, and keys the executable on the facts (in-process cache and disk store alike), so a
run whose parameters say otherwise gets its own program. A process asks :func:`get`: a value, or
None when nothing is known (a step traced outside the engine's chunk: gradients, the guard's
step-by-step replay), and then keeps its run-time branch. Either way the same numbers: a fact may
only pick the branch the run-time test would pick for every row.

Issue 10 (compile time): the creatine kinase branch was ~20 of the ~250 kernels of every biology
program, compiled although every preset but ``homeostasis`` has no creatine.
"""

from __future__ import annotations

from sim.core.ops import trace_setting

_KNOWN = [None]  # read while tracing: the facts of the run being traced, or None


def tracing(facts: tuple):
    """Trace the enclosed code with ``facts`` (``((name, value), ...)``) known."""
    return trace_setting(_KNOWN, tuple(facts))


def get(name: str):
    """The value of fact ``name`` for the step being traced, or None when it is not known."""
    facts = _KNOWN[0]
    if facts is None:
        return None
    return dict(facts).get(name)
