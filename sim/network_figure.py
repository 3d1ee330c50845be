"""The tissue as a network: ``figures/network.png`` of a plain run (biology tissue, LLM serving
cluster, generic substrate).

One node per compartment (cell / model instance), one segment per junction, drawn on a layout of
the run's graph. A node's colour is its state at the end of the run, mean over replicates: the
energy charge (biology), the charged fraction A / (A + D) (generic), the KV cache occupied in % of
capacity (LLM); its area is proportional to the work it did over the run, mean over replicates:
biology's ``work`` in the events of ``summary.json``'s ``work_done_events`` (ions moved, amino acids
made, ...), the tokens an LLM instance generated, the generic substrate's ``work``. Compartments
dead at the end in most replicates are crossed out.

Where the graph comes from. ``results.nc`` keeps it as two attributes, ``edge_src`` and
``edge_dst`` (int32 cell indices, one entry per undirected junction, src < dst, sorted: the
engine's own edge arrays), written by each substrate's ``to_dataset`` with :func:`edge_attributes`.
Attributes, not variables on an ``edge`` dimension: every data variable of a run's dataset carries
the ``replicate`` dimension, and the tools that split and compare ensembles select every variable
by replicate; the graph is fixed for the run, metadata like ``volume_l``. Stored, not rebuilt from
the saved config: the dataset is all a figure writer receives and all ``python -m sim.plot`` can
count on, and a ``topology=file`` graph or a seeded random graph rebuilt later depends on the file
still being there and on networkx drawing the same graph from the same seed in another version.
A dataset without the attributes (written before they existed, a reduced ``output.cells=summary``
one) or of one compartment gets no network figure.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EDGE_SRC, EDGE_DST = "edge_src", "edge_dst"
SPRING_MAX = 400  # networkx's spring layout is dense (fast) below 500 nodes; ~3 s at 500, ~8 s at 1,000 here
MAX_CELLS = 2000  # beyond this the nodes are sub-pixel dots: no figure (a note says so)
MIN_FRACTION_SPAN = 0.02  # a colour scale of a fraction never spans less (noise would look like structure)
KV_MIN_PCT = 5.0  # the KV colour scale shows at least 0-5% (as serving.png's KV panel)


def edge_attributes(graph) -> dict:
    """``{"edge_src": int32[E], "edge_dst": int32[E]}`` of a networkx graph (the engine's edge arrays)."""
    from sim.topology import edge_arrays

    src, dst = edge_arrays(graph)
    return {EDGE_SRC: np.asarray(src, np.int32), EDGE_DST: np.asarray(dst, np.int32)}


def edges_of(ds) -> tuple[np.ndarray, np.ndarray] | None:
    """(src, dst) stored in ``ds.attrs``, or None (netCDF reads a one-element attribute back as a scalar)."""
    if EDGE_SRC not in ds.attrs or EDGE_DST not in ds.attrs:
        return None
    return (np.atleast_1d(np.asarray(ds.attrs[EDGE_SRC])).astype(np.int64),
            np.atleast_1d(np.asarray(ds.attrs[EDGE_DST])).astype(np.int64))


@dataclass(frozen=True)
class NodeView:
    """What a substrate's nodes show: colour (end state) and area (work done), with their labels."""

    colour: np.ndarray  # (cell,) end of the run, mean over replicates
    colour_label: str  # colour bar label, unit in parentheses
    limits: tuple[float, float]
    work: np.ndarray  # (cell,) cumulative at the end, mean over replicates
    work_unit: str
    alive: np.ndarray  # (cell,) share of replicates in which the compartment is alive at the end
    title: str
    nodes: str  # what a node is, plural


def _end(x) -> np.ndarray:
    """Last record, mean over replicates: (cell,)."""
    return np.asarray(x.isel(time=-1).mean("replicate").values, float)


def _fraction_limits(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    span = max(hi - lo, MIN_FRACTION_SPAN)
    mid = 0.5 * (lo + hi)
    lo, hi = mid - 0.55 * span, mid + 0.55 * span
    if lo < 0.0:
        lo, hi = 0.0, min(1.0, hi - lo)
    if hi > 1.0:
        lo, hi = max(0.0, lo - (hi - 1.0)), 1.0
    return lo, hi


def node_view(ds) -> NodeView | None:
    """The colour and size of the nodes for this dataset's substrate, or None when it has neither."""
    sub = str(ds.attrs.get("substrate", ""))
    alive = _end(ds["alive"].astype(float)) if "alive" in ds else None
    if "energy_charge" in ds and "work" in ds:  # biology
        from sim.substrates.bio.results import molecules_per_mm

        colour = _end(ds["energy_charge"])
        k = molecules_per_mm(ds) if "volume_l" in ds.attrs else 1.0
        unit = "molecules" if "volume_l" in ds.attrs else str(ds["work"].attrs.get("units", "1"))
        return NodeView(colour, "energy charge at the end (1)", _fraction_limits(colour), _end(ds["work"]) * k, unit,
                        alive if alive is not None else np.ones_like(colour), "biology tissue", "cells")
    if "kv_occupied" in ds and "kv_capacity" in ds and "tokens_out" in ds:  # LLM serving
        pct = 100.0 * _end(ds["kv_occupied"] / ds["kv_capacity"])
        top = min(100.0, max(KV_MIN_PCT, 1.25 * float(np.nanmax(pct))))
        return NodeView(pct, "KV cache occupied at the end (% of capacity)", (0.0, top), _end(ds["tokens_out"]),
                        "tokens", np.ones_like(pct), "LLM serving cluster", "model instances")
    if "charged_fraction" in ds and "work" in ds:  # generic (and any substrate recording these two)
        colour = _end(ds["charged_fraction"])
        unit = str(ds["work"].attrs.get("units", "1"))
        return NodeView(colour, "charged fraction A / (A + D) at the end (1)", _fraction_limits(colour),
                        _end(ds["work"]), unit, alive if alive is not None else np.ones_like(colour),
                        f"{sub or 'generic'} tissue", "compartments")
    return None


def layout(n: int, src, dst) -> np.ndarray:
    """(n, 2) node positions: spring layout (seeded, so a redraw is the same picture) up to
    :data:`SPRING_MAX` nodes, the spectral layout (sparse eigenvectors, fast) beyond."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(np.asarray(src).tolist(), np.asarray(dst).tolist()))
    if n <= SPRING_MAX or g.number_of_edges() == 0:
        pos = nx.spring_layout(g, seed=0)
    else:
        pos = nx.spectral_layout(g)
    return np.array([pos[i] for i in range(n)], float)


def _sizes(work: np.ndarray, n: int) -> tuple[np.ndarray, float, float]:
    """Marker areas (points^2) proportional to the work, from a floor so an idle node stays visible."""
    s_max = float(np.clip(24000.0 / max(n, 1), 12.0, 700.0))
    s_min = 0.12 * s_max
    top = float(np.nanmax(work)) if work.size and np.isfinite(np.nanmax(work)) else 0.0
    if top <= 0:
        return np.full(work.shape, s_min), s_min, s_max
    return s_min + (s_max - s_min) * np.clip(work / top, 0, 1), s_min, s_max


def network_figure(ds):
    """The run's graph, nodes coloured by the end state and sized by work done (module docstring);
    None when the dataset holds no graph, one compartment, or more than :data:`MAX_CELLS`."""
    edges = edges_of(ds)
    if edges is None or "cell" not in ds.dims or "replicate" not in ds.dims:
        return None
    n = int(ds.sizes["cell"])
    if n < 2:
        return None
    if n > MAX_CELLS:
        print(f"note: no network figure: {n} compartments (more than {MAX_CELLS}) would be sub-pixel dots",
              file=sys.stderr)
        return None
    view = node_view(ds)
    if view is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    src, dst = edges
    pos = layout(n, src, dst)
    fig, ax = plt.subplots(figsize=(7.2, 6.4))
    if src.size:
        lw = float(np.clip(40.0 / np.sqrt(src.size), 0.2, 1.2))
        ax.add_collection(LineCollection(np.stack([pos[src], pos[dst]], axis=1), colors="0.65", linewidths=lw,
                                         zorder=1))
    sizes, s_min, s_max = _sizes(view.work, n)
    lo, hi = view.limits
    sc = ax.scatter(pos[:, 0], pos[:, 1], s=sizes, c=view.colour, cmap="viridis", vmin=lo, vmax=hi,
                    edgecolors="k", linewidths=0.4, zorder=2)
    cb = fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label(view.colour_label)
    # the size key: what the largest and a half-size node stand for, in the work's unit
    top = float(np.nanmax(view.work)) if view.work.size else 0.0
    handles = []
    for share in ((1.0, 0.5) if top > 0 else ()):
        area = s_min + (s_max - s_min) * share
        handles.append(Line2D([], [], ls="", marker="o", markersize=np.sqrt(area), markerfacecolor="0.85",
                              markeredgecolor="k", label=f"work done {share * top:.3g} ({view.work_unit})"))
    dead = view.alive < 0.5
    if dead.any():
        ax.scatter(pos[dead, 0], pos[dead, 1], marker="x", s=0.6 * s_max, c="C3", linewidths=1.5, zorder=3)
        handles.append(Line2D([], [], ls="", marker="x", color="C3", markersize=8,
                              label=f"dead at the end in most replicates ({int(dead.sum())} of {n})"))
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=len(handles),
                  frameon=False, handlelength=2.5, handletextpad=0.8, columnspacing=2.0, borderpad=0.8)
    ax.set_axis_off()
    ax.set_aspect("equal")
    pad = 0.08 * max(float(np.ptp(pos[:, 0])), float(np.ptp(pos[:, 1])), 1e-9)
    ax.set_xlim(pos[:, 0].min() - pad, pos[:, 0].max() + pad)
    ax.set_ylim(pos[:, 1].min() - pad, pos[:, 1].max() + pad)
    t_end = float(ds["time"].values[-1])
    t_unit = ds["time"].attrs.get("units", "")
    n_rep = int(ds.sizes["replicate"])
    ax.set_title(f"{view.title}: {n} {view.nodes}, {src.size} junctions\n"
                 f"colour: state at t = {t_end:g}{' ' + t_unit if t_unit and t_unit != '1' else ''}; area: work done; "
                 f"mean of {n_rep} replicate{'s' if n_rep > 1 else ''}", fontsize=9)
    fig.tight_layout()
    return fig


def network_figures(ds, out_dir) -> list[Path]:
    """``figures/network.png`` (:func:`network_figure`), or nothing when there is no graph to draw."""
    from sim.plot import _save

    fig = network_figure(ds)
    if fig is None:
        return []
    out = Path(out_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    return [_save(fig, out / "network.png")]
