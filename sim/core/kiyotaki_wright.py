"""A Kiyotaki-Wright exchange economy on a graph: which carrier becomes the medium of exchange.

The economics (Kiyotaki & Wright 1989, "On money as a medium of exchange", J. Polit. Econ.
97:927-954, their "model A"). There are ``n`` types of agents and ``n`` goods (KW: n = 3). An agent
of type ``i`` gets utility ``u_i`` only from consuming good ``i`` and, right after consuming, produces
one unit of good ``i + 1 (mod n)``. With goods numbered from 1 as in the paper: type I consumes good 1
and produces good 2, type II consumes 2 and produces 3, type III consumes 3 and produces 1, so no two
agents ever want each other's production good (no double coincidence of wants) and a good must pass
through a third hand: a medium of exchange. Goods are indivisible; every agent holds exactly one
unit of one good between periods (its inventory) and pays the storage cost ``s_k`` of the good ``k``
it carries into the next period (KW: ``c_3 > c_2 > c_1 > 0``). Agents meet in random pairs; a pair
swaps inventories only if both agree; an agent that ends the trade holding its consumption good
consumes it at once (utility ``u_i``) and holds its new production good instead.

KW look for Nash equilibria in stationary trading strategies (accept good k in exchange for good j
or not). In the *fundamental* equilibrium every agent trades only for a good with a lower storage
cost (or for its consumption good): type I only ever holds good 2, type III only good 1, and
type II accepts good 1 in exchange for good 3 and passes it on to type I for good 2, so good 1, the
cheapest to store, circulates as the medium of exchange (type II holds good 1 half of the time and
good 3 the other half). Type I would *speculate* (accept the costlier good 3 for good 2 because type
III, who holds good 1, wants it) when the saving in waiting outweighs the extra storage. Holding
good 2, type I gets good 1 only from a type II holding good 1; holding good 3, from any type III
(all of whom hold good 1); with three equal types met at random, that is a gain of
``(1 - 1/2) / 3`` in the per-period chance of consuming, and the fundamental equilibrium is the
unique stationary one when ``s_3 - s_2 > u_1 / 6`` (KW's condition with a discount factor
``beta -> 1``, as restated by Marimon, McGrattan & Sargent 1990, sect. 4.2). When it fails
there is a speculative equilibrium in which good 3 is a second medium.

Learning. Marimon, McGrattan & Sargent (1990, "Money as a medium of exchange in an economy with
artificially intelligent agents", J. Econ. Dyn. Control 14:329-373) let agents that know nothing of
the model learn trading rules with Holland classifier systems; for model A with
``s = (0.1, 1, 20)``, ``u = 100`` (their economies A1.1 and A1.2, where KW's condition holds:
19 > 16.7) holdings converged to the fundamental equilibrium, and even with ``u = 500`` (A2, where
KW predict speculation) they found the fundamental one. Duffy & Ochs (1999, "Emergence of money as a
medium of exchange: an experimental study", Am. Econ. Rev. 89:847-877) found the same tendency in
the laboratory: human subjects mostly played fundamental strategies, even where speculating paid
more, guided by their past payoffs rather than by marketability (the payoff-driven adaptation
modelled here).

This module's version. Here the agents are the nodes of a graph (any networkx graph or edge list)
and meet only along its edges, and strategies adapt by imitation instead of classifier systems:

* a strategy is a table of acceptance bits, one per ordered pair ``(held, offered)`` of distinct
  goods neither of which the agent consumes: ``(n - 1)(n - 2)`` bits, 2 for n = 3 (entry 0: accept
  the third good for one's own production good; entry 1: accept one's production good back for the
  third good), numbered relative to the type so that entry ``m`` means the same role for every type.
  An agent always accepts its consumption good and never "trades" a good for the same good.
* meetings (rng purpose :data:`MATCH`): every edge draws a uniform priority; an edge meets when it
  is the highest-priority edge at both of its ends (ties: the lower edge index), which is a random
  matching drawn in one vectorised pass (one round of Luby's maximal-matching algorithm). Edge
  ``(a, b)`` is drawn with probability ``1 / (d_a + d_b - 1)``, so on a ``d``-regular graph an agent
  meets someone in a period with probability ``d / (2d - 1)``: 2/3 on a ring, about 1/2 on a dense
  graph; the others sit the period out (still paying storage).
* payoff (utility per period): ``r = u_i [consumed] - s[good carried into the next period]``, and the
  agent's payoff is its exponential average ``pi <- pi + (r - pi) / W`` over a window of
  ``W = payoff_window`` periods (time constant about W periods). W is a power of two so that the
  update is exact but for one rounding on every platform, with or without a fused multiply-add.
* imitation (purposes :data:`IMITATE`, :data:`ADOPT`): each period each agent looks at one random
  neighbour *of its own type* and copies that neighbour's whole table with probability
  ``imitation_rate x 1 / (1 + exp(-(pi_j - pi_i) / (temperature x u_i)))``: the pairwise-comparison
  (Fermi) rule of Traulsen, Nowak & Pacheco (2006, Phys. Rev. E 74:011909), the rule
  :mod:`sim.core.differentiation` uses, with the temperature in units of the agent's utility so the
  rule is unchanged by a change of the utility unit. Agents with no neighbour of their type do not
  imitate (they still mutate).
* mutation (purpose :data:`MUTATE`): with probability ``mutation`` per period an agent flips one of
  its bits, chosen uniformly (the experimentation MMS found necessary).
* initial state (purpose :data:`INIT`, drawn at step 0; the periods are steps 1, 2, ...): each agent
  holds a uniformly drawn good other than its consumption good, and each bit is 1 with probability
  ``initial_accept``.

Every random number comes from :func:`sim.rng.uniforms` keyed by (replicate key, step, purpose,
id), ids being agents (edges for :data:`MATCH`), so the jitted process (:func:`step`,
:func:`simulate`, vmapped over replicates in :func:`run`) and the plain-Python :class:`Reference`
draw the same numbers and give the same holdings and strategies.

Outcomes (:func:`holding_share`, :func:`medium_share`, :func:`acceptance_rates`,
:func:`most_held_medium`): a good is *held as a medium* by an agent that neither consumes nor
produces it (for n = 3, good k's only such type is the type that consumes good k + 1); the medium
share of good k is the fraction of those agents holding it, and the most held medium is the good
with the largest medium share. In the fundamental equilibrium the medium shares are about
``(1/2, 0, 0)``; speculation by type I raises good 3's.

Which parameters select the fundamental equilibrium here. KW's condition is about equilibrium; adaptive
agents must also *find* it, by imitating on payoffs in which every consumption is a lump of u, so a
strategy bit is selected only when its payoff effect is not small next to that noise. Type III's bit
"accept good 2 for good 1" costs only ``s_2 - s_1`` per period, and while some of type II still
refuse good 1, good 2 (type II's consumption good) is even slightly more marketable. With MMS's A1
costs ``(0.1, 1, 20)`` and ``u = 100`` (measured on 90-agent small worlds, 2000 periods, 8 graphs x
12 replicates): type I's speculation dies out (good 3's medium share 0.03) but goods 1 and 2 end
nearly tied as media (good 1 the most held medium in 46% of the replicates). The default economy,
:data:`FUNDAMENTAL_STORAGE` ``(1, 4, 9)`` with ``u = 20`` (KW's condition: 5 > 3.3), separates the
goods: good 1 the most held medium in 96 of 96 replicates, medium shares about (0.48, 0.07, 0.04);
with frozen random strategies (no imitation, no mutation) only 31%; and in KW's speculative region
(same costs, ``u = 100``: 5 < 16.7) 66%.

Units: utility and storage costs in utils (per unit consumed / per period held); time in periods
(steps); shares and rates dimensionless.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from sim import rng
from sim.core.differentiation import neighbour_table
from sim.errors import ConfigError
from sim.pytree import pytree_dataclass

# rng purposes (never renumber: it changes results); disjoint from every other purpose of the project
MATCH, IMITATE, ADOPT, MUTATE, INIT = 45, 46, 47, 48, 49
PURPOSES = {"match": MATCH, "imitate": IMITATE, "adopt": ADOPT, "mutate": MUTATE, "init": INIT}
MIN_PER_TYPE = 3  # imitation within a type and a share per type need a few agents of each
MAX_TYPES = 64  # the strategy table has (n - 1)(n - 2) bits per agent

# Default economy: storage costs of MMS's economy B with u low enough that KW's condition for the
# fundamental equilibrium holds in model A with a margin (s3 - s2 = 5 > u / 6 = 3.3), and the storage
# differences are large next to u, so imitation on noisy payoffs selects them (see the module docstring).
FUNDAMENTAL_STORAGE = (1.0, 4.0, 9.0)
FUNDAMENTAL_UTILITY = 20.0

DEFAULTS = {"mutation": 0.001, "imitation_rate": 0.1, "temperature": 0.05, "payoff_window": 64,
            "initial_accept": 0.5, "tail": 0.25}


@pytree_dataclass
class KWState:
    """One economy, per agent ``(N,)`` unless said."""

    holding: object  # (N,) int32 good carried into the next period, never the agent's consumption good
    strategy: object  # (N, M) bool acceptance bits, M = (n-1)(n-2), entry m as in entry_of
    payoff: object  # (N,) exponential average of utility per period (utils / period)
    consumed: object  # (N,) int32 cumulative number of consumptions
    trades: object  # (N,) int32 cumulative number of swaps
    step: object  # int32 scalar: the period just finished (0: the initial state)


@pytree_dataclass
class KWParams:
    storage: object  # (G,) utils per period of holding good k
    utility: object  # (N,) utils per consumption (u of the agent's type)
    types: object  # (N,) int32 type = consumption good
    produce: object  # (N,) int32 production good (type + 1) mod G
    entry_of: object  # (G, G, G) int32 [type, held, offered] -> strategy entry, -1 where no bit applies
    src: object  # (E,) int32 edge ends, src < dst
    dst: object  # (E,) int32
    peer_start: object  # (N,) int32 first same-type neighbour in peer_index
    peer_count: object  # (N,) int32 number of same-type neighbours
    peer_index: object  # (2E + 1,) int32 same-type neighbours grouped by agent, then padding
    mutation: object  # probability per agent per period of flipping one bit
    imitation_rate: object  # probability per agent per period of an imitation attempt (times the Fermi p)
    fermi_scale: object  # (N,) temperature x u_i: payoff difference (utils / period) giving odds e:1
    decay: object  # 1 / payoff_window (a power of two): weight of this period's utility in the payoff average
    initial_accept: object  # probability that an initial bit is 1


# ------------------------------------------------------------------------------ input


def _number(key, value, lo, hi=None, strict_lo=False, strict_hi=False):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > lo if strict_lo else value >= lo)
    ok = ok and (hi is None or (value < hi if strict_hi else value <= hi))
    if not ok:
        lo_s = f"{'>' if strict_lo else '>='} {lo}"
        hi_s = "" if hi is None else f" and {'<' if strict_hi else '<='} {hi}"
        raise ConfigError(key, value, f"a finite number {lo_s}{hi_s}")
    return float(value)


def _integer(key, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ConfigError(key, value, f"an integer >= {lo}")
    return int(value)


def edges_of(graph_or_edges, n_agents: int | None = None):
    """``(src, dst, n)`` of an undirected networkx graph (nodes relabelled 0..n-1 in sorted order, as
    :mod:`sim.topology` does) or of an edge list (``(E, 2)`` array or a ``(src, dst)`` pair; ``n`` is
    ``n_agents`` or the largest index + 1). Self-loops and repeated edges are dropped; src < dst."""
    key = "graph_or_edges"
    if isinstance(graph_or_edges, nx.Graph):
        g = nx.convert_node_labels_to_integers(nx.Graph(graph_or_edges), ordering="sorted")
        n = g.number_of_nodes()
        if n_agents is not None and n_agents != n:
            raise ConfigError("n_agents", n_agents, f"None or the graph's number of nodes ({n})")
        pairs = np.array(list(g.edges()), dtype=np.int64).reshape(-1, 2)
    else:
        try:
            arr = np.asarray(graph_or_edges)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.dtype == object or arr.ndim != 2 or 2 not in arr.shape:
            raise ConfigError(key, _short(graph_or_edges), "a networkx graph, an (E, 2) integer edge array or a "
                              "(src, dst) pair of integer arrays")
        # rows are edges ((E, 2), also a (2, 2) array); a (2, E) array with E != 2 is a (src, dst) pair
        pairs = arr if arr.shape[1] == 2 else arr.T
        if not np.issubdtype(pairs.dtype, np.integer) or (pairs.size and pairs.min() < 0):
            raise ConfigError(key, _short(graph_or_edges), "edges given as non-negative integer agent indices")
        pairs = pairs.astype(np.int64).reshape(-1, 2)
        n = int(pairs.max()) + 1 if pairs.size else 0
        if n_agents is not None:
            n_agents = _integer("n_agents", n_agents, 1)
            if n_agents < n:
                raise ConfigError("n_agents", n_agents, f"at least the largest agent index + 1 ({n})")
            n = n_agents
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    lo, hi = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
    uniq = np.unique(np.stack([lo, hi], axis=1), axis=0) if lo.size else np.zeros((0, 2), np.int64)
    if uniq.shape[0] == 0:
        raise ConfigError(key, _short(graph_or_edges), "a graph with at least one edge between distinct agents")
    return uniq[:, 0].astype(np.int32), uniq[:, 1].astype(np.int32), n


def _short(value):
    text = repr(value)
    return value if len(text) <= 80 else text[:77] + "..."


def entry_table(n_goods: int) -> np.ndarray:
    """``entry_of[type, held, offered]``: the strategy bit an agent of ``type`` consults when it holds
    ``held`` and is offered ``offered``, or -1 (its consumption good is involved, or the goods are the
    same). Entries are numbered relative to the type: held ``type + 1 + a``, offered ``type + 1 + b``
    (mod n), a != b, in row-major order of (a, b) without the diagonal."""
    g = n_goods
    table = np.full((g, g, g), -1, np.int32)
    for t in range(g):
        m = 0
        for a in range(g - 1):
            for b in range(g - 1):
                if a == b:
                    continue
                table[t, (t + 1 + a) % g, (t + 1 + b) % g] = m
                m += 1
    return table


def default_types(n_agents: int, n_types: int, seed: int) -> np.ndarray:
    """A balanced random assignment of types (counts differ by at most one), from ``seed``: every type
    gets neighbours of its own kind on any graph, which imitation needs (``i % n`` on a ring would give
    none)."""
    return np.random.default_rng([int(seed), 0x4B57]).permutation(np.arange(n_agents) % n_types).astype(np.int32)


def make_params(graph_or_edges, *, n_types: int = 3, storage=FUNDAMENTAL_STORAGE, utility=FUNDAMENTAL_UTILITY,
                types=None, seed: int = 0, n_agents: int | None = None, mutation: float = DEFAULTS["mutation"],
                imitation_rate: float = DEFAULTS["imitation_rate"], temperature: float = DEFAULTS["temperature"],
                payoff_window: int = DEFAULTS["payoff_window"],
                initial_accept: float = DEFAULTS["initial_accept"]) -> KWParams:
    """The checked parameters of an economy (host numpy arrays; see :class:`KWParams`).

    ``storage``: ``n_types`` costs >= 0 (utils per period), good k's at index k (good 1 of the paper
    is index 0); ``utility``: > 0, one number or one per type (utils per consumption); ``types``:
    each agent's type (= its consumption good), default :func:`default_types`; ``temperature``: the
    Fermi temperature in units of u; ``payoff_window``: periods, a power of two. Raises ConfigError
    on anything else."""
    n_types = _integer("n_types", n_types, 3)
    if n_types > MAX_TYPES:
        raise ConfigError("n_types", n_types, f"an integer from 3 to {MAX_TYPES}")
    src, dst, n = edges_of(graph_or_edges, n_agents)
    st = _vector("storage", storage, n_types, lo=0.0, strict=False,
                 what="storage costs >= 0 (utils per period held), one per good")
    u = np.asarray(utility, dtype=object)
    if u.ndim == 0:
        u_types = np.full(n_types, _number("utility", utility, 0.0, strict_lo=True))
    else:
        u_types = _vector("utility", utility, n_types, lo=0.0, strict=True,
                          what="utilities > 0 (utils per consumption), one per type (or one number for all)")
    seed = _integer("seed", seed, 0)
    if types is None:
        ty = default_types(n, n_types, seed)
    else:
        raw = np.asarray(types)
        if (raw.shape != (n,) or not np.issubdtype(raw.dtype, np.integer)
                or (n and (raw.min() < 0 or raw.max() >= n_types))):
            raise ConfigError("types", _short(types), f"{n} integers in 0..{n_types - 1}, one per agent")
        ty = raw.astype(np.int32)
    counts = np.bincount(ty, minlength=n_types)
    if counts.min() < MIN_PER_TYPE:
        raise ConfigError("types", {int(k): int(c) for k, c in enumerate(counts)},
                          f"at least {MIN_PER_TYPE} agents of each of the {n_types} types (type {int(counts.argmin())} "
                          f"has {int(counts.min())}; the graph has {n} agents)")
    mutation = _number("mutation", mutation, 0.0, 1.0)
    imitation_rate = _number("imitation_rate", imitation_rate, 0.0, 1.0)
    temperature = _number("temperature", temperature, 0.0, strict_lo=True)
    if (isinstance(payoff_window, bool) or not isinstance(payoff_window, (int, np.integer)) or payoff_window < 1
            or payoff_window > 2 ** 20 or payoff_window & (payoff_window - 1)):
        raise ConfigError("payoff_window", payoff_window, "a power of two from 1 to 2**20 (periods)")
    initial_accept = _number("initial_accept", initial_accept, 0.0, 1.0)

    same = ty[src] == ty[dst]
    start, count, index, _row, _weight = neighbour_table(src[same], dst[same], n)
    # padded to the size of the whole graph's table, so the shapes (and the compiled program) do not
    # depend on how the types fell on the graph
    index = np.concatenate([index, np.zeros(2 * src.size + 1 - index.size, np.int32)])
    util = u_types[ty]
    f = np.float64
    return KWParams(storage=st.astype(f), utility=util.astype(f), types=ty,
                    produce=((ty + 1) % n_types).astype(np.int32), entry_of=entry_table(n_types), src=src, dst=dst,
                    peer_start=start, peer_count=count,
                    peer_index=index, mutation=f(mutation), imitation_rate=f(imitation_rate),
                    fermi_scale=(temperature * util).astype(f), decay=f(1.0 / int(payoff_window)),
                    initial_accept=f(initial_accept))


def _vector(key, value, n, *, lo, strict, what):
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    ok = arr is not None and arr.shape == (n,) and bool(np.all(np.isfinite(arr)))
    ok = ok and bool(np.all(arr > lo if strict else arr >= lo))
    if not ok:
        raise ConfigError(key, _short(value), f"{n} finite {what}")
    return arr


# ------------------------------------------------------------------------------ the process (JAX)


def _sizes(params: KWParams):
    n = params.types.shape[0]
    g = params.storage.shape[0]
    return n, g, (g - 1) * (g - 2)


def init_state(params: KWParams, key) -> KWState:
    """The economy at step 0 (draws of purpose :data:`INIT`; ids ``a (M + 1)`` for agent a's holding,
    ``a (M + 1) + 1 + m`` for its bit m). Traceable."""
    n, g, m = _sizes(params)
    ids = jnp.arange(n * (m + 1), dtype=jnp.uint32)
    u = rng.uniforms(key, 0, INIT, ids).reshape(n, m + 1)
    k = jnp.minimum(jnp.floor(u[:, 0] * (g - 1)).astype(jnp.int32), g - 2)
    holding = ((params.types + 1 + k) % g).astype(jnp.int32)
    strategy = u[:, 1:] < params.initial_accept
    zero = jnp.zeros(n, jnp.int32)
    return KWState(holding=holding, strategy=strategy, payoff=jnp.zeros(n, u.dtype), consumed=zero, trades=zero,
                   step=jnp.int32(0))


def _partners(params: KWParams, key, step, n):
    """partner (N,) of each agent this period, itself when it meets no one."""
    src, dst = params.src, params.dst
    e = src.shape[0]
    eid = jnp.arange(e, dtype=jnp.int32)
    u = rng.uniforms(key, step, MATCH, eid.astype(jnp.uint32))
    ends = jnp.concatenate([src, dst])
    u2, e2 = jnp.concatenate([u, u]), jnp.concatenate([eid, eid])
    best_u = jax.ops.segment_max(u2, ends, num_segments=n)
    best_e = jax.ops.segment_min(jnp.where(u2 == best_u[ends], e2, e), ends, num_segments=n)
    chosen = (best_e[src] == eid) & (best_e[dst] == eid)
    me = jnp.arange(n, dtype=jnp.int32)
    be = jnp.clip(best_e, 0, e - 1)
    met = (best_e >= 0) & (best_e < e) & chosen[be]
    other = jnp.where(src[be] == me, dst[be], src[be])
    return jnp.where(met, other, me)


def _accepts(params: KWParams, strategy, holding, offered):
    """Whether each agent, holding ``holding``, would take ``offered`` for it."""
    n = holding.shape[0]
    entry = params.entry_of[params.types, holding, offered]
    bit = strategy[jnp.arange(n), jnp.clip(entry, 0, None)] & (entry >= 0)
    return (offered == params.types) | ((offered != holding) & bit)


def step(state: KWState, params: KWParams, key) -> KWState:
    """One period: meet, trade, consume and produce, pay storage, update payoffs, imitate, mutate."""
    n, g, m = _sizes(params)
    t = state.step + 1
    ids = jnp.arange(n, dtype=jnp.uint32)
    partner = _partners(params, key, t, n)
    x = state.holding
    offered = x[partner]
    ok = _accepts(params, state.strategy, x, offered)
    trade = (partner != jnp.arange(n)) & ok & ok[partner]
    held = jnp.where(trade, offered, x)
    eat = held == params.types
    held = jnp.where(eat, params.produce, held).astype(jnp.int32)
    reward = jnp.where(eat, params.utility, 0.0) - params.storage[held]
    # decay is a power of two, so the product is exact and the update has one rounding whether or not
    # XLA contracts it into an FMA: the payoffs match the plain-Python reference bit for bit
    payoff = state.payoff + params.decay * (reward - state.payoff)

    # imitation: synchronous, every agent compares with its neighbour's table before this period's changes
    cnt = params.peer_count
    u_pick = rng.uniforms(key, t, IMITATE, ids)
    u_adopt = rng.uniforms(key, t, ADOPT, ids)
    k = jnp.minimum(jnp.floor(u_pick * cnt).astype(jnp.int32), jnp.maximum(cnt - 1, 0))
    j = params.peer_index[params.peer_start + k]
    p = 1.0 / (1.0 + jnp.exp(-(payoff[j] - payoff) / params.fermi_scale))
    adopt = (cnt > 0) & (u_adopt < params.imitation_rate * p)
    strategy = jnp.where(adopt[:, None], state.strategy[j], state.strategy)

    # mutation: one uniform decides whether (u < mu) and, rescaled (u / mu is uniform given u < mu), which bit
    u_mut = rng.uniforms(key, t, MUTATE, ids)
    mutate = u_mut < params.mutation
    which = jnp.minimum(jnp.floor(jnp.where(mutate, u_mut / params.mutation, 0.0) * m).astype(jnp.int32), m - 1)
    flip = mutate[:, None] & (jnp.arange(m)[None, :] == which[:, None])
    strategy = strategy ^ flip

    return KWState(holding=held, strategy=strategy, payoff=payoff, consumed=state.consumed + eat.astype(jnp.int32),
                   trades=state.trades + trade.astype(jnp.int32), step=t)


# ------------------------------------------------------------------------------ outcomes (traceable)


def holding_share(state: KWState, params: KWParams):
    """(G,) share of the agents that do not consume good k who hold good k (its own producers included)."""
    g = params.storage.shape[0]
    goods = jnp.arange(g)
    holds = state.holding[:, None] == goods[None, :]
    eligible = params.types[:, None] != goods[None, :]
    return jnp.sum(holds & eligible, axis=0) / jnp.maximum(jnp.sum(eligible, axis=0), 1)


def medium_share(state: KWState, params: KWParams):
    """(G,) share of the agents that neither consume nor produce good k who hold good k: the use of k as
    a medium of exchange (KW's fundamental equilibrium: about (1/2, 0, 0))."""
    g = params.storage.shape[0]
    goods = jnp.arange(g)
    holds = state.holding[:, None] == goods[None, :]
    eligible = (params.types[:, None] != goods[None, :]) & (params.produce[:, None] != goods[None, :])
    return jnp.sum(holds & eligible, axis=0) / jnp.maximum(jnp.sum(eligible, axis=0), 1)


def most_held_medium(state: KWState, params: KWParams):
    """The good with the largest :func:`medium_share` (the lowest index on a tie)."""
    return jnp.argmax(medium_share(state, params))


def acceptance_rates(state: KWState, params: KWParams):
    """(types, G, G): share of each type's agents that accept ``offered`` (last axis) when holding
    ``held`` (middle axis); 1 for its consumption good, NaN where no choice exists (held is the
    consumption good, or held == offered)."""
    g = params.storage.shape[0]
    n = params.types.shape[0]
    bits = state.strategy.astype(state.payoff.dtype)
    mean = jax.ops.segment_sum(bits, params.types, num_segments=g) / jnp.maximum(
        jax.ops.segment_sum(jnp.ones(n, bits.dtype), params.types, num_segments=g), 1.0)[:, None]  # (T, M)
    entry = params.entry_of  # (T, G, G)
    typ = jnp.arange(g)[:, None, None]
    held, offered = jnp.arange(g)[None, :, None], jnp.arange(g)[None, None, :]
    rate = jnp.where(entry >= 0, mean[typ, jnp.clip(entry, 0, None)], jnp.nan)
    return jnp.where((offered == typ) & (held != typ), 1.0, rate)


def _record(state, params):
    return {"medium_share": medium_share(state, params), "holding_share": holding_share(state, params)}


def simulate(state: KWState, params: KWParams, key, steps: int):
    """``steps`` periods with ``lax.scan``: (final state, per-period record: ``medium_share`` and
    ``holding_share`` (steps, G), ``consumed`` and ``traded`` (steps,) shares of agents)."""

    def body(s, _):
        s2 = step(s, params, key)
        out = _record(s2, params)
        n = s2.holding.shape[0]
        out["consumed"] = jnp.sum(s2.consumed - s.consumed) / n
        out["traded"] = jnp.sum(s2.trades - s.trades) / n
        return s2, out

    return jax.lax.scan(body, state, None, length=steps)


CHUNK = 200  # periods per compiled scan: runs of any multiple of it share one executable


@jax.jit
def init_batch(params: KWParams, keys):
    """Initial states of the replicates of ``keys`` (R, 2), replicate axis first."""
    return jax.vmap(init_state, in_axes=(None, 0))(params, keys)


@functools.partial(jax.jit, static_argnames=("steps",))
def advance_batch(states: KWState, params: KWParams, keys, steps: int):
    """:func:`simulate` vmapped over replicates: (states after ``steps`` more periods, records)."""
    return jax.vmap(simulate, in_axes=(0, None, 0, None))(states, params, keys, steps)


def run_batch(params: KWParams, keys, steps: int):
    """Replicates of ``keys`` (R, 2) from step 0 through ``steps`` periods: (initial states, final
    states, records), replicate axis first. The periods run in scans of :data:`CHUNK` (plus one of the
    remainder), so runs of different lengths reuse the compiled scan instead of compiling their own."""
    s0 = init_batch(params, keys)
    state, parts, left = s0, [], int(steps)
    while left > 0:
        n = min(CHUNK, left)
        state, rec = advance_batch(state, params, keys, n)
        parts.append(rec)
        left -= n
    records = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=1), *parts)
    return s0, state, records


# one compiled program rather than op-by-op dispatch (dozens of small compilations)
_batch_acceptance = jax.jit(jax.vmap(acceptance_rates, in_axes=(0, None)))


def run(graph_or_edges, n_types: int = 3, storage: Sequence[float] = FUNDAMENTAL_STORAGE,
        utility=FUNDAMENTAL_UTILITY, steps: int = 2000, replicates: int = 12, seed: int = 0, *,
        types=None, n_agents: int | None = None, mutation: float = DEFAULTS["mutation"],
        imitation_rate: float = DEFAULTS["imitation_rate"], temperature: float = DEFAULTS["temperature"],
        payoff_window: int = DEFAULTS["payoff_window"], initial_accept: float = DEFAULTS["initial_accept"],
        tail: float = DEFAULTS["tail"]) -> dict:
    """Run ``replicates`` economies (keys ``sim.rng.replicate_keys(seed, replicates)``) for ``steps``
    periods in one jitted, vmapped call and summarise them (numpy arrays, replicate axis first):

    ``medium_share`` (R, G) and ``holding_share`` (R, G): averages over the last ``tail`` fraction of
    the periods; ``most_held_medium`` (R,): argmax of that ``medium_share``; ``medium_share_t``
    (R, steps, G): every period's; ``acceptance`` (R, types, G, G): final :func:`acceptance_rates`;
    ``consumption_rate`` and ``trade_rate`` (R,): consumptions and swaps per agent per period over the
    tail; ``types`` (N,), ``storage`` (G,), ``utility`` (G,) as used; ``final`` the final KWState (numpy).
    """
    steps = _integer("steps", steps, 1)
    replicates = _integer("replicates", replicates, 1)
    tail = _number("tail", tail, 0.0, 1.0, strict_lo=True)
    params = make_params(graph_or_edges, n_types=n_types, storage=storage, utility=utility, types=types, seed=seed,
                         n_agents=n_agents, mutation=mutation, imitation_rate=imitation_rate,
                         temperature=temperature, payoff_window=payoff_window, initial_accept=initial_accept)
    keys = rng.replicate_keys(seed, replicates)
    _s0, final, rec = run_batch(params, keys, steps)
    rec = jax.device_get(rec)
    first = steps - max(1, int(round(tail * steps)))
    med = np.asarray(rec["medium_share"])[:, first:].mean(axis=1)
    acc = np.asarray(_batch_acceptance(final, params))
    g = params.storage.shape[0]
    u_types = np.array([params.utility[params.types == t][0] for t in range(g)])
    return {
        "medium_share": med,
        "holding_share": np.asarray(rec["holding_share"])[:, first:].mean(axis=1),
        "most_held_medium": med.argmax(axis=1),
        "medium_share_t": np.asarray(rec["medium_share"]),
        "acceptance": acc,
        "consumption_rate": np.asarray(rec["consumed"])[:, first:].mean(axis=1),
        "trade_rate": np.asarray(rec["traded"])[:, first:].mean(axis=1),
        "types": np.asarray(params.types),
        "storage": np.asarray(params.storage),
        "utility": u_types,
        "final": jax.device_get(final),
    }


# ------------------------------------------------------------------------------ plain-Python reference


class Reference:
    """The same economy agent by agent and edge by edge with Python ints and floats, drawing the
    engine's numbers through :func:`sim.rng.host_uniforms` (one vectorised call per purpose and
    period, each agent or edge taking the number for its id)."""

    def __init__(self, params: KWParams, key):
        p = jax.device_get(params)
        self.key = key
        self.storage = np.asarray(p.storage, np.float64).tolist()
        self.utility = np.asarray(p.utility, np.float64).tolist()
        self.types = np.asarray(p.types).tolist()
        self.produce = np.asarray(p.produce).tolist()
        self.entry_of = np.asarray(p.entry_of).tolist()
        self.src, self.dst = np.asarray(p.src).tolist(), np.asarray(p.dst).tolist()
        start, count, index = (np.asarray(a).tolist() for a in (p.peer_start, p.peer_count, p.peer_index))
        self.peers = [index[a:a + c] for a, c in zip(start, count)]
        self.mutation, self.imitation_rate = float(p.mutation), float(p.imitation_rate)
        self.fermi_scale = np.asarray(p.fermi_scale, np.float64).tolist()
        self.decay, self.initial_accept = float(p.decay), float(p.initial_accept)
        self.n, self.g = len(self.types), len(self.storage)
        self.m = (self.g - 1) * (self.g - 2)
        n, g, m = self.n, self.g, self.m
        u = rng.host_uniforms(key, 0, INIT, n * (m + 1)).tolist()
        self.holding, self.strategy = [], []
        for a in range(n):
            row = u[a * (m + 1):(a + 1) * (m + 1)]
            k = min(int(math.floor(row[0] * (g - 1))), g - 2)
            self.holding.append((self.types[a] + 1 + k) % g)
            self.strategy.append([x < self.initial_accept for x in row[1:]])
        self.payoff = [0.0] * n
        self.consumed, self.trades = [0] * n, [0] * n
        self.t = 0

    def _accepts(self, a, held, offered):
        if offered == self.types[a]:
            return True
        if offered == held:
            return False
        e = self.entry_of[self.types[a]][held][offered]
        return e >= 0 and self.strategy[a][e]

    def step(self) -> None:
        n, m = self.n, self.m
        t = self.t + 1
        draw = lambda purpose, count: rng.host_uniforms(self.key, t, purpose, count).tolist()  # noqa: E731
        u_edge = draw(MATCH, len(self.src))
        best = [-1] * n  # highest-priority incident edge; scanning edges in order keeps the lowest index on a tie
        for e, (a, b) in enumerate(zip(self.src, self.dst)):
            for v in (a, b):
                if best[v] < 0 or u_edge[e] > u_edge[best[v]]:
                    best[v] = e
        partner = list(range(n))
        for e, (a, b) in enumerate(zip(self.src, self.dst)):
            if best[a] == e and best[b] == e:
                partner[a], partner[b] = b, a
        old = list(self.holding)
        for a in range(n):
            b = partner[a]
            held = old[a]
            if b != a and self._accepts(a, old[a], old[b]) and self._accepts(b, old[b], old[a]):
                held = old[b]
                self.trades[a] += 1
            reward = 0.0
            if held == self.types[a]:
                held = self.produce[a]
                self.consumed[a] += 1
                reward = self.utility[a]
            self.holding[a] = held
            reward -= self.storage[held]
            self.payoff[a] = self.payoff[a] + self.decay * (reward - self.payoff[a])
        u_pick, u_adopt, u_mut = draw(IMITATE, n), draw(ADOPT, n), draw(MUTATE, n)
        before = [list(row) for row in self.strategy]
        for a in range(n):
            peers = self.peers[a]
            if peers:
                j = peers[min(int(math.floor(u_pick[a] * len(peers))), len(peers) - 1)]
                z = -(self.payoff[j] - self.payoff[a]) / self.fermi_scale[a]
                try:
                    p = 1.0 / (1.0 + math.exp(z))
                except OverflowError:  # the engine's exp gives inf, so p = 0
                    p = 0.0
                if u_adopt[a] < self.imitation_rate * p:
                    self.strategy[a] = list(before[j])
            if u_mut[a] < self.mutation:
                k = min(int(math.floor(u_mut[a] / self.mutation * m)), m - 1)
                self.strategy[a][k] = not self.strategy[a][k]
        self.t = t

    def state(self) -> KWState:
        return KWState(holding=np.array(self.holding, np.int32), strategy=np.array(self.strategy, bool),
                       payoff=np.array(self.payoff, np.float64), consumed=np.array(self.consumed, np.int32),
                       trades=np.array(self.trades, np.int32), step=np.int32(self.t))


def reference_run(params: KWParams, key, steps: int) -> KWState:
    """:class:`Reference` from step 0 through ``steps`` periods; its final state."""
    ref = Reference(params, key)
    for _ in range(int(steps)):
        ref.step()
    return ref.state()


__all__ = ["MATCH", "IMITATE", "ADOPT", "MUTATE", "INIT", "PURPOSES", "CHUNK", "FUNDAMENTAL_STORAGE",
           "FUNDAMENTAL_UTILITY", "KWState", "KWParams", "edges_of", "entry_table", "default_types", "make_params",
           "init_state", "step", "simulate", "init_batch", "advance_batch", "run_batch", "run", "holding_share",
           "medium_share", "most_held_medium", "acceptance_rates", "Reference", "reference_run"]
