"""Runs one of 003's GeoDecoder ablation tables on GeoWorld and prints it in 003's layout.

    python launch/geodecoder_tables.py --table=3                  # Table 3: scene prediction method
    python launch/geodecoder_tables.py --table=4 --runlocal       # each row a seconds-long run
    python launch/geodecoder_tables.py --table=7 -- --config.stages.train.num_steps=3000
    python launch/geodecoder_tables.py --table=3 --dry-run        # print the rows' commands only

Tables (003's numbering; rows are ``configs/geodecoder.py`` arguments):

    2  decoder depth 3 / 5 / 8 / 10 (2 of them hierarchy-dependent)
    3  no scene prediction / the scene as a secondary task ([14]) / query selection (003)
    4  hierarchy-dependent layers 0 / 2 / 4 / 6 of 8
    6  number of scenes 0 / 3 / 16 (GeoWorld has no 365-way labels)
    7  number of hierarchies 1 / 3 / 5 / 7

Each row is one ``python -m geojax.main --config=configs/geodecoder.py:<arguments>`` run in
``<workdir>/<arguments>`` (default workdir ``./workdir/geodecoder_tables``), arguments equal
to the default left out: rows that are the default configuration (003's model: Table 3's
"Ours", Table 4's 2, Table 6's 16, Table 7's 7, Table 2's 8) share one run,
``<workdir>/default``, across tables. Flags after ``--`` go to every run. A row whose ``results.json`` exists is read, not rerun (delete its
folder to retrain it); an interrupted row resumes from its checkpoints. The table's figures are the
hierarchical-product row (003 §5.3; the single head's row for one hierarchy), in % within 1,
25, 200, 750 and 2500 km, one block per evaluation split, as 003's tables.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

from geojax.evaluation import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# table → (title, the rows' column header, [(row label, configs/geodecoder.py arguments)])
TABLES = {
    2: ("Ablation Study on GeoDecoder Depth", "Depth",
        [(str(d), f"depth={d}") for d in (3, 5, 8, 10)]),
    3: ("Ablation Study on scene prediction method", "Method",
        [("No Scene Prediction", "scene=none"), ("Scene Prediction [14]", "scene=auxiliary"),
         ("Ours", "scene=select")]),
    4: ("Ablation Study on Hierarchy Dependent Decoder", "Layers",
        [(str(e), f"depth=8,dependent={e}") for e in (0, 2, 4, 6)]),
    6: ("Ablation Study on Number of Scenes", "# of Scenes",
        [("0", "scene=none"), ("3", "scenes=3"), ("16", "scenes=16")]),
    7: ("Ablation Study on Number of Hierarchies", "# of hierarchies",
        [(str(n), f"hierarchies={n}") for n in (1, 3, 5, 7)]),
}
# The default configuration's arguments (configs/geodecoder.py without :runlocal).
DEFAULTS = {"depth": "8", "dependent": "2", "scene": "select", "scenes": "16", "hierarchies": "7"}
COLUMNS = (("Street", 1), ("City", 25), ("Region", 200), ("Country", 750), ("Continent", 2500))
SPLITS = {"im2gps3k": "Im2GPS3k-like", "yfcc4k": "YFCC4k-like", "gws15k": "GWS15k-like"}
PRODUCT = "hierarchy hierarchical product"


def row_dir(workdir: str, args: str, runlocal: bool = False) -> str:
    """``<workdir>/<arguments without the defaults>`` (``default`` when none is left; with
    ``runlocal``, whose defaults are smaller, every argument is kept)."""
    items = sorted(kv for kv in args.split(",") if kv
                   and (runlocal or DEFAULTS.get(kv.partition("=")[0]) != kv.partition("=")[2]))
    name = "_".join(kv.replace("=", "") for kv in items) or "default"
    return os.path.join(workdir, f"runlocal_{name}" if runlocal else name)


def command(table_args: str, directory: str, runlocal: bool, extra: list[str]) -> list[str]:
    arg = f"runlocal,{table_args}" if runlocal else table_args
    return [sys.executable, "-m", "geojax.main",
            f"--config={os.path.join(REPO, 'configs', 'geodecoder.py')}" + (f":{arg}" if arg else ""),
            f"--workdir={directory}", *extra]


def _method(rows: dict[str, dict], split: str) -> str | None:
    """The row of the table: the hierarchical product, or the one head's row."""
    methods = [key.split("/", 1)[1] for key in rows if key.startswith(f"{split}/")]
    if PRODUCT in methods:
        return PRODUCT
    heads = [m for m in methods if m.startswith("hierarchy") and m.endswith(" cl.)")]
    return heads[0] if len(heads) == 1 else None


def format_table(table: int, workdir: str, runlocal: bool = False) -> str:
    """The table as Markdown in 003's layout, from the rows' ``results.json`` (a row not run
    yet shows dashes)."""
    title, column, rows = TABLES[table]
    results = {}
    for label, args in rows:
        path = os.path.join(row_dir(workdir, args, runlocal), "results.json")
        results[label] = report.read_results(path) if os.path.exists(path) else {}
    splits = [s for s in SPLITS if any(k.startswith(f"{s}/") for r in results.values() for k in r)]
    header = (f"| Dataset | {column} | "
              + " | ".join(f"{name} {km} km" for name, km in COLUMNS) + " |")
    lines = [f"Table {table} (GeoWorld). {title}; accuracy (%) within each distance.", "",
             header, "|---|---|" + "---:|" * len(COLUMNS)]
    for split in splits or list(SPLITS)[:1]:
        for i, (label, _) in enumerate(rows):
            method = _method(results[label], split)
            figures = results[label].get(f"{split}/{method}", {}) if method else {}
            cells = [f"{100 * figures[f'acc@{km}km']:.1f}" if f"acc@{km}km" in figures else "–"
                     for _, km in COLUMNS]
            name = SPLITS[split] if i == 0 else ""
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", type=int, required=True, choices=sorted(TABLES))
    parser.add_argument("--workdir", default=os.path.join("workdir", "geodecoder_tables"))
    parser.add_argument("--runlocal", action="store_true", help="seconds-long rows (:runlocal)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    args.workdir = os.path.abspath(args.workdir)
    for label, table_args in TABLES[args.table][2]:
        directory = row_dir(args.workdir, table_args, args.runlocal)
        cmd = command(table_args, directory, args.runlocal, extra)
        done = os.path.exists(os.path.join(directory, "results.json"))
        print(f"[table {args.table}] {label}: {'done, ' if done else ''}"
              + shlex.join(["python", *cmd[1:]]), flush=True)
        if done or args.dry_run:
            continue
        status = subprocess.call(cmd, cwd=REPO)
        if status:
            print(f"[table {args.table}] {label}: the run failed (exit status {status}); "
                  "rerun this script to resume it", file=sys.stderr)
            return status
    print()
    print(format_table(args.table, args.workdir, args.runlocal))
    return 0


if __name__ == "__main__":
    sys.exit(main())
