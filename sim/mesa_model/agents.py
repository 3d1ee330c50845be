"""Mesa agents of a tissue: cells (graph nodes) and the producers, consumers and chains they host.

Public attributes (``atp``, ``energy_charge``, ``alive``, ``health``, ...) are read-only, taken
from ``model.state`` (the numpy copy of the current state) at the agent's index, so inspection,
``AgentSet.select/groupby/agg`` and a ``DataCollector`` work the same on both backends.

The agents hold no physics. On the reference backend (``backend="mesa"``) each cell agent owns a
plain :class:`sim.substrates.bio.reference.Cell` (``_cell``) and its methods below, one per
process of ``sim.substrates.bio.kernels.step.PROCESSES``, step it with the per-cell methods of the model's
:class:`sim.substrates.bio.reference.ReferenceBio` (the cell's organelles and chains included);
the model calls each process on all cells through ``AgentSet.do``.
"""

from __future__ import annotations

import numpy as np
from mesa.discrete_space import FixedAgent

from sim.substrates.bio.state import ADP, AMP, ATP, GLC, PI


class StateField:
    """A read-only agent attribute: ``model.state.<part>.<field>`` at the agent's index ``_at``
    (then column ``col``), optionally reduced over the rest of its row, converted by ``cast``.
    ``missing`` is returned when the state has no such part (e.g. a preset without chains)."""

    def __init__(self, path: str, cast=float, col: int | None = None, reduce=None, missing=None, doc: str = ""):
        self.part, self.field = path.split(".")
        self.cast, self.col, self.reduce, self.missing = cast, col, reduce, missing
        self.__doc__ = doc or f"``state.{path}`` of this agent" + (f", column {col}." if col is not None else ".")

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, agent, owner=None):
        if agent is None:
            return self
        part = getattr(agent.model.state, self.part)
        if part is None:
            return self.missing
        row = getattr(part, self.field)[agent._at]
        if self.col is not None:
            row = row[self.col]
        return self.cast(self.reduce(row) if self.reduce is not None else row)

    def __set__(self, agent, value):
        raise AttributeError(f"{self.name} is read from model.state")


class CellAgent(FixedAgent):
    """A cell / model instance: one node of the tissue graph, fixed to its Network cell."""

    pools = StateField("cells.pools", np.array, doc="Concentrations (mM) in the order of ``sim.substrates.bio.state.SPECIES``.")
    glucose = StateField("cells.pools", col=GLC)
    atp = StateField("cells.pools", col=ATP)
    adp = StateField("cells.pools", col=ADP)
    amp = StateField("cells.pools", col=AMP)
    pi = StateField("cells.pools", col=PI)
    alive = StateField("cells.alive", bool)
    stress = StateField("cells.stress")
    maintenance = StateField("cells.maintenance")
    theta = StateField("diff.theta")
    n_producers = StateField("producers.alive", int, reduce=np.sum, doc="Living producers.")
    produced = StateField("ledger.produced")
    work = StateField("ledger.work", reduce=np.sum)
    n_active_chains = StateField("chains.active", int, reduce=np.sum, missing=0)
    proteins_completed = StateField("chain_ledger.delivered", missing=0.0,
                                    doc="Chains finished in this cell (each a protein per ribosome of the cohort).")

    def __init__(self, model, index: int, cell):
        super().__init__(model)
        self.index = int(index)
        self._at = (self.index,)
        self.cell = cell
        self.producers: list[ProducerAgent] = []  # slot order
        self.consumers: list[ConsumerAgent] = []  # slot order
        self.chains: list[ChainAgent] = []  # slot order
        self._cell = None  # reference backend: the sim.substrates.bio.reference.Cell

    def __repr__(self) -> str:
        return f"CellAgent(index={self.index})"

    @property
    def energy_charge(self) -> float:
        """Energy charge of the total pools (free + the bound ADP and AMP of the parameters)."""
        q = self.model.params
        a = self.atp
        d, m = self.adp + float(np.asarray(q.adp_bound)), self.amp + float(np.asarray(q.amp_bound))
        total = a + d + m
        return (a + 0.5 * d) / total if total > 0 else 0.0

    @property
    def spent(self) -> float:
        """ATP spent by consumers, repair and biogenesis (mM)."""
        led = self.model.state.ledger
        i = self.index
        return float(np.sum(led.spent[i]) + led.repair_spent[i] + led.birth_spent[i])

    @property
    def ledger(self) -> dict:
        """This cell's cumulative accounts (see ``sim.substrates.bio.state.Ledger``)."""
        led = self.model.state.ledger
        out = {}
        for name in led.__dataclass_fields__:
            v = getattr(led, name)[self.index]
            out[name] = v.tolist() if np.ndim(v) else v.item()
        return out

    @property
    def neighbours(self) -> list[CellAgent]:
        """Cell agents on the adjacent nodes of the Network space."""
        return [a for c in self.cell.neighborhood for a in c.agents if isinstance(a, CellAgent)]

    # ------------------------------------------------------------------ reference backend: processes
    def metabolism(self, chain_draws) -> None:
        self.model._ref.metabolism_cell(self._cell, chain_draws)

    def transport_compute(self) -> None:
        self.model._ref.transport_compute_cell(self._cell)

    def transport_apply(self) -> None:
        self.model._ref.transport_apply_cell(self._cell)

    def adenylate_kinase(self) -> None:
        self.model._ref.adenylate_kinase_cell(self._cell)

    def producer_failure(self, u) -> None:
        self.model._ref.producer_failure_cell(self._cell, u)

    def producer_biogenesis(self, u) -> None:
        self.model._ref.producer_biogenesis_cell(self._cell, u)

    def cell_stress(self) -> None:
        self.model._ref.cell_stress_cell(self._cell)


class _Slot(FixedAgent):
    """An agent in slot ``slot`` of its host cell (``cell_index * n_slots + slot`` is its id)."""

    def __init__(self, model, host, slot: int, n_slots: int):
        super().__init__(model)
        self.host = host
        self.cell_index = host.index if host is not None else 0
        self.slot = int(slot)
        self._at = (self.cell_index, self.slot)
        if getattr(host, "cell", None) is not None:
            self.cell = host.cell

    def _id(self, n_slots: int) -> int:
        return self.cell_index * int(n_slots) + self.slot

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cell={self.cell_index}, slot={self.slot})"


class ProducerAgent(_Slot):
    """A producer (mitochondrion / GPU) in a fixed slot of its cell; ``alive`` mirrors the mask.

    ``pid = cell_index * slots + slot`` is its global id (the id its random draws are keyed by).
    """

    kind = StateField("producers.kind", int)
    vmax = StateField("producers.vmax")
    health = StateField("producers.health")
    alive = StateField("producers.alive", bool)

    def __init__(self, model, host: CellAgent, slot: int, n_slots: int):
        super().__init__(model, host, slot, n_slots)
        self.pid = self._id(n_slots)

    @property
    def kind_name(self) -> str:
        return self.model.producer_kinds[self.kind]


class ConsumerAgent(_Slot):
    """A consumer (organelle / tool) in a fixed slot of its cell."""

    spent = StateField("ledger.spent", doc="ATP hydrolysed by this consumer (mM).")
    work = StateField("ledger.work", doc="Work delivered (value x spent).")

    def __init__(self, model, host: CellAgent, slot: int, n_slots: int):
        super().__init__(model, host, slot, n_slots)
        self.cid = self._id(n_slots)
        # static attributes (consumers neither die nor change in a run)
        cons = model._initial.consumers
        self.kind = int(cons.kind[self._at])
        self.tier = int(cons.tier[self._at])
        self.km = float(cons.km[self._at])
        self.vmax = float(cons.vmax[self._at])
        self.value = float(cons.value[self._at])

    @property
    def kind_name(self) -> str:
        return self.model.consumer_kinds[self.kind]


class ChainAgent(_Slot):
    """A chain slot of a cell: a cohort of ribosomes translating one protein each, in lockstep
    (biology), or a decode stream. ``chain_id = cell_index * slots + slot`` keys its draws.
    On the reference backend its cell's :class:`sim.substrates.bio.reference.Chain` s are stepped
    in the cell's metabolism (the chains are served in the tier of the consumer they realise)."""

    active = StateField("chains.active", bool)
    length = StateField("chains.length", doc="Units held (residues of the nascent protein).")
    made = StateField("chains.made")
    tool_wait = StateField("chains.tool_wait", int)

    def __init__(self, model, host, slot: int, n_slots: int):
        super().__init__(model, host, slot, n_slots)
        self.chain_id = self._id(n_slots)


__all__ = ["CellAgent", "ProducerAgent", "ConsumerAgent", "ChainAgent", "StateField"]
