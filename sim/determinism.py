"""Bitwise batch invariance: replicate k identical alone or in a batch of any size.

Two things make the last bit of a float result depend on the batch size on the XLA CPU backend:

1. Reductions. XLA picks a summation order from the whole array shape, so a sum over a cell's
   producers can round differently in a batch of 8 and of 256. ``sim.core.ops.rowsum`` with
   fixed-order sums (a left-to-right chain of adds) removes that.
2. Fused multiply-add. XLA's CPU compiler always lets LLVM contract ``a*b + c`` into one FMA
   instruction (one rounding instead of two), and whether LLVM does so depends on how the fused
   loop was vectorised, i.e. on the array shape. Measured with jax 0.12 on an AVX-512 CPU: the
   adenylate-kinase discriminant ``n*n - (1-4K)*c`` is an FMA (``vfmadd231sd``) in the scalar loop
   compiled for a batch of 1 and a separate ``vmulpd``/``vaddpd`` in the 8-wide loop compiled for a
   batch of 256; the two differ by 1 ulp at step 2 and by 1e-13 relative after 200 steps. (jax
   0.10 happened to contract both.) Capping the instruction set at AVX (``--xla_cpu_max_isa=AVX``:
   no FMA, vectors still 256 bits wide) makes every arithmetic op one correctly rounded IEEE op
   whatever the vector width, so the result cannot depend on the batch. A per-compilation option
   does not work (tried: ``compile(compiler_options={"xla_cpu_max_isa": "AVX"})`` is ignored, the
   target machine is fixed when the backend starts), so the flag goes into ``XLA_FLAGS``, which is
   read once, when the CPU backend starts: :func:`configure` must run before the first JAX
   computation of the process (``sim.api`` calls it first thing; ``python -m sim`` therefore
   honours ``deterministic_reductions=true``).

Cost (``make bench``, measured here): 1.0-2.5x the default step time depending on the shape (about 2x at
100 cells x 256 replicates, 2.5x at 10,000 cells x 1), almost all of it from the fixed-order sums.
Scope: x86-64 CPUs. Other backends (GPU) and CPUs (aarch64, whose NEON FMA cannot be switched off
this way) get the fixed-order sums but no bitwise guarantee; :class:`Status` says so.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import warnings

NO_FMA_ISA = "AVX"  # the highest XLA CPU ISA level without FMA (AVX2 and above allow it)
NO_FMA_FLAG = f"--xla_cpu_max_isa={NO_FMA_ISA}"
_ISA_WITHOUT_FMA = ("SSE4_2", "AVX")


@dataclasses.dataclass(frozen=True)
class Status:
    """Whether this process can give bitwise batch-invariant results, and why not if it cannot."""

    fixed_order_sums: bool
    bitwise: bool
    reason: str = ""


def _max_isa(flags: str) -> str | None:
    value = None
    for token in flags.split():
        if token.startswith("--xla_cpu_max_isa="):
            value = token.split("=", 1)[1].strip().upper()  # the last one given wins, as in XLA
    return value


def fma_disabled(flags: str | None = None) -> bool:
    """True when ``XLA_FLAGS`` (or ``flags``) caps the CPU ISA below FMA."""
    flags = os.environ.get("XLA_FLAGS", "") if flags is None else flags
    return _max_isa(flags) in _ISA_WITHOUT_FMA


def backend_started() -> bool:
    """True once JAX has created its backends (after which ``XLA_FLAGS`` is no longer read)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # pragma: no cover - jax moved it: assume the worst
        return True


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "x86", "i686")


def request_no_fma() -> tuple[bool, str]:
    """Put :data:`NO_FMA_FLAG` into ``XLA_FLAGS`` if it can still take effect; (ok, why not)."""
    if not _x86():
        return False, f"no FMA switch on {platform.machine()} (only x86-64 CPUs)"
    flags = os.environ.get("XLA_FLAGS", "")
    if fma_disabled(flags):
        return True, ""
    if _max_isa(flags) is not None:
        return False, f"XLA_FLAGS sets --xla_cpu_max_isa={_max_isa(flags)}, which allows FMA (use {NO_FMA_FLAG})"
    if backend_started():
        return False, (f"the JAX backend was started before {NO_FMA_FLAG} could be set; run in a fresh "
                       f"process or export XLA_FLAGS={NO_FMA_FLAG}")
    os.environ["XLA_FLAGS"] = (flags + " " + NO_FMA_FLAG).strip()
    return True, ""


_CURRENT = [Status(False, False, "deterministic_reductions is false")]


def current() -> Status:
    """The status set by the last :func:`configure` of this process."""
    return _CURRENT[0]


def configure(deterministic: bool) -> Status:
    """Switch fixed-order sums on or off for later traces and, when on, switch FMA off if possible.

    Idempotent. FMA is never switched back on in a process (the backend reads the flag once).
    Warns (RuntimeWarning) when determinism is asked for but bitwise invariance cannot be had."""
    if not deterministic:
        status = Status(False, False, "deterministic_reductions is false")
    else:
        ok, why = request_no_fma()
        if ok:
            import jax

            backend = jax.default_backend()  # starts the backend (with the flag) if not yet started
            if backend != "cpu":
                ok, why = False, f"bitwise batch invariance is only guaranteed on CPU (backend: {backend})"
        status = Status(True, ok, why)
        if not ok:
            warnings.warn(f"deterministic_reductions=true: fixed-order sums are on but {why}; replicates "
                          "then agree alone and batched to ~1e-15, not bit for bit", RuntimeWarning, stacklevel=2)
    _CURRENT[0] = status
    return status
