"""Structured-config schemas registered in Hydra's ConfigStore.

They give every top-level key a type; ``validate`` merges the composed config into them, so a
wrong type (``steps=abc``) is refused with the key named before any compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class TopologySchema:
    kind: str = "single"
    n_cells: int = 1
    k: Optional[int] = None
    p: Optional[float] = None
    m: Optional[int] = None
    rows: Optional[int] = None
    periodic: bool = False
    path: Optional[str] = None
    format: str = "auto"
    require_connected: bool = False


@dataclass
class ExperimentSchema:
    name: str = "tissue"
    kind: str = "tissue"


@dataclass
class ParamsSchema:
    supply_scale: float = 1.0
    demand_scale: float = 1.0
    uptake_scale: float = 1.0
    conductance_scale: float = 1.0


@dataclass
class RunSchema:
    seed: int = 0
    steps: int = 3000
    dt: float = 0.02
    replicates: int = 4
    first_replicate: int = 0
    backend: str = "jax"
    record_every: int = 10
    chunk_records: int = 100
    precision: str = "float64"
    debug: bool = False
    deterministic_reductions: bool = False
    figures: bool = True
    checkpoint_every: int = 0
    resume: Optional[str] = None
    compile_cache: Any = "auto"  # sim.core.cache: auto | a folder | null (off)
    params: ParamsSchema = field(default_factory=ParamsSchema)
    topology: TopologySchema = field(default_factory=TopologySchema)
    experiment: ExperimentSchema = field(default_factory=ExperimentSchema)
    substrate: Any = None
    # LLM preset (sim/substrates/llm): model and GPU groups, serving-calculator point, experiment options
    model: Any = None
    gpu: Any = None
    batch: Optional[int] = None
    context: Optional[int] = None
    roofline: Any = None
    serving: Any = None
    cascade: Any = None
    analogy: Any = None  # experiment=analogy: step, windows, cascade lengths and the LLM preset
    study: Any = None  # experiment=study: batched parameter study (sim.core.study)
    sensitivity: Any = None  # experiment=sensitivity: SALib Sobol / Morris over the batched path
    society: Any = None  # experiment=society: LLM division of labour (sim.substrates.llm.society)
    homeostasis: Any = None  # experiment=homeostasis: ATP, PCr, Pi and dG against work rate
    differentiation: Any = None  # theta and its adaptation (sim.core.differentiation; conf/differentiation/)
    progress: Any = None  # progress lines on stderr: auto | true | false (checked in sim.config.validate)
    output: Any = None  # results.nc: compress, variables, cells, float32 (checked in sim.config.validate)
    devices: Any = None  # JAX devices the rows are split over: 1 | auto | N (sim.core.sharding)
    vector_width: Any = None  # CPU vector code of the compiled chunk: auto | 256 | 512 (sim.core.codegen)
    carriers: Any = None  # competing carriers and standardisation (sim.core.carriers; conf/carriers/)
    multicellular: Any = None  # experiment=multicellular: phase diagrams of division of labour
    standardization: Any = None  # experiment=standardization: competing carriers (sim.core.carriers)
    robustness: Any = None  # experiment=robustness: failures of producers / specialists
    calibrate: Any = None  # experiment=calibrate: gradient fit of parameters (sim.core.gradients, optax)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunSchema)
    cs.store(group="topology", name="topology_schema", node=TopologySchema)
