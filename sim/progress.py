"""Progress of a run on stderr: the run folder when it starts, then a line per chunk of the engine.

``progress: auto | true | false`` (conf/config.yaml). ``true``: the folder as soon as the config is
accepted, then after each chunk (at most one line every :data:`MIN_INTERVAL_S`, the last chunk
always) steps done/total, simulated time, wall time, steps/s and the time left::

    sim: run folder runs/tissue/2026-01-01_12-00-00-000000
    sim: 1,000/10,000 steps (10%)  t 20 s  wall 31 s  ETA after the next chunk (this one included compiling)
    sim: 2,000/10,000 steps (20%)  t 40 s  wall 47 s  62 steps/s  ETA 2m 09s

``auto`` (the default): on when stderr is a terminal; otherwise (a log file, a test, a sweep
launched in the background) it stays silent unless the run is still going after
:data:`AUTO_AFTER_S` seconds, so quick runs and refused configs print nothing extra, and a long
run written to a log still says where it is. ``false``: nothing. The lines are written by the
engine's per-chunk hook (``on_chunk`` of :func:`sim.core.engine.run`), so their frequency follows
``chunk_records``; experiments that drive the engine themselves (analogy, studies, ...) get the
folder line only.
"""

from __future__ import annotations

import sys
import threading
import time

from sim.errors import ConfigError

MODES = ("auto", "true", "false")
AUTO_AFTER_S = 5.0  # "longer than a few seconds": compile + a short run stay under it on a laptop
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
    raise ConfigError("progress", value, "auto, true or false (auto: on when stderr is a terminal or the run "
                      f"lasts more than {AUTO_AFTER_S:g} s)")


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
                 auto_after_s: float | None = None, min_interval_s: float = MIN_INTERVAL_S):
        self.mode = parse_mode(mode)
        self.run_dir = run_dir
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        tty = _is_tty(self.stream) if tty is None else tty
        self.enabled = self.mode == "true" or (self.mode == "auto" and tty)
        self.pending = self.mode == "auto" and not tty  # may switch itself on after auto_after_s
        self.auto_after_s = AUTO_AFTER_S if auto_after_s is None else auto_after_s
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._timer = None
        self._closed = False
        self._header_shown = False
        self.t_start = None
        self.total = None
        self.dt = 1.0
        self.time_unit = ""
        self._t_begin = self._t_first = None
        self._done_first = 0
        self._last_print = None
        self._last_line = None
        self.lines: list[str] = []  # what was printed (tests read it)

    # ------------------------------------------------------------------ output

    def _write(self, line: str) -> None:
        self.lines.append(line)
        try:
            print(PREFIX + line, file=self.stream, flush=True)
        except Exception:  # a closed stream must never fail the run it reports on
            pass

    def _header(self) -> None:
        if not self._header_shown:
            self._header_shown = True
            self._write(f"run folder {self.run_dir}")

    def _wake(self) -> None:
        """The ``auto`` timer: the run has lasted long enough to be worth reporting."""
        with self._lock:
            if self._closed or self.enabled:
                return
            self.enabled = True
            self._header()
            if self._last_line is not None:  # what the last chunk said, now that someone listens
                self._write(self._last_line)
                self._last_print = self.clock()

    # ------------------------------------------------------------------ the run

    def start(self) -> None:
        """The run starts: the folder now (``true``, or ``auto`` on a terminal) or once the run has
        lasted ``auto_after_s`` (``auto`` elsewhere)."""
        with self._lock:
            if self.t_start is not None or self._closed:
                return
            self.t_start = self.clock()
            if self.enabled:
                self._header()
            elif self.pending:
                self._timer = threading.Timer(self.auto_after_s, self._wake)
                self._timer.daemon = True  # never keeps a finished process alive
                self._timer.start()

    def begin(self, total_steps: int, dt: float = 1.0, time_unit: str = "") -> None:
        """The engine is about to run: ``total_steps`` steps of ``dt`` (in ``time_unit``; "" for a
        dimensionless time) in all, counting the steps a resumed run did before."""
        self.start()
        with self._lock:
            self.total = int(total_steps)
            self.dt = float(dt)
            self.time_unit = time_unit
            self._t_begin = self.clock()

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
            self._last_line = line
            final = self.total is not None and step >= self.total
            due = self._last_print is None or now - self._last_print >= self.min_interval_s
            if self.enabled and (due or final) and not self._closed:
                self._write(line)
                self._last_print = now

    def _line(self, step: int, rate: float, now: float) -> str:
        total = self.total
        unit = f" {self.time_unit}" if self.time_unit else ""
        parts = [f"{step:,}/{total:,} steps ({100.0 * step / total:.0f}%)" if total else f"{step:,} steps",
                 f"t {_quantity(step * self.dt)}{unit}",
                 f"wall {_duration(now - (self.t_start if self.t_start is not None else now))}"]
        if rate == rate and rate > 0:
            parts.append(f"{_quantity(rate)} steps/s")
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
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


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
