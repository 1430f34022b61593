"""The layers of DESIGN.md: geo → partitions / data → models → training → inference →
evaluation → the run (``experiment``) → the CLI (``main``). No module imports a layer above its own, and
the two middle siblings (partitions, data) do not import each other."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "geojax"

# Module prefix → rank. Shared helpers (``geojax``, ``fileio``, ``progress``, ``configlib``,
# ``runtime``) are rank 0: every layer may use them, they use no layer.
RANKS = {
    "geojax.geo": 1,
    "geojax.partitions": 2,
    "geojax.data": 2,
    "geojax.models": 3,
    "geojax.training": 4,
    "geojax.inference": 5,
    "geojax.evaluation": 6,
    "geojax.experiment": 7,
    "geojax.experiment_meta": 7,  # 002's M1 → M2 → M3 run, beside experiment
    "geojax.main": 8,
    "geojax.results": 8,  # runs the CLI's commands, reads their results
}
LAYERS = list(RANKS)


def rank(module: str) -> tuple[int, str]:
    """(rank, layer prefix) of a geojax module; (0, "geojax") for the shared helpers."""
    for prefix, r in RANKS.items():
        if module == prefix or module.startswith(prefix + "."):
            return r, prefix
    return 0, "geojax"


def allowed(importer: str, imported: str) -> bool:
    (r_from, layer_from), (r_to, layer_to) = rank(importer), rank(imported)
    return r_to < r_from or layer_to == layer_from or r_to == 0


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def geojax_imports(path: pathlib.Path) -> set[str]:
    """Every geojax module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "geojax"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "geojax":
                found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
    return found


def test_rank_rules_catch_upward_imports():
    assert allowed("geojax.training.train", "geojax.data.datasets")
    assert allowed("geojax.evaluation.evaluators", "geojax.inference.predictors")
    assert allowed("geojax.partitions.build", "geojax.fileio")
    assert not allowed("geojax.data.geoworld.dataset", "geojax.evaluation.metrics")
    assert not allowed("geojax.training.steps", "geojax.inference.predictors")
    assert not allowed("geojax.data.datasets", "geojax.partitions.base")  # siblings
    assert not allowed("geojax.fileio", "geojax.geo.sphere")  # helpers use no layer


def test_no_source_file_imports_a_layer_above_it():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported in sorted(geojax_imports(path)):
            if not allowed(importer, imported):
                bad.append(f"{importer} imports {imported}")
    assert not bad, "\n".join(bad)


_PROBE = """
import importlib, json, pkgutil, sys
import geojax
prefix = sys.argv[1]
package = importlib.import_module(prefix)
names = [prefix]
if hasattr(package, "__path__"):
    names += [m.name for m in pkgutil.walk_packages(package.__path__, prefix + ".")
              if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("geojax"))))
"""


@pytest.mark.parametrize("layer", [layer for layer in LAYERS if RANKS[layer] < 8])
def test_importing_a_layer_loads_no_layer_above_it(layer):
    """In a fresh interpreter: import every module of the layer, then look at sys.modules."""
    out = subprocess.run([sys.executable, "-c", _PROBE, layer], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    above = [m for m in loaded if rank(m)[0] > RANKS[layer]
             or (rank(m)[0] == RANKS[layer] and rank(m)[1] != layer)]
    assert not above, f"importing {layer} loads {above}"
