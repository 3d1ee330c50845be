"""Each substrate's run mapped onto the quantities the analogy table reads (:class:`View`).

One small function per substrate; the row definitions (``sim.experiments.analogy_rows``) are
written once over the View. ``w`` holds the record indices of the windows
(:func:`sim.experiments.analogy.windows`); ``ledgers`` the substrate state at each window edge
(end of warm-up, the step, start of the post-step window, end), where a window's energy and work
ledgers are read when the records do not carry them.
"""

from __future__ import annotations

import numpy as np

from sim.constants import AVOGADRO_PER_MOL
from sim.experiments.analogy_rows import View, Window
from sim.substrates.bio.state import ADP, AMP, ATP
from sim.substrates.llm.results import MAX_ACCUMULATION, MIN_GROWTH


def _increment(x, i0: int, i1: int) -> np.ndarray:
    """(R,) increment of a cumulative (R, T, C) record from record i0 to i1, summed over cells."""
    return (x[:, i1] - x[:, i0]).sum(-1)


def bio_view(model, res, ledgers, w: dict, cascade: tuple[float, float]) -> View:
    """Biology: ATP molecules; carrier = the free, exchanging adenine nucleotides of living cells
    (the bound ADP/AMP of ``Params`` never carry charge on the time scale of the fluxes)."""
    p, rec, t = model.params, res.records, res.times
    per_mm = float(p.volume_l) * 1e-3 * AVOGADRO_PER_MOL  # molecules per mM of one cell
    pools, alive = rec["pools"], rec["alive"].astype(float)
    pool = (pools[..., ATP] * alive).sum(-1) * per_mm
    capacity = ((pools[..., ATP] + pools[..., ADP] + pools[..., AMP]) * alive).sum(-1) * per_mm
    k = int(np.asarray(p.chain_kind).reshape(-1)[0])  # the cascade: protein synthesis's ledger line
    if k < 0 and "protein_synthesis" in model.consumer_kinds:
        k = list(model.consumer_kinds).index("protein_synthesis")

    on_chain = np.asarray(ledgers[0].consumers.kind) == k  # (R, C, K) consumer slots of that kind

    def window(index, start, led0, led1) -> Window:
        d = lambda name: np.asarray(getattr(led1, name)) - np.asarray(getattr(led0, name))  # noqa: E731
        of_kind = lambda name: (d(name) * on_chain).sum((-1, -2)) * per_mm  # noqa: E731  (R,)
        return Window(
            index=index, start=start,
            produced=_increment(rec["produced"], start, index[-1]) * per_mm,
            input_energy_j=d("substrate_energy_j").sum(-1),
            # the ledger books made x |dG| into stored and hydrolysed x |dG| out of it
            stored_energy_j=(d("stored_energy_j") + d("hydrolysis_energy_j")).sum(-1),
            work=of_kind("work") if k >= 0 else np.full(pool.shape[0], np.nan),
            work_currency=of_kind("spent") if k >= 0 else np.full(pool.shape[0], np.nan),
        )

    led = [s.ledger for s in ledgers]
    died = alive[:, -1].sum(-1) < alive[:, w["i_step"]].sum(-1)
    return View(
        substrate="bio", unit="ATP", temperature_k=float(p.temperature_k), times=t, pool=pool, capacity=capacity,
        i_step=w["i_step"], before=window(w["pre"], w["i_pre0"], led[0], led[1]),
        after=window(w["post"], w["i_post0"], led[2], led[3]), settled=~died,
        cascade_short=cascade[0], cascade_long=cascade[1],
    )


def llm_view(llm, res, w: dict, cascade: tuple[float, float]) -> View:
    """LLM serving: tokens; carrier = the KV caches (a token held = an occupied slot)."""
    rec, t = res.records, res.times

    def window(index, start) -> Window:
        inc = lambda name: _increment(rec[name], start, index[-1])  # noqa: E731
        written = inc("tokens_in") + inc("tool_tokens") + inc("tokens_out")
        return Window(index=index, start=start, produced=written, input_energy_j=inc("energy_j"),
                      stored_energy_j=np.zeros_like(written), work=inc("tokens_out"), work_currency=written)

    # a steady queue after the step: nothing dropped and the requests in the system did not pile up
    # (the rule of sim.substrates.llm.results.summarize, per replicate: beyond the stability limit
    # the queue grows while the KV cache stays full, which the charged fraction cannot see)
    post, i0 = w["post"], w["i_post0"]
    n_sys = rec["in_system"][:, post].sum(-1).astype(float)
    span = float(t[post[-1]] - t[post[0]])
    growth = np.array([np.polyfit(t[post], n, 1)[0] * span for n in n_sys])
    arrived = _increment(rec["arrived"], i0, post[-1])
    settled = (_increment(rec["dropped"], i0, post[-1]) == 0) & (growth <= np.maximum(MIN_GROWTH, MAX_ACCUMULATION * arrived))
    return View(
        substrate="llm", unit="token", temperature_k=float(llm.temperature_k), times=t,
        pool=rec["kv_occupied"].sum(-1), capacity=rec["kv_capacity"].sum(-1), i_step=w["i_step"],
        before=window(w["pre"], w["i_pre0"]), after=window(post, i0), settled=settled,
        cascade_short=cascade[0], cascade_long=cascade[1],
    )
