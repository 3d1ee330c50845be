"""``CurrencyModel``: the tissue as a ``mesa.Model``, stepped by the JAX engine or agent by agent.

- ``backend="jax"`` (default): ``step()`` calls the jitted substrate step (``sim.substrates.bio.SUBSTRATE.step``) once and
  ``run(n)`` advances ``n`` steps in one ``lax.scan``; compiled functions are cached per shape.
  Agents read their attributes from a host (numpy) copy of the state, fetched lazily after each
  step / run.
- ``backend="mesa"``: the reference backend. Every cell agent steps its own plain-Python cell (and
  that cell's organelles and chains) through the per-cell methods of
  :class:`sim.substrates.bio.reference.ReferenceBio`, process by process in the order of
  ``sim.substrates.bio.kernels.step.PROCESSES``, each process called on all cells through ``AgentSet.do`` (or
  ``shuffle_do`` with ``shuffle=True``, which must give the same numbers). Random draws are the
  engine's: one vectorised ``sim.rng.uniforms`` call per step and purpose with the replicate's key
  ``fold_in(PRNGKey(seed), replicate)`` (made by the model between the phases); each cell takes the
  numbers of its agents' ids.

Both backends expose ``model.state`` (a numpy ``sim.substrates.bio.state.State``), the Mesa ``Network`` space
built from the tissue graph (``model.space``) and a ``DataCollector`` (``model.datacollector``).

Keyword parameters (:data:`KEYWORDS`) make it a model ``mesa.batch_run`` can vary:
``CurrencyModel(n_cells=10, topology="ring", demand_scale=1.5, seed=0)`` runs the shipped
``experiment=tissue`` biology config with those values, and
``mesa.batch_run(CurrencyModel, parameters={"demand_scale": [1.0, 1.5]}, iterations=1, max_steps=5)``
a row per run and step (the model reporters of :data:`MODEL_REPORTERS`).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
from mesa.datacollection import DataCollector

from sim import rng
from sim.substrates.bio.kernels.thermo import energy_charge
from sim.substrates.bio import SUBSTRATE as BIO
from sim.mesa_model.agents import CellAgent, ChainAgent, ConsumerAgent, ProducerAgent
from sim.mesa_model.dual import BACKENDS, DualBackendModel
from sim.mesa_model.substrate_model import network_space as _network
from sim.substrates.bio.build import Model as Preset
from sim.substrates.bio.build import build
from sim.substrates.bio.state import ADP, AMP, ATP, State
from sim.substrates.bio.reference import ReferenceBio, host_draws


def replicate_key(seed: int, replicate: int = 0):
    """The engine's key of replicate ``replicate``: ``fold_in(PRNGKey(seed), replicate)``."""
    return rng.replicate_keys(int(seed), 1, int(replicate))[0]


# ---------------------------------------------------------------------------- model reporters
def mean_energy_charge(model) -> float:
    """Mean energy charge over living cells (nan when none lives)."""
    s = model.state
    p, alive = s.cells.pools, s.cells.alive
    if not alive.any():
        return float("nan")
    # the charge of the total pools (free + bound ADP/AMP), as the substrate's summary reports it
    q = model.params
    ec = energy_charge(p[:, ATP], p[:, ADP], p[:, AMP], xp=np, adp_bound=float(np.asarray(q.adp_bound)),
                       amp_bound=float(np.asarray(q.amp_bound)))
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

# keyword parameter -> where it goes in the config (the params.* multipliers change no shapes, so a
# batch over them compiles the step once)
SCALES = ("supply_scale", "demand_scale", "uptake_scale", "conductance_scale")
KEYWORDS = ("n_cells", "topology", "seed", "dt") + SCALES


def keyword_config(cfg=None, **given) -> dict:
    """The config of ``CurrencyModel(cfg, **given)``: ``cfg`` (default: the shipped
    ``experiment=tissue`` config, :func:`sim.load_config`) with the keyword parameters set:
    ``topology`` (a shipped topology option: ring, grid, small_world, ...), ``n_cells``
    (``topology.n_cells``), ``seed``, ``dt`` and the ``params.*`` multipliers of :data:`SCALES`.
    A value that is not allowed is one :class:`~sim.errors.ConfigError` naming its key."""
    from omegaconf import OmegaConf

    from sim.api import as_plain
    from sim.core.config import CONF_DIR, load_config, num
    from sim.errors import ConfigError

    given = {k: v for k, v in given.items() if v is not None}
    shipped = cfg is None
    cfg = load_config(["experiment=tissue"]) if shipped else copy.deepcopy(as_plain(cfg))
    if "topology" in given:
        options = sorted(p.stem for p in (CONF_DIR / "topology").glob("*.yaml"))
        name = given["topology"]
        if name not in options:
            raise ConfigError("topology", name, "one of " + ", ".join(options))
        cfg["topology"] = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "topology" / f"{name}.yaml"), resolve=True)
    if "n_cells" in given:
        cfg["topology"] = {**cfg.get("topology", {}), "n_cells": given["n_cells"]}
        num(cfg, "topology.n_cells", 1, integer=True, what="a number of cells")
    if "seed" in given:
        cfg["seed"] = given["seed"]
        num(cfg, "seed", 0, integer=True, what="a seed")
    if "dt" in given:
        cfg["dt"] = given["dt"]
        num(cfg, "dt", 0, strict=True, what="a time step (s)")
    for name in SCALES:
        if name in given:
            cfg["params"] = {**(cfg.get("params") or {}), name: given[name]}
            num(cfg, f"params.{name}", 0, what="a multiplier")
    if shipped:  # the whole config is the shipped one: checked as a run's would be
        from sim.substrates.bio import SUBSTRATE as BIO

        BIO.validate(cfg)
    return cfg


def _stable_build(cfg: dict) -> Preset:
    """:func:`build`, then the explicit step's stability check of a run (a ``dt`` or demand too large
    for it is refused, naming ``dt``)."""
    from sim.config.validate import check_stability

    model = build(cfg)
    check_stability(model, cfg)
    return model


class CurrencyModel(DualBackendModel):
    """A tissue of cells with producers and consumers, on a Mesa ``Network``.

    Args:
        cfg: composed config (``substrate``, ``topology``, ``seed``, ``dt``, optional ``params``,
            ``backend`` ("jax" or "mesa") and ``replicate``), as taken by ``sim.substrates.bio.build``;
            default (neither ``cfg`` nor ``model``): the shipped ``experiment=tissue`` config.
        model: a ``sim.substrates.bio.build.Model`` to use instead of ``cfg``.
        n_cells, topology, seed, dt, supply_scale, demand_scale, uptake_scale, conductance_scale:
            set in the config (:func:`keyword_config`), so ``mesa.batch_run`` can vary them;
            not with ``model=`` (it is built already).
        backend, replicate: override the config's (defaults "jax" and 0).
        shuffle: reference backend only: call agents in a random order each phase (results do
            not change; this is what the order-independence test checks).
        collect_every: ``step()`` collects data every this many steps (0: never); ``run(n)``
            collects once at its end; also collected once at construction when > 0.
        collect_agents: also collect the per-agent reporters (cells and producers).
    """

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
        n_cells: int | None = None,
        topology: str | None = None,
        seed: int | None = None,
        dt: float | None = None,
        supply_scale: float | None = None,
        demand_scale: float | None = None,
        uptake_scale: float | None = None,
        conductance_scale: float | None = None,
    ):
        given = dict(n_cells=n_cells, topology=topology, seed=seed, dt=dt, supply_scale=supply_scale,
                     demand_scale=demand_scale, uptake_scale=uptake_scale, conductance_scale=conductance_scale)
        build_fn = build
        if model is None and (cfg is None or any(v is not None for v in given.values())):
            cfg = keyword_config(cfg, **given)
            build_fn = _stable_build  # keyword values (a dt, a demand) are checked as a run's would be
        elif model is not None and any(v is not None for v in given.values()):
            named = ", ".join(k for k, v in given.items() if v is not None)
            raise TypeError(f"CurrencyModel: {named} set the config; a built model= has its own (pass cfg= or none)")
        model = self._init_common(cfg, model, backend, replicate, shuffle, collect_every, build_fn)
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

        self._ref: ReferenceBio | None = None
        if self.backend == "jax":
            self._dev_params = jax.tree_util.tree_map(jnp.asarray, self.params)
            self._dev_state = jax.tree_util.tree_map(jnp.asarray, self._initial)
        else:
            self._ref = ReferenceBio(model, replicate=self.replicate, key=self.key)
            for c in self.cell_agents:
                c._cell = self._ref.cells[c.index]
            self._cells_set = self.agents_by_type[CellAgent]

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
    def _kernel_step(self):
        return BIO.step  # the engine's step of the substrate value

    def _reference_step(self) -> None:
        ref = self._ref
        cells = self._cells_set
        do = cells.shuffle_do if self.shuffle else cells.do
        do("metabolism", ref.metabolism_draws())  # 1 rates on the step-start state (chains in the consumption)
        do("transport_compute")  # 2 fluxes from the post-metabolism pools of all cells ...
        do("transport_apply")  # ... then applied by every cell
        do("adenylate_kinase")  # 3
        do("producer_failure", ref.producer_failure_draws())  # 4
        do("producer_biogenesis", ref.producer_biogenesis_draws())  # 5
        do("cell_stress")  # 6
        ref.step_count += 1
        self._t = ref.step_count

    def _export_reference(self) -> State:
        return self._ref.state()


__all__ = ["CurrencyModel", "BACKENDS", "KEYWORDS", "keyword_config", "replicate_key", "host_draws", "MODEL_REPORTERS"]
