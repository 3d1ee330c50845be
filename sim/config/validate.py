"""Value checks on a composed config: one clear ``ConfigError`` naming key, value and what is allowed.

Run before any compilation. Checks: types (through the structured schemas), known names, ranges
(rates, capacities and affinities >= 0, probabilities in [0, 1], dt > 0), and stability of the
explicit step: transport needs dt * g * max_degree * max(permeability) < 1 (else a cell can send
more than it has); kinetics need dt well below the fastest pool relaxation time, estimated as
dt * max(sum V_prod / K_ADP, sum V_cons / K_ATP, uptake) <= 0.5.
"""

from __future__ import annotations

import math

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim.config.schema import RunSchema
from sim.errors import ConfigError

BACKENDS = ("jax", "mesa")
PRECISIONS = ("float64", "float32")
# substrate keys whose values must be non-negative (rates, capacities, affinities, amounts)
NONNEG_SUFFIXES = ("_per_s", "_mm", "_mm_per_s", "_l", "count", "yield", "share", "value", "_k", "fraction")
PROBABILITY_KEYS = ("energy_charge", "birth_min_energy_charge", "stress_threshold", "loss_fraction")


def _walk(node, prefix):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{prefix}.{k}")
    else:
        yield prefix, node


def _check_types(cfg: dict) -> None:
    try:
        OmegaConf.merge(OmegaConf.structured(RunSchema), {k: v for k, v in cfg.items() if k != "hydra"})
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        value = getattr(exc, "value", None)
        msg = str(exc).splitlines()[0]
        raise ConfigError(key, value, f"a value of the schema's type ({msg})") from None


def _int_at_least(cfg, key, minimum):
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(key, v, f"an integer >= {minimum}")
    return v


def validate(cfg: dict) -> None:
    """Raise ConfigError on the first problem found in the composed (resolved, plain) config."""
    _check_types(cfg)
    backend = cfg.get("backend")
    if backend not in BACKENDS:
        raise ConfigError("backend", backend, "one of " + ", ".join(BACKENDS))
    if cfg.get("precision") not in PRECISIONS:
        raise ConfigError("precision", cfg.get("precision"), "one of " + ", ".join(PRECISIONS))
    _int_at_least(cfg, "seed", 0)
    steps = _int_at_least(cfg, "steps", 1)
    every = _int_at_least(cfg, "record_every", 1)
    _int_at_least(cfg, "replicates", 1)
    _int_at_least(cfg, "chunk_records", 1)
    if steps % every:
        raise ConfigError("steps", steps, f"a multiple of record_every={every}")
    dt = cfg.get("dt")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ConfigError("dt", dt, "a finite time step > 0 (s)")
    for name, value in (cfg.get("params") or {}).items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"params.{name}", value, "a finite number >= 0")

    topo = cfg.get("topology") or {}
    if topo.get("kind") != "single" and topo.get("kind") != "file":
        _int_at_least({"topology.n_cells": topo.get("n_cells")}, "topology.n_cells", 1)

    sub = cfg.get("substrate") or {}
    for key, value in _walk(sub, "substrate"):
        leaf = key.rsplit(".", 1)[-1]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            raise ConfigError(key, value, "a finite number")
        if leaf.endswith(NONNEG_SUFFIXES) and "dg" not in leaf and value < 0:
            raise ConfigError(key, value, "a number >= 0 (rates, capacities, affinities and amounts cannot be negative)")
        if leaf in PROBABILITY_KEYS and not 0 <= value <= 1:
            raise ConfigError(key, value, "a fraction in [0, 1]")


def check_stability(model, cfg: dict) -> None:
    """Stability of the explicit step for a built model (needs the graph and parameters)."""
    import numpy as np

    p = model.params
    dt = float(p.dt)
    g = np.asarray(p.edges.conductance) * float(p.conductance_scale)
    if g.size:
        deg = np.bincount(np.concatenate([p.edges.src, p.edges.dst]), minlength=model.n_cells).max()
        courant = dt * g.max() * deg * float(np.max(p.permeability))
        if courant >= 1.0:
            raise ConfigError(
                "dt", dt,
                f"dt * conductance * max_degree * permeability < 1 for stable transport (it is {courant:.3g}: "
                f"conductance {g.max():.3g}/s, max degree {deg}); lower dt or substrate.transport.conductance_per_s",
            )
    s = model.state
    v_prod = float(np.max(np.sum(np.where(s.producers.alive, s.producers.vmax, 0.0), axis=1))) * float(p.supply_scale)
    k_adp = float(np.min(p.p_k_adp))
    v_cons = float(np.max(np.sum(s.consumers.vmax, axis=1) * s.cells.demand_mult)) * float(p.demand_scale)
    k_atp = float(np.min(s.consumers.km))
    uptake = float(np.max(s.cells.uptake)) * float(p.uptake_scale)
    rate = max(v_prod / k_adp, v_cons / k_atp, uptake)
    if dt * rate > 0.5:
        raise ConfigError(
            "dt", dt,
            f"dt <= {0.5 / rate:.3g} s (half the fastest pool relaxation time, 1/{rate:.3g} s) for a stable explicit step",
        )
