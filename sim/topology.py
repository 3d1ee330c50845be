"""Tissue topologies: networkx graphs from generators or files -> static edge arrays.

Every generator is seeded from the run seed, nodes are relabelled 0..n-1 in sorted order, and
each undirected junction appears once in the edge arrays (src < dst); transport handles both
directions.

A graph file (``topology=file``) may carry more than junctions (:func:`file_inputs`):

- the edge attribute ``weight`` (an edge list's third column, ``u v 0.5``, or ``{'weight': 0.5}``)
  multiplies that junction's conductance: its conductance is ``weight x`` the substrate's
  ``transport.conductance_per_s`` (bio) or ``transport.conductance`` (generic); 1 where absent;
- the node attribute ``demand`` multiplies that cell's consumer capacity (bio: on top of the drawn
  ``consumers.demand_cv`` heterogeneity; generic: each consumer's ``capacity``), like a per-cell
  ``params.demand_scale``; 1 where absent (or the GraphML key's default);
- node labels become the ``cell`` coordinate of ``results.nc`` (cell i is the i-th label in sorted
  order, as the engine numbers them).

Both must be finite numbers >= 0 (else the file is refused). Anything else in the file (other
attributes, graph data, self-loops, a junction listed twice, edge directions, and ``weight`` /
``demand`` on a substrate without junction conductances or per-cell demand: llm) is ignored with
one :class:`GraphFileWarning` line naming all of it.

An edge list is read by C parsers into arrays (:mod:`sim.graph_files`: ~0.3-1 us per line; the
graph is a :class:`~sim.graph_files.FileGraph`, which builds its networkx adjacency only if
something reads it); files that parser hands back, and GraphML, are read as before.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import math
import os
import warnings

import networkx as nx
import numpy as np

from sim import graph_files
from sim.errors import ConfigError
from sim.graph_files import FileGraph

KINDS = ("single", "ring", "grid", "small_world", "scale_free", "complete", "erdos_renyi", "file")
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_FILE_NODES = 2_000_000
MAX_FILE_EDGES = 20_000_000
FORMATS = ("auto", "graphml", "edgelist")
MAX_CELLS = 10_000_000  # any generated tissue
MAX_GENERATED_EDGES = 5_000_000  # edges (or, for erdos_renyi, node pairs / 10) a generator may make
WEIGHT = "weight"  # edge attribute of a graph file: multiplies the junction's conductance
NODE_PARAMS = ("demand",)  # node attributes of a graph file a substrate may read (per-cell multipliers)
# graph-level keys this module keeps on a file's graph (named so that no file's own graph data meets them)
SOURCE, DROPPED, CELL_LABELS = "sim.topology.source", "sim.topology.dropped", "sim.topology.cell_labels"
# ... and those networkx's GraphML reader keeps: none of them is data of the file left unread
_OWN_KEYS = (SOURCE, DROPPED, CELL_LABELS, "node_default", "edge_default")


class GraphFileWarning(UserWarning):
    """Part of a graph file that a run does not use (one line naming all of it)."""


def _int(cfg, key, minimum):
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"topology.{key}", value, f"an integer >= {minimum}")
    return value


def _prob(cfg, key="p", default=0.1):
    value = cfg.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"topology.{key}", value, "a probability in [0, 1]")
    return float(value)


def _cap(n: int, edges: float, what: str) -> None:
    if n > MAX_CELLS:
        raise ConfigError("topology.n_cells", n, f"at most {MAX_CELLS} cells")
    if edges > MAX_GENERATED_EDGES:
        raise ConfigError("topology.n_cells", n, f"a tissue of at most {MAX_GENERATED_EDGES} junctions ({what})")


def build_graph(cfg, seed: int = 0) -> nx.Graph:
    """Build the tissue graph described by the ``topology`` config group."""
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise ConfigError("topology.kind", kind, "one of " + ", ".join(KINDS))
    if kind == "file":
        g = load_graph_file(cfg.get("path"), cfg.get("format", "auto"))
        if isinstance(g, FileGraph) and g.lazy is not None:  # an edge list read into arrays (sim.graph_files)
            g = g.relabelled()  # (cells 0..n-1 in sorted label order already: nothing to convert)
            g.graph[CELL_LABELS] = list(g.lazy.labels)
            _check_connected(cfg, g)
            return g
        # the file's own names for its cells, in the order the engine numbers them (results.nc's cell)
        g.graph[CELL_LABELS] = sorted(g.nodes)
    elif kind == "single":
        g = nx.empty_graph(1)
    else:
        n = _int(cfg, "n_cells", 1)
        if kind == "ring":
            _cap(n, n, "a ring has n_cells")
            g = nx.cycle_graph(n) if n > 2 else nx.path_graph(n)
        elif kind == "grid":
            rows = cfg.get("rows")
            if rows is None:
                rows = max(1, int(np.floor(np.sqrt(n))))
            rows = _int({"rows": rows}, "rows", 1)
            if rows > n or n % rows:
                raise ConfigError("topology.n_cells", n, f"a multiple of topology.rows={rows} for a grid")
            _cap(n, 2 * n, "a grid has about 2 n_cells")
            g = nx.grid_2d_graph(rows, n // rows, periodic=bool(cfg.get("periodic", False)))
        elif kind == "small_world":
            k = _int(cfg, "k", 2)
            if k >= n:
                raise ConfigError("topology.k", k, f"fewer neighbours than n_cells={n}")
            p = _prob(cfg)
            _cap(n, n * k / 2, "a small world has n_cells * k / 2")
            try:
                g = nx.connected_watts_strogatz_graph(n, k, p, tries=1000, seed=seed)
            except nx.NetworkXException as exc:
                raise ConfigError("topology.p", p, f"a rewiring probability that leaves the graph connected ({exc})") from None
        elif kind == "scale_free":
            m = _int(cfg, "m", 1)
            if m >= n:
                raise ConfigError("topology.m", m, f"fewer attachments than n_cells={n}")
            _cap(n, n * m, "a scale-free graph has about n_cells * m")
            g = nx.barabasi_albert_graph(n, m, seed=seed)
        elif kind == "complete":
            _cap(n, n * (n - 1) / 2, "a complete graph has n_cells (n_cells - 1) / 2")
            g = nx.complete_graph(n)
        else:  # erdos_renyi: the generator visits every pair of cells
            p = _prob(cfg)
            _cap(n, n * (n - 1) / 20, "erdos_renyi visits n_cells^2 / 2 pairs; at most 10x the junction cap")
            g = nx.gnp_random_graph(n, p, seed=seed)
    g = nx.convert_node_labels_to_integers(g, ordering="sorted")
    g.remove_edges_from(list(nx.selfloop_edges(g)))
    _check_connected(cfg, g)
    return g


def _check_connected(cfg, g: nx.Graph) -> None:
    if not cfg.get("require_connected", False) or g.number_of_nodes() <= 1:
        return
    edges = _lazy_arrays(g)
    if edges is None:
        parts = 1 if nx.is_connected(g) else nx.number_connected_components(g)
    else:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = g.number_of_nodes()
        adjacency = coo_matrix((np.ones(len(edges.src), np.int8), (edges.src, edges.dst)), shape=(n, n))
        parts = connected_components(adjacency, directed=False, return_labels=False)
    if parts > 1:
        raise ConfigError("topology.require_connected", True, f"a connected graph (this one has {parts} components)")


def _lazy_arrays(g) -> graph_files.EdgeList | None:
    """The arrays of an edge list read by :mod:`sim.graph_files` and relabelled by :func:`build_graph`
    (cells 0..n-1), while its networkx adjacency is not built; None for any other graph."""
    if isinstance(g, FileGraph) and g.is_relabelled:
        return g.lazy
    return None


def _refuse(path, allowed: str):
    raise ConfigError("topology.path", path, allowed)


def _edgelist_line_ok(tokens: list[str], line: str) -> bool:
    if len(tokens) == 2:
        return True
    if len(tokens) >= 3 and tokens[2].startswith("{"):
        return line.endswith("}")
    if len(tokens) == 3:
        try:
            return math.isfinite(float(tokens[2]))
        except ValueError:
            return False
    return False


def _edge_data(tokens: list[str], line: str, number: int, path) -> dict:
    """The data of an edge-list line with more than ``u v``: ``{"weight": w}`` for a number, the
    mapping of a ``{...}`` literal (refused, with its line number, if it is not one)."""
    if not tokens[2].startswith("{"):
        return {WEIGHT: float(tokens[2])}  # (checked finite by _edgelist_line_ok)
    literal = line.split(None, 2)[2]
    try:
        data = ast.literal_eval(literal)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        data = None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        shown = literal if len(literal) <= 60 else literal[:57] + "..."
        _refuse(path, f"edge data that is a Python mapping with string keys, e.g. {{'weight': 0.5}}; line {number} "
                      f"reads {shown!r}")
    return data


def _parse_edgelist(text: str, path) -> nx.Graph:
    """Strict whitespace edge list: ``u v``, ``u v weight`` or ``u v {data}`` per line; ``#`` comments.

    The reference loader, line by line in Python (~20 us per line): :func:`load_graph_file` reads
    an edge list with :func:`sim.graph_files.parse` first (C parsers and arrays, ~0.3-1 us per
    line), which gives the same graph, refusals and warnings, and leaves to this one the files it
    does not read (``{data}`` literals, malformed lines: refused here with their line number, and
    rarer things: sim/graph_files.py).

    Stricter than ``networkx.read_edgelist``, which silently skips lines it cannot read: a
    malformed line is refused with its line number instead of quietly dropping a junction.

    Returns the finished tissue graph of the file (what :func:`load_graph_file` returns): simple
    and undirected, self-loops dropped (a file of nothing but self-loops is refused), integer
    labels as ints (:func:`_natural_labels`), nodes in order of first appearance.

    Linear in the number of lines, and built once. Counting the graph's edges after every line
    (``Graph.number_of_edges`` walks every node) made this quadratic: 40k lines took 109 s. Now the
    lines are checked and their ends collected in plain lists, the labels are converted once, and
    one ``nx.Graph`` is built from them (``add_nodes_from`` / ``add_edges_from``), with none of the
    graph copies that relabelling and de-looping a networkx graph would make (each a pass that, at
    1e6 lines, costs more than the parsing). The caps are checked as the lines are read, so an
    oversized file is refused at the line that crosses them: distinct cells with a dict, distinct
    junctions with a set that is only built once the number of lines passes :data:`MAX_FILE_EDGES`
    (below it the distinct junctions cannot pass the cap either).
    """
    nodes: dict[str, None] = {}  # insertion-ordered: the graph's node order
    edges: list[tuple] = []  # junctions between distinct cells, in line order: (u, v) or (u, v, data)
    loops: set[str] = set()  # cells with a self-loop line (dropped, but counted as edges by the cap)
    with_data = False  # a line with a weight or {data}: only then are the values checked (a pass over the edges)
    distinct: set | None = None
    max_nodes, max_edges = MAX_FILE_NODES, MAX_FILE_EDGES
    for number, raw in enumerate(text.splitlines(), start=1):
        line = (raw.partition("#")[0] if "#" in raw else raw).strip()
        if not line:
            continue
        tokens = line.split()
        if len(tokens) != 2 and not _edgelist_line_ok(tokens, line):
            shown = raw.strip()
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            _refuse(path, f"an edge list with 'u v' (optionally a weight or {{data}}) on every line; line {number} reads {shown!r}")
        u, v = tokens[0], tokens[1]
        nodes[u] = None
        nodes[v] = None
        if len(nodes) > max_nodes:
            _refuse(path, f"a graph with at most {max_nodes} nodes")
        if u == v:
            loops.add(u)
        else:
            if len(tokens) == 2:
                edges.append((u, v))
            else:
                edges.append((u, v, _edge_data(tokens, line, number, path)))
                with_data = True
        if distinct is not None:
            distinct.add((u, v) if u <= v else (v, u))
        elif len(edges) + len(loops) > max_edges:
            distinct = {(e[0], e[1]) if e[0] <= e[1] else (e[1], e[0]) for e in edges} | {(a, a) for a in loops}
        if distinct is not None and len(distinct) > max_edges:
            _refuse(path, f"a graph with at most {max_edges} edges")
    if not nodes:
        _refuse(path, "a graph with at least one node")
    if loops and not edges:
        _refuse(path, "a graph with junctions between distinct cells (every edge in this file is a self-loop)")
    labels = _natural_mapping(nodes)
    g = nx.Graph()
    if labels is None:
        g.add_nodes_from(nodes)
        g.add_edges_from(edges)
    else:
        g.add_nodes_from(labels.values())
        g.add_edges_from([(labels[e[0]], labels[e[1]], *e[2:]) for e in edges])
    g.graph.update({SOURCE: path, DROPPED: _dropped(len(loops), len(edges) - g.number_of_edges(), directed=False)})
    return _check_values(g, path) if with_data else g


def _dropped(loops: int, duplicates: int, directed: bool) -> list[str]:
    """What loading a file left out, for the warning of :func:`file_inputs`."""
    out = [f"{loops} self-loop{'s' if loops != 1 else ''}"] if loops else []
    if duplicates:  # the graph keeps one edge (and its data: the last one read) per pair of cells
        out.append(f"{duplicates} repeated junction{'s' if duplicates != 1 else ''} (one kept)")
    if directed:
        out.append("edge directions (junctions carry currency both ways)")
    return out


def _natural_mapping(labels) -> dict | None:
    """label -> int where every label is an integer ("0", "1", "10") and no two give the same
    int ("01" and "1"); None where the labels stay as they are."""
    try:
        mapping = {u: int(str(u)) for u in labels}
    except ValueError:
        return None
    if len(set(mapping.values())) != len(mapping):
        return None
    return mapping


def _check_graphml(data: bytes, path) -> None:
    """What networkx lets through: nodes without ids, edges without both ends or to undeclared
    nodes (it would invent a node called "None"). Parsed with expat, which refuses entity bombs."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(data)

    def local(tag):
        return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""

    if local(root.tag) != "graphml":
        _refuse(path, f"a GraphML document (its root element is <{local(root.tag)}>)")
    nodes = set()
    for el in root.iter():
        if local(el.tag) == "node":
            nid = el.get("id")
            if not nid:
                _refuse(path, "GraphML whose every <node> has a non-empty id")
            nodes.add(nid)
    for el in root.iter():
        if local(el.tag) == "edge":
            src, dst = el.get("source"), el.get("target")
            if not src or not dst:
                _refuse(path, "GraphML whose every <edge> has a source and a target")
            missing = [n for n in (src, dst) if n not in nodes]
            if missing:
                _refuse(path, f"GraphML whose edges join declared nodes (node {missing[0]!r} is not declared)")


def _natural_labels(g: nx.Graph) -> nx.Graph:
    """Labels that are all integers ("0", "1", "10") become ints, so cell i is node i of the file."""
    mapping = _natural_mapping(g.nodes)
    return g if mapping is None else nx.relabel_nodes(g, mapping)


def load_graph_file(path, fmt: str = "auto") -> nx.Graph:
    """Load a GraphML or edge-list file, refusing anything that is not a usable tissue.

    Every problem (missing, empty, enormous, unreadable, malformed, binary, no nodes, only
    self-loops) raises :class:`~sim.errors.ConfigError` naming ``topology.path``; nothing else
    escapes. Self-loops are dropped (a cell has no junction with itself); a file whose edges
    are all self-loops is refused. Connectedness is checked by :func:`build_graph`.
    """
    if not path or not isinstance(path, (str, os.PathLike)):
        _refuse(path, "a path to a GraphML (.graphml) or edge-list file")
    path = os.fspath(path)
    if fmt not in FORMATS:
        raise ConfigError("topology.format", fmt, "one of " + ", ".join(FORMATS))
    if not os.path.isfile(path):
        _refuse(path, "an existing file")
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            _refuse(path, f"a file of at most {MAX_FILE_BYTES} bytes (it has {size})")
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        _refuse(path, f"a readable file ({type(exc).__name__}: {exc.strerror or exc})")
    if len(data) > MAX_FILE_BYTES:
        _refuse(path, f"a file of at most {MAX_FILE_BYTES} bytes")
    if not data.strip():
        _refuse(path, "a non-empty GraphML or edge-list file")
    if fmt == "auto":
        head = data.lstrip()[:512].lower()
        fmt = "graphml" if path.lower().endswith((".graphml", ".xml")) or head.startswith((b"<?xml", b"<graphml")) else "edgelist"
    try:
        if fmt == "graphml":
            _check_graphml(data, path)
            g = nx.read_graphml(io.BytesIO(data))
        else:
            if b"\x00" in data:
                _refuse(path, "a text edge list (this file is binary)")
            if not data.isascii():  # (ASCII is UTF-8)
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    _refuse(path, f"a UTF-8 text edge list (byte {exc.start} is not UTF-8)")
            try:  # arrays read by C code (sim.graph_files); None: a file only the line-by-line parser reads
                edges = graph_files.parse(data, path, MAX_FILE_NODES, MAX_FILE_EDGES)
            except ConfigError:
                raise
            except Exception:  # noqa: BLE001 - (a fault of the fast path: the reference parser decides)
                edges = None
            if edges is not None:
                return FileGraph.from_edgelist(edges, {SOURCE: path, DROPPED: edges.dropped})
            return _parse_edgelist(data.decode("utf-8"), path)  # (already the finished graph: no copies below)
    except ConfigError:
        raise
    except Exception as exc:  # any parser failure (XML, GraphML schema, recursion, memory) -> ConfigError
        msg = " ".join(str(exc).split())
        msg = msg if len(msg) <= 120 else msg[:117] + "..."
        _refuse(path, f"a valid {fmt} file ({type(exc).__name__}: {msg})")
    directed, n_file_edges = g.is_directed(), g.number_of_edges()
    if g.is_directed() or g.is_multigraph():
        g = nx.Graph(g.to_undirected() if g.is_directed() else g)  # undirected, no multi-edges
    if g.number_of_nodes() == 0:
        _refuse(path, "a graph with at least one node")
    if g.number_of_nodes() > MAX_FILE_NODES:
        _refuse(path, f"a graph with at most {MAX_FILE_NODES} nodes (it has {g.number_of_nodes()})")
    if g.number_of_edges() > MAX_FILE_EDGES:
        _refuse(path, f"a graph with at most {MAX_FILE_EDGES} edges (it has {g.number_of_edges()})")
    loops = list(nx.selfloop_edges(g))
    if loops and len(loops) == g.number_of_edges():
        _refuse(path, "a graph with junctions between distinct cells (every edge in this file is a self-loop)")
    g.remove_edges_from(loops)
    g = _natural_labels(nx.Graph(g))
    g.graph.update({SOURCE: path, DROPPED: _dropped(len(loops), n_file_edges - len(loops) - g.number_of_edges(), directed)})
    return _check_values(g, path)


def _check_values(g: nx.Graph, path) -> nx.Graph:
    """Refuse a ``weight`` (edges) or ``demand`` (nodes) that is not a finite number >= 0, naming
    the first such junction or cell; a key default declared in GraphML is checked as well."""

    def bad(value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range
            return True
        return not math.isfinite(value) or value < 0

    def shown(value) -> str:
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."

    defaults = (g.graph.get("edge_default") or {}, g.graph.get("node_default") or {})
    if WEIGHT in defaults[0] and bad(defaults[0][WEIGHT]):
        _refuse(path, f"an edge weight (a conductance multiplier) that is a finite number >= 0; the GraphML default "
                      f"is {shown(defaults[0][WEIGHT])}")
    for name in NODE_PARAMS:
        if name in defaults[1] and bad(defaults[1][name]):
            _refuse(path, f"a node {name} (a per-cell multiplier) that is a finite number >= 0; the GraphML default "
                          f"is {shown(defaults[1][name])}")
    for u, v, w in g.edges(data=WEIGHT):
        if w is not None and bad(w):
            _refuse(path, f"an edge weight (a conductance multiplier) that is a finite number >= 0; junction {u}-{v} "
                          f"has {shown(w)}")
    for name in NODE_PARAMS:
        for node, value in g.nodes(data=name):
            if value is not None and bad(value):
                _refuse(path, f"a node {name} (a per-cell multiplier) that is a finite number >= 0; cell {node} has "
                              f"{shown(value)}")
    return g


def edge_arrays(g: nx.Graph) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) int32 arrays with src < dst, sorted, one entry per undirected edge."""
    edges = _lazy_arrays(g)
    if edges is not None:
        return edges.src.astype(np.int32), edges.dst.astype(np.int32)
    if g.number_of_edges() == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    e = np.array([(min(u, v), max(u, v)) for u, v in g.edges()], dtype=np.int64)
    e = e[np.lexsort((e[:, 1], e[:, 0]))]
    return e[:, 0].astype(np.int32), e[:, 1].astype(np.int32)


@dataclasses.dataclass(frozen=True)
class FileInputs:
    """What a graph file sets beyond its junctions (ones for a generated graph)."""

    weight: np.ndarray  # per junction, in :func:`edge_arrays` order: multiplies its conductance
    demand: np.ndarray  # per cell (0..n-1): multiplies its consumer capacity


def _names(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")


def file_inputs(graph: nx.Graph, src, dst, *, substrate: str, conductance_key: str | None = None,
                demand: bool = False) -> FileInputs:
    """The edge weights and node demands of a graph file for a substrate's builder.

    ``conductance_key``: the config key a weight multiplies (None: the substrate has no junction
    conductance and weights are ignored); ``demand``: whether the substrate reads the node
    attribute ``demand``. Everything in the file the substrate does not use is named in one
    :class:`GraphFileWarning` line. A generated graph gives ones and no warning."""
    n = graph.number_of_nodes()
    weight, dem = np.ones(len(src)), np.ones(n)
    path = graph.graph.get(SOURCE)
    if path is None:
        return FileInputs(weight, dem)
    edge_default = graph.graph.get("edge_default") or {}
    node_default = graph.graph.get("node_default") or {}
    used_edge = {WEIGHT} if conductance_key else set()
    used_node = {"demand"} if demand else set()
    arrays = _lazy_arrays(graph)
    if arrays is not None:  # an edge list as arrays: weights (NaN where a line gives none), no node attributes
        if not (np.array_equal(arrays.src, src) and np.array_equal(arrays.dst, dst)):
            raise ValueError("file_inputs needs the (src, dst) of edge_arrays(graph)")
        edge_keys, node_keys = ({WEIGHT} if arrays.weight is not None else set()), set()
        if WEIGHT in used_edge & edge_keys:
            weight = np.where(np.isnan(arrays.weight), 1.0, arrays.weight)
    else:
        # "id": the GraphML <edge id=...> networkx keeps as data: a name, not a value of the tissue
        edge_keys = {k for _, _, d in graph.edges(data=True) for k in d if k != "id"} | set(edge_default)
        node_keys = {k for _, d in graph.nodes(data=True) for k in d} | set(node_default)
    if arrays is None and WEIGHT in used_edge & edge_keys:
        w0 = float(edge_default.get(WEIGHT, 1.0))
        triples = [(min(u, v), max(u, v), float(w)) for u, v, w in graph.edges(data=WEIGHT, default=w0)]
        e = np.array(triples, dtype=np.float64).reshape(-1, 3)
        order = np.lexsort((e[:, 1], e[:, 0]))  # the order of edge_arrays
        if not (np.array_equal(e[order, 0], src) and np.array_equal(e[order, 1], dst)):
            raise ValueError("file_inputs needs the (src, dst) of edge_arrays(graph)")
        weight = e[order, 2]
    if arrays is None and "demand" in used_node & node_keys:
        d0 = float(node_default.get("demand", 1.0))
        dem = np.array([float(graph.nodes[i].get("demand", d0)) for i in range(n)])
    ignored = []
    if edge_keys - used_edge:
        ignored.append("edge attributes " + _names(edge_keys - used_edge))
    if node_keys - used_node:
        ignored.append("node attributes " + _names(node_keys - used_node))
    graph_keys = [k for k in graph.graph if k not in _OWN_KEYS]
    if graph_keys:
        ignored.append("graph attributes " + _names(graph_keys))
    ignored += graph.graph.get(DROPPED) or []
    if ignored:
        uses = [f"edge {WEIGHT} x {conductance_key}"] if conductance_key else []
        uses += ["node demand x the cell's consumer capacity"] if demand else []
        reads = ", ".join(uses) if uses else "only the junctions"
        # stacklevel 3: the line that called the substrate's build (api.prepare, a test, a script)
        warnings.warn(f"topology.path={path}: ignored by substrate {substrate}: {'; '.join(ignored)} (it reads {reads})",
                      GraphFileWarning, stacklevel=3)
    return FileInputs(weight, dem)


def label_cells(ds, graph: nx.Graph | None):
    """``ds`` with the graph file's node labels as its ``cell`` coordinate (unchanged for a
    generated graph, or a dataset without that cell dimension)."""
    labels = None if graph is None else graph.graph.get(CELL_LABELS)
    if labels is None or ds is None or "cell" not in ds.dims or ds.sizes["cell"] != len(labels):
        return ds
    return ds.assign_coords(cell=np.asarray(labels))
