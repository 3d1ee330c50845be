"""Tissue topologies: networkx graphs from generators or files -> static edge arrays.

Every generator is seeded from the run seed, nodes are relabelled 0..n-1 in sorted order, and
each undirected junction appears once in the edge arrays (src < dst); transport handles both
directions.
"""

from __future__ import annotations

import os

import networkx as nx
import numpy as np

from sim.errors import ConfigError

KINDS = ("single", "ring", "grid", "small_world", "scale_free", "complete", "erdos_renyi", "file")
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_FILE_NODES = 2_000_000


def _int(cfg, key, minimum):
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"topology.{key}", value, f"an integer >= {minimum}")
    return value


def build_graph(cfg, seed: int = 0) -> nx.Graph:
    """Build the tissue graph described by the ``topology`` config group."""
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise ConfigError("topology.kind", kind, "one of " + ", ".join(KINDS))
    if kind == "file":
        g = load_graph_file(cfg.get("path"), cfg.get("format", "auto"))
    elif kind == "single":
        g = nx.empty_graph(1)
    else:
        n = _int(cfg, "n_cells", 1)
        if kind == "ring":
            g = nx.cycle_graph(n) if n > 2 else nx.path_graph(n)
        elif kind == "grid":
            rows = cfg.get("rows") or int(np.floor(np.sqrt(n)))
            rows = max(1, min(int(rows), n))
            if n % rows:
                raise ConfigError("topology.n_cells", n, f"a multiple of topology.rows={rows} for a grid")
            g = nx.grid_2d_graph(rows, n // rows, periodic=bool(cfg.get("periodic", False)))
        elif kind == "small_world":
            k = _int(cfg, "k", 2)
            if k >= n:
                raise ConfigError("topology.k", k, f"fewer neighbours than n_cells={n}")
            p = float(cfg.get("p", 0.1))
            if not 0.0 <= p <= 1.0:
                raise ConfigError("topology.p", p, "a probability in [0, 1]")
            g = nx.connected_watts_strogatz_graph(n, k, p, tries=1000, seed=seed)
        elif kind == "scale_free":
            m = _int(cfg, "m", 1)
            if m >= n:
                raise ConfigError("topology.m", m, f"fewer attachments than n_cells={n}")
            g = nx.barabasi_albert_graph(n, m, seed=seed)
        elif kind == "complete":
            g = nx.complete_graph(n)
        else:  # erdos_renyi
            p = float(cfg.get("p", 0.1))
            if not 0.0 <= p <= 1.0:
                raise ConfigError("topology.p", p, "a probability in [0, 1]")
            g = nx.gnp_random_graph(n, p, seed=seed)
    g = nx.convert_node_labels_to_integers(g, ordering="sorted")
    g.remove_edges_from(list(nx.selfloop_edges(g)))
    if cfg.get("require_connected", False) and g.number_of_nodes() > 1 and not nx.is_connected(g):
        raise ConfigError("topology.require_connected", True, "a connected graph (this one is not)")
    return g


def load_graph_file(path, fmt: str = "auto") -> nx.Graph:
    """Load a GraphML or edge-list file, refusing anything that is not a usable tissue."""
    if not path or not isinstance(path, str):
        raise ConfigError("topology.path", path, "a path to a GraphML (.graphml) or edge-list file")
    if not os.path.isfile(path):
        raise ConfigError("topology.path", path, "an existing file")
    size = os.path.getsize(path)
    if size == 0:
        raise ConfigError("topology.path", path, "a non-empty GraphML or edge-list file")
    if size > MAX_FILE_BYTES:
        raise ConfigError("topology.path", path, f"a file under {MAX_FILE_BYTES} bytes (it has {size})")
    if fmt == "auto":
        fmt = "graphml" if path.lower().endswith((".graphml", ".xml")) else "edgelist"
    try:
        if fmt == "graphml":
            g = nx.read_graphml(path)
        elif fmt == "edgelist":
            g = nx.read_edgelist(path, nodetype=str, data=False)
        else:
            raise ConfigError("topology.format", fmt, "one of auto, graphml, edgelist")
    except ConfigError:
        raise
    except Exception as exc:  # any parser failure becomes the project's own error
        raise ConfigError("topology.path", path, f"a readable {fmt} file ({type(exc).__name__}: {exc})") from None
    g = nx.Graph(g)  # undirected, no multi-edges
    g.remove_edges_from(list(nx.selfloop_edges(g)))
    if g.number_of_nodes() == 0:
        raise ConfigError("topology.path", path, "a graph with at least one node")
    if g.number_of_nodes() > MAX_FILE_NODES:
        raise ConfigError("topology.path", path, f"at most {MAX_FILE_NODES} nodes")
    return g


def edge_arrays(g: nx.Graph) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) int32 arrays with src < dst, sorted, one entry per undirected edge."""
    if g.number_of_edges() == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    e = np.array([(min(u, v), max(u, v)) for u, v in g.edges()], dtype=np.int64)
    e = e[np.lexsort((e[:, 1], e[:, 0]))]
    return e[:, 0].astype(np.int32), e[:, 1].astype(np.int32)
