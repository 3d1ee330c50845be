"""A reference stepper's step declared as ordered phases, so the Mesa layer can run it cell by cell.

A plain-Python reference (``Substrate.reference``) may expose ``phases``, a tuple of :class:`Phase`,
and ``cells``, one per-cell object per compartment in compartment order. Its step is then exactly
:func:`step_in_phases` over them, and the Mesa layer (``sim.mesa_model.SubstrateModel``) runs the
same phases with each per-cell phase called on every compartment agent through ``AgentSet.do``
(or ``shuffle_do``). Because each per-cell phase reads only what no cell writes in that phase
(anything shared is split into two phases, or done in a whole-tissue phase), the order in which
cells are called does not change a single bit.

A reference without ``phases`` (the generic substrate, a user's toy) is stepped whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of a reference step.

    ``name``: the phase (and the method name the Mesa layer gives the compartment agents).
    ``cell``: ``(cell object, *draws) -> result``, called once per compartment; None for a
    whole-tissue phase. ``draws``: ``() -> value``, this step's random numbers for the phase (one
    vectorised call, the engine's stream), passed to every ``cell`` call. ``gather``: ``(results
    in compartment order) -> None``, run after every cell (e.g. enqueueing arrivals in the engine's
    flat order). ``tissue``: ``() -> None``, the whole-tissue phase (global draws, the step clock).
    """

    name: str
    cell: Callable | None = None
    draws: Callable | None = None
    gather: Callable | None = None
    tissue: Callable | None = None

    def __post_init__(self):
        if (self.cell is None) == (self.tissue is None):
            raise ValueError(f"phase {self.name!r}: exactly one of cell= and tissue=")
        if self.cell is None and (self.draws is not None or self.gather is not None):
            raise ValueError(f"phase {self.name!r}: draws= and gather= belong to a per-cell phase")


def step_in_phases(phases, cells) -> None:
    """One step: every phase in order, each per-cell phase on ``cells`` in compartment order."""
    for phase in phases:
        if phase.cell is None:
            phase.tissue()
            continue
        fn = phase.cell
        if phase.draws is None:
            out = [fn(c) for c in cells]
        else:
            draws = phase.draws()
            out = [fn(c, draws) for c in cells]
        if phase.gather is not None:
            phase.gather(out)


__all__ = ["Phase", "step_in_phases"]
