"""Plain-Python reference stepper of the LLM engine: same equations, same draws, agent by agent.

Cells (model instances), chain slots (decode streams) and queued requests are Python objects
stepping themselves with Python floats, in the process order of ``sim.substrates.llm.kernels``. Random numbers
come from the same counter-based stream (``sim.rng.uniforms`` keyed by (seed, step, purpose, id)):
one vectorised host call per purpose and step, each agent taking the number for its own id. The
JAX engine must reproduce this stepper in float64 (``tests/test_llm_reference.py``). The step is
declared as ``ReferenceLLM.phases`` (:mod:`sim.core.phases`) over ``ReferenceLLM.cells``, which the
Mesa layer runs instance by instance through ``AgentSet.do`` (``sim.mesa_model.LLMCurrencyModel``).

It is a correctness oracle, not a fast path: use it on a few cells and slots.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from scipy.special import ndtri

from sim import rng
from sim.core.phases import Phase, step_in_phases
from sim.substrates.llm import kernels as K
from sim.substrates.llm.state import Cells, Chains, Gpus, Ledger, LLMState, Queue


@dataclasses.dataclass
class Request:
    prompt: float
    target: float
    born: int
    turn: int
    hop: int
    seq: int
    kind: int = 0


@dataclasses.dataclass
class Chain:
    active: bool = False
    base: float = 0.0
    out: float = 0.0
    target: float = 0.0
    tool_wait: int = 0
    born: int = 0
    turn: int = 0
    hop: int = 0
    kind: int = 0

    @property
    def ctx(self) -> float:
        return self.base + self.out


@dataclasses.dataclass
class ModelCell:
    index: int
    alive: bool
    kv_capacity: float
    kv_free: float
    debt_s: float
    next_seq: int
    step_time_s: float
    gpus_alive: list
    chains: list  # of Chain, one per slot
    queue: list  # of Request | None, one per slot
    ledger: dict

    def n_gpu(self) -> float:
        return float(sum(self.gpus_alive)) if self.alive else 0.0

    def reserved(self) -> float:
        total = 0.0
        for c in self.chains:
            if c.active:
                total += c.base + c.target
        return total

    def free_capacity(self) -> float:
        if not self.alive:
            return -math.inf
        queued = 0.0
        for r in self.queue:
            if r is not None:
                queued += r.prompt + r.target
        return self.kv_capacity - self.reserved() - queued

    def add_debt(self, flops: float, peak: float) -> None:
        f = peak * self.n_gpu()
        if f > 0:
            self.debt_s += flops / f


class ReferenceLLM:
    """Steps one replicate of an :class:`sim.substrates.llm.build.LLMModel` in plain Python."""

    def __init__(self, model, replicate: int = 0, key=None):
        self.model = model
        p = model.params
        self.p = {f.name: (np.asarray(getattr(p, f.name)).tolist() if f.name != "edges" else None)
                  for f in dataclasses.fields(p)}
        self.a = len(self.p["arrival_k"])
        self.key = key if key is not None else jax.random.fold_in(jax.random.PRNGKey(int(model.seed)), replicate)
        s = jax.device_get(model.state)
        n, ns = np.asarray(s.chains.active).shape
        self.n, self.ns, self.nq = n, ns, np.asarray(s.queue.active).shape[1]
        self.step_count = int(s.step)
        src, dst = np.asarray(p.edges.src).tolist(), np.asarray(p.edges.dst).tolist()
        self.neighbours = [[] for _ in range(n)]
        for u, v in zip(src, dst):
            self.neighbours[u].append(v)
            self.neighbours[v].append(u)
        ch, q, c = s.chains, s.queue, s.cells
        led = s.ledger
        self.cells = []
        for i in range(n):
            chains = [Chain(bool(ch.active[i, k]), float(ch.base[i, k]), float(ch.out[i, k]), float(ch.target[i, k]),
                            int(ch.tool_wait[i, k]), int(ch.born[i, k]), int(ch.turn[i, k]), int(ch.hop[i, k]),
                            int(ch.kind[i, k]))
                      for k in range(ns)]
            queue = [Request(float(q.prompt[i, k]), float(q.target[i, k]), int(q.born[i, k]), int(q.turn[i, k]),
                             int(q.hop[i, k]), int(q.seq[i, k]), int(q.kind[i, k])) if q.active[i, k] else None
                     for k in range(self.nq)]
            self.cells.append(ModelCell(
                i, bool(c.alive[i]), float(c.kv_capacity[i]), float(c.kv_free[i]), float(c.debt_s[i]),
                int(c.next_seq[i]), float(c.step_time_s[i]), [bool(x) for x in np.asarray(s.gpus.alive)[i]],
                chains, queue, {f.name: float(np.asarray(getattr(led, f.name))[i]) for f in dataclasses.fields(Ledger)},
            ))
        # task kinds (kernels module docstring): K, who owns what, the cached prefixes
        self.n_kinds = int(np.asarray(p.kind_owner).shape[-1])
        self.owner = np.asarray(p.kind_owner).tolist()
        self.phases = self._make_phases()

    # ---- helpers mirroring sim.substrates.llm.kernels ----------------------------------------------------

    def u(self, purpose: int, n: int) -> np.ndarray:
        return rng.host_uniforms(self.key, self.step_count, purpose, n)

    def allreduce_time(self, n_gpu: float, batch: float) -> float:
        """Tensor-parallel all-reduces of one decode iteration (``kernels.allreduce_time``)."""
        p = self.p
        if n_gpu <= 1.0:
            return 0.0
        ring = 2.0 * (n_gpu - 1.0) / max(n_gpu, 1.0)
        return p["n_allreduce"] * (ring * batch * p["allreduce_bytes"] / p["link_bandwidth"] + p["allreduce_latency"])

    def prefill_flops(self, tokens: float, cached: float = 0.0) -> float:
        return self.p["c0"] * tokens + 0.5 * self.p["c1"] * (tokens * tokens + 2.0 * cached * tokens)

    def lognormal_tokens(self, u: float, median: float, sigma: float) -> float:
        z = float(ndtri(min(max(u, K._U_MIN), 1.0 - K._U_MIN)))
        return max(float(np.round(median * math.exp(sigma * z))), 1.0)

    def clip_lengths(self, prompt: float, target: float):
        l_max = self.p["l_max"]
        p = min(prompt, l_max - 1.0)
        t = max(min(target, l_max - p), 1.0)
        return p, t, prompt - p

    def compress(self, history: float):
        thr, fac = self.p["mem_threshold"], self.p["mem_factor"]
        if thr > 0 and history > thr:
            new = min(max(float(np.round(history / fac)), 1.0), history)  # (never grows: see kernels.compress)
            return new, True, self.p["mem_cost"] * self.prefill_flops(history)
        return history, False, 0.0

    def best_neighbour(self, scores, i):
        best, nb = -math.inf, None
        for j in self.neighbours[i]:
            if scores[j] > best or (scores[j] == best and nb is not None and j < nb):
                best, nb = scores[j], j
        if nb is None or best == -math.inf:
            return -math.inf, i, False
        return best, nb, True

    def kind_neighbour(self, scores, i, k):
        """The live neighbour of ``i`` owning kind ``k`` with the highest score (kernels.kind_neighbours)."""
        masked = [scores[j] if (self.owner[j][k] and self.cells[j].alive) else -math.inf for j in range(self.n)]
        return self.best_neighbour(masked, i)

    def kind_route(self, draws, e):
        """Task kinds at arrival slot ``e``: (kind, destination, reader, served foreign)
        (``kernels.kind_route``)."""
        p, nk = self.p, self.n_kinds
        uk, um, up, us = draws
        kind = min(math.floor(float(uk[e]) * nk), nk - 1)
        alive = [c.alive for c in self.cells]
        owners = [j for j in range(self.n) if alive[j] and self.owner[j][kind]]
        others = [j for j in range(self.n) if alive[j] and not self.owner[j][kind]]
        miss = float(um[e]) < p["kind_p_miss"]
        to_owner = (not miss or not others) and bool(owners)
        pool = owners if to_owner else others
        cnt = float(len(pool))
        j = int(min(max(math.floor(float(up[e]) * cnt), 0.0), max(cnt - 1.0, 0.0)))
        dest = pool[j]
        foreign = not self.owner[dest][kind]
        has = any(alive[m] and self.owner[m][kind] for m in self.neighbours[dest])
        serve = float(us[e]) < p["kind_theta"][dest]
        reader = foreign and not serve and has
        return kind, dest, reader, foreign and not reader

    def enqueue(self, entries):
        """entries: list of (target cell, Request without seq) in flat order. A request takes the next
        ticket and its ring slot ``ticket mod Q`` (``kernels.ring_slot``), which is free whenever the
        queue is not full (the queued tickets are consecutive)."""
        for tcell, req in entries:
            cell = self.cells[tcell]
            if all(r is not None for r in cell.queue):
                cell.ledger["dropped"] += 1.0
                continue
            slot = cell.next_seq % self.nq
            assert cell.queue[slot] is None, f"ring slot {slot} of instance {tcell} is taken"
            req.seq = cell.next_seq
            cell.next_seq += 1
            cell.queue[slot] = req
            if getattr(req, "foreign", False):
                cell.ledger["kind_foreign"] += 1.0

    # ---- processes ------------------------------------------------------------------------------

    # Each process is split into per-cell steps (``*_cell``), which the Mesa layer calls through its
    # model-instance agents (``phases``), and the few global parts (draws, routing scores,
    # enqueueing in flat order), which run between them.

    def tools(self):
        for cell in self.cells:
            self.tools_cell(cell)

    def tools_cell(self, cell):
        p = self.p
        reserved = cell.reserved()  # before any chain of this step appends
        room = cell.kv_capacity - reserved
        before, got_sum, trunc, flops_sum = 0.0, 0.0, 0.0, 0.0
        for c in cell.chains:
            if not (c.active and c.tool_wait > 0):
                continue
            c.tool_wait -= 1
            if c.tool_wait != 0:
                continue
            want = min(max(p["l_max"] - (c.base + c.target), 0.0), p["r_tool"])
            got = min(max(room - before, 0.0), want)
            before += want
            cached = c.base + c.out
            if self.n_kinds > 1:
                cached = cached + p["kind_prefix"][cell.index]
            flops_sum += self.prefill_flops(got, cached)
            c.base += got
            got_sum += got
            trunc += want - got
        cell.add_debt(flops_sum, p["peak_flops"])
        cell.kv_free -= got_sum
        cell.ledger["tool_tokens"] += got_sum
        cell.ledger["tool_truncated"] += trunc
        cell.ledger["flops_prefill"] += flops_sum

    def memory(self):
        for cell in self.cells:
            self.memory_cell(cell)

    def memory_cell(self, cell):
        cost_sum, removed_sum, n = 0.0, 0.0, 0
        for c in cell.chains:
            if not c.active:
                continue
            new, on, cost = self.compress(c.base)
            if on:
                removed_sum += c.base - new
                cost_sum += cost
                n += 1
                c.base = new
        cell.add_debt(cost_sum, self.p["peak_flops"])
        cell.kv_free += removed_sum
        cell.ledger["compressions"] += n
        cell.ledger["tokens_removed"] += removed_sum
        cell.ledger["flops_memory"] += cost_sum

    def arrivals(self):
        draws = self.arrival_draws()
        entries = []
        for cell in self.cells:
            entries += self.arrivals_cell(cell, draws)
        self.enqueue(entries)

    def arrival_draws(self):
        """This step's arrival draws and the routing scores (free capacity before any arrival)."""
        a = self.a
        u = self.u(K.ARRIVAL_COUNT, self.n)
        up = self.u(K.PROMPT_LEN, self.n * a)
        uo = self.u(K.OUTPUT_LEN, self.n * a)
        scores = [cell.free_capacity() for cell in self.cells]
        kinds = None
        if self.n_kinds > 1:
            kinds = tuple(self.u(purpose, self.n * a) for purpose in (K.KIND, K.KIND_ROUTE, K.KIND_PICK, K.KIND_SERVE))
        return u, up, uo, scores, kinds

    def arrivals_cell(self, cell, draws):
        """Arrivals at ``cell`` -> list of (destination cell, Request) to enqueue (flat order)."""
        p, a = self.p, self.a
        u, up, uo, scores, kinds = draws
        i = cell.index
        entries = []
        lam = p["arrival_rate"][i] * p["dt"]
        # inverse-CDF Poisson, same operation order as sim.substrates.llm.kernels.poisson_count
        pk = math.exp(-lam)
        cdf, count = pk, 0.0
        for k in range(a):
            count += 1.0 if cdf <= u[i] else 0.0
            pk = pk * lam / (k + 1)
            cdf = cdf + pk
        if not cell.alive:
            count = 0.0
        if kinds is not None:
            return self.arrivals_cell_kinds(cell, count, up, uo, kinds)
        best, nb, has = self.best_neighbour(scores, i)
        dest = nb if (p["routing"] and has and best > scores[i]) else i
        cell.ledger["arrived"] += count
        if dest != i:
            cell.ledger["routed_out"] += count
            self.cells[dest].ledger["routed_in"] += count
        for j in range(int(count)):
            e = i * a + j
            prompt = self.lognormal_tokens(float(up[e]), p["prompt_median"], p["prompt_sigma"])
            target = self.lognormal_tokens(float(uo[e]), p["output_median"], p["output_sigma"])
            prompt, target, _ = self.clip_lengths(prompt, target)
            entries.append((dest, Request(prompt, target, self.step_count, 0, 0, -1)))
        return entries

    def arrivals_cell_kinds(self, cell, count, up, uo, kinds):
        """Arrivals with task kinds: each routed on its own (``kernels._arrivals_kinds``)."""
        p, a, i = self.p, self.a, cell.index
        cell.ledger["arrived"] += count
        entries = []
        for j in range(int(count)):
            e = i * a + j
            prompt = self.lognormal_tokens(float(up[e]), p["prompt_median"], p["prompt_sigma"])
            target = self.lognormal_tokens(float(uo[e]), p["output_median"], p["output_sigma"])
            prompt, target, _ = self.clip_lengths(prompt, target)
            kind, dest, reader, foreign = self.kind_route(kinds, e)
            if dest != i:
                cell.ledger["routed_out"] += 1.0
                self.cells[dest].ledger["routed_in"] += 1.0
            req = Request(prompt, 0.0 if reader else target, self.step_count, 0, 0, -1, kind)
            req.foreign = foreign  # booked as kind_foreign if the queue takes it
            entries.append((dest, req))
        return entries

    def admission(self):
        for cell in self.cells:
            self.admission_cell(cell)

    def admission_cell(self, cell):
        p = self.p
        waiting = sorted((r.seq, k) for k, r in enumerate(cell.queue) if r is not None)
        room = cell.kv_capacity - cell.reserved()
        n_active = sum(c.active for c in cell.chains)
        limit = min(self.ns - n_active, max(p["max_batch"] - n_active, 0))
        free_slots = [k for k, c in enumerate(cell.chains) if not c.active]
        cum, admitted, flops, tokens = 0.0, 0, 0.0, 0.0
        for _, k in waiting:
            req = cell.queue[k]
            cum += req.prompt + req.target
            if cum > room or admitted >= limit or cell.n_gpu() <= 0:
                break
            slot = free_slots[admitted]
            cell.chains[slot] = Chain(True, req.prompt, 0.0, req.target, 0, req.born, req.turn, req.hop, req.kind)
            cell.queue[k] = None
            admitted += 1
            flops += self.prefill_flops(req.prompt, p["kind_prefix"][cell.index] if self.n_kinds > 1 else 0.0)
            tokens += req.prompt
        cell.add_debt(flops, p["peak_flops"])
        cell.kv_free -= tokens
        cell.ledger["admitted"] += admitted
        cell.ledger["tokens_in"] += tokens
        cell.ledger["flops_prefill"] += flops

    def decode(self):
        u = self.decode_draws()
        for cell in self.cells:
            self.decode_cell(cell, u)

    def decode_draws(self):
        return self.u(K.TOOL_CALL, self.n * self.ns)

    def decode_cell(self, cell, u):
        p = self.p
        i = cell.index
        n_gpu = cell.n_gpu()
        on = n_gpu > 0
        kinds_on = self.n_kinds > 1

        def decoding(c):  # readers (target 0, task kinds) decode nothing
            return c.active and c.tool_wait == 0 and (not kinds_on or c.target > 0)

        dec = [c for c in cell.chains if decoding(c)]
        b = float(len(dec))
        s = 0.0
        for c in dec:
            s += c.ctx
        if kinds_on:
            s = s + b * p["kind_prefix"][i]
        busy = on and b > 0
        flops_it = p["c0"] * b + p["c1"] * s
        t = 0.0
        if on:
            t = max(flops_it / (p["peak_flops"] * n_gpu), (p["weight_bytes"] + p["kv_bytes"] * s) / (p["bandwidth"] * n_gpu))
            t = t + self.allreduce_time(n_gpu, b)
        pre = min(cell.debt_s, p["dt"]) if on else 0.0
        dec_time = p["dt"] - pre if busy else 0.0
        idle = p["dt"] - pre - dec_time if on else 0.0
        g = dec_time / t if busy else 0.0
        gain_sum, calls, grow_sum = 0.0, 0, 0.0
        for k, c in enumerate(cell.chains):
            if not decoding(c):
                continue
            remaining = c.target - c.out
            fin = g >= remaining
            gain = remaining if fin else g
            c.out = c.target if fin else c.out + gain
            grow_sum += gain * (1.0 - p["freeze_context"])
            c.base = c.base - gain * p["freeze_context"]
            gain_sum += gain
            p_call = -math.expm1(gain * math.log1p(-p["p_tool"])) if p["p_tool"] < 1 else 1.0
            if not fin and p["p_tool"] > 0 and gain > 0 and u[i * self.ns + k] < p_call:
                c.tool_wait = p["tool_steps"]
                calls += 1
        led = cell.ledger
        led["tokens_out"] += gain_sum
        led["iterations"] += g
        led["flops_decode"] += g * flops_it
        led["prefill_s"] += n_gpu * pre
        led["decode_s"] += n_gpu * dec_time
        led["idle_s"] += n_gpu * idle
        led["energy_j"] += n_gpu * (p["power_prefill"] * pre + p["power_decode"] * dec_time + p["power_idle"] * idle)
        led["tool_calls"] += calls
        cell.kv_free -= grow_sum
        cell.debt_s -= pre
        cell.step_time_s = t if busy else 0.0

    def finish(self):
        draws = self.finish_draws()
        pending = []
        for cell in self.cells:
            pending += self.finish_cell(cell, draws)
        self.finish_route(pending)

    def finish_draws(self):
        return self.u(K.FOLLOWUP, self.n * self.ns), self.u(K.FOLLOWUP_LEN, self.n * self.ns)

    def finish_cell(self, cell, draws):
        """Release the finished chains of ``cell`` -> its pending follow-ups / hand-offs / completions
        (cell, slot, more, hop, history, compressed, comp, prompt, target, cut, chain copy)."""
        p = self.p
        uf, ul = draws
        i = cell.index
        pending = []
        released, mem_flops = 0.0, 0.0
        for k, c in enumerate(cell.chains):
            if not (c.active and c.out >= c.target):
                continue
            e = i * self.ns + k
            reader = self.n_kinds > 1 and c.target == 0
            more = not reader and c.turn + 1 < p["max_turns"] and uf[e] < p["followup_prob"]
            hop = not reader and (not more) and c.hop + 1 < p["hops"]
            added = p["kind_handoff_tokens"] if reader else (p["followup_tokens"] if more else p["handoff_tokens"])
            history = c.base + c.out + added
            hist_c, comp, cost = self.compress(history)
            comp = comp and (more or hop or reader)
            draw = self.lognormal_tokens(float(ul[e]), p["output_median"], p["output_sigma"])
            prompt, target, cut = self.clip_lengths(hist_c, draw)
            released += c.ctx
            if comp:
                mem_flops += cost
            pending.append((i, k, more, hop, history, hist_c, comp, prompt, target, cut,
                            Chain(**dataclasses.asdict(c)), reader))
            c.active, c.base, c.out, c.target = False, 0.0, 0.0, 0.0
        cell.kv_free += released
        cell.add_debt(mem_flops, p["peak_flops"])
        cell.ledger["flops_memory"] += mem_flops
        return pending

    def finish_route(self, pending):
        """Book the finished turns (flat order) and enqueue follow-ups and hand-offs."""
        p = self.p
        scores = [cell.free_capacity() for cell in self.cells]
        entries = []
        for i, k, more, hop, history, hist_c, comp, prompt, target, cut, c, reader in pending:
            led = self.cells[i].ledger
            led["turns_done"] += 1
            if comp:
                led["compressions"] += 1
                led["tokens_removed"] += history - hist_c
            if reader:  # a task of a foreign kind, read here: to the owning neighbour of its kind
                led["truncated"] += cut
                led["kind_handoffs"] += 1
                led["kind_handoff_tokens"] += prompt
                dest = self.kind_neighbour(scores, i, c.kind)[1]
                entries.append((dest, Request(prompt, target, c.born, c.turn, c.hop, -1, c.kind)))
            elif more or hop:
                led["truncated"] += cut
                dest = i if more else self.best_neighbour(scores, i)[1]
                if hop:
                    led["handoffs"] += 1
                entries.append((dest, Request(prompt, target, c.born, c.turn + 1 if more else 0,
                                              c.hop if more else c.hop + 1, -1, c.kind)))
            else:
                led["completed"] += 1
                led["sojourn_s"] += (self.step_count - c.born) * p["dt"]
        self.enqueue(entries)

    def account(self):
        for cell in self.cells:
            self.account_cell(cell)

    def account_cell(self, cell):
        n = sum(r is not None for r in cell.queue) + sum(c.active for c in cell.chains)
        cell.ledger["occupancy_s"] += n * self.p["dt"]

    def _make_phases(self):
        """The step as phases (:mod:`sim.core.phases`) in the order of ``sim.substrates.llm.kernels``.
        Arrivals and finished turns may land on another instance's queue, so their per-cell phases
        return entries and the gather enqueues them in the engine's flat (cell-major) order."""
        return (
            Phase("tools", cell=self.tools_cell),
            Phase("memory", cell=self.memory_cell),
            Phase("arrivals", cell=self.arrivals_cell, draws=self.arrival_draws, gather=self._enqueue_all),
            Phase("admission", cell=self.admission_cell),
            Phase("decode", cell=self.decode_cell, draws=self.decode_draws),
            Phase("finish", cell=self.finish_cell, draws=self.finish_draws, gather=self._finish_route_all),
            Phase("account", cell=self.account_cell),
            Phase("clock", tissue=self._tick),
        )

    def _enqueue_all(self, per_cell):
        self.enqueue([e for entries in per_cell for e in entries])

    def _finish_route_all(self, per_cell):
        self.finish_route([p for pending in per_cell for p in pending])

    def _tick(self):
        self.step_count += 1

    def step(self):
        """One time step: :attr:`phases` in order, instances in index order."""
        step_in_phases(self.phases, self.cells)

    # ---- export -----------------------------------------------------------------------------------

    def state(self) -> LLMState:
        """The reference's state in the engine's PyTree layout (numpy)."""
        n, ns, nq = self.n, self.ns, self.nq

        def arr(fn, shape, dtype):
            return np.array([[fn(self.cells[i], k) for k in range(shape)] for i in range(n)], dtype=dtype)

        def ch(name, dtype):
            return arr(lambda c, k: getattr(c.chains[k], name), ns, dtype)

        def qq(name, dtype, empty=0):
            return arr(lambda c, k: getattr(c.queue[k], name) if c.queue[k] is not None else empty, nq, dtype)

        cells = Cells(
            alive=np.array([c.alive for c in self.cells]),
            kv_capacity=np.array([c.kv_capacity for c in self.cells]),
            kv_free=np.array([c.kv_free for c in self.cells]),
            debt_s=np.array([c.debt_s for c in self.cells]),
            next_seq=np.array([c.next_seq for c in self.cells], np.int32),
            step_time_s=np.array([c.step_time_s for c in self.cells]),
        )
        chains = Chains(active=ch("active", bool), base=ch("base", np.float64), out=ch("out", np.float64),
                        target=ch("target", np.float64), tool_wait=ch("tool_wait", np.int32),
                        born=ch("born", np.int32), turn=ch("turn", np.int32), hop=ch("hop", np.int32),
                        kind=ch("kind", np.int32))
        queue = Queue(active=arr(lambda c, k: c.queue[k] is not None, nq, bool), prompt=qq("prompt", np.float64),
                      target=qq("target", np.float64), born=qq("born", np.int32), turn=qq("turn", np.int32),
                      hop=qq("hop", np.int32), seq=qq("seq", np.int32), kind=qq("kind", np.int32))
        ledger = Ledger(**{f.name: np.array([c.ledger[f.name] for c in self.cells])
                           for f in dataclasses.fields(Ledger)})
        gpus = Gpus(alive=np.array([c.gpus_alive for c in self.cells], bool))
        return LLMState(cells=cells, gpus=gpus, chains=chains, queue=queue, ledger=ledger,
                        step=np.int32(self.step_count))
