"""Graph files beyond their junctions (sim/topology.py, README "Graph files"): edge weights scale
the junction conductances, the node attribute ``demand`` scales a cell's demand, node labels name
the cells of results.nc, and whatever a substrate does not read is named in one warning line.
Refusals of the file itself (malformed, enormous, hostile) are in test_topology.py.
"""

from __future__ import annotations

import json
import warnings

import networkx as nx
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim  # noqa: F401  (float64)
from sim import topology
from sim.app import execute
from sim.core.config import load_config
from sim.errors import ConfigError
from sim.substrates.bio.build import build as build_bio
from sim.substrates.generic.spec import build as build_generic
from sim.substrates.llm.build import build_llm
from sim.topology import GraphFileWarning, build_graph, edge_arrays, load_graph_file

GRAPHML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<graphml xmlns="http://graphml.graphdrawing.org/xmlns">\n'
GENERIC = ["experiment=tissue", "substrate=generic", "steps=40", "replicates=1", "figures=false", "record_every=10"]


def write(tmp_path, name, text) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def config(path, *extra) -> dict:
    return load_config([*GENERIC, "topology=file", f"topology.path={path}", *extra])


def built_quietly(build, cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GraphFileWarning)
        return build(cfg)


def graph_warnings(build, cfg) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        build(cfg)
    return [str(w.message) for w in seen if issubclass(w.category, GraphFileWarning)]


# ---------------------------------------------------------------- edge weights -> conductances


def test_edge_list_weights_multiply_the_conductance_in_edge_array_order(tmp_path):
    path = write(tmp_path, "w.txt", "c a 4\na b 2.0\nb c {'weight': 0.5}\n")
    g = load_graph_file(path)
    assert {frozenset(e): w for *e, w in g.edges(data="weight")} == {
        frozenset("ac"): 4.0, frozenset("ab"): 2.0, frozenset("bc"): 0.5}
    cfg = config(path)
    built = built_quietly(build_generic, cfg)
    base = cfg["substrate"]["transport"]["conductance"]
    e = built.params.edges
    assert e.src.tolist() == [0, 0, 1] and e.dst.tolist() == [1, 2, 2]  # a-b, a-c, b-c (labels sorted)
    np.testing.assert_array_equal(e.conductance, base * np.array([2.0, 4.0, 0.5]))
    bio_cfg = load_config(["experiment=tissue", "topology=file", f"topology.path={path}"])
    bio = built_quietly(build_bio, bio_cfg)
    g_bio = bio_cfg["substrate"]["transport"]["conductance_per_s"]
    np.testing.assert_array_equal(bio.params.edges.conductance, g_bio * np.array([2.0, 4.0, 0.5]))


def test_unit_weights_and_no_weights_build_the_same_tissue(tmp_path):
    plain = built_quietly(build_generic, config(write(tmp_path, "p.txt", "0 1\n1 2\n2 0\n")))
    ones = built_quietly(build_generic, config(write(tmp_path, "o.txt", "0 1 1\n1 2 1.0\n2 0 {'weight': 1}\n")))
    np.testing.assert_array_equal(plain.params.edges.conductance, ones.params.edges.conductance)
    np.testing.assert_array_equal(plain.state.consumers.vmax, ones.state.consumers.vmax)


def test_doubled_weights_run_as_doubled_conductance_scale(tmp_path):
    """End to end: every junction of weight 2 is the run with params.conductance_scale=2."""
    ring = "".join(f"{i} {(i + 1) % 5} 2\n" for i in range(5))
    weighted = sim.simulate(config(write(tmp_path, "w2.txt", ring)))
    unweighted = sim.simulate(config(write(tmp_path, "w1.txt", ring.replace(" 2\n", "\n")), "params.conductance_scale=2"))
    for name in ("a", "d", "transported_out"):
        np.testing.assert_array_equal(weighted[name].values, unweighted[name].values)
    assert float(weighted["transported_out"].isel(time=-1).sum()) > 0


# ---------------------------------------------------------------- node demand (and a junction closed by weight 0)


def _graphml(nodes: str, edges: str, keys: str = "") -> str:
    return GRAPHML_HEAD + keys + "<graph edgedefault='undirected'>" + nodes + edges + "</graph></graphml>"


DEMAND_KEY = "<key id='dm' for='node' attr.name='demand' attr.type='double'{default}/>"
WEIGHT_KEY = "<key id='w' for='edge' attr.name='weight' attr.type='double'/>"


def test_zero_weight_closes_a_junction(tmp_path):
    """Cells of unequal demand trade currency over a junction of weight 1 and none over weight 0."""
    def run(weight):
        doc = _graphml("<node id='0'><data key='dm'>3</data></node><node id='1'/><node id='2'><data key='dm'>0</data></node>",
                       f"<edge source='0' target='1'><data key='w'>{weight}</data></edge>"
                       f"<edge source='1' target='2'><data key='w'>{weight}</data></edge>",
                       DEMAND_KEY.format(default="") + WEIGHT_KEY)
        return sim.simulate(config(write(tmp_path, f"z{weight}.graphml", doc)))

    assert float(run(1)["transported_out"].isel(time=-1).sum()) > 0
    assert float(np.abs(run(0)["transported_out"]).max()) == 0.0


def test_node_demand_multiplies_each_cells_demand(tmp_path):
    doc = _graphml("<node id='x'><data key='dm'>2.0</data></node><node id='y'/><node id='z'><data key='dm'>0</data></node>",
                   "<edge source='x' target='y'/><edge source='y' target='z'/>", DEMAND_KEY.format(default=""))
    path = write(tmp_path, "d.graphml", doc)
    built = built_quietly(build_generic, config(path))
    base = built_quietly(build_generic, config(write(tmp_path, "plain.txt", "x y\ny z\n"))).state.consumers.vmax
    np.testing.assert_array_equal(built.state.consumers.vmax, base * np.array([2.0, 1.0, 0.0])[:, None])
    bio_cfg = load_config(["experiment=tissue", "topology=file", f"topology.path={path}", "substrate.consumers.demand_cv=0"])
    bio = built_quietly(build_bio, bio_cfg)
    np.testing.assert_array_equal(bio.state.cells.demand_mult, [2.0, 1.0, 0.0])


def test_a_graphml_key_default_applies_to_cells_without_the_attribute(tmp_path):
    keys = DEMAND_KEY.format(default="").replace("/>", "><default>3.0</default></key>")
    doc = _graphml("<node id='0'><data key='dm'>0.5</data></node><node id='1'/>", "<edge source='0' target='1'/>", keys)
    built = built_quietly(build_generic, config(write(tmp_path, "k.graphml", doc)))
    base = built.state.consumers.vmax[1] / 3.0
    np.testing.assert_allclose(built.state.consumers.vmax[0], 0.5 * base, rtol=1e-15)


def test_demand_on_every_cell_runs_as_demand_scale(tmp_path):
    nodes = "".join(f"<node id='{i}'><data key='dm'>1.5</data></node>" for i in range(4))
    edges = "".join(f"<edge source='{i}' target='{(i + 1) % 4}'/>" for i in range(4))
    doc = _graphml(nodes, edges, DEMAND_KEY.format(default=""))
    scaled = sim.simulate(config(write(tmp_path, "s.graphml", doc)))
    knob = sim.simulate(config(write(tmp_path, "s.txt", "0 1\n1 2\n2 3\n3 0\n"), "params.demand_scale=1.5"))
    for name in ("a", "spent", "work"):
        np.testing.assert_allclose(scaled[name].values, knob[name].values, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- refused values


@pytest.mark.parametrize("text, match", [
    ("0 1 -1\n", "junction 0-1 has -1.0"),
    ("0 1 {'weight': 'heavy'}\n", "junction 0-1 has 'heavy'"),
    ("0 1 {'weight': True}\n", "junction 0-1 has True"),
    ("0 1 {'weight': float('inf')}\n", "line 1"),  # not a literal: refused as data
    ("0 1 {1: 2}\n", "string keys"),
    ("0 1 {'weight': 1} {'w': 2}\n", "line 1"),
    ("0 1 {'weight': 1" + "0" * 400 + "}\n", "junction 0-1 has 1000"),  # an int beyond float range
])
def test_bad_edge_list_weights_are_refused(tmp_path, text, match):
    with pytest.raises(ConfigError) as info:
        load_graph_file(write(tmp_path, "bad.txt", text))
    assert info.value.key == "topology.path" and match in info.value.allowed
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("body, match", [
    (_graphml("<node id='a'/><node id='b'/>", "<edge source='a' target='b'><data key='w'>-2</data></edge>",
              "<key id='w' for='edge' attr.name='weight' attr.type='double'/>"), "junction a-b has -2.0"),
    (_graphml("<node id='a'/><node id='b'/>", "<edge source='a' target='b'><data key='w'>NaN</data></edge>",
              "<key id='w' for='edge' attr.name='weight' attr.type='double'/>"), "junction a-b has nan"),
    (_graphml("<node id='a'/><node id='b'/>", "<edge source='a' target='b'><data key='w'>big</data></edge>",
              "<key id='w' for='edge' attr.name='weight' attr.type='string'/>"), "junction a-b has 'big'"),
    (_graphml("<node id='a'/><node id='b'/>", "<edge source='a' target='b'><data key='w'>9" + "9" * 400 + "</data></edge>",
              "<key id='w' for='edge' attr.name='weight' attr.type='long'/>"), "junction a-b has 999"),
    (_graphml("<node id='a'><data key='dm'>-1</data></node><node id='b'/>", "<edge source='a' target='b'/>",
              DEMAND_KEY.format(default="")), "cell a has -1.0"),
    (_graphml("<node id='a'/><node id='b'/>", "<edge source='a' target='b'/>",
              DEMAND_KEY.format(default="").replace("/>", "><default>-5</default></key>")), "GraphML default is -5.0"),
])
def test_bad_graphml_weights_and_demands_are_refused(tmp_path, body, match):
    with pytest.raises(ConfigError) as info:
        load_graph_file(write(tmp_path, "bad.graphml", body))
    assert info.value.key == "topology.path" and match in info.value.allowed, info.value.allowed


# ---------------------------------------------------------------- what is ignored is named


def test_one_warning_line_names_everything_ignored(tmp_path):
    g = nx.MultiDiGraph()
    g.graph["name"] = "tissue"
    g.graph["source"] = "a lab notebook"  # graph data of the file, never mistaken for the loader's own keys
    g.add_node("a", demand=2.0, colour="red", x=1.0)
    g.add_node("b")
    g.add_edge("a", "b", weight=2.0, label="gap junction")
    g.add_edge("b", "a", weight=2.0)  # the same junction, the other way
    g.add_edge("b", "b")
    path = tmp_path / "everything.graphml"
    nx.write_graphml(g, path)
    cfg = config(path)
    messages = graph_warnings(build_generic, cfg)
    assert len(messages) == 1 and "\n" not in messages[0]
    text = messages[0]
    assert text.startswith(f"topology.path={path}: ignored by substrate generic: ")
    for part in ("edge attributes label", "node attributes colour, x", "graph attributes name, source", "1 self-loop",
                 "1 repeated junction", "edge directions"):
        assert part in text, text
    assert "attributes weight" not in text and "demand," not in text  # read, not ignored
    llm = graph_warnings(build_llm, load_config(["experiment=serving", "substrate=llm", "topology=file",
                                                 f"topology.path={path}"]))
    assert len(llm) == 1 and "edge attributes label, weight" in llm[0] and "node attributes colour, demand, x" in llm[0]
    assert "it reads only the junctions" in llm[0]


def test_plain_files_and_generated_graphs_warn_nothing(tmp_path):
    assert graph_warnings(build_generic, config(write(tmp_path, "p.txt", "0 1 2\n1 2\n"))) == []
    assert graph_warnings(build_generic, load_config([*GENERIC, "topology=ring", "topology.n_cells=4"])) == []
    g = build_graph({"kind": "ring", "n_cells": 4})
    src, dst = edge_arrays(g)
    inputs = topology.file_inputs(g, src, dst, substrate="generic", conductance_key="x", demand=True)
    assert inputs.weight.tolist() == [1.0] * 4 and inputs.demand.tolist() == [1.0] * 4


# ---------------------------------------------------------------- labels name the cells


@pytest.mark.parametrize("text, labels", [
    ("kidney liver\nliver heart\nheart kidney\n", ["heart", "kidney", "liver"]),
    ("30 10\n10 20\n", [10, 20, 30]),
])
def test_node_labels_are_the_cell_coordinate_of_results_nc(tmp_path, text, labels):
    cfg = config(write(tmp_path, "l.txt", text))
    out = tmp_path / "run"
    assert execute(cfg, out, quiet=True) == 0, json.loads((out / "summary.json").read_text())
    with xr.open_dataset(out / "results.nc") as ds:
        assert ds["cell"].values.tolist() == labels
        assert ds["a"].sizes["cell"] == len(labels)
    generated = sim.simulate(load_config([*GENERIC, "topology=ring", "topology.n_cells=3"]))
    assert generated["cell"].values.tolist() == [0, 1, 2]


# ---------------------------------------------------------------- the fast edge-list loader = the line-by-line one
# sim/graph_files.py reads edge lists with C parsers into arrays (a FileGraph that builds its networkx adjacency
# only when read); topology._parse_edgelist, line by line, is the reference. Same graph (node order, adjacency
# order, data), same refusals, same warnings, same engine arrays.


def _reference(text: str, path: str):
    try:
        return topology._parse_edgelist(text, path), None
    except ConfigError as exc:
        return None, str(exc)


def _built_reference(g: nx.Graph) -> nx.Graph:
    g = g.copy()
    g.graph[topology.CELL_LABELS] = sorted(g.nodes)  # as build_graph does
    return nx.convert_node_labels_to_integers(g, ordering="sorted")


def _inputs(g):
    src, dst = edge_arrays(g)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        inputs = topology.file_inputs(g, src, dst, substrate="generic", conductance_key="k", demand=True)
    return src, dst, inputs, [str(w.message) for w in seen]


def assert_same_as_reference(path: str, fast_expected: bool | None = None) -> str:
    """Load ``path`` as a run does and by the reference parser; everything must agree. Returns
    "fast", "line" (handed back to the reference parser) or "refused"."""
    text = open(path, encoding="utf-8", newline="").read()
    want, want_error = _reference(text, path)
    try:
        got, error = load_graph_file(path), None
    except ConfigError as exc:
        got, error = None, str(exc)
    assert error == want_error, (text, error, want_error)
    if want is None:
        return "refused"
    fast = isinstance(got, topology.FileGraph) and got.lazy is not None
    if fast_expected is not None:
        assert fast == fast_expected, text
    assert got.number_of_nodes() == want.number_of_nodes() and got.number_of_edges() == want.number_of_edges()
    assert got.graph == want.graph
    assert list(got.nodes(data=True)) == list(want.nodes(data=True)), text
    assert list(got.edges(data=True)) == list(want.edges(data=True)), text
    built, reference = build_graph({"kind": "file", "path": path}), _built_reference(want)
    assert built.graph[topology.CELL_LABELS] == reference.graph[topology.CELL_LABELS]
    (s1, d1, in1, warn1), (s0, d0, in0, warn0) = _inputs(built), _inputs(reference)
    assert s1.dtype == s0.dtype == np.int32 and np.array_equal(s1, s0) and np.array_equal(d1, d0)
    np.testing.assert_array_equal(in1.weight, in0.weight)
    np.testing.assert_array_equal(in1.demand, in0.demand)
    assert warn1 == warn0
    for connected in (True,):
        try:
            build_graph({"kind": "file", "path": path, "require_connected": connected})
            refusal = None
        except ConfigError as exc:
            refusal = str(exc)
        parts = nx.number_connected_components(reference) if reference.number_of_nodes() > 1 else 1
        assert (refusal is None) == (parts == 1) and (parts == 1 or f"has {parts} components" in refusal)
    assert list(built.nodes(data=True)) == list(reference.nodes(data=True))  # (builds the adjacency)
    assert list(built.edges(data=True)) == list(reference.edges(data=True))
    return "fast" if fast else "line"


@pytest.mark.parametrize("text, fast", [
    ("0 1\n1 2\n2 0\n", True),
    ("# a tissue\n\n30 10 # first\n10 20 2.5\n\n20 30 {'weight': 0.5}\n", False),  # a {data} literal: line by line
    ("# weights, a repeat both ways (its last weight kept), a self-loop\n0 1 0.5\n1 0 2\n1 1 7\n1 2\n2 1\n", True),
    ("kidney liver\nliver heart 0.25\nheart kidney\nheart heart\n", True),
    ("10 2\n2 01\n01 5\n", True),  # "01" is not an integer as str(int) writes it: all labels stay strings
    ("1 01\n", True),  # "1" and "01": both kept as strings
    ("+5 3\n3 -2\n", True),  # "+5" is 5 for int(): labels become ints
    ("-3 7\n7 0 1e-3\n0 -3 1E2\n", True),
    ("0\t1\r\n 1   2 \t3.0\r\n2 0\r", True),  # tabs, runs of blanks, CRLF and a lone CR
    ("a b\nb c {'weight': 2, 'colour': 'red'}\n", False),
    ("0 1 nan\n", False), ("0 1 inf\n", False), ("0 1 true\n", False),  # refused at their line, line by line
    ("0 1\n1 2 -0.5\n2 3 -1\n", True),  # refused: the junction networkx yields first
    ("3 4 2\n1 2 -1\n4 1 -2\n", True),
    ("0 1 -0.0\n", True),
    ("# only a comment\n\n", True),  # refused: no node
    ("1 1\n2 2 0.5\n", True),  # refused: self-loops only
    ("0 1\n1 2 3 4\n", False),  # refused with its line number, line by line
    ("Zürich Genève\nGenève Bern 2\n", True),
    ("a\u00a0b c\n", False),  # a no-break space splits for str.split: line by line
])
def test_fast_loader_matches_the_line_by_line_loader(tmp_path, text, fast):
    path = tmp_path / "g.txt"
    path.write_bytes(text.encode())
    assert_same_as_reference(str(path), fast_expected=fast)


def test_fast_loader_caps_refuse_at_the_same_line(tmp_path, monkeypatch):
    path = tmp_path / "g.txt"
    path.write_text("0 1\n1 2\n0 1\n3 3\n2 3\n3 4\n4 5\n")
    for nodes, edges in [(3, 100), (100, 3), (4, 4), (5, 5), (4, 5), (5, 4), (6, 5), (5, 6)]:
        monkeypatch.setattr(topology, "MAX_FILE_NODES", nodes)
        monkeypatch.setattr(topology, "MAX_FILE_EDGES", edges)
        assert assert_same_as_reference(str(path)) == "refused", (nodes, edges)
    monkeypatch.setattr(topology, "MAX_FILE_NODES", 6)
    monkeypatch.setattr(topology, "MAX_FILE_EDGES", 6)  # 6 distinct junctions with the self-loop 3-3: loads
    assert assert_same_as_reference(str(path), fast_expected=True) == "fast"


_LABELS = st.sampled_from(["0", "1", "2", "3", "10", "-1", "01", "+2", "-0", "a", "b", "é", "NA", "nan", "1.0", "1e2",
                           "true", "'q'", '"', "\\", "٣"])
_WEIGHTS = st.sampled_from(["", " 1", " 0.5", " -1", " 2e-1", " 0", " -0.0", " +3", " .5", " 5.", " 1_0", " 1e999",
                            " nan", " true", " {'weight': 2}", " 3 4", " 0x1"])
_LINE = st.tuples(st.sampled_from(["", " ", "\t"]), _LABELS, st.sampled_from([" ", "  ", "\t", " \t"]), _LABELS,
                  _WEIGHTS, st.sampled_from(["", "", " ", " # note", "#x"])).map("".join)
_EDGE_LISTS = st.lists(st.one_of(_LINE, _LINE, _LINE, st.sampled_from(["", "# comment", "  ", "7"])), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(lines=_EDGE_LISTS, ending=st.sampled_from(["\n", "\n", "\r\n", "\r"]),
       caps=st.sampled_from([None, None, (3, 100), (100, 3), (4, 4)]))
def test_fuzz_fast_loader_matches_the_line_by_line_loader(tmp_path, lines, ending, caps):
    path = tmp_path / "fuzz.txt"
    path.write_bytes(ending.join(lines).encode())
    if not path.read_bytes().strip():
        return  # (an empty file is refused before either parser)
    saved = topology.MAX_FILE_NODES, topology.MAX_FILE_EDGES
    try:
        if caps:
            topology.MAX_FILE_NODES, topology.MAX_FILE_EDGES = caps
        assert_same_as_reference(str(path))
    finally:
        topology.MAX_FILE_NODES, topology.MAX_FILE_EDGES = saved


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.integers(-3, 12), st.integers(-3, 12), st.one_of(st.none(), st.floats(-1, 4))),
                      min_size=1, max_size=40),
       strings=st.booleans())
def test_fuzz_fast_loader_on_valid_tissues(tmp_path, pairs, strings):
    """Valid-looking files (repeats both ways, self-loops, weights written by repr, some negative):
    read by the fast path, and equal to the reference."""
    name = (lambda i: f"c{i}") if strings else str
    text = "".join(f"{name(u)} {name(v)}{'' if w is None else ' ' + repr(w)}\n" for u, v, w in pairs)
    path = tmp_path / "valid.txt"
    path.write_text(text)
    outcome = assert_same_as_reference(str(path))
    assert outcome in ("fast", "refused")


def test_a_run_reads_a_large_edge_list_as_arrays(tmp_path):
    """The path a substrate's build takes (build_graph, edge_arrays, file_inputs) never builds the
    networkx adjacency of an edge list: 100,000 lines stay arrays."""
    rng = np.random.default_rng(5)
    u, v = rng.integers(0, 20_000, 100_000), rng.integers(0, 20_000, 100_000)
    w = rng.random(100_000)
    path = tmp_path / "big.txt"
    path.write_text("".join(f"{a} {b} {c!r}\n" for a, b, c in zip(u.tolist(), v.tolist(), w.tolist())))
    g = build_graph({"kind": "file", "path": str(path), "require_connected": False})
    src, dst = edge_arrays(g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GraphFileWarning)
        inputs = topology.file_inputs(g, src, dst, substrate="generic", conductance_key="k", demand=True)
    assert isinstance(g, topology.FileGraph) and g.lazy is not None and not g.__dict__["_adj"]
    assert g.number_of_nodes() == len(set(u.tolist()) | set(v.tolist())) and len(inputs.weight) == len(src)
    cell = {label: i for i, label in enumerate(sorted(set(u.tolist()) | set(v.tolist())))}
    assert g.graph[topology.CELL_LABELS] == sorted(cell)
    keys = {(cell[min(a, b)], cell[max(a, b)]): c for a, b, c in zip(u.tolist(), v.tolist(), w.tolist()) if a != b}
    assert list(zip(src.tolist(), dst.tolist())) == sorted(keys)
    np.testing.assert_array_equal(inputs.weight, [keys[k] for k in sorted(keys)])  # the last weight of a repeat


def test_every_non_ascii_whitespace_sends_the_file_line_by_line():
    """sim.graph_files names the non-ASCII characters str.split / str.splitlines split on (all below
    U+3001); a file with one is read by the line-by-line loader."""
    import sys

    from sim import graph_files

    wide = [chr(c) for c in range(0x80, sys.maxunicode + 1) if chr(c).isspace()]
    assert wide and max(map(ord, wide)) <= 0x3000
    for c in wide:
        assert graph_files.parse(f"a{c}b c\n".encode(), "p", 10, 10) is None, hex(ord(c))


def test_the_mesa_backend_builds_the_same_tissue_from_an_edge_list(tmp_path):
    """The Mesa reference reads the graph's networkx adjacency (built on demand) and agrees with
    the engine, cell by cell."""
    path = write(tmp_path, "m.txt", "b c 2\na b\nc a 0.5\nd a\n")
    runs = {}
    for backend in ("jax", "mesa"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GraphFileWarning)
            runs[backend] = sim.simulate(config(path, f"backend={backend}", "steps=20"))
    assert runs["mesa"]["cell"].values.tolist() == ["a", "b", "c", "d"]
    np.testing.assert_allclose(runs["mesa"]["a"].values, runs["jax"]["a"].values, rtol=1e-9, atol=1e-12)
