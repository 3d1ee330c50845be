"""Hydra entry point: ``python -m sim [overrides]`` writes one run folder; ``-m`` sweeps.

Run folder (``runs/<experiment>/<timestamp>/``): ``.hydra/{config,hydra,overrides}.yaml``,
``results.nc``, ``summary.json``, ``figures/*.png`` and, while a run with ``checkpoint_every > 0`` is
going, ``checkpoint/``; ``python -m sim resume=FOLDER`` continues a killed run there. Every file is
written atomically through :mod:`sim.io`, the ``.hydra`` files included: the config sets
``hydra.output_subdir: null`` so that Hydra (which writes them with a plain ``open``) writes none,
and :func:`main` writes the same three files itself (:func:`write_hydra_files`). While a job runs,
its folder is locked (:mod:`sim.runlock`, ``<run_dir>/.lock``): a second process that wants the
folder (a ``resume=`` of a run still going) is refused with exit code 2. Exit codes: 0 ok,
2 invalid config (one line per problem naming key, value and what is allowed; a traceback only
with ``debug=true``), 3 numerical failure (NaN/Inf/negative pool; results up to the last
good chunk are kept), 4 any other failure. In a sweep a failing job records ``status: failed``
in its summary and the sweep goes on; once every job is done and the table is written, a sweep
with a failed job exits 4 (see :mod:`sim.sweep` for how Hydra's multirun gets an exit code).

What a run folder may hold. A folder that holds another run's checkpoint (``checkpoint/state.npz``
of a killed or failed run) is refused to a fresh run with exit code 2 (one line naming
``hydra.run.dir``, or ``hydra.sweep.dir`` in a sweep, and the folder) before anything is written
into it: replacing the checkpoint would lose what that run computed, and writing beside it is how a
resume once combined one run's state with another run's config. Continue it with ``resume=`` or
choose another folder. A resume refuses a checkpoint whose config or code version does not match
(:mod:`sim.checkpoint`).

Nothing computed is lost when something fails. ``summary.json`` says ``status: failed`` and why
whenever the exit code is not 0 (also when writing ``results.nc``, a table or a figure failed
after a good run); the checkpoint is removed only after a run that exited 0; and when
``results.nc`` cannot be written, the dataset goes to ``results.fallback.npz``
(:func:`sim.io.write_dataset_npz`) and the summary names it.
"""

from __future__ import annotations

import copy
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write

from sim import runlock
from sim.config.schema import register
from sim.core import codegen, sharding
from sim.core.config import CONF_DIR
from sim.errors import ConfigError, NumericalError
from sim.io import remove_temporaries, write_dataset_npz, write_json, write_netcdf, write_text

GROUPS = tuple(sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())) if CONF_DIR.is_dir() else ()
EXIT_CONFIG, EXIT_NUMERICAL, EXIT_FAILED = 2, 3, 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT (SIGTERM: 143)
FALLBACK_RESULTS = "results.fallback.npz"  # the dataset, when results.nc cannot be written
HYDRA_SUBDIR = ".hydra"  # where a run folder keeps its config (Hydra's default output_subdir)

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


PRINTED_KEYS = (  # shown first in their group, where present
    "stable", "output_tokens_per_s", "step_time_s", "energy_per_output_token_j", "kv_capacity_tokens",
    "littles_law_error", "mean_in_system", "throughput_req_per_s", "currency_produced_molecules",
    "currency_spent_molecules", "currency_produced_units", "currency_spent_units", "energy_j", "billed_usd",
    "energy_cost_usd", "landauer_ratio", "conservation_error", "exponent_bio", "exponent_llm_long",
)

# Groups of the printed summary: (title, key prefixes or names); a key goes to the first group
# with a match, anything else to "other". Names carry their unit (``_s``, ``_j``, ``_mm``,
# ``_molecules``, ``_tokens``, ``_units``: sim.io's naming rule), so nothing here labels a unit; a
# dimensionless outcome or a count is printed as its bare name.
SUMMARY_GROUPS = (
    ("outcome", ("status", "reason", "stable", "stability_", "failure_", "conservation_error", "kv_conservation_error",
                 "littles_law", "engine_vs_analytic")),
    ("state", ("energy_charge", "charged_", "cells_", "producers_", "producer_", "atp_mm", "adp_", "amp_", "pi_mm",
               "pcr_mm", "glucose_mm", "dg_atp", "theta", "specialization", "mean_in_system", "mean_queue",
               "mean_batch", "mean_time", "kv_", "gpu_busy", "utilization", "in_system", "max_batch")),
    ("currency", ("currency", "spent", "work", "output", "switching", "substrate_", "births", "failures",
                  "tokens", "input_tokens", "tool_", "routed", "dropped", "memory_", "proteins", "chain", "protein_",
                  "atp_per", "arrival_", "throughput", "spending_")),
    ("energy and cost", ("energy", "heat", "joules", "landauer", "mean_power", "bits_per", "usd", "billed",
                         "step_time", "hbm_", "flops", "compute_", "bandwidth_", "arithmetic_", "ridge_",
                         "memory_bound", "analytic_", "allreduce", "perfect_scaling", "attention_", "weight_bytes",
                         "prefill_", "decode_", "engine_joules", "power_w")),
    ("run", ("experiment", "substrate", "backend", "model", "gpu", "seed", "replicates", "first_replicate",
             "simulated_time", "window_s", "wall_s", "compile_s", "total_s", "first_chunk_s", "deterministic_reductions",
             "bitwise_batch_invariant", "currency_unit", "batch", "context", "power_state")),
)
RUN_FIRST = ("currency_unit", "simulated_time", "simulated_time_s")  # run facts that start with a group's prefix


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def group_summary(summary: dict, skip=()) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every scalar entry of ``summary`` (but ``skip``), as (group title, [(key, text), ...]) in the
    order of :data:`SUMMARY_GROUPS`; within a group ``status``, ``reason`` and :data:`PRINTED_KEYS`
    first, then the summary's own order."""
    first = ("status", "reason") + PRINTED_KEYS
    order = [k for k in first if k in summary] + [k for k in summary if k not in first]
    groups: dict[str, list] = {title: [] for title, _ in SUMMARY_GROUPS}
    groups["other"] = []
    for key in order:
        value = summary[key]
        if key in skip or isinstance(value, (dict, list, tuple)):
            continue
        title = next((t for t, names in SUMMARY_GROUPS if key in names), None) or next(  # a name beats a prefix
            (t for t, names in SUMMARY_GROUPS if any(key.startswith(n) for n in names)), "other")
        if key in RUN_FIRST:
            title = "run"
        elif key.endswith(("_j", "_w")) and title != "outcome":  # joules and watts, whatever they count
            title = "energy and cost"
        groups[title].append((key, _fmt(value)))
    return [(title, rows) for title, rows in groups.items() if rows]


def _columns(rows: list[tuple[str, str]], width: int, indent: str = "    ") -> list[str]:
    """``key value`` cells side by side, as many columns as fit in ``width``; a long text on its own line."""
    short = [(k, v) for k, v in rows if len(v) <= 24]
    lines = []
    if short:
        kw = max(len(k) for k, _ in short)
        vw = max(len(v) for _, v in short)
        cell = kw + 2 + vw
        ncol = max(1, (width - len(indent) + 3) // (cell + 3))
        for i in range(0, len(short), ncol):
            lines.append(indent + "   ".join(f"{k:<{kw}}  {v:<{vw}}" for k, v in short[i:i + ncol]).rstrip())
    lines += [f"{indent}{k}  {v}" for k, v in rows if len(v) > 24]
    return lines


def _width() -> int:
    import shutil

    return max(60, min(shutil.get_terminal_size((110, 24)).columns, 160))


def print_run_line(summary: dict, out_dir: Path) -> None:
    """After an experiment's own report: the folder, the status and the time it took."""
    took = ", ".join(f"{name} {summary[key]:.1f} s" for name, key in (("wall", "wall_s"), ("compile", "compile_s"),
                                                                      ("total", "total_s"))
                     if isinstance(summary.get(key), (int, float)))
    print(f"run: {out_dir} ({summary.get('status')}{'; ' + took if took else ''}; every number in summary.json)")


def print_summary(summary: dict, out_dir: Path) -> None:
    """The run's folder and every outcome of ``summary.json``, grouped (outcome, state, currency,
    energy and cost, run, other) in columns; a biology tissue first gets its headline rows with
    units in words."""
    print(f"run: {out_dir}")
    shown: tuple = ()
    if "energy_charge" in summary and "dg_atp_kj_per_mol" in summary:  # a biology tissue: the headline
        unit = summary.get("currency_unit", "molecules")
        rows = [
            ("status", summary.get("status")),
            ("cells alive", f"{summary.get('cells_alive', float('nan')):.1f} / {summary.get('cells_total', '?')}"),
            ("energy charge", f"{summary.get('energy_charge', float('nan')):.4f}"),
            ("dG ATP (kJ/mol)", f"{summary.get('dg_atp_kj_per_mol', float('nan')):.2f}"),
            ("pool turnover (s)", f"{summary.get('currency_pool_turnover_s', float('nan')):.2f}"),
            ("currency produced", f"{summary.get('currency_produced_molecules', float('nan')):.4g} {unit}"),
            ("currency spent", f"{summary.get('currency_spent_molecules', float('nan')):.4g} {unit}"),
            ("currency transported", f"{summary.get('currency_transported_molecules', float('nan')):.4g} {unit}"),
            ("energy (J)", f"{summary.get('energy_j', float('nan')):.4g}"),
            ("heat (J)", f"{summary.get('heat_j', float('nan')):.4g}"),
            ("Landauer ratio", f"{summary.get('landauer_ratio', float('nan')):.3g}"),
            ("conservation error", f"{summary.get('conservation_error', float('nan')):.2e}"),
            ("wall / compile (s)", f"{summary.get('wall_s', float('nan')):.2f} / {summary.get('compile_s', float('nan')):.2f}"),
        ]
        width = max(len(r[0]) for r in rows)
        for name, value in rows:
            print(f"  {name:<{width}}  {value}")
        shown = ("status", "cells_alive", "cells_total", "energy_charge", "dg_atp_kj_per_mol", "currency_pool_turnover_s",
                 "currency_produced_molecules", "currency_spent_molecules", "currency_transported_molecules",
                 "energy_j", "heat_j", "landauer_ratio",
                 "conservation_error", "wall_s", "compile_s")
        print("  all outcomes (summary.json):")
    width = _width()
    for title, rows in group_summary(summary, skip=shown):
        print(f"  {title}")
        for line in _columns(rows, width):
            print(line)


def _print_config_error(exc: ConfigError) -> None:
    from sim.config.validate import problems_of

    for problem in problems_of(exc):
        print(f"error: {ConfigError.__str__(problem)}", file=sys.stderr)


def execute(cfg, out_dir: Path, *, quiet: bool = False) -> int:
    """Run one job into ``out_dir``; returns the exit code (never raises for a failed run).

    With ``checkpoint_every > 0`` the run checkpoints into ``out_dir/checkpoint`` (removed once
    the results are written); ``resume`` set means ``cfg`` is a checkpoint's stored config and
    ``out_dir`` its run folder (see :func:`resume_run`). The job holds the folder's lock
    (:mod:`sim.runlock`) throughout; if another process holds it, nothing is computed or written
    and the exit code is 2 (one line naming ``resume``, or ``hydra.run.dir`` for a fresh run, the
    folder and the holder). A fresh run (no ``resume``) aimed at a folder that holds another run's
    checkpoint is refused the same way, naming ``hydra.run.dir`` (see the module docstring)."""
    from sim.checkpoint import finished_refusal, holds_checkpoint, holds_finished_run, occupied_refusal

    out_dir = Path(out_dir)
    try:
        resuming = bool(_get(cfg, "resume"))
    except Exception:  # an unresolvable config: _execute reports it (under the lock)
        resuming = False
    key = "resume" if resuming else "hydra.run.dir"
    try:
        with runlock.hold(out_dir, key=key):
            if not resuming and holds_checkpoint(out_dir):
                raise occupied_refusal(out_dir, key)
            if not resuming and holds_finished_run(out_dir):
                raise finished_refusal(out_dir, key)
            return _execute(cfg, out_dir, quiet=quiet)
    except ConfigError as exc:  # (only the lock and folder refusals get here: _execute catches its own)
        _print_config_error(exc)
        return EXIT_CONFIG


def _get(cfg, key):
    return cfg.get(key) if hasattr(cfg, "get") else None


def _write_results(out_dir: Path, ds, options=None) -> None:
    """``results.nc`` as ``options`` (the config's ``output`` section, :class:`sim.io.OutputOptions`)
    shape it; if that fails, the whole dataset goes to :data:`FALLBACK_RESULTS` (plain numpy, no
    netCDF library involved) and the error, naming where the arrays are, is raised on."""
    try:
        write_netcdf(out_dir / "results.nc", ds, options)
    except Exception as exc:
        try:
            write_dataset_npz(out_dir / FALLBACK_RESULTS, ds)
            kept = f"the results are in {FALLBACK_RESULTS}"
        except Exception as exc2:
            kept = f"{FALLBACK_RESULTS} could not be written either ({type(exc2).__name__}: {exc2})"
        raise RuntimeError(f"writing results.nc failed ({type(exc).__name__}: {exc}); {kept}") from exc


def _execute(cfg, out_dir: Path, *, quiet: bool = False) -> int:
    from sim.api import as_plain, run
    from sim.checkpoint import CHECKPOINT_DIR, clear, holds_checkpoint
    from sim.config.validate import check_group_keys
    from sim.io import output_options
    from sim.progress import Progress, parse_mode

    summary: dict = {"status": "failed"}
    code = 0
    debug = False
    report = None
    progress = None
    try:
        try:
            plain = as_plain(cfg)
        except Exception as exc:  # unresolvable interpolation (${...}) and the like
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(getattr(exc, "full_key", None) or "config", None, f"a resolvable config ({msg})") from None
        debug = plain.get("debug") is True  # (a mistyped value such as "maybe" is refused, not obeyed)
        check_group_keys(plain)  # unknown keys in any group, also sections no validate() sees (analogy)
        sharding.configure(plain.get("devices", 1))  # every engine run of this job (sim.core.sharding)
        codegen.configure(plain.get("vector_width", codegen.AUTO))  # and its CPU vector width (sim.core.codegen)
        mode = parse_mode(plain.get("progress"))
        # quiet callers (tests, resume_run(quiet=True)) get no progress unless they ask for it by name
        progress = Progress(out_dir, "false" if quiet and mode == "auto" else mode)
        output = run(plain, run_dir=out_dir, progress=progress)
        summary = dict(output.summary)
        summary["experiment"] = plain.get("experiment", {}).get("name")
        summary["substrate"] = plain.get("substrate", {}).get("name")
        summary["backend"] = plain.get("backend")
        report = getattr(output, "report", None)
        if output.dataset is not None:
            # compressing a large dataset takes seconds: say what the pause is
            progress.note(f"writing results.nc ({output.dataset.nbytes / 1e6:,.0f} MB in memory)"
                          + (" and figures" if plain.get("figures", True) else ""))
            _write_results(out_dir, output.dataset, output_options(plain))
        if getattr(output, "files", None) is not None:
            output.files(out_dir)
        if plain.get("figures", True):
            if getattr(output, "figures", None) is not None:
                output.figures(out_dir)
            elif output.dataset is not None:
                from sim.plot import run_figures

                run_figures(output.dataset, out_dir)
        if output.result.error is not None:
            err = output.result.error
            code = EXIT_NUMERICAL if isinstance(err, NumericalError) else EXIT_FAILED
            print(f"error: {err}", file=sys.stderr)
    except ConfigError as exc:
        summary.update(status="failed", reason=str(exc))
        _print_config_error(exc)
        if debug:
            traceback.print_exc()
        code = EXIT_CONFIG
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (sim.errors.Interrupted): say how to go on
        name = getattr(exc, "signal_name", "SIGINT")
        if holds_checkpoint(out_dir):
            how = f"continue with: python -m sim resume={out_dir}"
        else:
            how = "no checkpoint to resume from (run with checkpoint_every > 0 to make a long run resumable)"
        summary.update(status="interrupted", reason=f"interrupted by {name}; {how}")
        print(f"error: interrupted by {name}; {how}", file=sys.stderr)
        code = getattr(exc, "exit_code", EXIT_INTERRUPTED)
    except Exception as exc:  # any other failure: record it, keep what was computed
        reason = f"{type(exc).__name__}: {exc}"
        if holds_checkpoint(out_dir):
            reason += f" ({CHECKPOINT_DIR}/ is kept)"
        summary.update(status="failed", reason=reason)  # (the run itself may have been ok: the status says the job failed)
        print(f"error: {reason}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        code = EXIT_FAILED
    if progress is not None:  # stops the auto timer: nothing of the run's progress after this point
        progress.close()
    try:
        write_json(out_dir / "summary.json", summary)
    except Exception as exc:  # the job fails; the checkpoint (if any) and results.nc stay
        print(f"error: writing summary.json failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        code = code or EXIT_FAILED
    if code == 0:
        clear(out_dir)  # the results hold everything the checkpoint held
        if not quiet:
            if report:  # the experiment's own table says it all: then only where and how long
                print(report, end="" if report.endswith("\n") else "\n")
                print_run_line(summary, out_dir)
            else:
                print_summary(summary, out_dir)
    return code


RESUME_OVERRIDABLE = ("debug", "progress")


def resume_run(path, overrides: dict | None = None, *, quiet: bool = False) -> int:
    """Continue the killed run in folder ``path`` from its checkpoint, into that same folder.

    The run's stored config is used as it was (only ``debug`` may be changed), so the result is
    bit-identical to that of an uninterrupted run."""
    from sim.checkpoint import find, load_config

    overrides = dict(overrides or {})
    try:
        for key in overrides:
            if key not in RESUME_OVERRIDABLE:
                raise ConfigError(
                    key, overrides[key],
                    "no override with resume= (a resumed run keeps its stored config) except "
                    + ", ".join(RESUME_OVERRIDABLE),
                )
        try:
            ckpt_dir = find(path)
        except ConfigError:  # no checkpoint (yet): say so, unless the run is still going there
            refusal = runlock.busy(path, key="resume") if isinstance(path, (str, os.PathLike)) else None
            if refusal is not None:
                raise refusal from None
            raise
        with runlock.hold(ckpt_dir.parent, key="resume"):  # refused at once if the run is still going
            ckpt_dir = find(path)  # (a holder that just let go may have finished and removed it)
            cfg = load_config(ckpt_dir)
            cfg.update(overrides)
            cfg["resume"] = str(ckpt_dir)
            # a kill during a write left a temporary (never a half file): nobody else is writing here now
            remove_temporaries(ckpt_dir.parent)
            if not quiet:
                print(f"resuming {ckpt_dir.parent}", file=sys.stderr)
            return execute(cfg, ckpt_dir.parent, quiet=quiet)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_CONFIG


def write_hydra_files(cfg: DictConfig, out_dir: Path) -> None:
    """Write ``out_dir/.hydra/{config,hydra,overrides}.yaml`` atomically, as Hydra 1.3 would.

    Hydra's ``run_job`` (hydra/core/utils.py) writes, when ``hydra.output_subdir`` is not null,
    ``OmegaConf.to_yaml`` of the task config (the config without its ``hydra`` node: what the task
    function receives), of ``HydraConfig``'s config (``{hydra: ...}``) and of
    ``hydra.overrides.task``, with a plain ``open(..., "w")``. conf/config.yaml sets
    ``output_subdir: null``, so Hydra writes nothing and this writes the same text through
    :mod:`sim.io` (temporary + rename). In ``hydra.yaml`` the null ``output_subdir`` is shown as
    ``.hydra`` (where the files are), so all three files are byte-identical to Hydra's own. If a
    user sets ``hydra.output_subdir`` to another folder, Hydra writes there as well (in place)."""
    hydra_cfg = HydraConfig.instance().cfg
    subdir = hydra_cfg.hydra.output_subdir
    if subdir == HYDRA_SUBDIR:
        return  # Hydra has written them already (hydra.output_subdir=.hydra given by hand)
    if subdir is None:
        hydra_cfg = copy.deepcopy(hydra_cfg)
        with read_write(hydra_cfg.hydra):
            hydra_cfg.hydra.output_subdir = HYDRA_SUBDIR
    folder = Path(out_dir) / HYDRA_SUBDIR
    write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    write_text(folder / "hydra.yaml", OmegaConf.to_yaml(hydra_cfg))
    write_text(folder / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    """The Hydra task. It never raises: in a sweep an exception would make Hydra stop the sweep
    before its table is collected, so any unexpected failure is reported (one line, exit code 4,
    ``summary.json`` failed where it can still be written) like a failed run."""
    from sim.checkpoint import finished_refusal, holds_checkpoint, holds_finished_run, occupied_refusal

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    key = "hydra.sweep.dir" if hc.mode == RunMode.MULTIRUN else "hydra.run.dir"
    if hc.mode == RunMode.MULTIRUN:  # which point of the sweep the lines that follow belong to
        from sim.sweep import job_line

        try:
            print(job_line(hc.job.num, hc.overrides.task, hc.sweep.dir), flush=True)
        except Exception as exc:  # (only a console line: never a reason to fail the job)
            print(f"[job {hc.job.num}] (overrides not shown: {type(exc).__name__}: {exc})", flush=True)
    try:
        with runlock.hold(out_dir, key=key):  # (execute takes it again: the lock is reentrant)
            resume = cfg.get("resume")
            if not resume and holds_checkpoint(out_dir):  # another run's: write nothing there
                raise occupied_refusal(out_dir, key)
            if not resume and holds_finished_run(out_dir):  # an ended run's: never overwrite it
                raise finished_refusal(out_dir, key)
            write_hydra_files(cfg, out_dir)
            if resume:
                code = resume_run(resume, {"debug": cfg.get("debug") is True})
            else:
                code = execute(cfg, out_dir)
    except ConfigError as exc:  # the folder is another process's: write nothing there
        _print_config_error(exc)
        code = EXIT_CONFIG
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        try:
            debug = cfg.get("debug") is True
        except Exception:  # an unresolvable config
            debug = False
        if debug:
            traceback.print_exc()
        code = EXIT_FAILED
        try:
            if not (out_dir / "summary.json").exists():
                write_json(out_dir / "summary.json", {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"})
        except Exception:  # (the folder itself may be what failed)
            pass
    if code and hc.mode != RunMode.MULTIRUN:
        sys.exit(code)


def _hydra_error(exc: BaseException, args: list[str]) -> ConfigError:
    """A Hydra parse/compose exception -> one ConfigError naming the key."""
    chain, x = [], exc
    while x is not None and len(chain) < 8:
        chain.append(x)
        x = x.__cause__ or x.__context__
    full_key = next((getattr(e, "full_key", None) for e in chain if getattr(e, "full_key", None)), None)
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    detail = "; ".join(str(e).splitlines()[0] for e in chain[1:] if str(e)) or first
    if type(exc).__name__ == "OverrideParseException":
        bad = next((a for a in args if f"'{a}'" in first), None) or _unparsable(args) or first
        value = bad.partition("=")[2] if "=" in bad else bad
        return ConfigError(bad.partition("=")[0].lstrip("+~") or bad, value,
                           f"key=value (Hydra override grammar: {first}; a list is [a, b], a string with "
                           "brackets or commas is quoted)")
    if full_key:
        value = next((a.partition("=")[2] for a in args if a.lstrip("+~").partition("=")[0] == full_key), None)
        if "not in struct" in detail or "not in '" in detail:
            return ConfigError(full_key, value, f"an existing key (add a new one with +{full_key}=...; {detail})")
        return ConfigError(full_key, value, detail)
    return ConfigError("overrides", " ".join(args), f"a composable config ({first}{'; ' + detail if detail != first else ''})")


def _unparsable(args: list[str]) -> str | None:
    """The first override Hydra's grammar cannot parse on its own (so the error names its key)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in args:
        try:
            parser.parse_overrides([arg])
        except Exception:
            return arg
    return None


def precompose(argv: list[str]) -> None:
    """Compose the config once before Hydra does, turning its multi-line errors into one line.

    Sweeps (``-m a=1,2``) are composed with the first value of each sweep; anything this
    cannot handle (other flags, glob sweeps) is left to Hydra."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    args = [a for a in argv if a not in ("-m", "--multirun")]
    if any(a.startswith("-") for a in args):
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception as exc:
        raise _hydra_error(exc, args) from None
    if multirun:
        try:
            args = [
                (o.input_line.partition("=")[0] + "=" + next(iter(o.sweep_string_iterator())))
                if o.is_sweep_override() else o.input_line
                for o in parsed
            ]
        except Exception:
            return
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="sim"):
            composed = compose(config_name="config", overrides=args)
    except Exception as exc:
        raise _hydra_error(exc, args) from None
    from sim.config.validate import check_group_keys

    # unknown keys added with `+` (Hydra accepts any): refused before a run (or a sweep) starts
    check_group_keys(OmegaConf.to_container(composed, resolve=False))


def _is_null(value: str) -> bool:
    """Hydra's null literal (``resume=null``: no resume, as in conf/config.yaml)."""
    return value.strip().lower() == "null"


def _resume_args(argv: list[str]):
    """(path, other overrides) of ``resume=PATH``; None for no resume. ``resume=null`` is Hydra's
    null, i.e. no resume (a fresh run with the other overrides), never a folder called "null"."""
    paths = [a.partition("=")[2] for a in argv if a.startswith("resume=")]
    if not paths or _is_null(paths[-1]) or any(a in ("-m", "--multirun") for a in argv):
        return None
    others = {}
    for a in argv:
        if a.startswith("resume=") or a.lstrip("+~").startswith("hydra"):
            continue  # Hydra's own settings (run folder, logging): a resumed run makes no new folder
        key, _, value = a.lstrip("+~").partition("=")
        others[key] = value.strip().lower() in ("true", "1", "yes") if key == "debug" else value
    return paths[-1], others


def _debug_flag(argv: list[str]) -> bool:
    return any(a.lstrip("+").lower() in ("debug=true", "debug=1", "debug=yes") for a in argv)


def _unusable_folder(argv: list[str]) -> str | None:
    """Why an output folder given on the command line (``hydra.run.dir`` / ``hydra.sweep.dir``)
    cannot be made, or None. Hydra makes the folder before the task runs and reports a failure with
    a traceback and exit 1 (which reads as a config error); an I/O problem is exit 4 and one line."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for arg in argv:
        name, _, value = arg.lstrip("+").partition("=")
        if name != key or not value or "${" in value:
            continue
        try:
            Path(value).expanduser().mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create the run folder {key}={value}: {exc.strerror or exc}"
    return None


def entry() -> None:
    """``python -m sim``: one run, a resume, or a sweep (``-m``), with the exit codes of the module
    docstring. A sweep exits 4 when a job failed or its table could not be written, after the
    table is written (:func:`sim.sweep.finish`)."""
    from sim import sweep

    sweep.reset()
    import signal

    from sim.errors import Interrupted

    def terminated(signum, frame):
        raise Interrupted()

    try:  # SIGTERM ends a run like Ctrl-C (a summary that says so, the checkpoint kept)
        signal.signal(signal.SIGTERM, terminated)
    except ValueError:  # not the main thread
        pass
    argv = sys.argv[1:]
    debug = _debug_flag(argv)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1" if debug else "0")
    try:
        preflight(argv)
        resume = _resume_args(argv)
        if resume is None:
            precompose(argv)
    except ConfigError as exc:
        _print_config_error(exc)
        if debug:
            traceback.print_exc()
        sys.exit(EXIT_CONFIG)
    if resume is not None:  # continue a run in its own folder: no new Hydra run folder
        sys.exit(resume_run(*resume))
    unusable = _unusable_folder(argv)
    if unusable is not None:
        print(f"error: {unusable}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    try:
        main()
    except SystemExit as exc:
        if exc.code not in (0, None) and sweep.outcome() is not None:  # Hydra stopped a sweep: collect what ran
            sys.exit(sweep.finish() or EXIT_FAILED)
        # Hydra exits 1 when composing fails (bad override, wrong type): that is a config error.
        if exc.code == 1:
            sys.exit(EXIT_CONFIG)
        raise
    code = sweep.finish()
    if code:
        sys.exit(code)
