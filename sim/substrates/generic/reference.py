"""Plain-Python float64 reference of the generic substrate: the equations of
:mod:`sim.substrates.generic.kernels` written cell by cell, agent by agent, with Python floats.

Random draws come from the engine's counter-based stream (``sim.rng.uniforms`` keyed by
(seed, replicate, step, purpose, producer id)): one vectorised call per step, each producer taking
the number of its id. The JAX engine reproduces this stepper to round-off
(``tests/test_generic_substrate.py``). A correctness oracle and the ``backend=mesa`` physics::

    ref = ReferenceGeneric(build(cfg), replicate=0)
    for _ in range(n):
        ref.step()
    ref.state()  # the engine's numpy State
"""

from __future__ import annotations

import dataclasses
import functools
from math import expm1

import jax
import jax.numpy as jnp
import numpy as np

from sim import rng
from sim.core.carriers import CarrierReference
from sim.core.differentiation import AdaptationReference
from sim.substrates.generic.state import N_TIERS, Cells, Consumers, Ledger, Producers, State

LEDGER = tuple(f.name for f in dataclasses.fields(Ledger))


@functools.partial(jax.jit, static_argnames=("purpose", "n"))
def _uniforms(key, step, purpose: int, n: int):
    return rng.uniforms(key, step, purpose, jnp.arange(n, dtype=jnp.uint32))


class ReferenceGeneric:
    """Steps one replicate of a built generic economy (``spec.build``) in plain Python."""

    def __init__(self, built, replicate: int = 0, key=None):
        p = built.params
        self.p = {f.name: float(np.asarray(getattr(p, f.name))) for f in dataclasses.fields(p)
                  if f.name not in ("edges", "diff", "carriers")}
        e = p.edges
        self.edges = list(zip(np.asarray(e.src).tolist(), np.asarray(e.dst).tolist(),
                              np.asarray(e.conductance, float).tolist(), np.asarray(e.loss, float).tolist()))
        self.key = key if key is not None else jax.random.fold_in(jax.random.PRNGKey(int(built.seed)), replicate)
        s = jax.device_get(built.state)
        c, pr, co = s.cells, s.producers, s.consumers
        lst = lambda x, t=float: np.asarray(x).astype(t).tolist()  # noqa: E731
        self.alive, self.S, self.A, self.D = lst(c.alive, bool), lst(c.s), lst(c.a), lst(c.d)
        self.p_alive, self.p_vmax, self.p_health = lst(pr.alive, bool), lst(pr.vmax), lst(pr.health)
        self.c_vmax, self.c_km, self.c_tier, self.c_value = lst(co.vmax), lst(co.km), lst(co.tier, int), lst(co.value)
        self.ledger = {name: lst(getattr(s.ledger, name)) for name in LEDGER}
        self.n, self.slots = np.asarray(pr.alive).shape
        self.step_count = int(s.step)
        self.diff = AdaptationReference(s.diff, p.diff, self.key)
        self.car = CarrierReference(s.carriers, p.carriers, self.key)

    # ---- processes, in the order of kernels.PROCESSES ---------------------------------------------

    def supply(self):
        p = self.p
        for i in range(self.n):
            if self.alive[i]:
                self.S[i] += p["dt"] * p["exchange_rate"] * p["uptake_scale"] * (p["external"] - self.S[i])

    def production(self):
        p, led = self.p, self.ledger
        for i in range(self.n):
            s, d = self.S[i], self.D[i]
            sat = (s / (p["k_substrate"] + s)) * (d / (p["k_discharged"] + d))
            rate = 0.0
            for k in range(self.slots):
                if self.alive[i] and self.p_alive[i][k]:
                    rate += self.p_vmax[i][k] * p["supply_scale"] * self.p_health[i][k]
            made = p["dt"] * rate * self.diff.factors(i)[0] * sat
            used = made / p["yield_"]
            if self.car.on:
                lost = self.car.credit(i, made)
                self.S[i], self.A[i], self.D[i] = s - used, self.car.total(i), d - made + lost
            else:
                self.S[i], self.A[i], self.D[i] = s - used, self.A[i] + made, d - made
            led["produced"][i] += made
            led["substrate_used"][i] += used

    def consumption(self):
        p, led = self.p, self.ledger
        for i in range(self.n):
            if not self.alive[i]:
                continue
            a0 = a = self.car.spendable(i) if self.car.on else self.A[i]  # consumers spend accepted carriers
            f_w = self.diff.factors(i)[1]
            ask = [p["dt"] * v * p["demand_scale"] * a0 / (km + a0) * (f_w if tier == 1 else 1.0)
                   for v, km, tier in zip(self.c_vmax[i], self.c_km[i], self.c_tier[i])]
            spent = [0.0] * len(ask)
            for t in range(N_TIERS):  # tier 0 first; proportional shares within a tier when A is short
                mine = [k for k in range(len(ask)) if self.c_tier[i][k] == t]
                total = sum(ask[k] for k in mine)
                share = a / total if total > a else 1.0
                for k in mine:
                    spent[k] += ask[k] * share
                a = 0.0 if total > a else a - total
            out = sum(spent)
            lost = 0.0
            if self.car.on:
                lost = self.car.debit(i, out)
                a = self.car.total(i)
            self.A[i], self.D[i] = a, self.D[i] + out + lost
            led["spent"][i] += out
            done = [v * x for v, x in zip(self.c_value[i], spent)]
            led["work"][i] += sum(done)
            led["output"][i] += sum(x for x, tier in zip(done, self.c_tier[i]) if tier == 1)

    def transport(self):
        if self.car.on:
            return self._transport_carriers()
        p, led = self.p, self.ledger
        delta_a, delta_d = [0.0] * self.n, [0.0] * self.n
        sent, lost = [0.0] * self.n, [0.0] * self.n
        for i, j, g, loss in self.edges:
            if not (self.alive[i] and self.alive[j]):
                continue
            gdt = p["dt"] * g * p["conductance_scale"]
            ja, jd = gdt * (self.A[i] - self.A[j]), gdt * (self.D[i] - self.D[j])
            src, dst = (i, j) if ja >= 0 else (j, i)  # charged currency: loss arrives discharged
            delta_a[src] -= abs(ja)
            delta_a[dst] += abs(ja) - loss * abs(ja)
            delta_d[dst] += loss * abs(ja)
            lost[src] += loss * abs(ja)
            sent[src] += abs(ja)
            src, dst = (i, j) if jd >= 0 else (j, i)
            delta_d[src] -= abs(jd)
            delta_d[dst] += abs(jd)
        for i in range(self.n):
            self.A[i] += delta_a[i]
            self.D[i] += delta_d[i]
            led["transported_out"][i] += sent[i]
            led["lost"][i] += lost[i]

    def _transport_carriers(self):
        p, led, k = self.p, self.ledger, self.car.k
        delta = [[0.0] * k for _ in range(self.n)]
        delta_d, sent, lost = [0.0] * self.n, [0.0] * self.n, [0.0] * self.n
        held = self.car.held
        for i, j, g, loss in self.edges:
            if not (self.alive[i] and self.alive[j]):
                continue
            gdt = p["dt"] * g * p["conductance_scale"]
            for m in range(k):  # every carrier down its own gradient; loss arrives discharged
                ja = gdt * (held[i][m] - held[j][m])
                src, dst = (i, j) if ja >= 0 else (j, i)
                delta[src][m] -= abs(ja)
                delta[dst][m] += abs(ja) - loss * abs(ja)
                delta_d[dst] += loss * abs(ja)
                lost[src] += loss * abs(ja)
                sent[src] += abs(ja)
            jd = gdt * (self.D[i] - self.D[j])
            src, dst = (i, j) if jd >= 0 else (j, i)
            delta_d[src] -= abs(jd)
            delta_d[dst] += abs(jd)
        for i in range(self.n):
            held[i] = [h + x for h, x in zip(held[i], delta[i])]
            self.A[i] = self.car.total(i)
            self.D[i] += delta_d[i]
            led["transported_out"][i] += sent[i]
            led["lost"][i] += lost[i]

    def carrier_upkeep(self):
        for i, x in enumerate(self.car.upkeep(self.p["dt"])):
            self.A[i] = self.car.total(i)
            self.D[i] += x

    def carrier_strategy(self):
        self.car.strategy(self.step_count, self.p["dt"], self.ledger["work"], self.alive)

    def failure(self):
        n, slots = self.n, self.slots
        u = np.asarray(_uniforms(self.key, jnp.int32(self.step_count), rng.PRODUCER_FAILURE, n * slots)).tolist()
        threshold = -expm1(-self.p["hazard"] * self.p["dt"])
        for i in range(n):
            for k in range(slots):
                if self.p_alive[i][k] and u[i * slots + k] < threshold:
                    self.p_alive[i][k] = False
                    self.ledger["failures"][i] += 1.0

    def birth(self):
        u = np.asarray(_uniforms(self.key, jnp.int32(self.step_count), rng.PRODUCER_BIRTH, self.n)).tolist()
        threshold = -expm1(-self.p["birth_rate"] * self.p["dt"])
        for i in range(self.n):
            free = [k for k in range(self.slots) if not self.p_alive[i][k]]
            if self.alive[i] and free and u[i] < threshold:
                self.p_alive[i][free[0]] = True
                self.ledger["births"][i] += 1.0

    def adaptation(self):
        paid = self.diff.step(self.step_count, self.p["dt"], self.ledger["output"], self.A, self.alive)
        for i, x in enumerate(paid):
            if self.car.on:  # paid from every carrier pro rata
                frac = x / self.A[i] if self.A[i] > 0 else 0.0
                self.car.held[i] = [h * (1.0 - frac) for h in self.car.held[i]]
                self.A[i] = self.car.total(i)
            else:
                self.A[i] -= x
            self.D[i] += x
            self.ledger["switching"][i] += x

    def step(self):
        self.supply()
        self.production()
        self.consumption()
        self.transport()
        self.failure()
        self.birth()
        self.adaptation()
        if self.car.on:
            self.carrier_upkeep()
            if self.car.rule == "imitation":  # the engine runs carrier_strategy only then
                self.carrier_strategy()
        self.step_count += 1

    # ---- export -------------------------------------------------------------------------------------

    def state(self) -> State:
        """The reference's state in the engine's PyTree layout (numpy)."""
        f = lambda x: np.array(x, np.float64)  # noqa: E731
        return State(
            cells=Cells(alive=np.array(self.alive, bool), s=f(self.S), a=f(self.A), d=f(self.D)),
            producers=Producers(alive=np.array(self.p_alive, bool).reshape(self.n, self.slots),
                                vmax=f(self.p_vmax).reshape(self.n, self.slots),
                                health=f(self.p_health).reshape(self.n, self.slots)),
            consumers=Consumers(vmax=f(self.c_vmax), km=f(self.c_km), tier=np.array(self.c_tier, np.int32),
                                value=f(self.c_value)),
            ledger=Ledger(**{name: f(self.ledger[name]) for name in LEDGER}),
            diff=self.diff.state(),
            carriers=self.car.state(),
            step=np.int32(self.step_count),
        )
