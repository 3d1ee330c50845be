"""Fast edge-list loading: a whitespace edge list read by C code into integer arrays.

:func:`sim.topology.load_graph_file` reads an edge list (``u v`` or ``u v weight`` per line, ``#``
comments) here first. Its values are read by pandas' C parser; its shape and the syntax of every
token are checked on its bytes (by byte counts where every token is an integer, else by a numpy
tokeniser over 4 MiB blocks); cells are numbered by a direct-address table (integer labels) or a
hash table (``pandas.factorize``) and sorted by label, junctions by one ``numpy.unique``. Nothing is
built per line or per junction in Python: the result is a :class:`FileGraph`, a ``networkx.Graph``
whose junctions are arrays and whose networkx adjacency is only built if something asks for it
(the Mesa backend, a layout, a test), and then exactly as the line-by-line loader built it (same
node order, same adjacency order, same data).

The line-by-line loader (``sim.topology._parse_edgelist``) stays the reference and the path for
everything else: a line that is not ``u v`` or ``u v number`` (it is refused with its line number
there), ``{data}`` literals, control characters, a byte-order mark, non-ASCII whitespace, a
non-finite weight (refused there at its line, in the order the lines are read). :func:`parse`
returns None for those files and the caller falls back; every file it does accept gives the same
graph, refusals and warnings as the line-by-line loader (``tests/test_graph_files.py`` compares the
two on generated files).

How the fast path agrees with ``str.split`` / ``str.splitlines``, ``int`` and ``float``:

- the only whitespace bytes are space, tab, ``\\n`` and ``\\r`` (``\\r\\n`` or a lone ``\\r`` is one line
  break); a comment runs from ``#`` to the line break;
- labels are integers only if every label is written as ``str(int)`` writes it (``-?[1-9][0-9]*`` or
  ``0``): then they are read as int64, and distinct strings are distinct ints. Any other label
  (``01``, ``+5``, ``x``) reads all labels as strings, and ``int`` of each distinct label decides (as
  :func:`sim.topology._natural_mapping` does); pandas' int parser also takes ``1.0``, ``1e3`` and
  ``true``, which is why the tokens are checked first;
- a weight token has only the characters ``0-9 . e E + -`` (pandas reads ``true`` as 1.0, ``float``
  refuses it), and pandas' value is Python's (both round correctly; pandas < 3 is asked for
  ``float_precision="round_trip"``);
- a quote or backslash is an ordinary character (no quoting).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import warnings

import networkx as nx
import numpy as np

from sim.errors import ConfigError

WEIGHT = "weight"
CHUNK_BYTES = 1 << 19  # the tokeniser's block (lines never split): its temporaries stay in the CPU caches

# bytes after which a file is read line by line: ASCII controls other than tab / LF / CR, DEL, and
# "{" (a {data} literal, or a label with a brace: rare, and the line-by-line loader knows both)
_SLOW_BYTES = bytes([*range(0, 9), 11, 12, *range(14, 32), 127]) + b"{"
_FAST_BYTES = bytes(sorted(set(range(256)) - set(_SLOW_BYTES)))  # deleted by translate: what is left is slow
# non-ASCII characters that str.split() takes for whitespace or str.splitlines() for a line break, in UTF-8
# (all below U+3001; tests/test_graph_files.py checks every code point)
_WIDE_SPACE = re.compile(b"|".join(re.escape(chr(c).encode()) for c in range(0x80, 0x3001) if chr(c).isspace()))
_INTEGER_FILE = b"0123456789- \t\n"  # a file of only these bytes has only integer tokens (or pandas refuses one)
_SPACE = np.zeros(256, bool)
_SPACE[[ord(" "), ord("\t"), ord("\n")]] = True
_DIGIT = np.zeros(256, bool)
_DIGIT[ord("0"): ord("9") + 1] = True
_ODD = ~(_SPACE | _DIGIT)  # a byte in a token that is not a digit
_NUMBER_CHAR = np.zeros(256, bool)
_NUMBER_CHAR[list(b"0123456789.eE+-")] = True
# len(str(x)) = searchsorted(_POW10, |x|, "right") + 1 + (x < 0)
_POW10 = 10 ** np.arange(1, 19, dtype=np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class EdgeList:
    """An edge list as arrays. Cell i is ``labels[i]`` (labels sorted, as the engine numbers cells)."""

    labels: list  # the file's node labels (ints where every label is an integer), sorted
    cells: np.ndarray  # int32: each line's u and v as cells (u0 v0 u1 v1 ...; blank and comment lines skipped)
    src: np.ndarray  # int32, one entry per distinct junction between distinct cells, src < dst, sorted
    dst: np.ndarray
    weight: np.ndarray | None  # float64 per junction, its last line's weight (NaN: none given); None: no line has one
    dropped: list[str]  # what the warning names: self-loops, repeated junctions

    def node_order(self) -> np.ndarray:
        """Cells in order of first appearance (the line-by-line loader's node order)."""
        return _first_seen(self.cells)

    def edge_order(self) -> np.ndarray:
        """Junctions (indices into src/dst) in order of first appearance (its edge order)."""
        n = len(self.labels)
        cu, cv = self.cells[0::2].astype(np.int64), self.cells[1::2].astype(np.int64)
        keep = cu != cv
        keys = _first_seen(np.minimum(cu, cv)[keep] * n + np.maximum(cu, cv)[keep])
        return np.searchsorted(self.src.astype(np.int64) * n + self.dst, keys)


class FileGraph(nx.Graph):
    """A ``networkx.Graph`` of an edge list, kept as arrays until networkx's own structure is read.

    ``number_of_nodes``, ``number_of_edges`` and ``graph`` (the graph attributes) answer from the
    arrays; ``sim.topology.edge_arrays`` / ``file_inputs`` / ``build_graph`` read the arrays of a
    lazy graph directly. Anything else (``nodes``, ``edges``, ``adj``, ``in``, networkx algorithms,
    Mesa's ``Network``) first builds the adjacency, once, exactly as the line-by-line loader built it
    (nodes in order of first appearance, junctions in line order, the file's labels; relabelled to
    0..n-1 in sorted label order for :meth:`relabelled`, as ``build_graph`` relabels a graph). From
    then on it is an ordinary graph (and may be changed like one).
    """

    @property
    def _adj(self):
        self._materialize()
        return self.__dict__["_adj"]

    @_adj.setter
    def _adj(self, value):
        _set(self, "_adj", value)

    @property
    def _node(self):
        self._materialize()
        return self.__dict__["_node"]

    @_node.setter
    def _node(self, value):
        _set(self, "_node", value)

    @classmethod
    def from_edgelist(cls, edges: EdgeList, graph: dict, relabelled: bool = False) -> "FileGraph":
        g = cls()
        g.graph.update(graph)
        g.__dict__["_lazy"] = (edges, relabelled)
        return g

    @property
    def lazy(self) -> EdgeList | None:
        """The arrays while the adjacency is not built (None after)."""
        state = self.__dict__.get("_lazy")
        return None if state is None else state[0]

    @property
    def is_relabelled(self) -> bool:
        state = self.__dict__.get("_lazy")
        return bool(state and state[1])

    def relabelled(self) -> "FileGraph":
        """The same tissue with cells 0..n-1 in sorted label order (``build_graph``'s relabelling)."""
        edges = self.lazy
        if edges is None:
            raise ValueError("relabelled() of a graph whose adjacency is built")
        return FileGraph.from_edgelist(edges, dict(self.graph), relabelled=True)

    def number_of_nodes(self):
        edges = self.lazy
        return super().number_of_nodes() if edges is None else len(edges.labels)

    def __len__(self):
        return self.number_of_nodes()

    def order(self):
        return self.number_of_nodes()

    def number_of_edges(self, u=None, v=None):
        edges = self.lazy
        if edges is None or u is not None or v is not None:
            return super().number_of_edges(u, v)
        return len(edges.src)

    def _materialize(self) -> None:
        state = self.__dict__.pop("_lazy", None)
        if state is None:
            return
        edges, relabelled = state
        labels = edges.labels
        g = nx.Graph()
        g.add_nodes_from(labels[i] for i in edges.node_order().tolist())
        src, dst, order = edges.src.tolist(), edges.dst.tolist(), edges.edge_order().tolist()
        if edges.weight is None:
            g.add_edges_from((labels[src[k]], labels[dst[k]]) for k in order)
        else:
            w = edges.weight.tolist()
            g.add_edges_from((labels[src[k]], labels[dst[k]]) if w[k] != w[k] else
                             (labels[src[k]], labels[dst[k]], {WEIGHT: w[k]}) for k in order)
        if relabelled:
            g = nx.convert_node_labels_to_integers(g, ordering="sorted")
        self._node, self._adj = g._node, g._adj


def _set(graph: nx.Graph, name: str, value) -> None:
    """``graph.<name> = value`` as ``networkx.Graph`` sets it (its descriptor also drops the cached
    ``adj`` / ``edges`` / ``nodes`` views)."""
    descriptor = nx.Graph.__dict__.get(name)
    if hasattr(descriptor, "__set__"):
        descriptor.__set__(graph, value)
    else:
        graph.__dict__[name] = value


def parse(data: bytes, path, max_nodes: int, max_edges: int) -> EdgeList | None:
    """The edge list in ``data`` (valid UTF-8 without NUL bytes) as arrays; None where the
    line-by-line loader must read it (see the module docstring). Refuses, naming ``topology.path``
    as the line-by-line loader does: no cell, more than ``max_nodes`` cells or ``max_edges``
    distinct junctions (self-loops included; the cap crossed first, line by line), no junction
    between distinct cells, a negative weight (naming the junction that loader names)."""
    if data.startswith(b"\xef\xbb\xbf") or data.translate(None, _FAST_BYTES):
        return None  # a byte-order mark (pandas drops it), a control character or a "{"
    if not data.isascii() and _WIDE_SPACE.search(data):
        return None
    if b"#" in data:
        data = re.sub(rb"#[^\r\n]*", b"", data)  # a comment runs to the line break (kept: line numbers stay)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not re.search(rb"\S", data):  # (comments and blank lines only)
        raise ConfigError("topology.path", path, "a graph with at least one node")
    values = None
    if not data.translate(None, _INTEGER_FILE):
        values = _read_integer_file(data)  # (None: a token such as "01"; the tokeniser below decides)
    if values is None:
        shape = _tokens(data)
        if shape is None:
            return None
        has_weight, int_labels, lengths = shape
        values = _read_ints(data, has_weight, lengths) if int_labels else _read_strings(data, has_weight)
    if values is None:
        return None
    return _edges(*values, path=path, max_nodes=max_nodes, max_edges=max_edges)


def _tokens(data: bytes):
    """(which lines have a weight, whether every label is a canonical integer, the lengths of
    each line's u and v) of an edge list whose non-blank lines each have 2 or 3 tokens and whose
    weights are made of number characters; None for any other file. Lines are counted without
    the blank ones, as pandas counts rows."""
    counts, len_u, len_v, int_labels = [], [], [], True
    pos, size = 0, len(data)
    while pos < size:
        end = data.find(b"\n", pos + CHUNK_BYTES) + 1 if size - pos > CHUNK_BYTES else size
        end = end or size
        block = _block_tokens(np.frombuffer(data, np.uint8, count=end - pos, offset=pos), int_labels)
        if block is None:
            return None
        count, canonical, lu, lv = block
        counts.append(count), len_u.append(lu), len_v.append(lv)
        int_labels = int_labels and canonical
        pos = end
    count = np.concatenate(counts)
    return count == 3, int_labels, (np.concatenate(len_u), np.concatenate(len_v))


def _block_tokens(b: np.ndarray, check_labels: bool):
    space = _SPACE[b]
    after_space = np.concatenate(([True], space[:-1]))
    start = ~space & after_space  # a token's first byte
    starts = np.flatnonzero(start)
    if len(starts) == 0:
        empty = np.zeros(0, np.int64)
        return empty, True, empty, empty
    ends = np.flatnonzero(~space & np.concatenate((space[1:], [True]))) + 1
    line = np.cumsum(b == 10, dtype=np.int32)[starts]  # the line of each token (newlines before it)
    first = np.flatnonzero(np.concatenate(([True], line[1:] != line[:-1])))  # each line's first token
    count = np.diff(np.append(first, len(starts)))
    if count.min() < 2 or count.max() > 3:
        return None
    column = np.arange(len(starts)) - np.repeat(first, count)
    # bytes of tokens that are not digits: a weight may only have number characters; a label with
    # one (other than a leading "-") is not an integer as str(int) writes it
    odd = np.flatnonzero(_ODD[b])
    token = np.cumsum(start, dtype=np.int32)[odd] - 1
    in_weight = column[token] == 2
    if not _NUMBER_CHAR[b[odd[in_weight]]].all():
        return None
    canonical = check_labels
    if canonical:
        odd, token = odd[~in_weight], token[~in_weight]
        canonical = bool(((b[odd] == ord("-")) & (odd == starts[token])).all())
    if canonical:
        label = np.flatnonzero(column < 2)
        s, n = starts[label], ends[label] - starts[label]
        lead, second = b[s], b[np.minimum(s + 1, len(b) - 1)]
        negative = lead == ord("-")
        bad = ((lead == ord("0")) & (n > 1)) | (negative & ((n == 1) | (second == ord("0")))) | (n - negative > 18)
        canonical = not bad.any()
    return count, canonical, ends[first] - starts[first], ends[first + 1] - starts[first + 1]


def _read_csv(data: bytes, dtype: dict):
    """pandas' C parser over the whole file; None where it refuses it. A single space separates
    the tokens where the file has no tab (twice as fast); any file that this splits otherwise than
    ``str.split`` makes an empty field, which pandas refuses, and the file is read again on any
    whitespace."""
    import pandas as pd

    kwargs = {}
    if int(pd.__version__.split(".")[0]) < 3:
        kwargs["float_precision"] = "round_trip"  # (pandas 3 always rounds correctly, and warns about the option)
    for sep in ([" ", r"\s+"] if b"\t" not in data else [r"\s+"]):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "invalid value encountered in cast"
                return pd.read_csv(io.BytesIO(data), sep=sep, header=None, names=["u", "v", "w"], dtype=dtype,
                                   keep_default_na=False, na_values={"w": [""]}, quoting=csv.QUOTE_NONE, engine="c",
                                   skip_blank_lines=True, **kwargs)
        except Exception:  # noqa: BLE001 - anything pandas cannot read is read line by line
            continue
    return None


_INT64 = {"u": np.int64, "v": np.int64, "w": np.float64}


def _weights(df, has_weight: np.ndarray | None):
    """(ok, the weights or None where no line has one) of what pandas read: ok where every weight
    is finite (a non-finite one is refused at its line by the line-by-line loader) and, given
    ``has_weight``, pandas' rows and missing weights are those the tokeniser found."""
    w = df["w"].to_numpy(np.float64)
    given = ~np.isnan(w)
    if has_weight is not None and (len(df) != len(has_weight) or not np.array_equal(given, has_weight)):
        return False, None
    if not np.isfinite(w[given]).all():
        return False, None
    return True, (w if given.any() else None)


def _chars(x: np.ndarray) -> np.ndarray:
    """len(str(x)) of each int64 (|x| < 10**19; int64's minimum gives a wrong, short count)."""
    return np.searchsorted(_POW10, np.abs(x), side="right") + 1 + (x < 0)


def _read_integer_file(data: bytes):
    """A file of digits, "-" and whitespace: every token is an integer, or pandas refuses it. Its
    tokens are all canonical (no "01", no "-0") and pandas read every one of them exactly where the
    characters of the numbers it read add up to the file's non-space bytes (each number has at
    most as many characters as its token, so any other token or a token not read leaves a gap)."""
    df = _read_csv(data, _INT64)
    if df is None:
        return None
    ok, w = _weights(df, None)
    if not ok:
        return None
    u, v = df["u"].to_numpy(np.int64), df["v"].to_numpy(np.int64)
    chars = int(_chars(u).sum()) + int(_chars(v).sum())
    if w is not None:
        given = w[~np.isnan(w)]
        if (np.abs(given) >= 1e15).any() or (np.signbit(given) & (given == 0)).any():
            return None  # (beyond exact float integers; "-0")
        chars += int(_chars(given.astype(np.int64)).sum())
    if chars != len(data) - data.count(b" ") - data.count(b"\t") - data.count(b"\n"):
        return None
    return _number_ints(u, v, w)


def _read_ints(data: bytes, has_weight: np.ndarray, lengths):
    df = _read_csv(data, _INT64)
    if df is None:
        return None
    ok, w = _weights(df, has_weight)
    if not ok:
        return None
    u, v = df["u"].to_numpy(np.int64), df["v"].to_numpy(np.int64)
    if not (np.array_equal(_chars(u), lengths[0]) and np.array_equal(_chars(v), lengths[1])):
        return None  # (pandas read other tokens than the tokeniser found: never seen)
    return _number_ints(u, v, w)


def _number_ints(u: np.ndarray, v: np.ndarray, w):
    """(w, labels, cells) of integer labels: cells numbered in label order."""
    import pandas as pd

    uv = np.empty(2 * len(u), np.int64)
    uv[0::2], uv[1::2] = u, v
    lo, hi = int(uv.min()), int(uv.max())
    if hi - lo < max(4 * len(uv), 1 << 20):  # a direct-address table: labels 0..n-1 or near it
        present = np.zeros(hi - lo + 1, bool)
        present[uv - lo] = True
        labels = np.flatnonzero(present) + lo
        cells = (np.cumsum(present, dtype=np.int64) - 1)[uv - lo]
    else:  # sparse labels: a hash table
        codes, uniques = pd.factorize(uv)
        order = np.argsort(uniques)  # (distinct values: any sort gives the same order)
        labels, cells = uniques[order], _ranks(order)[codes]
    return w, labels.tolist(), cells


def _read_strings(data: bytes, has_weight: np.ndarray):
    import pandas as pd

    df = _read_csv(data, {"u": object, "v": object, "w": np.float64})
    if df is None:
        return None
    ok, w = _weights(df, has_weight)
    if not ok:
        return None
    uv = np.empty(2 * len(df), object)
    uv[0::2], uv[1::2] = df["u"].to_numpy(object), df["v"].to_numpy(object)
    del df
    codes, uniques = pd.factorize(uv)
    names = uniques.tolist()
    if not all(isinstance(x, str) and x for x in names):
        return None
    try:
        numbers = [int(x) for x in names]  # sim.topology._natural_mapping: every label an integer, none twice
        keys = numbers if len(set(numbers)) == len(numbers) else names
    except ValueError:
        keys = names
    order = np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)
    return w, [keys[i] for i in order.tolist()], _ranks(order)[codes]


def _ranks(order: np.ndarray) -> np.ndarray:
    ranks = np.empty_like(order)
    ranks[order] = np.arange(len(order))
    return ranks


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted (``np.unique`` of numpy 2.3+ hashes first: several times slower here)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _first_seen(values: np.ndarray) -> np.ndarray:
    """The distinct values in order of first appearance."""
    import pandas as pd

    return np.asarray(pd.unique(values), np.int64)


def _edges(w, labels: list, cells: np.ndarray, *, path, max_nodes: int, max_edges: int) -> EdgeList:
    """Junctions, caps and weights of the cells of each line (``cells``: u0 v0 u1 v1 ... as 0..n-1)."""
    n = len(labels)
    cells = cells.astype(np.int64, copy=False)
    cu, cv = cells[0::2], cells[1::2]
    loop = cu == cv
    a, b = np.minimum(cu, cv), np.maximum(cu, cv)
    pairs = a[~loop] * n + b[~loop]  # junctions between distinct cells, line by line
    weighted = w is not None and not np.isnan(w[~loop]).all()  # (a self-loop's weight is never read)
    if weighted:  # sorted stably: the lines of a junction in line order, the last weight given is its weight
        order = np.argsort(pairs, kind="stable")
        pairs = pairs[order]
    first = np.concatenate(([True], pairs[1:] != pairs[:-1])) if len(pairs) else np.zeros(0, bool)
    keys = pairs[first] if weighted else _distinct(pairs)  # the distinct junctions, sorted
    n_loops = len(_distinct(cu[loop]))
    if n > max_nodes or len(keys) + n_loops > max_edges:
        _refuse_caps(cells, a * n + b, n, path, max_nodes, max_edges)
    if not len(keys):
        raise ConfigError("topology.path", path,
                          "a graph with junctions between distinct cells (every edge in this file is a self-loop)")
    edges = EdgeList(labels=labels, cells=cells.astype(np.int32), src=(keys // n).astype(np.int32),
                     dst=(keys % n).astype(np.int32), weight=None, dropped=[])
    weight = None
    if weighted:
        junction = np.cumsum(first) - 1  # of each sorted line
        w_sorted = w[~loop][order]
        given = np.flatnonzero(~np.isnan(w_sorted))
        last = given[np.concatenate((junction[given][1:] != junction[given][:-1], [True]))]
        weight = np.full(len(keys), np.nan)
        weight[junction[last]] = w_sorted[last]
        if (weight < 0).any():
            _refuse_weight(dataclasses.replace(edges, weight=weight), path)
    duplicates = int((~loop).sum()) - len(keys)
    dropped = [f"{n_loops} self-loop{'s' if n_loops != 1 else ''}"] if n_loops else []
    if duplicates:
        dropped.append(f"{duplicates} repeated junction{'s' if duplicates != 1 else ''} (one kept)")
    return dataclasses.replace(edges, weight=weight, dropped=dropped)


def _refuse_caps(cells, pairs, n, path, max_nodes, max_edges):
    """Refused at the line that crosses a cap first (on one line, the node cap first), as the
    line-by-line loader refuses (its message has no counts)."""
    import pandas as pd

    lines = len(pairs)
    node_line = int(np.argmax(pd.factorize(cells)[0] == max_nodes)) // 2 if n > max_nodes else lines
    codes = pd.factorize(pairs)[0]  # distinct junctions, self-loops included, in order of first appearance
    edge_line = int(np.argmax(codes == max_edges)) if codes.max() >= max_edges else lines
    if node_line <= edge_line:
        raise ConfigError("topology.path", path, f"a graph with at most {max_nodes} nodes")
    raise ConfigError("topology.path", path, f"a graph with at most {max_edges} edges")


def _refuse_weight(edges: EdgeList, path) -> None:
    """Refuse a negative weight, naming the junction ``sim.topology._check_values`` names: the first
    one networkx's ``Graph.edges`` yields (nodes in order of first appearance, each node's junctions
    in line order, written from the node met first)."""
    bad = np.flatnonzero(edges.weight < 0)
    seen = _ranks(edges.node_order())  # cell -> its place in order of first appearance
    appearance = _ranks(edges.edge_order())  # junction -> its place in order of first appearance
    s, d = edges.src[bad].astype(np.int64), edges.dst[bad].astype(np.int64)
    s_first = seen[s] < seen[d]
    head, tail = np.where(s_first, s, d), np.where(s_first, d, s)
    k = np.lexsort((appearance[bad], seen[head]))[0]
    value = repr(float(edges.weight[bad[k]]))
    shown = value if len(value) <= 40 else value[:37] + "..."
    raise ConfigError("topology.path", path, f"an edge weight (a conductance multiplier) that is a finite number >= 0; "
                                             f"junction {edges.labels[head[k]]}-{edges.labels[tail[k]]} has {shown}")
