"""Atomic file output: write to a temporary name in the same folder, fsync, then rename.

A job killed mid-write leaves at worst a ``.tmp-*`` file, never a truncated ``results.nc`` or
``summary.json`` that looks complete.

Non-finite numbers have one representation that every writer and reader of this project agrees
on. JSON has no literal for them (Python's ``Infinity``/``NaN`` tokens are not JSON, and other
readers refuse them), so :func:`write_json` writes NaN as ``null`` and +-inf as the strings
``"inf"`` / ``"-inf"`` (:func:`to_json_value`); :func:`read_json` (and :func:`decode_nonfinite`
on any value) turns those strings back into IEEE floats. Tables (``summary.parquet``, see
:mod:`sim.sweep`) hold IEEE values in float-typed columns, never the strings: a column that mixed
``"inf"`` with numbers is what made pyarrow refuse a sweep's whole table.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


TEMP_PREFIX = ".tmp-"  # what a temporary of ours is called (and what remove_temporaries removes)


@contextmanager
def interrupts_deferred():
    """SIGINT and SIGTERM held back until the block ends, then delivered as if they had just arrived.

    A signal whose handler raises (Ctrl-C's KeyboardInterrupt, SIGTERM's ``Interrupted``) inside
    ``np.savez`` leaves its zip writer half-closed, and closing it then raises a ValueError that
    replaces the interrupt: the run would end as "failed" instead of "interrupted". Checkpoint
    writes are short, so they finish first. Outside the main thread (where signal handlers cannot be
    set) the block runs as is."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if got:
            handler = previous[got[0]]
            if callable(handler):
                handler(got[0], None)  # raises KeyboardInterrupt / Interrupted here, after the write
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), got[0])


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_temporaries(folder) -> list[Path]:
    """Delete the ``.tmp-*`` files a killed writer left under ``folder`` (recursively); returns them.

    Only for a folder nobody is writing to (``sim.app.resume_run`` calls it under the run lock)."""
    removed = []
    for p in sorted(Path(folder).rglob(TEMP_PREFIX + "*")):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


NONFINITE_STRINGS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}  # how JSON files spell them


def to_json_value(obj):
    """``obj`` with numpy scalars as Python numbers and non-finite floats as JSON can hold them:
    NaN -> ``null``, +inf -> ``"inf"``, -inf -> ``"-inf"`` (see the module docstring)."""
    if isinstance(obj, dict):
        return {str(k): to_json_value(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_value(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


_clean = to_json_value  # (the old private name)


def decode_nonfinite(value):
    """The inverse of :func:`to_json_value` for one scalar: ``"inf"``, ``"-inf"``, ``"nan"`` -> float."""
    if isinstance(value, str) and value in NONFINITE_STRINGS:
        return NONFINITE_STRINGS[value]
    return value


def read_json(path):
    """A JSON file written by :func:`write_json`, with non-finite numbers decoded back to floats
    (in mappings and lists, recursively)."""

    def decode(obj):
        if isinstance(obj, dict):
            return {k: decode(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [decode(v) for v in obj]
        return decode_nonfinite(obj)

    return decode(json.loads(Path(path).read_text()))


def json_text(data, *, sort_keys: bool = True) -> str:
    """The text :func:`write_json` writes (strict JSON: ``allow_nan=False``, non-finite numbers as
    described in the module docstring)."""
    return json.dumps(to_json_value(data), indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"


def write_json(path, data, *, sort_keys: bool = True) -> None:
    """JSON with sorted keys by default; ``sort_keys=False`` keeps mapping order (configs, where
    the order of e.g. producer kinds is meaningful)."""
    text = json_text(data, sort_keys=sort_keys)  # (before the temporary: a value JSON cannot hold raises here)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_text(path, text: str) -> None:
    """A text file (UTF-8), e.g. the ``.hydra/*.yaml`` files of a run folder (see sim.app)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------ what results.nc holds

OUTPUT_KEYS = ("compress", "variables", "cells", "float32")
CELL_MODES = ("all", "summary")
DEFAULT_COMPRESS = 4  # zlib level: 1-9 differ by <2% in size on our records; 4 takes ~0.5 s per 25 MB (idle core)
# float64 records stored as float32 by default: the default tissue run (30 cells, 300 records x 4 replicates)
# is 5.98 MB as uncompressed float64, 3.45 MB zlib'd float64 (1.7x), 1.23 MB zlib'd float32 (4.9x);
# max relative error over its variables 5.9e-8 (round to nearest: at most 2**-24 = 6.0e-8)
DEFAULT_FLOAT32 = True
# a compressed variable is stored in chunks, whose index costs ~3 KB: below this size it would grow
MIN_COMPRESS_BYTES = 16 * 1024


@dataclass(frozen=True)
class OutputOptions:
    """The ``output:`` section of a config (conf/config.yaml), parsed.

    ``compress``: zlib level 0-9 with byte shuffle (lossless; 0 = none). ``variables``: the dataset
    variables to keep (None: all). ``cells``: ``all``, or ``summary`` (each per-cell variable
    becomes its mean over cells plus ``<name>_cell_std``; ``n_cells`` in the attributes turns a
    mean back into a tissue total). ``float32``: store float64 data variables as float32 (the
    default, :data:`DEFAULT_FLOAT32`): each value rounded to nearest, a relative error of at most
    2**-24 = 6.0e-8 (measured on the default tissue run: 5.9e-8; zeros and non-finite values
    kept; a variable with magnitudes outside float32's normal range stays float64,
    :func:`fits_float32`), ~4.9x less than uncompressed float64 with the zlib on top; ``false``
    keeps float64 (what a comparison with the reference backend to 1e-13 needs). Coordinates
    (time stamps) and checkpoints stay float64 whatever this says: a resumed run continues from
    exact state."""

    compress: int = DEFAULT_COMPRESS
    variables: tuple | None = None
    cells: str = "all"
    float32: bool = True

    @property
    def selects(self) -> bool:
        """Whether the dataset's content (not only its encoding) changes."""
        return self.variables is not None or self.cells != "all"


def output_problems(cfg) -> list:
    """One :class:`~sim.errors.ConfigError` per bad entry of ``cfg["output"]`` (empty: fine). The
    variable names themselves are checked against the dataset by :func:`check_variables`."""
    from sim.errors import ConfigError

    node = cfg.get("output") if isinstance(cfg, dict) else None
    if node is None:
        return []
    if not isinstance(node, dict):
        return [ConfigError("output", node, "a mapping with " + ", ".join(OUTPUT_KEYS))]
    out = []
    for key in node:
        if key not in OUTPUT_KEYS:
            out.append(ConfigError(f"output.{key}", node[key], "a key of output: " + ", ".join(OUTPUT_KEYS)))
    c = node.get("compress", DEFAULT_COMPRESS)
    if not (isinstance(c, bool) or (isinstance(c, int) and 0 <= c <= 9)):
        out.append(ConfigError("output.compress", c, f"true (zlib level {DEFAULT_COMPRESS}), false, or a zlib level 0-9"))
    v = node.get("variables", "all")
    if not (v is None or v == "all" or (isinstance(v, (list, tuple)) and v and all(isinstance(x, str) and x for x in v)
                                        and len(set(v)) == len(v))):
        out.append(ConfigError("output.variables", v, "all, or a non-empty list of distinct variable names of "
                               "results.nc, e.g. [energy_charge, pools]"))
    cells = node.get("cells", "all")
    if cells not in CELL_MODES:
        out.append(ConfigError("output.cells", cells, "all (every cell) or summary (mean and std over cells)"))
    f = node.get("float32", DEFAULT_FLOAT32)
    if not isinstance(f, bool):
        out.append(ConfigError("output.float32", f, "true or false"))
    return out


def output_options(cfg) -> OutputOptions:
    """The parsed ``output`` section (defaults where absent); its first problem raised, if any."""
    problems = output_problems(cfg)
    if problems:
        raise problems[0]
    node = (cfg.get("output") if isinstance(cfg, dict) else None) or {}
    c = node.get("compress", DEFAULT_COMPRESS)
    v = node.get("variables", "all")
    return OutputOptions(compress=(DEFAULT_COMPRESS if c is True else int(c or 0)),
                         variables=None if v in (None, "all") else tuple(v),
                         cells=node.get("cells", "all"), float32=bool(node.get("float32", DEFAULT_FLOAT32)))


def check_variables(options: OutputOptions, available) -> None:
    """Refuse names in ``output.variables`` that the dataset does not hold, naming the ones it does."""
    from sim.errors import ConfigError

    if options.variables is None:
        return
    available = list(available)
    unknown = [v for v in options.variables if v not in available]
    if unknown:
        raise ConfigError("output.variables", unknown if len(unknown) > 1 else unknown[0],
                          "names of variables of this run's results.nc: " + ", ".join(available))


def select_output(ds, options: OutputOptions):
    """The dataset ``results.nc`` holds: ``output.variables`` kept, cells summarised if asked."""
    if options.variables is not None:
        check_variables(options, ds.data_vars)
        ds = ds[list(options.variables)]
    if options.cells == "summary" and "cell" in ds.dims:
        import xarray as xr

        n = int(ds.sizes["cell"])
        out = {}
        for name, var in ds.data_vars.items():
            if "cell" not in var.dims:
                out[name] = var
                continue
            values = var.astype("float64") if var.dtype.kind in "biu" else var
            mean = values.mean("cell")
            mean.attrs = {**var.attrs, "cell_reduction": f"mean over {n} cells"}
            std = values.std("cell")
            std.attrs = {**var.attrs, "cell_reduction": f"standard deviation over {n} cells"}
            out[name], out[f"{name}_cell_std"] = mean, std
        attrs = {**ds.attrs, "cells": f"summary: per-cell variables are means over the {n} cells "
                 "(x n_cells for a tissue total), with <name>_cell_std", "n_cells": n}
        ds = xr.Dataset(out, attrs=attrs).drop_vars("cell", errors="ignore")
    return ds


def fits_float32(values) -> bool:
    """Whether float32 holds ``values`` to its 2**-24 relative rounding: every finite nonzero
    magnitude in float32's normal range (above ~3.4e38 it would become inf, below ~1.2e-38 lose
    digits or become 0). A variable that does not fit stays float64 under ``output.float32``."""
    import numpy as np

    x = np.abs(np.asarray(values, np.float64))
    x = x[np.isfinite(x) & (x > 0)]
    info = np.finfo(np.float32)
    return x.size == 0 or (float(x.max()) <= float(info.max) and float(x.min()) >= float(info.tiny))


def netcdf_encoding(ds, options: OutputOptions) -> dict:
    """Per-variable netCDF4 encoding: zlib + shuffle for numeric arrays of at least
    :data:`MIN_COMPRESS_BYTES`, float64 stored as float32 with ``output.float32`` where it fits
    (:func:`fits_float32`; coordinates keep their dtype: time stamps stay exact)."""
    enc = {}
    for name, var in ds.data_vars.items():
        e = {}
        if options.compress and var.dtype.kind in "biuf" and var.ndim > 0 and var.nbytes >= MIN_COMPRESS_BYTES:
            e.update(zlib=True, complevel=int(options.compress), shuffle=True)
        if options.float32 and var.dtype == "float64" and fits_float32(var.values):
            e["dtype"] = "float32"
        if e:
            enc[name] = e
    return enc


def write_netcdf(path, ds, options: OutputOptions | None = None) -> None:
    """``ds`` as netCDF4, shaped and encoded by ``options`` (default: every variable, zlib level
    :data:`DEFAULT_COMPRESS`, float64 data stored as float32)."""
    options = OutputOptions() if options is None else options
    ds = select_output(ds, options).copy(deep=False)
    for var in ds.variables.values():  # a dataset read from a file brings its encoding: options decide, not it
        var.encoding = {}
    encoding = netcdf_encoding(ds, options)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)


def write_parquet(path, df) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_npz(path, arrays: dict) -> None:
    """``np.savez`` of ``arrays`` (name -> array), atomically, without pickles."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, **arrays)


def write_dataset_npz(path, ds) -> None:
    """An ``xarray.Dataset`` as a plain ``.npz``: every variable and coordinate under its name, and
    ``__meta__`` (JSON: each array's dims and attributes, the dataset's attributes). The fallback
    when ``results.nc`` cannot be written (see ``sim.app``): numpy needs no netCDF library and no
    particular file name, so the computed arrays survive a failed netCDF write."""
    import numpy as np

    arrays, meta = {}, {"attrs": to_json_value(dict(ds.attrs)), "variables": {}}
    for name, var in list(ds.coords.items()) + list(ds.data_vars.items()):
        values = np.asarray(var.values)
        if values.dtype == object:
            values = values.astype(str)
        arrays[str(name)] = values
        meta["variables"][str(name)] = {"dims": list(var.dims), "attrs": to_json_value(dict(var.attrs)),
                                        "coord": name in ds.coords}
    arrays["__meta__"] = np.array(json.dumps(meta, default=str))
    write_npz(path, arrays)


# ------------------------------------------------------------------------------ what summary.json's names say
#
# A summary key whose quantity has a unit ends with that unit: ``_s``, ``_j``, ``_w``, ``_mm``,
# ``_molecules`` (biology's currency: ATP molecules), ``_tokens`` (the LLM's), ``_units`` (the
# generic substrate's dimensionless currency units), ``_events`` (work events: each consumer kind
# counts its own, ``work_units`` names them), ``_aa``, ``_usd``, ``_flop``, ``_bytes``. A unit
# N/D is written ``_<n>_per_<d>`` for rates and concentrations-like units (``_req_per_s``,
# ``_kj_per_mol``) or ``_per_<d>_<n>`` for an amount per item (``energy_per_output_token_j``).
# A statistic follows the unit it is in (``relaxation_s_std``, ``_ci_low``, ``_ci_high``).
# Names without a unit are DECLARED as such: dimensionless (``1``: fractions, ratios, indices,
# relative errors, exponents, multipliers), counts (cells, producers, requests: the thing
# counted is in the name), text, flags, mappings (a point's inputs) or the unit of the outcome or
# parameter the key names (``mean_last:atp_mm min`` of a study, ``fit km_mm`` of a calibration). Every substrate and experiment declares each key
# its summary can hold (``OUTCOME_UNITS`` next to its ``summarize``); ``tests/test_outcome_units.py``
# checks real summaries against the declarations with :func:`unit_problems`.

DIMENSIONLESS = "1"
COUNT = "count"
TEXT = "text"
FLAG = "flag"
MAPPING = "mapping"
OF_NAMED = "the unit of the outcome or parameter named in the key"
PLAIN_UNITS = (DIMENSIONLESS, COUNT, TEXT, FLAG, MAPPING, OF_NAMED)  # declared: the name carries no unit

UNIT_ENDINGS = {  # a unit as the tables write it -> how a key spells it
    "s": "s", "J": "j", "W": "w", "mM": "mm", "kJ": "kj", "mol": "mol", "molecules": "molecules",
    "events": "events", "aa": "aa", "tokens": "tokens", "output token": "output_token",
    "token processed": "token_processed", "token": "token", "requests": "req", "request": "request",
    "USD": "usd", "bytes": "bytes", "byte": "byte", "FLOP": "flop", "bits": "bits", "cells": "cells",
    "units": "units", "unit": "unit", "task": "task", "work event": "work_event", "1M tokens": "1m_tokens", "rounds": "rounds",
}
STATISTICS = ("_std", "_ci_low", "_ci_high")  # a statistic of an outcome, in the outcome's unit
CORE_OUTCOMES = {  # what sim.api and sim.app add to every summary (and the failure entries)
    "status": TEXT, "reason": TEXT, "experiment": TEXT, "substrate": TEXT, "backend": TEXT, "model": TEXT,
    "gpu": TEXT, "currency_unit": TEXT, "deterministic_reductions": FLAG, "bitwise_batch_invariant": FLAG,
    "first_replicate": COUNT, "replicates": COUNT, "first_chunk_s": "s", "wall_s": "s", "compile_s": "s",
    "total_s": "s", "simulated_time_s": "s", "failure_step": COUNT, "failure_cell": TEXT,
    "failure_quantity": TEXT, "failure_process": TEXT, "failure_replicate": COUNT,
}


def unit_endings(unit: str) -> tuple[str, ...]:
    """The endings a key in ``unit`` may have (empty for the :data:`PLAIN_UNITS`): ``"J"`` ->
    ``("_j",)``; ``"J/output token"`` -> ``("_j_per_output_token", "_per_output_token_j")``;
    ``"1/s"`` -> ``("_per_s",)``."""
    if unit in PLAIN_UNITS:
        return ()
    if unit.startswith("1/"):  # a rate constant
        return (f"_per_{UNIT_ENDINGS[unit[2:].strip()]}",)
    if "/" in unit:
        num, den = (UNIT_ENDINGS[part.strip()] for part in unit.split("/", 1))
        return (f"_{num}_per_{den}", f"_per_{den}_{num}")
    return (f"_{UNIT_ENDINGS[unit]}",)


def declared_unit(key: str, *tables: dict):
    """The unit ``tables`` (key or ``fnmatch`` pattern -> unit; the first table with an exact
    name wins, then the first pattern that matches) declare for ``key``; None if undeclared."""
    from fnmatch import fnmatchcase

    for table in tables:
        if key in table:
            return table[key]
    for table in tables:
        for pattern, unit in table.items():
            if any(c in pattern for c in "*?[") and fnmatchcase(key, pattern):
                return unit
    return None


def unit_problems(summary: dict, *tables: dict, forbidden: tuple = ()) -> list[str]:
    """What is wrong with the names of ``summary`` against ``tables`` (see above): a key no table
    declares, a key whose unit it does not end with, a unit of ``forbidden`` (what a substrate
    must never say, e.g. the generic one: mM, kJ/mol, J, molecules), or a key ending like one."""
    bad_endings = tuple(e for u in forbidden for e in unit_endings(u))
    out = []
    for key in summary:
        unit = declared_unit(key, *tables)
        if unit is None:
            out.append(f"{key}: no declared unit")
            continue
        if unit in forbidden or any(part.strip() in forbidden for part in unit.split("/")):
            out.append(f"{key}: declared in {unit!r}, which this summary must not use")
        bare = key
        for stat in STATISTICS:
            if bare.endswith(stat) and unit not in PLAIN_UNITS:
                bare = bare[: -len(stat)]
                break
        endings = unit_endings(unit)
        if endings and not ("_" + bare).endswith(endings):  # (a key may be its unit: bits_per_token)
            out.append(f"{key}: in {unit}, so it should end with {' or '.join(endings)}")
        if bad_endings and key.endswith(bad_endings):
            out.append(f"{key}: ends like a unit this summary must not use")
    return out


CARRIER_AMOUNTS = ("carrier_decayed", "carrier_conversion_lost", "carrier_converted", "carrier_production_lost")


def carrier_outcomes(raw: dict, *, amount_scale: float, amount_ending: str, time_ending: str | None) -> dict:
    """:func:`sim.core.carriers.summary`'s entries named with the substrate's units: the charge its
    carriers lost or converted (``carrier_decayed`` ...) x ``amount_scale`` as ``<name><amount_ending>``
    (``_molecules``, ``_units``), ``carrier_time_to_standard`` with ``time_ending`` (``_s``; None:
    a dimensionless time, name kept)."""
    out = {}
    for key, value in raw.items():
        if key in CARRIER_AMOUNTS:
            out[key + amount_ending] = value * amount_scale
        elif key == "carrier_time_to_standard" and time_ending:
            out[key + time_ending] = value
        else:
            out[key] = value
    return out


CARRIER_OUTCOMES = {  # sim.core.carriers.summary through carrier_outcomes (the amounts and the time in the substrate's table)
    "carriers": COUNT, "carrier_herfindahl": DIMENSIONLESS, "carrier_herfindahl_held": DIMENSIONLESS,
    "carrier_dominant_share": DIMENSIONLESS, "carrier_standardised_fraction": DIMENSIONLESS, "carrier_winner": TEXT,
    "carrier_switches": COUNT, "carrier_share_*": DIMENSIONLESS,
}
