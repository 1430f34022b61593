"""geojax.results: runs a config through the CLI, reuses a finished run, writes one table per
split from the runs' results.json, replaces the README's marked section, and names a failed
run's command."""

from __future__ import annotations

import json
import os

import pytest

from geojax import results
from geojax.evaluation import report
from test_train import TINY

SETTINGS = [s.removeprefix("--config.") for s in TINY] + [
    "stages.train.num_steps=2", "stages.train.batch_size=16"]


def test_one_run_its_tables_and_the_readme_section(tmp_path):
    root, out, readme = str(tmp_path / "runs"), tmp_path / "RESULTS.md", tmp_path / "README.md"
    readme.write_text(f"# geojax\n\nintro\n\n{results.BEGIN}\nold tables\n{results.END}\n\nmore\n")
    logs: list[str] = []
    args = ["--root", root, "--only", "planet", "--variant", "runlocal", "--out", str(out),
            "--readme", str(readme), *(f"--set={s}" for s in SETTINGS)]
    assert results.main(args, log=logs.append) == 0
    assert any("planet: finished in" in line for line in logs), logs
    rows = report.read_results(os.path.join(root, "planet", "results.json"))
    mine = {k.split("/", 1)[1]: v for k, v in rows.items() if k.startswith("im2gps3k/")}
    want = report.format_table({f"planet: {k}": v for k, v in mine.items()}, fmt="markdown",
                               title="im2gps3k: accuracy (%) within each distance, median "
                                     "error, GeoScore")
    text = out.read_text()
    assert text.startswith(want + "\n\n")  # the split's table: the run's rows, computed
    assert "| planet | `python -m geojax.main --config=configs/planet.py` |" in text
    times = json.loads((tmp_path / "runs" / results.TIMES).read_text())
    assert f"Total wall time of these runs: {times['planet'] / 60:.1f} min" in text
    new = readme.read_text()
    assert new == (f"# geojax\n\nintro\n\n{results.BEGIN}\n{text.rstrip()}\n{results.END}"
                   "\n\nmore\n")
    # Again: the finished run is reused, the same tables are written.
    logs.clear()
    assert results.main(args, log=logs.append) == 0
    assert any(line.endswith("planet: reusing " + os.path.join(root, "planet", "results.json"))
               for line in logs), logs
    assert out.read_text() == text and readme.read_text() == new


def test_a_failed_run_names_its_command(tmp_path):
    with pytest.raises(RuntimeError, match=r"planet failed \(exit status 2\): .*"
                       r"--config=configs/planet.py:runlocal .*no_such_key"):
        results.run_one(results.select("planet")[0], str(tmp_path), variant="runlocal",
                        settings=["no_such_key=1"], log=lambda _: None)


def test_selection_and_section_errors():
    assert [r.name for r in results.select("cplanet,planet")] == ["planet", "cplanet"]
    with pytest.raises(ValueError, match="unknown run.*'nope'"):
        results.select("planet,nope")
    with pytest.raises(ValueError, match="needs one <!-- results:begin --> line"):
        results.replace_section("no markers here", "x")
    assert results.replace_section(f"a{results.BEGIN}b{results.END}c", "T") == \
        f"a{results.BEGIN}\nT\n{results.END}c"
