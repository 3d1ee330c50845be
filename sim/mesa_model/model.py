"""``CurrencyModel``: the biology substrate on the one Mesa layer (:class:`~sim.mesa_model.SubstrateModel`).

It adds keyword parameters, biology's model reporters and the names of the hand-written model it
replaced; everything else is ``SubstrateModel``: agents generated from
``sim.substrates.bio.spec.ENTITIES`` (cells, producers, consumers, chains), ``backend="jax"``
stepping the jitted substrate step (the adaptive and carrier variants when the config asks for
them) and ``backend="mesa"`` stepping :class:`sim.substrates.bio.reference.ReferenceBio` phase by
phase, each per-cell phase called on every cell agent through ``AgentSet.do`` (or ``shuffle_do``
with ``shuffle=True``, which gives the same numbers). Random draws are the engine's: one
vectorised ``sim.rng.uniforms`` call per step and purpose with the replicate's key
``fold_in(PRNGKey(seed), replicate)`` (made between the phases); each cell takes the numbers of
its agents' ids.

Keyword parameters (:data:`KEYWORDS`) make it a model ``mesa.batch_run`` can vary:
``CurrencyModel(n_cells=10, topology="ring", demand_scale=1.5, seed=0)`` runs the shipped
``experiment=tissue`` biology config with those values, and
``mesa.batch_run(CurrencyModel, parameters={"demand_scale": [1.0, 1.5]}, iterations=1, max_steps=5)``
a row per run and step (the model reporters of :data:`MODEL_REPORTERS`).
"""

from __future__ import annotations

import copy

import numpy as np

from sim import rng
from sim.mesa_model.substrate_model import BACKENDS, SubstrateModel, agent_class, resolve_run
from sim.substrates.bio import SUBSTRATE as BIO
from sim.substrates.bio.build import Model as Preset
from sim.substrates.bio.build import build
from sim.substrates.bio.kernels.thermo import energy_charge
from sim.substrates.bio.reference import host_draws
from sim.substrates.bio.state import ADP, AMP, ATP


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


class CurrencyModel(SubstrateModel):
    """A tissue of cells with producers, consumers and chains: the biology substrate's
    :class:`~sim.mesa_model.SubstrateModel`, with keyword parameters and biology's reporters.

    Args:
        cfg: composed config (``substrate``, ``topology``, ``seed``, ``dt``, optional ``params``,
            ``differentiation``, ``carriers``, ``backend`` ("jax" or "mesa") and ``replicate``), as
            taken by ``sim.substrates.bio.build``; default (neither ``cfg`` nor ``model``): the
            shipped ``experiment=tissue`` config. It runs the substrate ``sim.api.substrate_of``
            gives it (with the adaptation and carrier processes it asks for).
        model: a ``sim.substrates.bio.build.Model`` to use instead of ``cfg``.
        substrate: with ``model=``: the biology substrate value that built it (default
            ``sim.substrates.bio.SUBSTRATE``; pass ``sim.api.substrate_of(cfg)`` for an adaptive or
            several-carrier model).
        n_cells, topology, seed, dt, supply_scale, demand_scale, uptake_scale, conductance_scale:
            set in the config (:func:`keyword_config`), so ``mesa.batch_run`` can vary them;
            not with ``model=`` (it is built already).
        backend, replicate: override the config's (defaults "jax" and 0).
        shuffle: reference backend only: call the cells in a random order in every per-cell phase
            (results do not change; this is what the order-independence test checks).
        collect_every: ``step()`` collects data every this many steps (0: never); ``run(n)``
            collects once at its end; also collected once at construction when > 0.
        collect_agents: also collect the per-agent reporters (cells and producers).

    Agents (generated from ``sim.substrates.bio.spec.ENTITIES``): :data:`CellAgent` (one per
    cell: pools and their columns in mM, ``energy_charge``, ``alive``, ``stress``, ...),
    :data:`ProducerAgent` (mitochondria, glycolysis), :data:`ConsumerAgent` (organelle processes)
    and :data:`ChainAgent` (ribosome cohorts), listed per cell in ``cell.members``.
    """

    MODEL_REPORTERS = MODEL_REPORTERS
    AGENT_REPORTERS = {"cell": CELL_REPORTERS, "producer": PRODUCER_REPORTERS}

    def __init__(
        self,
        cfg=None,
        *,
        model: Preset | None = None,
        substrate=None,
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
        from sim.api import as_plain, substrate_of
        from sim.errors import ConfigError

        given = dict(n_cells=n_cells, topology=topology, seed=seed, dt=dt, supply_scale=supply_scale,
                     demand_scale=demand_scale, uptake_scale=uptake_scale, conductance_scale=conductance_scale)
        named = ", ".join(k for k, v in given.items() if v is not None)
        if model is not None:
            if cfg is not None:
                raise TypeError("CurrencyModel needs one of a config or model=, not both")
            if named:
                raise TypeError(f"CurrencyModel: {named} set the config; a built model= has its own (pass cfg= or none)")
            sub = BIO if substrate is None else substrate
        else:
            if cfg is None or named:
                cfg = keyword_config(cfg, **given)
                build_fn = _stable_build  # keyword values (a dt, a demand) are checked as a run's would be
            else:
                cfg = as_plain(cfg)
                build_fn = build  # a partial config (substrate, topology, seed, dt) is enough here
            backend, replicate = resolve_run(backend, replicate, cfg)
            sub = substrate_of(cfg) if substrate is None else substrate
            if sub.name != BIO.name:
                raise ConfigError("substrate", sub.name, "bio (CurrencyModel; SubstrateModel runs any substrate)")
            model = build_fn(cfg)
        super().__init__(substrate=sub, built=model, backend=backend, replicate=replicate,
                         collect_every=collect_every, shuffle=shuffle, collect_agents=collect_agents)
        self.cfg = cfg
        self.producer_kinds = model.producer_kinds
        self.consumer_kinds = model.consumer_kinds
        self.work_units = model.work_units

    # the agents of each kind and the slots per cell (names kept from the hand-written model)
    cell_agents = property(lambda self: self.agents_of_entity["cell"])
    producer_agents = property(lambda self: self.agents_of_entity["producer"])
    consumer_agents = property(lambda self: self.agents_of_entity["consumer"])
    chain_agents = property(lambda self: self.agents_of_entity["chain"])
    n_producer_slots = property(lambda self: self.n_slots["producer"])
    n_consumer_slots = property(lambda self: self.n_slots["consumer"])
    n_chain_slots = property(lambda self: self.n_slots["chain"] or 0)


# the generated agent classes (shared by every biology model, adaptive and carrier variants included)
CellAgent, ProducerAgent, ConsumerAgent, ChainAgent = (agent_class(BIO, spec) for spec in BIO.entities)

__all__ = ["CurrencyModel", "BACKENDS", "KEYWORDS", "keyword_config", "replicate_key", "host_draws", "MODEL_REPORTERS",
           "CellAgent", "ProducerAgent", "ConsumerAgent", "ChainAgent"]
