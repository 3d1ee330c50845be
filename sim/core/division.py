"""Division of labour: outcomes of a collective's differentiation states ``theta`` (host-side numpy).

Every function takes ``theta`` with cells on the last axis (any leading axes: replicates, points).

``specialization_index``  Var(theta) / (1/4): 0 when every cell does the same, 1 when half the
                          cells are pure producers (theta 1) and half pure workers (theta 0); the
                          variance of a variable in [0, 1] is at most 1/4.
``producer_fraction``     share of cells with theta >= 3/4 (mostly making currency).
``worker_fraction``       share of cells with theta <= 1/4.
``bimodality``            Sarle's bimodality coefficient (skew^2 + 1) / (excess kurtosis + 3 (n-1)^2
                          / ((n-2)(n-3))): above 5/9 (the uniform distribution's) suggests two modes.
``ring_gaps``             cells between consecutive producers along a ring (index order, cyclic):
                          the spacing of a heterocyst-like pattern (Anabaena: a heterocyst every
                          10-20 vegetative cells; Golden & Yoon 2003 Curr Opin Microbiol 6:557).
``distance_to_producer``  mean graph distance from a non-producer to its nearest producer, for any
                          topology (multi-source breadth-first search).
"""

from __future__ import annotations

import numpy as np

PRODUCER, WORKER = 0.75, 0.25  # theta thresholds of the two specialists


def specialization_index(theta) -> np.ndarray:
    theta = np.asarray(theta, np.float64)
    return np.var(theta, axis=-1) / 0.25


def producer_fraction(theta) -> np.ndarray:
    return np.mean(np.asarray(theta) >= PRODUCER, axis=-1)


def worker_fraction(theta) -> np.ndarray:
    return np.mean(np.asarray(theta) <= WORKER, axis=-1)


def bimodality(theta) -> np.ndarray:
    x = np.asarray(theta, np.float64)
    n = x.shape[-1]
    if n < 4:
        return np.full(x.shape[:-1], np.nan)
    d = x - x.mean(-1, keepdims=True)
    m2 = np.mean(d**2, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.mean(d**3, -1) / m2**1.5
        k = np.mean(d**4, -1) / m2**2 - 3.0
        # sample-corrected skewness and excess kurtosis (the usual definition of the coefficient)
        skew = g * np.sqrt(n * (n - 1)) / (n - 2)
        kurt = ((n + 1) * k + 6) * (n - 1) / ((n - 2) * (n - 3))
        b = (skew**2 + 1) / (kurt + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    return np.where(m2 > 0, b, np.nan)


def ring_gaps(theta) -> np.ndarray:
    """Gaps (cells strictly between consecutive producers, cyclic) of ONE ring's theta (1-D)."""
    idx = np.flatnonzero(np.asarray(theta) >= PRODUCER)
    n = np.asarray(theta).shape[-1]
    if idx.size == 0:
        return np.zeros(0)
    return np.diff(np.concatenate([idx, [idx[0] + n]])) - 1


def distance_to_producer(theta, graph) -> float:
    """Mean shortest-path distance from each non-producer to its nearest producer (ONE theta, 1-D);
    NaN without producers, or where a non-producer cannot reach one (that cell is left out)."""
    import networkx as nx

    theta = np.asarray(theta)
    sources = [int(i) for i in np.flatnonzero(theta >= PRODUCER)]
    if not sources:
        return float("nan")
    dist = nx.multi_source_dijkstra_path_length(graph, sources)
    others = [dist[i] for i in range(theta.shape[-1]) if theta[i] < PRODUCER and i in dist]
    return float(np.mean(others)) if others else 0.0


def summary(theta, output, substrate_used, per_substrate_key: str = "output_per_substrate") -> dict:
    """Division of labour at the end of a run, mean over replicates (leading axes): specialization
    index, producer fraction, mean theta and the specialised work (``output``) per unit of substrate
    used, the tissue's efficiency, under ``per_substrate_key`` (the substrate names its substrate)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        per_sub = np.sum(output, -1) / np.sum(substrate_used, -1)
    return {"specialization_index": float(np.mean(specialization_index(theta))),
            "producer_fraction": float(np.mean(producer_fraction(theta))),
            "theta_mean": float(np.mean(theta)),
            per_substrate_key: float(np.mean(per_sub))}
