"""Hostile inputs to the tissue topology: the file loader and the generators.

Every refusal is a :class:`sim.errors.ConfigError` naming ``topology.<key>``; the fuzz tests feed
random bytes and random (often broken) GraphML to the loader and accept only two outcomes: a
valid graph, or a ConfigError.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import topology
from sim.errors import ConfigError
from sim.topology import build_graph, edge_arrays, load_graph_file

GRAPHML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<graphml xmlns="http://graphml.graphdrawing.org/xmlns">\n'


def write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def refused(path, fmt="auto", key="topology.path", match=None):
    with pytest.raises(ConfigError) as info:
        load_graph_file(path, fmt)
    assert info.value.key == key
    assert str(info.value).startswith(f"invalid config: {key}=")
    assert "\n" not in str(info.value)
    if match:
        assert match in info.value.allowed, info.value.allowed
    return info.value


# ---------------------------------------------------------------- valid files load


def test_graphml_round_trip(tmp_path):
    g = nx.watts_strogatz_graph(12, 4, 0.3, seed=1)
    path = tmp_path / "t.graphml"
    nx.write_graphml(g, path)
    h = load_graph_file(str(path))
    assert sorted(h.nodes) == list(range(12))  # integer labels come back as integers
    assert {frozenset(e) for e in h.edges} == {frozenset(e) for e in g.edges}


def test_edgelist_round_trip_with_comments_weights_and_data(tmp_path):
    text = "# tissue\n0 1\n1 2 0.5   # weighted\n\n2 3 {'weight': 1.0}\n3 0\n3 3\n"
    h = load_graph_file(write(tmp_path, "t.txt", text))
    assert sorted(h.nodes) == [0, 1, 2, 3]
    assert h.number_of_edges() == 4  # the self-loop 3-3 is dropped, the rest kept once
    g = build_graph({"kind": "file", "path": write(tmp_path, "t2.txt", text), "require_connected": True})
    src, dst = edge_arrays(g)
    assert (src < dst).all() and len(src) == 4


def test_directed_multigraph_graphml_becomes_simple_undirected(tmp_path):
    g = nx.MultiDiGraph([(0, 1), (1, 0), (0, 1), (1, 2)])
    path = tmp_path / "m.graphml"
    nx.write_graphml(g, path)
    h = load_graph_file(str(path))
    assert not h.is_directed() and not h.is_multigraph()
    assert h.number_of_edges() == 2


def test_string_labels_are_kept_and_sorted(tmp_path):
    g = build_graph({"kind": "file", "path": write(tmp_path, "s.txt", "b c\na b\n")})
    assert sorted(g.nodes) == [0, 1, 2] and g.number_of_edges() == 2


# ---------------------------------------------------------------- refusals


def test_missing_and_non_file_paths(tmp_path):
    refused(str(tmp_path / "nope.graphml"), match="an existing file")
    refused(str(tmp_path), match="an existing file")  # a directory
    for bad in (None, "", 3):
        refused(bad)
    with pytest.raises(ConfigError) as info:
        build_graph({"kind": "file", "path": "???"})
    assert info.value.key == "topology.path"


def test_empty_and_blank_files(tmp_path):
    refused(write(tmp_path, "e.txt", b""), match="non-empty")
    refused(write(tmp_path, "b.txt", "  \n\t\n"), match="non-empty")
    refused(write(tmp_path, "e.graphml", b""), match="non-empty")
    refused(write(tmp_path, "c.txt", "# only a comment\n"), match="at least one node")


@pytest.mark.parametrize(
    "text, where",
    [
        ("0 1\n2\n", "line 2"),  # one token
        ("0 1\n1 2 3 4\n", "line 2"),  # too many tokens
        ("0 1 heavy\n", "line 1"),  # a weight that is not a number
        ("0 1 nan\n", "line 1"),  # a weight that is not finite
        ("0 1 {'w': 1\n", "line 1"),  # unterminated data
    ],
)
def test_malformed_edgelist_names_the_line(tmp_path, text, where):
    err = refused(write(tmp_path, "m.txt", text), match=where)
    assert "u v" in err.allowed


def test_binary_and_non_utf8_edgelists(tmp_path):
    refused(write(tmp_path, "bin.txt", b"0 1\n\x00\x01\x02"), match="binary")
    refused(write(tmp_path, "latin.txt", "0 1\nZ\xfcrich 2\n".encode("latin-1")), match="UTF-8")


@pytest.mark.parametrize(
    "body",
    [
        "<graphml>",  # truncated
        GRAPHML_HEAD + "<graph edgedefault='undirected'><node id='a'/><edge source='a'/></graph></graphml>",
        GRAPHML_HEAD + "<graph edgedefault='undirected'><hyperedge><endpoint node='a'/></hyperedge></graph></graphml>",
        GRAPHML_HEAD + "<key id='d0' for='node' attr.name='x' attr.type='martian'/>"
        "<graph edgedefault='undirected'><node id='a'><data key='d0'>1</data></node></graph></graphml>",
        GRAPHML_HEAD + "<key id='d0' for='node' attr.name='x' attr.type='int'/>"
        "<graph edgedefault='undirected'><node id='a'><data key='d0'>one</data></node></graph></graphml>",
        '<?xml version="1.0"?><!DOCTYPE g [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
        '<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">'
        '<!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]>'
        "<graphml><graph edgedefault='undirected'><node id='&h;'/></graph></graphml>",  # billion laughs
        '<?xml version="1.0"?><!DOCTYPE g [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<graphml><graph edgedefault='undirected'><node id='&x;'/></graph></graphml>",  # external entity
        GRAPHML_HEAD + "</graphml>",  # no graph at all
        "<not-graphml/>",
    ],
)
def test_malformed_graphml(tmp_path, body):
    refused(write(tmp_path, "bad.graphml", body))


def test_graph_without_nodes(tmp_path):
    refused(write(tmp_path, "n.graphml", GRAPHML_HEAD + "<graph edgedefault='undirected'/></graphml>"),
            match="at least one node")


def test_self_loop_only_files(tmp_path):
    refused(write(tmp_path, "loops.txt", "1 1\n2 2\n"), match="self-loop")
    body = GRAPHML_HEAD + "<graph edgedefault='undirected'><node id='a'/><edge source='a' target='a'/></graph></graphml>"
    refused(write(tmp_path, "loop.graphml", body), match="self-loop")


def test_disconnected_file_refused_when_connected_required(tmp_path):
    path = write(tmp_path, "two.txt", "0 1\n2 3\n")
    assert build_graph({"kind": "file", "path": path}).number_of_nodes() == 4  # allowed by default
    with pytest.raises(ConfigError) as info:
        build_graph({"kind": "file", "path": path, "require_connected": True})
    assert info.value.key == "topology.require_connected" and "2 components" in info.value.allowed


def test_enormous_files(tmp_path, monkeypatch):
    path = write(tmp_path, "big.txt", "".join(f"{i} {i + 1}\n" for i in range(200)))
    monkeypatch.setattr(topology, "MAX_FILE_BYTES", 100)
    refused(path, match="at most 100 bytes")
    monkeypatch.setattr(topology, "MAX_FILE_BYTES", 10**9)
    monkeypatch.setattr(topology, "MAX_FILE_NODES", 50)
    refused(path, match="at most 50 nodes")
    monkeypatch.setattr(topology, "MAX_FILE_NODES", 10**9)
    monkeypatch.setattr(topology, "MAX_FILE_EDGES", 20)
    refused(path, match="at most 20 edges")
    g = nx.path_graph(60)
    gpath = tmp_path / "big.graphml"
    nx.write_graphml(g, gpath)
    monkeypatch.setattr(topology, "MAX_FILE_NODES", 50)
    refused(str(gpath), match="at most 50 nodes")


def test_unknown_format_is_named(tmp_path):
    refused(write(tmp_path, "x.txt", "0 1\n"), fmt="gml", key="topology.format")


@pytest.mark.parametrize(
    "cfg, key",
    [
        ({"kind": "hexagonal", "n_cells": 5}, "topology.kind"),
        ({"kind": "ring", "n_cells": 0}, "topology.n_cells"),
        ({"kind": "ring", "n_cells": "ten"}, "topology.n_cells"),
        ({"kind": "ring", "n_cells": True}, "topology.n_cells"),
        ({"kind": "small_world", "n_cells": 10, "k": 10, "p": 0.1}, "topology.k"),
        ({"kind": "small_world", "n_cells": 10, "k": 4, "p": 1.5}, "topology.p"),
        ({"kind": "erdos_renyi", "n_cells": 10, "p": "half"}, "topology.p"),
        ({"kind": "scale_free", "n_cells": 5, "m": 5}, "topology.m"),
        ({"kind": "grid", "n_cells": 10, "rows": 3}, "topology.n_cells"),
        ({"kind": "grid", "n_cells": 10, "rows": "two"}, "topology.rows"),
        ({"kind": "complete", "n_cells": 10**5}, "topology.n_cells"),  # 5e9 junctions: refused at once
        ({"kind": "erdos_renyi", "n_cells": 10**6, "p": 1e-6}, "topology.n_cells"),  # 5e11 pair draws
        ({"kind": "ring", "n_cells": 10**9}, "topology.n_cells"),
        ({"kind": "erdos_renyi", "n_cells": 40, "p": 0.0, "require_connected": True}, "topology.require_connected"),
    ],
)
def test_generator_refusals(cfg, key):
    with pytest.raises(ConfigError) as info:
        build_graph(cfg, seed=0)
    assert info.value.key == key


# ---------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_outcome(data: bytes, suffix: str) -> None:
    fd, path = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            g = load_graph_file(path)
        except ConfigError as exc:
            assert exc.key in ("topology.path", "topology.format")
            assert "\n" not in str(exc)
            return
        # anything loaded is a usable tissue: simple, undirected, non-empty, no self-loops
        assert isinstance(g, nx.Graph) and not g.is_directed() and not g.is_multigraph()
        assert g.number_of_nodes() >= 1
        assert nx.number_of_selfloops(g) == 0
        g2 = build_graph({"kind": "file", "path": path})
        src, dst = edge_arrays(g2)
        assert (src < dst).all() and g2.number_of_nodes() == g.number_of_nodes()
    finally:
        os.unlink(path)


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".txt", ".graphml", ".edges"]))
def test_fuzz_random_bytes(data, suffix):
    _check_outcome(data, suffix)


@FUZZ
@given(
    lines=st.lists(
        st.lists(st.sampled_from(["0", "1", "2", "a", "b", "#", "{}", "1.5", "x y", "\t", "{'w':", "}", "é"]),
                 min_size=0, max_size=4).map(" ".join),
        max_size=8,
    )
)
def test_fuzz_random_edgelists(lines):
    _check_outcome("\n".join(lines).encode(), ".txt")


_ids = st.sampled_from(["a", "b", "c", "0", "1", "2", "a b", "&amp;"])
_attr_types = st.sampled_from(["int", "long", "float", "double", "boolean", "string", "martian"])
_values = st.sampled_from(["1", "0.5", "true", "x", "", "-3", "1e999"])


def _often(draw, p_in_10=8):
    return draw(st.integers(0, 9)) < p_in_10


@st.composite
def graphml_docs(draw):
    """GraphML-shaped XML: mostly valid, broken in one of the many ways GraphML can be broken."""
    parts = []
    keys = draw(st.lists(st.tuples(st.sampled_from(["d0", "d1"]), st.sampled_from(["node", "edge", "graph", "all", "?"]),
                                   _attr_types), max_size=2))
    for kid, kfor, ktype in keys:
        parts.append(f'<key id="{kid}" for="{kfor}" attr.name="{kid}n" attr.type="{ktype}"/>')
    edgedefault = draw(st.sampled_from(["undirected", "undirected", "directed", "sideways", None]))
    graph_open = "<graph" + (f' edgedefault="{edgedefault}"' if edgedefault else "") + ">"
    body, declared = [], []
    for _ in range(draw(st.integers(0, 5))):
        nid = draw(_ids) if _often(draw, 9) else ""
        declared.append(nid)
        data = draw(st.one_of(st.none(), st.none(), st.tuples(st.sampled_from(["d0", "d1", "zz"]), _values)))
        inner = f'<data key="{data[0]}">{data[1]}</data>' if data else ""
        body.append(f'<node id="{nid}">{inner}</node>')
    ends = st.sampled_from(declared) if declared and _often(draw, 8) else _ids
    for _ in range(draw(st.integers(0, 6))):
        attrs = ""
        if _often(draw, 9):
            attrs += f' source="{draw(ends)}"'
        if _often(draw, 9):
            attrs += f' target="{draw(ends)}"'
        if not _often(draw, 8):
            attrs += f' directed="{draw(st.sampled_from(["true", "false", "maybe"]))}"'
        body.append(f"<edge{attrs}/>")
    if not _often(draw, 8):
        body.append(draw(st.sampled_from(["<hyperedge/>", "<node/>", "<port name='p'/>", "<graph/>", "&bogus;", "<"])))
    doc = GRAPHML_HEAD + "".join(parts) + graph_open + "".join(body) + "</graph></graphml>"
    if not _often(draw, 8):  # sometimes truncated
        doc = doc[: draw(st.integers(0, len(doc)))]
    return doc.encode()


@FUZZ
@given(doc=graphml_docs())
def test_fuzz_random_graphml(doc):
    _check_outcome(doc, ".graphml")


_edges = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=1, max_size=16)


def _graphml_bytes(edges, directed: bool) -> bytes:
    import io

    g = (nx.DiGraph if directed else nx.Graph)()
    for i, (u, v) in enumerate(edges):
        g.add_edge(u, v, w=float(i) / 3, label=f"e{i}")
    nx.set_node_attributes(g, {n: n % 2 == 0 for n in g.nodes}, "even")
    buf = io.BytesIO()
    nx.write_graphml(g, buf)
    return buf.getvalue()


@FUZZ
@given(edges=_edges, directed=st.booleans())
def test_fuzz_generated_graphml_loads_exactly(edges, directed):
    """GraphML written by networkx (random graphs, attributes, directed or not) loads to the same
    undirected junctions, self-loops dropped; a file of self-loops only is refused."""
    fd, path = tempfile.mkstemp(suffix=".graphml")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_graphml_bytes(edges, directed))
        want = {frozenset((u, v)) for u, v in edges if u != v}
        if not want:
            with pytest.raises(ConfigError, match="self-loop"):
                load_graph_file(path)
            return
        g = load_graph_file(path)
        assert {frozenset(e) for e in g.edges} == want
        assert set(g.nodes) == {n for e in edges for n in e}
    finally:
        os.unlink(path)


@FUZZ
@given(edges=_edges, cuts=st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=3)), min_size=1, max_size=3))
def test_fuzz_mutated_graphml(edges, cuts):
    """Valid GraphML with random bytes spliced in or cut out: a valid graph or a ConfigError."""
    doc = bytearray(_graphml_bytes(edges, False))
    for pos, insert in cuts:
        pos %= len(doc) + 1
        doc[pos: pos + len(insert) or pos + 1] = insert
    _check_outcome(bytes(doc), ".graphml")


_numbers = st.sampled_from(["1", "0.5", "0", "-1", "nan", "inf", "1e999", "x", "", "true", "9" * 400, "  2  "])


@FUZZ
@given(edges=_edges, weights=st.lists(_numbers, min_size=1, max_size=16), demands=st.lists(_numbers, max_size=8),
       wtype=_attr_types, dtype=_attr_types)
def test_fuzz_weights_and_demands(edges, weights, demands, wtype, dtype):
    """GraphML whose ``weight`` and ``demand`` have any declared type and any value: refused with a
    ConfigError naming topology.path, or read into finite multipliers >= 0 (sim/topology.py)."""
    nodes = sorted({n for e in edges for n in e})
    body = "".join(f"<node id='{n}'>" + (f"<data key='dm'>{demands[i]}</data>" if i < len(demands) else "") + "</node>"
                   for i, n in enumerate(nodes))
    body += "".join(f"<edge source='{u}' target='{v}'><data key='w'>{weights[i % len(weights)]}</data></edge>"
                    for i, (u, v) in enumerate(edges))
    doc = (GRAPHML_HEAD + f"<key id='w' for='edge' attr.name='weight' attr.type='{wtype}'/>"
           f"<key id='dm' for='node' attr.name='demand' attr.type='{dtype}'/>"
           f"<graph edgedefault='undirected'>{body}</graph></graphml>")
    fd, path = tempfile.mkstemp(suffix=".graphml")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(doc)
        try:
            g = build_graph({"kind": "file", "path": path})
        except ConfigError as exc:
            assert exc.key == "topology.path" and "\n" not in str(exc)
            return
        src, dst = edge_arrays(g)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", topology.GraphFileWarning)
            inputs = topology.file_inputs(g, src, dst, substrate="generic", conductance_key="k", demand=True)
        for values in (inputs.weight, inputs.demand):
            assert np.isfinite(values).all() and (values >= 0).all()
        assert len(inputs.weight) == len(src) and len(inputs.demand) == g.number_of_nodes()
    finally:
        os.unlink(path)
