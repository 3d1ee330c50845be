"""Progress of a run on stderr: the run folder when it starts, then its progress per chunk of the engine.

``progress: auto | true | false`` (conf/config.yaml). When progress is shown, the run folder is
named as soon as the config is accepted; then, after each chunk (at most every :data:`MIN_INTERVAL_S`,
the last chunk always): on a terminal, ONE line redrawn in place, a bar with steps done/total,
simulated time, wall time, cell-updates per second (cells x replicates x steps/s) and the time
left::

    sim: run folder runs/tissue/2026-01-01_12-00-00-000000
    sim: [######--------------]  30%  3,000/10,000 steps  t 60 s  wall 47 s  1.9e+05 cell-updates/s  ETA 1m 52s

and, where stderr is not a terminal (a log file, a pipe), one plain line per report with the same
fields. ``auto`` (the default) shows progress only on a terminal outside CI (the ``CI`` environment
variable unset): piped or in CI it prints nothing (the folder is in the run's last line on stdout).
``true``: progress everywhere; ``false``: nothing. The reports come from the engine's per-chunk hook (``on_chunk`` of
:func:`sim.core.engine.run`), so their frequency follows ``chunk_records``; experiments that drive
the engine themselves (analogy, studies, ...) get the folder line only.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from sim.errors import ConfigError

MODES = ("auto", "true", "false")
BAR = 20  # characters of the terminal bar
MIN_INTERVAL_S = 2.0  # a chunk every 0.1 s would flood a terminal; the last line is always shown
PREFIX = "sim: "


def parse_mode(value) -> str:
    """``auto``, ``true`` or ``false`` from the config value (Hydra turns ``progress=true`` into a
    bool); anything else is refused naming the key."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in MODES:
        return value.strip().lower()
    raise ConfigError("progress", value, "auto, true or false (auto: on when stderr is a terminal, outside CI)")


def _duration(seconds: float) -> str:
    """``42 s``, ``3m 05s``, ``2h 07m``: a width a person reads at a glance."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def _quantity(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # a closed or replaced stream
        return False


class Progress:
    """The progress reporter of one run (see the module docstring).

    :meth:`start` when the run starts (its config accepted), :meth:`begin` when the engine is about
    to run ``total`` steps, :meth:`on_chunk` as the engine's hook, :meth:`close` when the run ends
    (it stops the ``auto`` timer; nothing is printed after it)."""

    def __init__(self, run_dir, mode="auto", *, stream=None, clock=time.monotonic, tty: bool | None = None,
                 min_interval_s: float = MIN_INTERVAL_S, ci: bool | None = None):
        self.mode = parse_mode(mode)
        self.run_dir = run_dir
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.tty = _is_tty(self.stream) if tty is None else tty
        ci = bool(os.environ.get("CI")) if ci is None else ci
        self.enabled = self.mode == "true" or (self.mode == "auto" and self.tty and not ci)
        self.named = self.enabled  # the folder line: quiet when piped, in CI or in tests (auto)
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._closed = False
        self._header_shown = False
        self._open_bar = False  # a terminal line drawn in place, not yet ended by a newline
        self.t_start = None
        self.total = None
        self.dt = 1.0
        self.time_unit = ""
        self.cells = None
        self._t_first = None
        self._done_first = 0
        self._last_print = None
        self.lines: list[str] = []  # what was printed (tests read it)

    # ------------------------------------------------------------------ output

    def _write(self, line: str, in_place: bool = False) -> None:
        """One report; ``in_place`` redraws the terminal's current line (the bar) instead."""
        self.lines.append(line)
        try:
            if in_place:
                self.stream.write("\r" + PREFIX + line + "\x1b[K")
                self.stream.flush()
                self._open_bar = True
            else:
                if self._open_bar:
                    self.stream.write("\n")
                    self._open_bar = False
                print(PREFIX + line, file=self.stream, flush=True)
        except Exception:  # a closed stream must never fail the run it reports on
            pass

    def _end_bar(self) -> None:
        if self._open_bar:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except Exception:
                pass
            self._open_bar = False

    def _header(self) -> None:
        if not self._header_shown and self.named:
            self._header_shown = True
            self._write(f"run folder {self.run_dir}")

    # ------------------------------------------------------------------ the run

    def start(self) -> None:
        """The run starts: its folder is named (``auto`` and ``true``)."""
        with self._lock:
            if self.t_start is not None or self._closed:
                return
            self.t_start = self.clock()
            self._header()

    def begin(self, total_steps: int, dt: float = 1.0, time_unit: str = "", cells: int | None = None) -> None:
        """The engine is about to run: ``total_steps`` steps of ``dt`` (in ``time_unit``; "" for a
        dimensionless time) in all, counting the steps a resumed run did before; ``cells``:
        compartments x replicates updated per step (for the cell-updates rate)."""
        self.start()
        with self._lock:
            self.total = int(total_steps)
            self.dt = float(dt)
            self.time_unit = time_unit
            self.cells = cells

    def on_chunk(self, state, done: int, keys=None) -> None:
        """The engine's per-chunk hook: ``done`` steps of this call are finished; ``state.step`` (the
        step counter of the first replicate) says where the run is, also after a resume."""
        now = self.clock()
        step = _step_of(state, done)
        with self._lock:
            if self._t_first is None:
                # the first chunk's time holds the compilation (18 s of a 21 s run here): no rate from it
                self._t_first, self._done_first = now, done
                rate = float("nan")
            else:
                since = now - self._t_first
                rate = (done - self._done_first) / since if since > 0 else float("nan")
            line = self._line(step, rate, now)
            final = self.total is not None and step >= self.total
            due = self._last_print is None or now - self._last_print >= self.min_interval_s
            if self.enabled and (due or final) and not self._closed:
                self._write(line, in_place=self.tty)
                self._last_print = now
                if final:
                    self._end_bar()

    def _line(self, step: int, rate: float, now: float) -> str:
        total = self.total
        unit = f" {self.time_unit}" if self.time_unit else ""
        if total and self.tty:
            filled = int(round(BAR * min(step / total, 1.0)))
            head = [f"[{'#' * filled}{'-' * (BAR - filled)}] {100.0 * step / total:3.0f}%  {step:,}/{total:,} steps"]
        else:
            head = [f"{step:,}/{total:,} steps ({100.0 * step / total:.0f}%)" if total else f"{step:,} steps"]
        parts = head + [
                 f"t {_quantity(step * self.dt)}{unit}",
                 f"wall {_duration(now - (self.t_start if self.t_start is not None else now))}"]
        if rate == rate and rate > 0:
            parts.append(f"{_quantity(rate)} steps/s")
            if self.cells:
                parts.append(f"{rate * self.cells:.2g} cell-updates/s")
        if total and step >= total:
            parts.append("done")
        elif total and rate == rate and rate > 0:
            parts.append(f"ETA {_duration((total - step) / rate)}")
        elif total:
            parts.append("ETA after the next chunk (this one included compiling)")
        return "  ".join(parts)

    def note(self, text: str) -> None:
        """One line of what the run does now (e.g. writing its results), when progress is shown."""
        with self._lock:
            if self.enabled and not self._closed:
                self._write(text)

    def close(self) -> None:
        with self._lock:
            self._end_bar()
            self._closed = True


def _step_of(state, done: int) -> int:
    """The absolute step counter of a batched state (replicates share it), else ``done``."""
    step = getattr(state, "step", None)
    if step is None:
        return int(done)
    try:
        import numpy as np

        return int(np.asarray(step).reshape(-1)[0])
    except Exception:  # an exotic state: this call's count is still right for a fresh run
        return int(done)
