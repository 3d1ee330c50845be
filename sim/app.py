"""Hydra entry point: ``python -m sim [overrides]`` writes one run folder; ``-m`` sweeps.

Run folder (``runs/<experiment>/<timestamp>/``): ``.hydra/config.yaml`` (Hydra), ``results.nc``,
``summary.json``, ``figures/*.png``. Exit codes: 0 ok, 2 invalid config (one line naming key,
value and what is allowed), 3 numerical failure (NaN/Inf/negative pool; results up to the last
good chunk are kept), 4 any other failure. In a sweep a failing job records ``status: failed``
in its summary and the sweep goes on.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sim.config.schema import register
from sim.errors import ConfigError, NumericalError
from sim.io import write_json, write_netcdf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = tuple(sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())) if CONF_DIR.is_dir() else ()
EXIT_CONFIG, EXIT_NUMERICAL, EXIT_FAILED = 2, 3, 4

register()


def preflight(argv: list[str]) -> None:
    """Refuse unknown config-group choices before Hydra composes (one line instead of a wall)."""
    for arg in argv:
        if "=" not in arg or arg.startswith("hydra"):
            continue
        key, _, value = arg.lstrip("+~").partition("=")
        if key not in GROUPS:
            continue
        options = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
        for choice in value.split(","):
            if choice not in options:
                raise ConfigError(key, choice, "one of " + ", ".join(options))


def print_summary(summary: dict, out_dir: Path) -> None:
    rows = [
        ("status", summary.get("status")),
        ("cells alive", f"{summary.get('cells_alive', float('nan')):.1f} / {summary.get('cells_total', '?')}"),
        ("energy charge", f"{summary.get('energy_charge', float('nan')):.4f}"),
        ("dG ATP (kJ/mol)", f"{summary.get('dg_atp_kj_per_mol', float('nan')):.2f}"),
        ("pool turnover (s)", f"{summary.get('currency_pool_turnover_s', float('nan')):.2f}"),
        ("currency produced", f"{summary.get('currency_produced', float('nan')):.4g} {summary.get('currency_unit', '')}"),
        ("currency spent", f"{summary.get('currency_spent', float('nan')):.4g}"),
        ("currency transported", f"{summary.get('currency_transported', float('nan')):.4g}"),
        ("energy (J)", f"{summary.get('energy_j', float('nan')):.4g}"),
        ("heat (J)", f"{summary.get('heat_j', float('nan')):.4g}"),
        ("Landauer ratio", f"{summary.get('landauer_ratio', float('nan')):.3g}"),
        ("conservation error", f"{summary.get('conservation_error', float('nan')):.2e}"),
        ("wall / compile (s)", f"{summary.get('wall_s', float('nan')):.2f} / {summary.get('compile_s', float('nan')):.2f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"run: {out_dir}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def execute(cfg, out_dir: Path, *, quiet: bool = False) -> int:
    """Run one job into ``out_dir``; returns the exit code (never raises for a failed run)."""
    from sim.api import as_plain, run
    from sim.plot import run_figures

    plain = as_plain(cfg)
    debug = bool(plain.get("debug", False))
    summary: dict = {"status": "failed"}
    code = 0
    try:
        output = run(plain)
        summary = dict(output.summary)
        summary["experiment"] = plain.get("experiment", {}).get("name")
        summary["substrate"] = plain.get("substrate", {}).get("name")
        summary["backend"] = plain.get("backend")
        if output.dataset is not None:
            write_netcdf(out_dir / "results.nc", output.dataset)
        if plain.get("figures", True):
            if output.figures is not None:
                output.figures(out_dir)
            elif output.dataset is not None:
                run_figures(output.dataset, out_dir)
        if output.result.error is not None:
            err = output.result.error
            code = EXIT_NUMERICAL if isinstance(err, NumericalError) else EXIT_FAILED
            print(f"error: {err}", file=sys.stderr)
    except ConfigError as exc:
        summary.update(reason=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_CONFIG
    except Exception as exc:  # any other failure: record it, keep what was computed
        summary.update(reason=f"{type(exc).__name__}: {exc}")
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        code = EXIT_FAILED
    write_json(out_dir / "summary.json", summary)
    if not quiet and code == 0:
        print_summary(summary, out_dir)
    return code


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    code = execute(cfg, Path(hc.runtime.output_dir))
    if code and hc.mode != RunMode.MULTIRUN:
        sys.exit(code)


def entry() -> None:
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    try:
        preflight(sys.argv[1:])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    try:
        main()
    except SystemExit as exc:
        # Hydra exits 1 when composing fails (bad override, wrong type): that is a config error.
        if exc.code == 1:
            sys.exit(EXIT_CONFIG)
        raise
