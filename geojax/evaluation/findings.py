r"""The four seeds' claims, checked on the tables of the default runs (``geojax.results``).

Each check reads the rows of one or two runs' ``results.json`` (``{"split/method":
figures}``, :func:`geojax.evaluation.report.read_results`) and returns a :class:`Finding`:
the claim, the paper it comes from, whether it holds on these runs (``None`` when a run it
needs is missing) and the numbers it was decided on, in %.

One rule decides every "A beats B": A's accuracy is higher than B's at more of the five
paper thresholds (1 / 25 / 200 / 750 / 2500 km) than B's is higher than A's (ties count for
neither). "A is at least as good as B" means A's accuracy is not lower at any threshold.
The scale claim of 001 and 002 compares only the thresholds it names. Evaluation splits are
the Im2GPS3k-like split unless a check says otherwise (002's models are evaluated on their
metadata split).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from geojax.evaluation import metrics

Rows = Mapping[str, Mapping[str, Any]]  # "split/method" -> figures of one run
KMS: tuple[int, ...] = metrics.PAPER_THRESHOLDS_KM
SPLIT = "im2gps3k"
_HEAD = re.compile(r"^(?P<name>.+) \((?P<classes>\d+) cl\.\)$")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One claim checked on the runs: ``holds`` is ``None`` when the runs are missing."""

    claim: str
    paper: str
    holds: bool | None
    numbers: str


def _acc(figures: Mapping[str, Any], km: int) -> float:
    return float(figures[metrics.accuracy_key(km)])


def _pct(x: float) -> str:
    """Percent with one decimal, two below 1 % (where one decimal would hide the order)."""
    return f"{100 * x:.2f}" if 0 < x < 0.01 else f"{100 * x:.1f}"


def _split_rows(rows: Rows, split: str) -> dict[str, Mapping[str, Any]]:
    """``{method: figures}`` of one split, accuracy rows only."""
    prefix = split + "/"
    return {k[len(prefix):]: v for k, v in rows.items()
            if k.startswith(prefix) and metrics.accuracy_key(KMS[0]) in v}


def single_heads(rows: Rows, split: str = SPLIT) -> list[tuple[str, int, Mapping[str, Any]]]:
    """The classification rows of single partitions (``"name (N cl.)"``, not the oracles),
    as ``(method, classes, figures)`` from the fewest classes to the most."""
    heads = []
    for method, figures in _split_rows(rows, split).items():
        m = _HEAD.match(method)
        if m and not method.startswith("oracle"):
            heads.append((method, int(m["classes"]), figures))
    return sorted(heads, key=lambda h: h[1])


def _find(rows: Rows, split: str, pattern: str) -> tuple[str, Mapping[str, Any]] | None:
    """The first method of ``split`` matching the regular expression ``pattern``."""
    for method, figures in _split_rows(rows, split).items():
        if re.search(pattern, method):
            return method, figures
    return None


def beats(a: Mapping[str, Any], b: Mapping[str, Any], kms: Sequence[int] = KMS) -> bool:
    """A is higher at more of ``kms`` than B is (ties count for neither)."""
    wins = sum(_acc(a, k) > _acc(b, k) for k in kms)
    losses = sum(_acc(a, k) < _acc(b, k) for k in kms)
    return wins > losses


def at_least_as_good(a: Mapping[str, Any], b: Mapping[str, Any],
                     kms: Sequence[int] = KMS) -> bool:
    """A is not lower than B at any of ``kms``."""
    return all(_acc(a, k) >= _acc(b, k) for k in kms)


def side_by_side(a: Mapping[str, Any], b: Mapping[str, Any], kms: Sequence[int] = KMS) -> str:
    """``"1 km 3.3 vs 0.5, 25 km …"`` (A first)."""
    return ", ".join(f"{k} km {_pct(_acc(a, k))} vs {_pct(_acc(b, k))}" for k in kms)


def _missing(claim: str, paper: str, *names: str) -> Finding:
    return Finding(claim, paper, None, "needs the run(s) " + ", ".join(names))


def _versus(claim: str, paper: str, a: Mapping[str, Any] | None, b: Mapping[str, Any] | None,
            needs: Sequence[str], label: str = "") -> Finding:
    """"A beats B" with both rows side by side; missing when either row is ``None``."""
    if a is None or b is None:
        return _missing(claim, paper, *needs)
    return Finding(claim, paper, beats(a, b), label + side_by_side(a, b))


def _figures(rows: Rows, split: str, pattern: str) -> Mapping[str, Any] | None:
    found = _find(rows, split, pattern)
    return None if found is None else found[1]


def finer_vs_coarser(runs: Mapping[str, Rows], run: str, split: str = SPLIT) -> Finding:
    """001 §4.1 / 002 Table 5: the finest partition wins at ≤ 25 km (1 and 25 km), the
    coarsest at ≥ 750 km (750 and 2500 km) — among ``run``'s single-partition heads."""
    claim = f"finer partitions win at ≤ 25 km, coarser ones at ≥ 750 km ({run})"
    paper = "001, 002"
    heads = single_heads(runs.get(run, {}), split)
    if len(heads) < 2:
        return _missing(claim, paper, run)
    (coarse, _, c), (fine, _, f) = heads[0], heads[-1]
    holds = beats(f, c, (1, 25)) and beats(c, f, (750, 2500))
    return Finding(claim, paper, holds, f"{fine} vs {coarse}: {side_by_side(f, c)}")


def retrieval_at_1km(runs: Mapping[str, Rows], run: str, split: str = SPLIT) -> Finding:
    """001 Table 2: retrieval (NN / kNN kernel density) beats classification at 1 km — the best
    retrieval row against the best classification head of ``run``."""
    claim = f"retrieval beats classification at 1 km ({run})"
    paper = "001"
    rows = _split_rows(runs.get(run, {}), split)
    retrieval = {m: f for m, f in rows.items() if re.search(r"\bk?NN\b", m)}
    heads = single_heads(runs.get(run, {}), split)
    if not retrieval or not heads:
        return _missing(claim, paper, run)
    r_name, r = max(retrieval.items(), key=lambda kv: _acc(kv[1], 1))
    c_name, _, c = max(heads, key=lambda h: _acc(h[2], 1))
    return Finding(claim, paper, _acc(r, 1) > _acc(c, 1),
                   f"{r_name} {_pct(_acc(r, 1))} vs {c_name} {_pct(_acc(c, 1))} at 1 km")


def product_vs_levels(runs: Mapping[str, Rows], run: str = "hierarchical",
                      split: str = SPLIT) -> Finding:
    """003 Table 6: the hierarchical product is at least as good as the best single level
    (the best level taken per threshold)."""
    claim = f"the hierarchical product is at least as good as the best single level ({run})"
    paper = "003"
    product = _find(runs.get(run, {}), split, r"hierarchical product$")
    heads = single_heads(runs.get(run, {}), split)
    if product is None or not heads:
        return _missing(claim, paper, run)
    _, p = product
    best = {k: max(heads, key=lambda h: _acc(h[2], k)) for k in KMS}
    holds = all(_acc(p, k) >= _acc(best[k][2], k) for k in KMS)
    numbers = ", ".join(f"{k} km {_pct(_acc(p, k))} vs {_pct(_acc(best[k][2], k))} "
                        f"({best[k][0].split(' (')[0]})" for k in KMS)
    return Finding(claim, paper, holds, numbers)


def geodecoder_vs_classifier(runs: Mapping[str, Rows], geodecoder: str = "geodecoder",
                             classifier: str = "hierarchical_800", budget: str = "800 steps",
                             split: str = SPLIT) -> Finding:
    """003 Table 2: the GeoDecoder beats the hierarchical classifier with the same partitions
    (hierarchical products of two runs with the same partitions and ``budget``)."""
    claim = ("GeoDecoder beats the hierarchical classifier with the same partitions and budget "
             f"({budget})")
    paper = "003"
    return _versus(claim, paper,
                   _figures(runs.get(geodecoder, {}), split, r"hierarchical product$"),
                   _figures(runs.get(classifier, {}), split, r"hierarchical product$"),
                   (geodecoder, classifier), label=f"{geodecoder} vs {classifier}: ")


def combinatorial_vs_heads(runs: Mapping[str, Rows], run: str = "cplanet",
                           split: str = SPLIT) -> Finding:
    """004 Table 2: combinatorial partitioning (NormalizedSum) beats each of its heads."""
    claim = f"CPlaNet's combinatorial partitioning beats each of its geoclass heads ({run})"
    paper = "004"
    combo = _find(runs.get(run, {}), split, r"^combinatorial NormalizedSum")
    heads = [h for h in single_heads(runs.get(run, {}), split) if h[0].startswith("geoclass")]
    if combo is None or not heads:
        return _missing(claim, paper, run)
    wins = [beats(combo[1], f) for _, _, f in heads]
    best = max(heads, key=lambda h: sum(_acc(h[2], k) for k in KMS))
    return Finding(claim, paper, all(wins),
                   f"beats {sum(wins)} of {len(heads)} heads; against the best head "
                   f"({best[0]}): {side_by_side(combo[1], best[2])}")


def normalized_vs_simple(runs: Mapping[str, Rows], run: str = "cplanet",
                         split: str = SPLIT) -> Finding:
    """004 Table 5: NormalizedSum (Eq. 3) beats SimpleSum (Eq. 4)."""
    claim = f"NormalizedSum beats SimpleSum ({run})"
    paper = "004"
    rows = runs.get(run, {})
    return _versus(claim, paper, _figures(rows, split, r"^combinatorial NormalizedSum"),
                   _figures(rows, split, r"^combinatorial SimpleSum"), (run,))


def visual_vs_geographic_sets(runs: Mapping[str, Rows], run: str = "cplanet",
                              split: str = SPLIT) -> Finding:
    """004 Table 2: geoclass set 1 (edge weights from visual distances only) beats set 2
    (geographic distances only), the rest of their parameters equal. Meaningful when the sets
    were built from image features (``configs/cplanet.py``'s default)."""
    claim = f"geoclass set 1 (visual distances) beats set 2 (geographic distances) ({run})"
    paper = "004"
    heads = {h[0].split(" (")[0]: h[2] for h in single_heads(runs.get(run, {}), split)}
    return _versus(claim, paper, heads.get("geoclass1"), heads.get("geoclass2"), (run,))


def _meta_split(rows: Rows) -> str | None:
    """The all-photos split of 002's metadata evaluation (the one with M1's rows)."""
    for key in rows:
        split, _, method = key.rpartition("/")
        if method == "M1 (cell centroid)" and split.endswith("all photos"):
            return split
    return None


def _wilcoxon(rows: Rows, a: str, b: str) -> str:
    for key, figures in rows.items():
        if key.startswith("tests/") and f"{a} vs {b}" in key and "all photos" in key:
            return (f"; paired Wilcoxon mean error {figures['mean_difference']:+.0f} km, "
                    f"p = {figures['p_value']:.2g}")
    return ""


def meta_claims(runs: Mapping[str, Rows], run: str = "delaunay_meta") -> list[Finding]:
    """002: imagery centroids beat cell centroids (Table 3); M2 (time) and M3 (albums) beat
    M1 (Tables 3–4) — on the all-photos rows of the metadata split."""
    rows = runs.get(run, {})
    split = _meta_split(rows)
    claims = [(f"imagery centroids beat cell centroids (M1; {run})", "M1 (imagery centroid)",
               "M1 (cell centroid)"),
              (f"M2 (time inputs) beats M1 ({run})", "M2 time inputs", "M1 (imagery centroid)"),
              (f"M3 (user albums) beats M1 ({run})", "M3 user albums", "M1 (imagery centroid)")]
    methods = _split_rows(rows, split) if split else {}
    out = []
    for claim, a, b in claims:
        if a not in methods or b not in methods:
            out.append(_missing(claim, "002", run))
            continue
        out.append(Finding(claim, "002", beats(methods[a], methods[b]),
                           side_by_side(methods[a], methods[b]) + _wilcoxon(rows, a, b)))
    return out


CHECKS: tuple[Callable[[Mapping[str, Rows]], Finding | list[Finding]], ...] = (
    *(functools.partial(finer_vs_coarser, run=run)
      for run in ("knn_kde_M", "hierarchical", "hierarchical_9000", "knn_kde_M_9000")),
    *(functools.partial(retrieval_at_1km, run=run)
      for run in ("knn_kde", "knn_kde_M", "knn_kde_9000", "knn_kde_M_9000")),
    product_vs_levels,
    lambda r: product_vs_levels(r, "hierarchical_9000"),
    geodecoder_vs_classifier,
    lambda r: geodecoder_vs_classifier(r, "geodecoder_3000", "hierarchical", "3,000 steps"),
    lambda r: geodecoder_vs_classifier(r, "geodecoder_9000", "hierarchical_9000", "9,000 steps"),
    # 004's three claims, each on the default run, three epochs, and PlaNet-sized sets
    *(functools.partial(check, run=run)
      for check in (combinatorial_vs_heads, normalized_vs_simple, visual_vs_geographic_sets)
      for run in ("cplanet", "cplanet_9000", "cplanet_9000_3k")),
    meta_claims,
    lambda r: meta_claims(r, "delaunay_meta_9000"),
)


def findings(runs: Mapping[str, Rows]) -> list[Finding]:
    """Every check of :data:`CHECKS` on ``runs`` (run name → its results rows)."""
    out: list[Finding] = []
    for check in CHECKS:
        result = check(runs)
        out.extend(result if isinstance(result, list) else [result])
    return out


def format_findings(found: Sequence[Finding]) -> str:
    """A Markdown table: claim, paper, yes / no, the numbers (A vs B, %)."""
    lines = ["| claim | paper | holds | numbers (%, A vs B) |", "|---|---|---|---|"]
    for f in found:
        holds = "not run" if f.holds is None else ("yes" if f.holds else "no")
        lines.append(f"| {f.claim} | {f.paper} | {holds} | {f.numbers} |")
    return "\n".join(lines)
