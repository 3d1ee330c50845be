"""``CurrencyModel``: the tissue as a ``mesa.Model``, stepped by the JAX engine or agent by agent.

- ``backend="jax"`` (default): ``step()`` calls the jitted ``sim.kernels.step.step`` once and
  ``run(n)`` advances ``n`` steps in one ``lax.scan``; compiled functions are cached per shape.
  Agents read their attributes from a host (numpy) copy of the state, fetched lazily after each
  step / run.
- ``backend="mesa"``: the reference backend. Every cell steps itself (and its organelles) in plain
  Python, process by process in the order of ``sim.kernels.step.PROCESSES``, each process called
  on all cells through ``AgentSet.do`` (or ``shuffle_do`` with ``shuffle=True``, which must give the
  same numbers). Random draws are the engine's: one vectorised ``sim.rng.uniforms`` call per step
  and purpose with the replicate's key ``fold_in(PRNGKey(seed), replicate)``; each agent takes
  the number for its id.

Both backends expose ``model.state`` (a numpy ``sim.state.State``), the Mesa ``Network`` space
built from the tissue graph (``model.space``) and a ``DataCollector`` (``model.datacollector``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
from mesa.datacollection import DataCollector
from mesa.discrete_space import Network

from sim import engine, rng
from sim.kernels.step import step as kernel_step
from sim.kernels.thermo import energy_charge
from sim.kernels import chains as ck
from sim.mesa_model.dual import BACKENDS, DualBackendModel
from sim.mesa_model.agents import CHAIN_LEDGER_FIELDS, CellAgent, ChainAgent, ConsumerAgent, ProducerAgent, _Constants
from sim.presets.build import Model as Preset
from sim.presets.build import build
from sim.state import ADP, AMP, ATP, Cells, Ledger, Producers, State



@functools.partial(jax.jit, static_argnames=("purpose", "n"))
def _draws(key, step, purpose: int, n: int):
    return rng.uniforms(key, step, purpose, jnp.arange(n, dtype=jnp.uint32))


def replicate_key(seed: int, replicate: int = 0):
    """The engine's key of replicate ``replicate``: ``fold_in(PRNGKey(seed), replicate)``."""
    return engine.replicate_keys(int(seed), 1, int(replicate))[0]


def host_draws(key, step: int, purpose: int, n: int) -> list[float]:
    """The engine's draws for ids ``0..n-1`` at ``step`` as Python floats (one vectorised call)."""
    if n == 0:
        return []
    return np.asarray(_draws(key, jnp.int32(step), purpose, int(n))).tolist()


# ---------------------------------------------------------------------------- model reporters
def mean_energy_charge(model) -> float:
    """Mean energy charge over living cells (nan when none lives)."""
    s = model.state
    p, alive = s.cells.pools, s.cells.alive
    if not alive.any():
        return float("nan")
    ec = energy_charge(p[:, ATP], p[:, ADP], p[:, AMP], xp=np)
    return float(ec[alive].mean())


def total_atp(model) -> float:
    return float(model.state.cells.pools[:, ATP].sum())


def n_alive_cells(model) -> int:
    return int(model.state.cells.alive.sum())


def n_alive_producers(model) -> int:
    return int(model.state.producers.alive.sum())


def total_work(model) -> float:
    return float(model.state.ledger.work.sum())


def n_active_chains(model) -> int:
    ch = model.state.chains
    return int(ch.active.sum()) if ch is not None else 0


def proteins_completed(model) -> float:
    led = model.state.chain_ledger
    return float(led.delivered.sum()) if led is not None else 0.0


MODEL_REPORTERS = {
    "mean_energy_charge": mean_energy_charge,
    "total_atp": total_atp,
    "n_alive_cells": n_alive_cells,
    "n_alive_producers": n_alive_producers,
    "total_work": total_work,
    "n_active_chains": n_active_chains,
    "proteins_completed": proteins_completed,
}
CELL_REPORTERS = {"atp": "atp", "energy_charge": "energy_charge", "alive": "alive", "stress": "stress"}
PRODUCER_REPORTERS = {"alive": "alive", "health": "health"}




def _network(graph, random):
    kwargs = {"capacity": None, "random": random}
    if "layout" in inspect.signature(Network).parameters:
        kwargs["layout"] = None  # Mesa >= 3.5: no spring layout (minutes at 10k nodes)
    return Network(graph, **kwargs)


class CurrencyModel(DualBackendModel):
    """A tissue of cells with producers and consumers, on a Mesa ``Network``.

    Args:
        cfg: composed config (``substrate``, ``topology``, ``seed``, ``dt``, optional ``params``,
            ``backend`` ("jax" or "mesa") and ``replicate``), as taken by ``sim.presets.build``.
        model: a ``sim.presets.Model`` to use instead of ``cfg``.
        backend, replicate: override the config's (defaults "jax" and 0).
        shuffle: reference backend only: call agents in a random order each phase (results do
            not change; this is what the order-independence test checks).
        collect_every: ``step()`` collects data every this many steps (0: never); ``run(n)``
            collects once at its end; also collected once at construction when > 0.
        collect_agents: also collect the per-agent reporters (cells and producers).
    """

    KERNEL_STEP = staticmethod(kernel_step)

    def __init__(
        self,
        cfg=None,
        *,
        model: Preset | None = None,
        backend: str | None = None,
        replicate: int | None = None,
        shuffle: bool = False,
        collect_every: int = 1,
        collect_agents: bool = True,
    ):
        model = self._init_common(cfg, model, backend, replicate, shuffle, collect_every, build)
        self.producer_kinds = model.producer_kinds
        self.consumer_kinds = model.consumer_kinds
        self.work_units = model.work_units

        n_cells, n_slots = self._initial.producers.alive.shape
        n_cons = self._initial.consumers.kind.shape[1]
        self.n_cells, self.n_producer_slots, self.n_consumer_slots = n_cells, n_slots, n_cons

        # agents on the Network space
        self.space = _network(self.graph, self.random)
        self.cell_agents: list[CellAgent] = [CellAgent(self, i, self.space[i]) for i in range(n_cells)]
        self.producer_agents: list[ProducerAgent] = [
            ProducerAgent(self, c, s, n_slots) for c in self.cell_agents for s in range(n_slots)
        ]
        self.consumer_agents: list[ConsumerAgent] = [
            ConsumerAgent(self, c, s, n_cons) for c in self.cell_agents for s in range(n_cons)
        ]
        chains0 = self._initial.chains
        n_ch = 0 if chains0 is None else int(chains0.active.shape[1])
        self.n_chain_slots = n_ch
        self.chain_agents: list[ChainAgent] = [
            ChainAgent(self, c, s, n_ch) for c in self.cell_agents for s in range(n_ch)
        ]
        for c in self.cell_agents:
            c.producers = self.producer_agents[c.index * n_slots : (c.index + 1) * n_slots]
            c.consumers = self.consumer_agents[c.index * n_cons : (c.index + 1) * n_cons]
            c.chains = self.chain_agents[c.index * n_ch : (c.index + 1) * n_ch]

        if self.backend == "jax":
            self._dev_params = jax.tree_util.tree_map(jnp.asarray, self.params)
            self._dev_state = jax.tree_util.tree_map(jnp.asarray, self._initial)
        else:
            self._init_reference()

        self.datacollector = DataCollector(
            model_reporters=dict(MODEL_REPORTERS),
            agenttype_reporters=(
                {CellAgent: dict(CELL_REPORTERS), ProducerAgent: dict(PRODUCER_REPORTERS)}
                if collect_agents
                else None
            ),
        )
        if self.collect_every > 0:
            self.datacollector.collect(self)

    # ------------------------------------------------------------------------ reference backend
    def _init_reference(self) -> None:
        state, params = self._initial, self.params
        q = _Constants(params)
        self._q = q
        for a in self.consumer_agents:
            a._ref_init(state, q)
        for a in self.producer_agents:
            a._ref_init(state, q)
        for a in self.chain_agents:
            a._ref_init(state.chains, a.cell_index, a.slot)
        for c in self.cell_agents:
            c._ref_init(state, q)
        # junctions: each is owned by its lower-index cell (src), which computes its flux
        e = params.edges
        src, dst = np.asarray(e.src).tolist(), np.asarray(e.dst).tolist()
        cond, loss = np.asarray(e.conductance).tolist(), np.asarray(e.loss).tolist()
        cells = self.cell_agents
        for u, v, g_e, l_e in zip(src, dst, cond, loss):
            owner, other = cells[u], cells[v]
            g = g_e * q.conductance_scale * q.dt
            gp = tuple(g * perm for perm in q.permeability)
            keep = 1.0 - l_e
            leak = 1.0 - keep
            k = len(owner._out_edges)
            owner._out_edges.append((other, gp))
            owner._out_keep.append((keep, leak))
            owner._flux.append(None)
            other._in_edges.append((owner, k, keep, leak))
        self._cells_set = self.agents_by_type[CellAgent]

    def _reference_step(self) -> None:
        t = self._t
        u_fail = host_draws(self.key, t, rng.PRODUCER_FAILURE, self.n_cells * self.n_producer_slots)
        u_birth = host_draws(self.key, t, rng.PRODUCER_BIRTH, self.n_cells)
        chain_draws = None
        if self.n_chain_slots:
            n_ids = self.n_cells * self.n_chain_slots
            chain_draws = (host_draws(self.key, t, ck.CHAIN_INIT, n_ids), host_draws(self.key, t, ck.CHAIN_STOP, n_ids))
        cells = self._cells_set
        do = cells.shuffle_do if self.shuffle else cells.do
        do("metabolise", chain_draws)  # 1: rates on the step-start state (chains in the consumption)
        do("transport_compute")  # 2: fluxes from post-metabolism pools of all cells ...
        do("transport_apply")  # ... then applied by every cell
        do("adenylate_kinase")  # 3
        do("producer_failure", u_fail)  # 4
        do("biogenesis", u_birth)  # 5
        do("stress_and_death")  # 6
        self._t = t + 1

    def _export_reference(self) -> State:
        init = self._initial
        cells, prods, cons = self.cell_agents, self.producer_agents, self.consumer_agents
        C, P, K = self.n_cells, self.n_producer_slots, self.n_consumer_slots
        fdt = init.cells.pools.dtype

        def col(agents, attr, dtype=fdt):
            return np.array([getattr(a, attr) for a in agents], dtype=dtype)

        new_cells = Cells(
            pools=np.array([c._pools for c in cells], dtype=fdt).reshape(C, -1),
            alive=col(cells, "_alive", bool),
            theta=init.cells.theta.copy(),
            stress=col(cells, "_stress"),
            uptake=init.cells.uptake.copy(),
            demand_mult=init.cells.demand_mult.copy(),
            maintenance=col(cells, "_maintenance"),
        )
        new_prod = Producers(
            kind=init.producers.kind.copy(),
            vmax=init.producers.vmax.copy(),
            health=col(prods, "_health").reshape(C, P),
            alive=col(prods, "_alive", bool).reshape(C, P),
        )
        ldt = init.ledger
        ledger = Ledger(
            produced=col(cells, "_produced"),
            spent=col(cons, "_spent").reshape(C, K),
            repair_spent=col(cells, "_repair_spent"),
            birth_spent=col(cells, "_birth_spent"),
            work=col(cons, "_work").reshape(C, K),
            substrate_used=col(cells, "_substrate_used"),
            substrate_uptake=col(cells, "_substrate_uptake"),
            transported_in=col(cells, "_transported_in"),
            transported_out=col(cells, "_transported_out"),
            lost=np.array([c._lost for c in cells], dtype=fdt).reshape(C, -1),
            ak_atp=col(cells, "_ak_atp"),
            substrate_energy_j=col(cells, "_substrate_energy_j"),
            stored_energy_j=col(cells, "_stored_energy_j"),
            heat_j=col(cells, "_heat_j"),
            hydrolysis_energy_j=col(cells, "_hydrolysis_energy_j"),
            failures=col(cells, "_failures", ldt.failures.dtype),
            births=col(cells, "_births", ldt.births.dtype),
            repair_health=col(cells, "_repair_health"),
        )
        chains, chain_ledger = init.chains, init.chain_ledger
        if chains is not None:
            S, ch = self.n_chain_slots, self.chain_agents
            chains = ck.ChainSlots(
                active=col(ch, "_active", bool).reshape(C, S),
                length=col(ch, "_length").reshape(C, S),
                made=col(ch, "_made").reshape(C, S),
                tool_wait=col(ch, "_wait", init.chains.tool_wait.dtype).reshape(C, S),
            )
            if S:
                chain_ledger = ck.ChainLedger(**{
                    f: np.array([c._chain_led[f] for c in cells], dtype=getattr(init.chain_ledger, f).dtype)
                    for f in CHAIN_LEDGER_FIELDS
                })
        return State(
            cells=new_cells,
            producers=new_prod,
            consumers=dataclasses.replace(init.consumers),
            ledger=ledger,
            step=np.asarray(self._t, dtype=np.asarray(init.step).dtype),
            chains=chains,
            chain_ledger=chain_ledger,
        )


__all__ = ["CurrencyModel", "BACKENDS", "replicate_key", "host_draws", "MODEL_REPORTERS"]
