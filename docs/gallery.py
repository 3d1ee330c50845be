"""The figure gallery: ``make figures`` -> ``docs/figures/*.png``, shown in README.md ("Gallery").

One small, fast run per experiment (a few minutes in all on two shared cores), each through the
same path as ``python -m sim OVERRIDES`` (:func:`sim.app.execute` on the composed config, in this
one process, so JAX starts once and the compile cache is shared), into a scratch run folder; the
figures named below are copied from its ``figures/`` into ``docs/figures/<entry>_<figure>.png``.
The configs are shrunk (fewer cells, steps, replicates, points) so the gallery shows what each
figure looks like, not the README's measured numbers; every entry's command reproduces its
figures exactly (same seed).

    python docs/gallery.py                    # every entry
    python docs/gallery.py tissue_bio cascade # some entries
    python docs/gallery.py --markdown 4       # the README's Gallery section (nothing run), "4 minutes"
    python docs/gallery.py --keep runs/gallery  # keep the run folders there

Exit code 0 when every entry wrote its figures, 1 otherwise (the others are still written).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures"
MAX_BYTES = 300_000  # per PNG: the repository keeps them, and a README page loads them all
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Entry:
    name: str
    overrides: tuple[str, ...]
    figures: tuple[str, ...]  # file names in the run's figures/ folder
    caption: str

    @property
    def command(self) -> str:
        return "python -m sim " + " ".join(f"'{o}'" if any(c in o for c in "[]{},") else o for o in self.overrides)

    def target(self, figure: str) -> str:
        return f"{self.name}_{figure}"


GALLERY = (
    Entry("tissue_bio",
          ("experiment=tissue", "topology.n_cells=24", "substrate.consumers.demand_cv=0.8",
           "substrate.supply.uptake_cv=0.5", "steps=1500", "replicates=3"),
          ("network.png", "pools_energy_charge.png", "ledger.png"),
          "A heterogeneous biology tissue (24 cells, small world): the network at the end (colour: energy "
          "charge, area: work done), pools, energy charge and dG, the ATP ledger in molecules."),
    Entry("serving_llm",
          ("experiment=serving", "topology=ring", "topology.n_cells=6", "steps=3000"),
          ("serving.png", "network.png"),
          "Six Llama-3-8B instances on H100s on a ring, Poisson arrivals: requests, KV cache, rates against "
          "the stability limit, tokens/s; the cluster coloured by KV occupancy, sized by tokens generated."),
    Entry("generic",
          ("experiment=tissue", "substrate=generic_tissue", "differentiation=gradient", "topology=grid",
           "topology.n_cells=25", "steps=10000", "record_every=100", "replicates=3"),
          ("generic.png", "network.png"),
          "The dimensionless generic substrate on a 5 x 5 grid: pools, charged fraction, the network."),
    Entry("analogy",
          ("experiment=analogy", "topology.n_cells=8", "replicates=3", "analogy.bio_replicates=4",
           "analogy.step_time_s=30", "analogy.after_s=30", "analogy.window_s=10"),
          ("analogy.png",),
          "The analogy table's figure on a small graph: both sides' response to a x2 demand step, the "
          "verdicts of the emergent rows, cascade cost against length."),
    Entry("cascade",
          ("experiment=cascade", "cascade.chains_per_length=4"),
          ("cascade_cost.png", "agent_loop.png"),
          "Cost of a chain against its length (biology: constant per unit; LLM: grows with context) and "
          "the input tokens of an agent loop."),
    Entry("roofline",
          ("experiment=roofline", "batch=32", "context=2048"),
          ("roofline.png",),
          "Serving calculator: tokens/s and J/token against batch, the ridge batch, the roofline."),
    Entry("homeostasis",
          ("experiment=homeostasis", "homeostasis.settle_s=400"),
          ("homeostasis.png",),
          "Heart-like homeostasis: ATP, PCr, Pi and dG against work rate, feedback only vs parallel "
          "activation, with and without the creatine kinase buffer."),
    Entry("multicellular",
          ("experiment=multicellular", "multicellular.topologies=[complete,ring]", "multicellular.n_cells=16",
           "multicellular.alphas=[0.5,2.0,3.0]", "multicellular.losses=[0.0,0.6]", "multicellular.replicates=1",
           "steps=5000"),
          ("phase_diagram.png", "spacing.png"),
          "Division of labour: specialisation index and gain over the best generalists against trade-off "
          "curvature and transport cost, per topology; on the ring, the spacing of producer cells "
          "next to Anabaena's heterocysts (every 10-20 cells)."),
    Entry("robustness",
          ("experiment=robustness", "topology.n_cells=12", "robustness.replicates=2", "steps=5000"),
          ("robustness.png",),
          "Specialised vs generalist collectives through random and targeted death of a quarter of the cells."),
    Entry("standardization",
          ("experiment=standardization", "standardization.topologies=[complete,ring]", "standardization.n_cells=16",
           "standardization.conversion_costs=[0.0,0.5,0.9]", "standardization.replicates=2", "steps=4000"),
          ("standardization.png",),
          "Competing carriers: the dominant carrier's share over time and the Herfindahl index over "
          "conversion cost and storage-cost spread, per topology."),
    Entry("society",
          ("experiment=society",),
          ("society_gain.png", "agent_tokens.png"),
          "LLM division of labour: generalist / specialist energy per task against hand-off size, the "
          "effective curvature, and tokens per task by agent topology."),
    Entry("sensitivity",
          ("experiment=sensitivity", "topology=ring", "topology.n_cells=3", "sensitivity.samples=16", "steps=500"),
          ("sensitivity.png",),
          "Sobol indices (first order and total, with 95% intervals) of the energy charge."),
    Entry("calibrate",
          ("experiment=calibrate", "calibrate.series={quantity: energy_charge}",
           "calibrate.truth={supply_scale: 1.3, demand_scale: 0.8}", "steps=500"),
          ("loss.png",),
          "Calibration by gradients through the simulator: loss and gradient norm per iteration, the "
          "energy-charge series with the start and the fit."),
)


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from sim.core.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="gallery"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def run_entry(entry: Entry, runs: Path) -> tuple[list[Path], float, str]:
    """Run one entry into ``runs/<name>`` and copy its figures; (written, seconds, problem or "")."""
    from sim.app import execute

    run_dir = runs / entry.name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    code = execute(compose(entry.overrides), run_dir, quiet=True)
    wall = time.perf_counter() - t0
    if code != 0:
        return [], wall, f"exit code {code} (run folder {run_dir})"
    written, missing = [], []
    for figure in entry.figures:
        src = run_dir / "figures" / figure
        if not src.is_file():
            missing.append(figure)
            continue
        dst = OUT / entry.target(figure)
        shutil.copyfile(src, dst)
        written.append(dst)
    return written, wall, (f"missing figures: {', '.join(missing)}" if missing else "")


def markdown(minutes: str = "a few") -> str:
    """The README's Gallery section: every image with its caption and the command that made it."""
    lines = ["## Gallery", "",
             f"`make figures` (`docs/gallery.py`) makes one small, fast run per experiment ({minutes} minutes in all "
             "here, on 2 shared cores) and copies the figures the experiment's own writer draws into "
             "`docs/figures/`. The configs are shrunk (fewer cells, steps, replicates, points), so the numbers are "
             "not the measured ones quoted elsewhere in this README; each command below reproduces its figures "
             "(same seed). Every figure writer keeps one contract, checked by `tests/test_figure_contract.py`: "
             "each numeric axis is labelled with its unit in parentheses (`(1)` when dimensionless), each colour "
             "bar too, and an axes with more than one line has a legend.", "",
             "A plain run of a tissue of any substrate with two or more compartments (`experiment=tissue`, "
             "`serving`) also writes `figures/network.png`: the run's graph, each node coloured by its state at "
             "the end (energy charge, charged fraction, or KV cache occupied in % of capacity; mean over "
             "replicates) and sized by the work it did. `results.nc` keeps the graph as the attributes `edge_src` "
             "and `edge_dst` (`sim/network_figure.py` says why attributes, and why stored rather than rebuilt "
             "from the config), so `python -m sim.plot` redraws it from the run folder.", ""]
    for e in GALLERY:
        lines += [f"**{e.name}**: {e.caption}", "", f"`{e.command}`", ""]
        lines += [f"![{e.name}: {f}](docs/figures/{e.target(f)})" for f in e.figures]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python docs/gallery.py", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME", help="entries to run (default: all): "
                   + ", ".join(e.name for e in GALLERY))
    p.add_argument("--keep", metavar="DIR", help="keep the run folders in DIR (default: a temporary folder)")
    p.add_argument("--markdown", metavar="MINUTES", nargs="?", const="a few",
                   help="print the README's Gallery section (saying MINUTES for the whole gallery) and exit")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return 0
    known = {e.name: e for e in GALLERY}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"error: unknown entries {unknown}; allowed: {', '.join(known)}", file=sys.stderr)
        return 2
    entries = [known[n] for n in args.names] if args.names else list(GALLERY)
    OUT.mkdir(parents=True, exist_ok=True)
    scratch = None if args.keep else tempfile.TemporaryDirectory(prefix="gallery-")
    runs = Path(args.keep) if args.keep else Path(scratch.name)
    failed, t_all = [], time.perf_counter()
    try:
        for e in entries:
            print(f"[{e.name}] {e.command}", flush=True)
            written, wall, problem = run_entry(e, runs)
            for path in written:
                size = path.stat().st_size
                flag = f"  (over {MAX_BYTES // 1000} KB)" if size > MAX_BYTES else ""
                print(f"    {path.relative_to(ROOT)}  {size / 1000:.0f} KB{flag}", flush=True)
            print(f"    {wall:.1f} s" + (f"; FAILED: {problem}" if problem else ""), flush=True)
            if problem:
                failed.append(e.name)
    finally:
        if scratch is not None:
            scratch.cleanup()
    print(f"gallery: {len(entries) - len(failed)} of {len(entries)} entries in {time.perf_counter() - t_all:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
