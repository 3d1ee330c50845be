"""The dashboard: Mesa's ``SolaraViz`` on a :class:`~sim.mesa_model.SubstrateModel` (JAX backend).

Serve it with ``make viz`` (``solara run sim.mesa_model.app``) and open the address it prints.
The page shows the tissue's network, each cell coloured by its charged fraction (bio: energy
charge; generic: A / (A + D); llm: KV-cache occupancy) and sized by its work rate over the last
frame, and live plots of the pools, the cumulative ledgers, the mean charged fraction and the
specialization index of the differentiation theta (``sim.core.division``). The sidebar holds
Mesa's play / step / reset controls and the model parameters; a changed parameter takes effect
on Reset (Mesa rebuilds the model from them).

One Step of the page is ``steps_per_frame`` engine steps in one jitted ``lax.scan``: a single
engine step (dt = 0.02 s for biology) moves nothing that could be seen. The first Step of a
substrate and tissue size compiles (seconds to tens of seconds); JAX's persistent compilation
cache (``sim.core.cache``, the run path's default folder) makes it fast on the next start.

The knobs map onto each substrate's own config (:func:`dashboard_config`):

=====================  =====================================  =======================================
slider                 bio, generic, generic_tissue           llm
=====================  =====================================  =======================================
demand                 ``params.demand_scale``                ``arrivals.rate_per_s`` x this
producer capacity      ``params.supply_scale``                GPU ``peak_tflops``, ``bandwidth_tb_s`` x this
transport conductance  ``params.conductance_scale``           routing to neighbours on when > 0
alpha                  ``differentiation.alpha``              not used (no differentiation)
=====================  =====================================  =======================================
"""

from __future__ import annotations

import dataclasses
import math
import threading
import warnings
from collections.abc import Callable

import mesa
import networkx as nx
import numpy as np
import solara
from matplotlib.figure import Figure
from mesa.datacollection import DataCollector

# Mesa 3.3's ComponentsView calls a hook after an early return (harmless there, fixed in Mesa 3.5);
# solara's hook check would print a warning on every start of the dashboard
warnings.filterwarnings("ignore", message=r".*ComponentsView: `use_state` found despite early return",
                        category=UserWarning)
from mesa.visualization import SolaraViz, Slider  # noqa: E402

from sim.core import cache
from sim.core.config import compose
from sim.core.division import specialization_index
from sim.errors import ConfigError
from sim.mesa_model.substrate_model import SubstrateModel

SUBSTRATES = ("generic_tissue", "generic", "bio", "llm")
TOPOLOGIES = ("small_world", "ring", "grid", "complete", "scale_free", "erdos_renyi")
RULES = ("gradient", "imitation", "fixed")  # differentiation rules (sim/conf/differentiation)
CIRCULAR = ("ring", "small_world", "complete")  # drawn on a circle: node order is their structure
MAX_HISTORY = 2000  # frames kept in the plots (a long play would otherwise grow the DataCollector forever)


# ---------------------------------------------------------------------------- per-substrate view
@dataclasses.dataclass(frozen=True)
class View:
    """What the dashboard reads from one substrate's observation (per-cell numpy arrays)."""

    charge_label: str  # colour bar and plot legend of the charged fraction
    time_unit: str
    pool_unit: str
    pools: tuple[tuple[str, Callable], ...]  # (label, obs -> per-cell amount), plotted as means over cells
    ledger_unit: str
    ledgers: tuple[tuple[str, Callable], ...]  # (label, obs -> per-cell cumulative), plotted as tissue totals
    work_label: str
    work: Callable  # obs -> per-cell cumulative work (sizes the nodes by its rate)
    charge: Callable  # (model, obs) -> per-cell charged fraction in [0, 1]


def _bio_charge(model, obs):
    from sim.substrates.bio.kernels.thermo import energy_charge_of

    return energy_charge_of(np.asarray(obs["pools"]), model.params, xp=np)


def _species(name):
    from sim.substrates.bio.state import SPECIES

    i = SPECIES.index(name)
    return lambda obs: np.asarray(obs["pools"])[:, i]


def _kv_fraction(model, obs):
    cap = np.asarray(obs["kv_capacity"], float)
    return np.where(cap > 0, np.asarray(obs["kv_occupied"]) / np.where(cap > 0, cap, 1.0), 0.0)


def _llm_written(obs):
    # the tokens an instance wrote into KV caches: the analogy's "currency made" (sim.experiments.analogy_sides)
    return np.asarray(obs["tokens_in"]) + np.asarray(obs["tool_tokens"]) + np.asarray(obs["tokens_out"])


def _key(name):
    return lambda obs: np.asarray(obs[name])


VIEWS = {
    "bio": View(
        charge_label="energy charge", time_unit="s", pool_unit="mM",
        pools=(("ATP", _species("atp")), ("ADP", _species("adp")), ("AMP", _species("amp")),
               ("glucose", _species("glucose"))),
        ledger_unit="mM, summed over cells",
        ledgers=(("ATP made", _key("produced")), ("ATP spent", _key("spent")),
                 ("ATP sent over junctions", _key("transported_out"))),
        work_label="work", work=_key("work"), charge=_bio_charge),
    "generic": View(
        charge_label="charged fraction A/(A+D)", time_unit="time units", pool_unit="1",
        pools=(("charged A", _key("a")), ("discharged D", _key("d")), ("substrate S", _key("s"))),
        ledger_unit="1, summed over cells",
        ledgers=(("made", _key("produced")), ("spent", _key("spent")), ("sent over junctions", _key("transported_out")),
                 ("lost in transit", _key("lost"))),
        work_label="work", work=_key("work"), charge=lambda model, obs: np.asarray(obs["charged_fraction"])),
    "llm": View(
        charge_label="KV occupancy", time_unit="s", pool_unit="tokens",
        pools=(("KV occupied", _key("kv_occupied")), ("KV free", _key("kv_free"))),
        ledger_unit="tokens, summed over instances",
        ledgers=(("written to KV (made)", _llm_written), ("generated (work)", _key("tokens_out")),
                 ("prefilled", _key("tokens_in"))),
        work_label="tokens generated", work=_key("tokens_out"), charge=_kv_fraction),
}


# ---------------------------------------------------------------------------- config
def grid_rows(n: int) -> int:
    """The most rows (at most sqrt(n)) that divide ``n``: every cell count makes a grid."""
    return max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)


def dashboard_config(substrate: str = "generic_tissue", topology: str = "small_world", n_cells: int = 16,
                     demand_scale: float = 1.0, supply_scale: float = 1.0, conductance_scale: float = 1.0,
                     alpha: float = 2.0, differentiation: str = "gradient", seed: int = 0) -> dict:
    """The plain config of the dashboard's knobs (composed as ``python -m sim`` would, then validated
    by the model's substrate); raises :class:`~sim.errors.ConfigError` for a choice it refuses."""
    if substrate not in SUBSTRATES:
        raise ConfigError("substrate", substrate, "one of " + ", ".join(SUBSTRATES))
    if topology not in TOPOLOGIES:
        raise ConfigError("topology", topology, "one of " + ", ".join(TOPOLOGIES))
    if differentiation not in RULES:
        raise ConfigError("differentiation", differentiation, "one of " + ", ".join(RULES))
    n = int(n_cells)
    overrides = ["experiment=tissue", f"substrate={substrate}", f"topology={topology}", f"topology.n_cells={n}",
                 f"seed={int(seed)}", "replicates=1"]
    if topology == "grid" and n >= 1:
        overrides.append(f"topology.rows={grid_rows(n)}")
    if topology == "small_world" and n >= 3:
        overrides.append(f"topology.k={min(4, n - 1 - (n - 1) % 2)}")  # even, below n: a small tissue still builds
    if substrate != "llm":
        overrides += [f"params.demand_scale={float(demand_scale)}", f"params.supply_scale={float(supply_scale)}",
                      f"params.conductance_scale={float(conductance_scale)}", f"differentiation={differentiation}",
                      f"differentiation.alpha={float(alpha)}"]
        if differentiation != "fixed":
            # one move per cell per 5 time units (the multicellular experiment's pace): theta visibly
            # moves within a few dozen frames, slowly against the pools' relaxation
            overrides += ["differentiation.rate=0.2", "differentiation.noise=0.1", "differentiation.payoff_tau=2.0"]
    cfg = compose(overrides)
    if substrate == "llm":
        arrivals = cfg["substrate"]["arrivals"]
        arrivals["rate_per_s"] = float(arrivals["rate_per_s"]) * float(demand_scale)
        cfg["gpu"]["peak_tflops"] = float(cfg["gpu"]["peak_tflops"]) * float(supply_scale)
        cfg["gpu"]["bandwidth_tb_s"] = float(cfg["gpu"]["bandwidth_tb_s"]) * float(supply_scale)
        cfg["substrate"]["routing"] = bool(cfg["substrate"]["routing"]) and float(conductance_scale) > 0
    return cfg


def fit_dt(cfg: dict, halvings: int = 6):
    """``cfg`` validated and built by its substrate, with ``dt`` halved (at most ``halvings`` times)
    while the only objection is the explicit step's stability: a stiff corner of the sliders (fast
    supply with a convex trade-off, strong junctions) then runs with a smaller step instead of being
    refused. Returns (config, substrate, built, note); note is "" when dt was kept. Any other
    objection raises the substrate's ConfigError."""
    from sim.api import substrate_of
    from sim.config.validate import problems_of

    first = float(cfg["dt"])
    for attempt in range(halvings + 1):
        try:
            sub = substrate_of(cfg)
            sub.validate(cfg)
            built = sub.build(cfg)  # the build checks the stability of the differentiated rates too
        except ConfigError as exc:
            if attempt == halvings or any(p.key != "dt" for p in problems_of(exc)):
                raise
            cfg = {**cfg, "dt": float(cfg["dt"]) / 2}
            continue
        break
    dt = float(cfg["dt"])
    note = "" if dt == first else f"dt lowered from {first:g} to {dt:g} for a stable explicit step"
    return cfg, sub, built, note


def knob_notes(substrate: str, cfg: dict, settings: dict) -> str:
    """One line saying what the sliders set in this substrate's config."""
    if substrate == "llm":
        return (f"demand: {cfg['substrate']['arrivals']['rate_per_s']:.3g} requests/s per instance; "
                f"producer capacity: GPU peak x{settings['supply_scale']:g}; "
                f"transport: routing {'on' if cfg['substrate']['routing'] else 'off'}; "
                "alpha: not used (no differentiation)")
    return (f"demand_scale {settings['demand_scale']:g}, supply_scale {settings['supply_scale']:g}, "
            f"conductance_scale {settings['conductance_scale']:g}, alpha {settings['alpha']:g} "
            f"(differentiation: {settings['differentiation']})")


# ---------------------------------------------------------------------------- the model
class DashboardModel(SubstrateModel):
    """A :class:`SubstrateModel` on the JAX backend made from the dashboard's knobs (keyword
    arguments with defaults: SolaraViz rebuilds it from them on Reset).

    ``step()`` advances ``steps_per_frame`` engine steps and collects one row: simulated time,
    mean charged fraction and specialization index, the pools (means over cells) and the ledgers
    (tissue totals). A config the substrate refuses does not raise: the model keeps the message
    (``error``), has no agents and does not run, and the page shows the message.
    """

    def __init__(self, substrate: str = "generic_tissue", topology: str = "small_world", n_cells: int = 16,
                 demand_scale: float = 1.0, supply_scale: float = 1.0, conductance_scale: float = 1.0,
                 alpha: float = 2.0, differentiation: str = "gradient", steps_per_frame: int = 50, seed: int = 0):
        self.settings = dict(substrate=substrate, topology=topology, n_cells=int(n_cells), demand_scale=demand_scale,
                             supply_scale=supply_scale, conductance_scale=conductance_scale, alpha=alpha,
                             differentiation=differentiation, steps_per_frame=int(steps_per_frame), seed=int(seed))
        self.error = None
        self.steps_per_frame = max(1, int(steps_per_frame))
        # Play steps in a worker thread (and with Mesa's "Use Threads", draws in another): a drawing
        # reads a frame's numbers and history whole, never half of a step's update
        self.lock = threading.RLock()
        try:
            cfg = dashboard_config(substrate, topology, n_cells, demand_scale, supply_scale, conductance_scale,
                                   alpha, differentiation, seed)
            cfg, sub, built, dt_note = fit_dt(cfg)
            cache.configure(cfg.get("compile_cache", "auto"))
            super().__init__(substrate=sub, built=built, backend="jax", collect_every=0, collect_agents=False)
            self.cfg = cfg
        except ConfigError as exc:
            mesa.Model.__init__(self, rng=int(seed))
            self.error = f"{substrate} refused this config: {exc}"
            self.running = False
            self._t, self.dt = 0, 0.0
            self.datacollector = DataCollector()
            return
        self.view = VIEWS[self.substrate.name]
        self.notes = knob_notes(substrate, cfg, self.settings) + (f"; {dt_note}" if dt_note else "")
        self.dt = float(cfg["dt"])
        self.has_theta = self.substrate.differentiation is not None and "theta" in self.observation
        self.layout = _layout(self.graph, topology, self.n_cells)
        self.work_rate = np.zeros(self.n_cells)  # per cell over the last frame
        self._work = np.zeros(self.n_cells)
        reporters = {"time": lambda m: m.time_simulated, "charged fraction": lambda m: m.frame["charged fraction"],
                     "specialization index": lambda m: m.frame["specialization index"]}
        for label, _ in self.view.pools + self.view.ledgers:
            reporters[label] = lambda m, label=label: m.frame[label]
        self.datacollector = DataCollector(model_reporters=reporters)
        self._measure()
        self.datacollector.collect(self)

    @property
    def time_simulated(self) -> float:
        """Simulated time (the substrate's unit: s for bio and llm)."""
        return self.steps_taken * self.dt

    def step(self) -> None:
        if self.error is not None:
            return
        with self.lock:
            self._advance(self.steps_per_frame)
            self._measure()
            self.datacollector.collect(self)
            for table in self.datacollector.model_vars.values():
                del table[: max(0, len(table) - MAX_HISTORY)]

    def snapshot(self) -> dict:
        """What the page draws, copied under the lock: the frame's numbers, the per-cell arrays and
        the history (a DataFrame of the DataCollector's rows)."""
        with self.lock:
            return dict(frame=dict(self.frame), t=self.time_simulated, steps=self.steps_taken, alive=self.alive.copy(),
                        charge=self.charge.copy(), work_rate=self.work_rate.copy(),
                        history=self.datacollector.get_model_vars_dataframe())

    def _measure(self) -> None:
        """This frame's numbers: per-cell charge and work rate, and the reporters' values."""
        obs, view = self.observation, self.view
        self.alive = np.asarray(self.state.cells.alive, bool).reshape(self.n_cells)  # llm records no "alive"
        charge = np.asarray(view.charge(self, obs), float).reshape(self.n_cells)
        work = np.asarray(view.work(obs), float).reshape(self.n_cells)
        span = self.steps_per_frame * self.dt
        self.work_rate = np.maximum(work - self._work, 0.0) / span if self.steps_taken else np.zeros(self.n_cells)
        self._work = work
        self.charge = charge
        frame = {"charged fraction": float(charge[self.alive].mean()) if self.alive.any() else float("nan")}
        frame["specialization index"] = (float(specialization_index(np.asarray(obs["theta"], float)))
                                         if self.has_theta else float("nan"))
        for label, fn in view.pools:
            frame[label] = float(np.mean(fn(obs)))
        for label, fn in view.ledgers:
            frame[label] = float(np.sum(fn(obs)))
        self.frame = frame
        # the engine's guard does not run in the Mesa layer: a blow-up stops the play here, named
        if not (np.isfinite(charge).all() and np.isfinite([frame[lab] for lab, _ in view.pools + view.ledgers]).all()):
            self.error = f"the state went non-finite by t = {self.time_simulated:g} {view.time_unit}; Reset"
            self.running = False
        elif not self.alive.any():
            self.running = False  # nothing left to step: Mesa greys out play and step


def _layout(graph, topology: str, n: int) -> dict:
    """Node positions: a circle where the node order is the structure (ring, small world, complete),
    rows x columns for a grid (node i is row i // cols, as sim.topology numbers it), else
    Kamada-Kawai (deterministic, no seed to carry)."""
    if topology in CIRCULAR:
        return nx.circular_layout(graph)
    if topology == "grid":
        cols = n // grid_rows(n)
        return {i: (i % cols, -(i // cols)) for i in graph.nodes}
    if graph.number_of_edges() == 0:
        return nx.circular_layout(graph)
    return nx.kamada_kawai_layout(graph)


# ---------------------------------------------------------------------------- components
def _figure(width=5.6, height=3.4) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def _show(fig):
    return solara.FigureMatplotlib(fig, format="png", dpi=90)


def NetworkView(model):
    """The tissue: cells coloured by charged fraction, sized by work rate over the last frame, under
    the frame's numbers (:func:`Summary`)."""
    if model.error is not None:
        return solara.Error(model.error)
    snap, view = model.snapshot(), model.view
    fig, ax = _figure(5.6, 3.6)
    alive, rate = snap["alive"], snap["work_rate"]
    top = float(rate.max()) if rate.size and rate.max() > 0 else 1.0
    sizes = 60.0 + 540.0 * rate / top  # relative to the busiest cell: the title gives its rate
    nx.draw_networkx_edges(model.graph, model.layout, ax=ax, edge_color="0.75", width=0.8)
    living = [i for i in range(model.n_cells) if alive[i]]
    # fixed 0..1 colour scale: a cell's colour is its fraction, comparable across frames
    drawn = nx.draw_networkx_nodes(model.graph, model.layout, nodelist=living, ax=ax, node_color=snap["charge"][alive],
                                   cmap="viridis", vmin=0.0, vmax=1.0, node_size=sizes[alive], edgecolors="0.2",
                                   linewidths=0.6)
    if not alive.all():
        nx.draw_networkx_nodes(model.graph, model.layout, nodelist=[i for i in range(model.n_cells) if not alive[i]],
                               ax=ax, node_color="0.85", node_shape="X", node_size=80, edgecolors="firebrick")
    if living:
        fig.colorbar(drawn, ax=ax, label=view.charge_label, shrink=0.8)
    ax.set_title(f"{model.settings['substrate']} on {model.settings['topology']}: t = {snap['t']:.4g} {view.time_unit}"
                 f"\nsize: {view.work_label} rate (largest {top:.3g} per {view.time_unit})", fontsize=9)
    ax.set_aspect("equal")
    ax.set_axis_off()
    with solara.Column(gap="0px") as main:
        Summary(model, snap)
        _show(fig)
    return main


def Summary(model, snap):
    """The frame's numbers as text (what the browser test reads). Plain text, not solara.Markdown:
    Markdown loads mermaid from the CDN, one more front-end file to serve offline."""
    f, view = snap["frame"], model.view
    spec = f"{f['specialization index']:.4f}" if model.has_theta else "n/a (no differentiation)"
    with solara.Column(gap="0px", style={"font-size": "13px", "line-height": "1.35"}) as column:
        solara.Text(f"t = {snap['t']:.4g} {view.time_unit} ({snap['steps']} engine steps of dt {model.dt:g}) · "
                    f"alive {int(snap['alive'].sum())}/{model.n_cells} · mean {view.charge_label} "
                    f"{f['charged fraction']:.4f} · specialization index {spec}")
        solara.Text(f"knobs: {model.notes}", style={"color": "#666"})
    return column


def _lines(model, labels, ylabel, title, ylim=None):
    """A figure of history columns ``labels`` against simulated time."""
    fig, ax = _figure()
    df = model.snapshot()["history"]
    t = df["time"].to_numpy()
    for label in labels:
        ax.plot(t, df[label].to_numpy(), label=label, marker="." if len(t) < 3 else None)
    ax.set_xlabel(f"simulated time ({model.view.time_unit})")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return fig, ax


def PoolsPlot(model):
    if model.error is not None:
        return solara.Text("")
    fig, _ = _lines(model, [lab for lab, _ in model.view.pools], f"pool, mean over cells ({model.view.pool_unit})",
                    "pools")
    return _show(fig)


def LedgersPlot(model):
    if model.error is not None:
        return solara.Text("")
    fig, _ = _lines(model, [lab for lab, _ in model.view.ledgers], f"cumulative ({model.view.ledger_unit})", "ledgers")
    return _show(fig)


def StatePlot(model):
    """Mean charged fraction and the specialization index Var(theta) / (1/4), both in [0, 1]."""
    if model.error is not None:
        return solara.Text("")
    shown = ["charged fraction"] + (["specialization index"] if model.has_theta else [])
    fig, ax = _lines(model, shown, "fraction (1)", "charge and specialization" + ("" if model.has_theta else
                     " (llm: no theta)"), ylim=(-0.02, 1.02))
    ax.lines[0].set_label(f"mean {model.view.charge_label}")
    ax.legend(loc="best", fontsize=8)
    return _show(fig)


model_params = {
    "substrate": {"type": "Select", "value": "generic_tissue", "values": list(SUBSTRATES), "label": "substrate"},
    "topology": {"type": "Select", "value": "small_world", "values": list(TOPOLOGIES), "label": "topology"},
    # short labels: Mesa puts a slider's label left of its track, which a long label squeezes
    "n_cells": Slider("cells", 16, 4, 64, 4),
    "demand_scale": Slider("demand x", 1.0, 0.25, 4.0, 0.25),
    "supply_scale": Slider("supply x", 1.0, 0.25, 4.0, 0.25),
    "conductance_scale": Slider("conductance x", 1.0, 0.0, 4.0, 0.25),
    "alpha": Slider("alpha", 2.0, 0.25, 4.0, 0.25),
    "differentiation": {"type": "Select", "value": "gradient", "values": list(RULES), "label": "differentiation"},
    "steps_per_frame": Slider("steps/frame", 50, 1, 200, 1),
}

model = DashboardModel()
page = SolaraViz(
    model,
    components=[NetworkView, StatePlot, PoolsPlot, LedgersPlot],
    model_params=model_params,
    name="currency-sim: a tissue on its currency",
)
page  # noqa: B018  (solara serves the module's `page`)
