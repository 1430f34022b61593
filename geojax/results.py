r"""Every result of the README from one command: each config's default run on GeoWorld, then
one table per evaluation split with every config's rows.

    python -m geojax.results                       # every run below, then RESULTS.md
    python -m geojax.results --only cplanet,planet  # some of them (the others' tables are kept)
    python -m geojax.results --readme README.md     # also replace the README's results section

Each run is ``python -m geojax.main --config=<file>[:arg] --workdir=<root>/<name>`` in a
subprocess (the README's own command), so a run resumes from its checkpoints after a kill,
and a run whose ``results.json`` already exists is reused (``--rerun`` trains again).
``--variant=runlocal`` uses each config's small variant (minutes in all), ``--set key=value``
passes ``--config.key=value`` to every run (e.g. a smaller dataset).

The tables (:func:`tables`): one per split of the runs' ``results.json``, rows ``<run>:
<method>`` in :data:`RUNS` order, the accuracy at 1 / 25 / 200 / 750 / 2500 km, the median
error and the GeoScore; each run's wall time and the total; then the seeds' claims checked on
these rows (:mod:`geojax.evaluation.findings`). They are written atomically to
``--out`` (default ``RESULTS.md``) and, with ``--readme``, between the README's markers
``<!-- results:begin -->`` and ``<!-- results:end -->``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from geojax import configlib, fileio
from geojax.evaluation import findings, report

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
TIMES = "times.json"  # in the root: each run's wall time, seconds


@dataclasses.dataclass(frozen=True)
class Run:
    """One config's default run: ``name`` (its workdir under the root and its rows' prefix),
    ``config`` (a file of ``configs/``), its ``arg`` (``configs/x.py:arg``) and ``settings``
    (``KEY=VALUE`` overrides, passed as ``--config.KEY=VALUE``)."""

    name: str
    config: str
    arg: str = ""
    about: str = ""
    # this run's own ``--config.KEY=VALUE`` overrides of the default (a variant such as
    # ``runlocal`` sets its own budget and runs without them)
    settings: tuple[str, ...] = ()

    def spec(self, variant: str) -> str:
        """``configs/<config>.py[:arg]``; ``variant`` (e.g. ``runlocal``) joins the arg."""
        arg = ",".join(a for a in (self.arg, variant) if a)
        return f"configs/{self.config}.py" + (f":{arg}" if arg else "")


def _budget(steps: int, stage: str = "train") -> tuple[str, ...]:
    """Overrides that train ``stage`` for ``steps`` steps with the configs' warmup share."""
    return (f"stages.{stage}.num_steps={steps}",
            f"stages.{stage}.optimizer.schedule.warmup_steps={configlib.warmup_steps(steps)}")


# CPlaNet's three-epoch budget: 9,000 pretraining steps, then 3,000 of the heads
_CPLANET_9000 = (*_budget(9000, "pretrain"), "stages.heads.num_steps=3000")


RUNS: tuple[Run, ...] = (
    Run("planet", "planet", about="PlaNet: adaptive S2 classification (003's baseline)"),
    Run("hierarchical", "hierarchical", about="003: S2 hierarchy, the hierarchical product"),
    Run("multi_partition", "multi_partition", about="001: lat/lon boxes, [M] multi-partition"),
    Run("knn_kde", "knn_kde", about="001: [L] classification, NN and kNN kernel density"),
    Run("knn_kde_M", "knn_kde", "M", about="001: [M] classification, NN and kNN kernel density"),
    Run("geodecoder", "geodecoder", about="003: GeoDecoder"),
    Run("hierarchical_800", "hierarchical", about="003: the hierarchical classifier at the "
        "GeoDecoder's budget (800 steps), its baseline",
        settings=_budget(800)),
    Run("hierarchical_9000", "hierarchical", about="003: the hierarchical classifier at 9,000 "
        "steps (2.9 epochs)",
        settings=_budget(9000)),
    Run("planet_9000", "planet", about="PlaNet at 9,000 steps (2.9 epochs), 003's baseline "
        "at hierarchical_9000's budget",
        settings=_budget(9000)),
    Run("geodecoder_3000", "geodecoder", about="003: the GeoDecoder at the hierarchical run's "
        "budget (3,000 steps)",
        settings=_budget(3000)),
    Run("geodecoder_9000", "geodecoder", about="003: the GeoDecoder at hierarchical_9000's "
        "budget (9,000 steps, 2.9 epochs)",
        settings=_budget(9000)),
    Run("knn_kde_9000", "knn_kde", about="001: [L] at 9,000 steps (2.9 epochs), NN and kNN "
        "kernel density on its features",
        settings=_budget(9000)),
    Run("knn_kde_M_9000", "knn_kde", "M", about="001: [M] at 9,000 steps (2.9 epochs), NN and "
        "kNN kernel density on its features",
        settings=_budget(9000)),
    Run("cplanet", "cplanet", about="004: CPlaNet's combinatorial partitioning"),
    Run("cplanet_9000", "cplanet", about="004: CPlaNet after 9,000 pretraining steps (2.9 "
        "epochs), the heads 3,000",
        settings=_CPLANET_9000),
    Run("cplanet_9000_3k", "cplanet", about="004: cplanet_9000 with geoclass sets of the PlaNet "
        "partition's size (2,658-3,461 classes: Table 1's N scaled from 1.5M images)",
        settings=(*_CPLANET_9000, "partitions.geoclass.reference_num_points=1500000")),
    Run("delaunay_meta", "delaunay_meta", about="002: Delaunay mesh M1, time model M2, albums M3"),
    Run("delaunay_meta_9000", "delaunay_meta", about="002: M1 at 9,000 steps of 128 (2.9 "
        "epochs), then M2 and M3",
        settings=(*_budget(9000), "stages.train.batch_size=128")),
)


def _names(runs: Sequence[Run]) -> dict[str, Run]:
    return {r.name: r for r in runs}


def select(only: str | None, runs: Sequence[Run] = RUNS) -> list[Run]:
    """The runs named in ``only`` (comma-separated), in :data:`RUNS` order; all without it."""
    if not only:
        return list(runs)
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in _names(runs)]
    if unknown:
        raise ValueError(f"unknown run(s) {unknown}; choose among {list(_names(runs))}.")
    return [r for r in runs if r.name in wanted]


def run_one(run: Run, root: str, *, variant: str = "", settings: Sequence[str] = (),
            rerun: bool = False, log: Callable[[str], None] = print,
            repo: str | None = None) -> float | None:
    """Runs ``run`` into ``<root>/<name>`` unless its ``results.json`` exists (and not
    ``rerun``); returns its wall time in seconds, or ``None`` when reused. Raises
    ``RuntimeError`` with the command and the end of its output when it fails."""
    workdir = os.path.join(root, run.name)
    results = os.path.join(workdir, "results.json")
    if fileio.exists(results) and not rerun:
        log(f"[results] {run.name}: reusing {results}")
        return None
    if rerun and fileio.exists(results):
        fileio.remove(results)
    repo = repo or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "geojax.main", f"--config={run.spec(variant)}",
               f"--workdir={workdir}",
               *(f"--config.{s}" for s in (*(() if variant else run.settings), *settings))]
    log(f"[results] {run.name}: {' '.join(command[1:])}")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not fileio.exists(results):
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{run.name} failed (exit status {done.returncode}): "
                           f"{' '.join(command)}\n{tail}")
    log(f"[results] {run.name}: finished in {seconds / 60:.1f} min")
    return seconds


def _by_split(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """``{"split/method": figures}`` → ``{split: {method: figures}}`` (orders kept)."""
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for key, figures in rows.items():
        split, _, method = key.partition("/")
        out.setdefault(split, {})[method] = figures
    return out


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def tables(root: str, runs: Sequence[Run], times: Mapping[str, float]) -> str:
    """The Markdown of the results section: per split, one table whose rows are every run's
    rows (``<run>: <method>``); then each run's command and wall time, and the total."""
    per_split: dict[str, dict[str, Mapping[str, Any]]] = {}
    present, by_run = [], {}
    for run in runs:
        path = os.path.join(root, run.name, "results.json")
        if not fileio.exists(path):
            continue
        present.append(run)
        by_run[run.name] = report.read_results(path)
        for split, rows in _by_split(by_run[run.name]).items():
            if not any(k.startswith("acc@") for f in rows.values() for k in f):
                continue  # not an accuracy table (e.g. delaunay_meta's paired tests)
            for method, figures in rows.items():
                per_split.setdefault(split, {})[f"{run.name}: {method}"] = figures
    parts = []
    for split, rows in per_split.items():
        parts.append(report.format_table(rows, fmt="markdown", title=f"{split}: accuracy (%) "
                                         "within each distance, median error, GeoScore"))
    lines = ["| run | command | what | wall time |", "|---|---|---|---:|"]
    for run in present:
        overrides = "".join(f" --config.{s}" for s in run.settings)
        lines.append(f"| {run.name} | `python -m geojax.main --config={run.spec('')}"
                     f"{overrides}` | {run.about} | {_minutes(times.get(run.name))} |")
    total = sum(times.get(r.name, 0.0) for r in present)
    lines.append(f"\nTotal wall time of these runs: {total / 60:.1f} min (`python -m "
                 "geojax.results`).")
    claims = ("The seeds' claims on these runs (`geojax.evaluation.findings`: \"A beats B\" "
              "when A is higher at more of the five thresholds than B is; Im2GPS3k-like "
              "split, 002's on its metadata split):\n\n"
              + findings.format_findings(findings.findings(by_run)))
    return "\n\n".join(parts + ["\n".join(lines), claims]) + "\n"


def replace_section(text: str, section: str, *, where: str = "README") -> str:
    """``text`` with what lies between :data:`BEGIN` and :data:`END` replaced by ``section``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{where} needs one {BEGIN} line and one {END} line after it, around "
                         "the results section to replace.")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{section.rstrip()}\n{END}{tail}"


def _read_times(root: str) -> dict[str, float]:
    path = os.path.join(root, TIMES)
    return json.loads(fileio.read_text(path)) if fileio.exists(path) else {}


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m geojax.results", description=__doc__.split(
        "\n\n", 1)[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="workdir/results", help="where the runs' workdirs go")
    parser.add_argument("--only", help="comma-separated run names: " + ",".join(_names(RUNS)))
    parser.add_argument("--variant", default="", help="a config arg added to every run, e.g. "
                        "runlocal")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="--config.KEY=VALUE for every run (repeatable)")
    parser.add_argument("--rerun", action="store_true", help="train again even if a run's "
                        "results.json exists")
    parser.add_argument("--out", default="RESULTS.md", help="the Markdown file to write")
    parser.add_argument("--readme", help="also replace this file's results section")
    args = parser.parse_args(argv)
    try:
        chosen = select(args.only)
    except ValueError as err:
        parser.error(str(err))
    fileio.makedirs(args.root)
    times = _read_times(args.root)
    for run in chosen:
        seconds = run_one(run, args.root, variant=args.variant, settings=args.set,
                          rerun=args.rerun, log=log)
        if seconds is not None:
            # re-read: another `geojax.results` on the same root may have finished a run since
            times = {**_read_times(args.root), run.name: seconds}
            fileio.atomic_write(os.path.join(args.root, TIMES), json.dumps(times, indent=1))
    section = tables(args.root, RUNS, times)
    fileio.atomic_write(args.out, section)
    done = sum(fileio.exists(os.path.join(args.root, r.name, "results.json")) for r in RUNS)
    log(f"[results] tables of {done} runs written to {args.out}")
    if args.readme:
        text = fileio.read_text(args.readme)
        fileio.atomic_write(args.readme, replace_section(text, section, where=args.readme))
        log(f"[results] {args.readme}: results section replaced")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
