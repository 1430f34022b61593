"""Result tables in the papers' layout, and results files.

The tables of all four papers (Vo et al. Tables 2-4, the Delaunay mesh paper
Tables 3-5, GeoDecoder Tables 1-2, CPlaNet Tables 2-3) put one method per row
and one distance threshold per column, with the percentage of test images
localised within that distance (CPlaNet, Eq. 5). :func:`format_table` prints
the dicts returned by :func:`geojax.evaluation.metrics.evaluate` that way, as
aligned plain text, a GitHub Markdown table or CSV. :func:`write` is the one writer of
an evaluation's :class:`Results`: terminal tables, ``results.json``, ``results.md`` and maps.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from geojax import fileio
from geojax.evaluation import maps, metrics

MISSING = "–"  # en dash, printed for a figure that a row does not have.

RESULTS_FORMAT = "geojax.results"
RESULTS_VERSION = 1

# Column headers of the non-accuracy figures in terminal and Markdown tables.
_EXTRA_HEADERS = {
    "median_km": "median km",
    "mean_km": "mean km",
    "geoscore": "GeoScore",
    "n": "n",
    "n_missing": "missing",
    "country_acc": "in country",
}
# Figures that are fractions, printed as percentages like the accuracies in terminal and
# Markdown tables (CSV and results.json keep the fractions).
_PERCENT_COLUMNS = frozenset({"country_acc"})
# The columns after the accuracies in the tables that :func:`write` prints and writes.
RESULT_COLUMNS: tuple[str, ...] = ("median_km", "geoscore", "country_acc")

_FORMATS = ("terminal", "markdown", "csv")


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _format_number(value: Any, digits: int) -> str:
    if _is_missing(value):
        return MISSING
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, int) or (hasattr(value, "dtype") and value.dtype.kind in "iu"):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _csv_value(value: Any) -> str | int | float:
    if _is_missing(value):
        return ""
    if isinstance(value, (bool, int, float, str)):
        return value
    return value.item() if hasattr(value, "item") else value


def _table_cells(
    rows: Mapping[str, Mapping[str, Any]],
    thresholds: tuple[int | float, ...],
    extra_columns: Sequence[str],
    digits: int,
) -> tuple[list[str], list[list[str]]]:
    """Header and body cells for terminal / Markdown output."""
    header = ["method"]
    header += [f"{metrics.format_km(t)} km" for t in thresholds]
    header += [_EXTRA_HEADERS.get(c, c) for c in extra_columns]
    body = []
    for name, figures in rows.items():
        line = [str(name)]
        for t in thresholds:
            acc = figures.get(metrics.accuracy_key(t))
            line.append(MISSING if _is_missing(acc) else f"{100.0 * float(acc):.{digits}f}")
        for c in extra_columns:
            value = figures.get(c)
            if c in _PERCENT_COLUMNS and not _is_missing(value):
                value = 100.0 * float(value)
            line.append(_format_number(value, digits))
        body.append(line)
    return header, body


def _column_widths(header: list[str], body: list[list[str]]) -> list[int]:
    return [max(len(r[i]) for r in [header] + body) for i in range(len(header))]


def _align(cells: list[str], widths: list[int]) -> list[str]:
    """Method column left-aligned, numbers right-aligned."""
    return [
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths))
    ]


def _terminal(header, body, title) -> str:
    widths = _column_widths(header, body)
    lines = [] if title is None else [str(title)]
    lines.append("  ".join(_align(header, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(_align(r, widths)).rstrip() for r in body]
    return "\n".join(lines)


def _markdown(header, body, title) -> str:
    body = [[r[0].replace("|", "\\|")] + r[1:] for r in body]
    widths = [max(w, 2) for w in _column_widths(header, body)]
    rule = [":" + "-" * (w - 1) if i == 0 else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    lines = [] if title is None else [f"**{title}**", ""]
    for cells in [_align(header, widths), rule] + [_align(r, widths) for r in body]:
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv(rows, thresholds, extra_columns) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = [metrics.accuracy_key(t) for t in thresholds] + list(extra_columns)
    writer.writerow(["method"] + keys)
    for name, figures in rows.items():
        writer.writerow([name] + [_csv_value(figures.get(k)) for k in keys])
    return buf.getvalue().rstrip("\n")


def format_table(
    rows: Mapping[str, Mapping[str, Any]],
    thresholds_km: Sequence[Any] = metrics.PAPER_THRESHOLDS_KM,
    *,
    fmt: str = "terminal",
    extra_columns: Sequence[str] = ("median_km", "geoscore"),
    title: str | None = None,
    digits: int = 1,
) -> str:
    """Formats results as in the papers' tables: rows = methods, columns = km.

    Args:
      rows: ordered mapping ``method name -> figures``, the figures being the
        dict returned by :func:`geojax.evaluation.metrics.evaluate` (any
        mapping with ``acc@<r>km`` fractions and other named numbers).
      thresholds_km: accuracy columns; by default street / city / region /
        country / continent (1, 25, 200, 750, 2500 km) as in the papers.
      fmt: ``"terminal"`` (aligned plain text), ``"markdown"`` (GitHub table)
        or ``"csv"``.
      extra_columns: further figures after the accuracies, by name (``country_acc``, a
        fraction, prints as a percentage under the header ``in country``).
      title: a line above the table (terminal, Markdown in bold); not written
        in CSV, which stays machine readable.
      digits: decimals for accuracies (printed as percentages) and for the
        other floating-point figures (integers such as ``n`` print as is).

    Returns:
      The table without a trailing newline. Terminal and Markdown headers name
      thresholds ``"1 km"``, ``"25 km"`` …; missing figures print as ``"–"``.
      CSV has the header ``method,acc@1km,...,median_km,geoscore``, raw
      fractions at full precision, and empty cells for missing figures.
    """
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}, got {fmt!r}")
    if digits < 0:
        raise ValueError(f"digits must be >= 0, got {digits}")
    thresholds = metrics.normalize_thresholds(thresholds_km)
    extra_columns = tuple(extra_columns)
    if fmt == "csv":
        return _csv(rows, thresholds, extra_columns)
    header, body = _table_cells(rows, thresholds, extra_columns, digits)
    if fmt == "markdown":
        return _markdown(header, body, title)
    return _terminal(header, body, title)


def _json_default(obj: Any) -> Any:
    """Serialises numpy / jax scalars (and 0-d arrays) as Python numbers."""
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} to a results file")


def write_results(path: str | os.PathLike, rows: Mapping[str, Mapping[str, Any]]) -> None:
    """Writes ``method -> figures`` to a JSON file atomically.

    The JSON is written with :func:`geojax.fileio.atomic_write` (local: a
    temporary file, fsync, ``os.replace``; object store: one upload), so a reader
    (or a job killed mid-write) never sees a partial file. Non-finite numbers (e.g. an
    ``inf`` mean error) are written as ``Infinity`` / ``NaN``, which Python's
    ``json`` (and :func:`read_results`) reads back. Multi-host jobs should
    call this from process 0 only.
    """
    path = os.fspath(path)
    payload = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "rows": {str(name): dict(figures) for name, figures in rows.items()},
    }
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    fileio.atomic_write(path, text)


def read_results(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Reads a file written by :func:`write_results`: ``method -> figures``, in order."""
    payload = json.loads(fileio.read_text(path))
    if not isinstance(payload, dict) or payload.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{os.fspath(path)} is not a geojax results file")
    if payload.get("version") != RESULTS_VERSION:
        raise ValueError(
            f"{os.fspath(path)} has results version {payload.get('version')!r}; "
            f"this geojax reads version {RESULTS_VERSION}"
        )
    return {name: dict(figures) for name, figures in payload["rows"].items()}


# ---------------------------------------------------------------------------- the results writer
class Row(NamedTuple):
    """One method's figures on one split (a row of the table)."""

    method: str
    figures: dict[str, Any]


class PredictionMap(NamedTuple):
    """A map of one method's predictions against the truth on one split."""

    split: str
    method: str
    pred: np.ndarray  # (N, 2) lat, lng (NaN: no prediction)
    true: np.ndarray  # (N, 2)


class PartitionMap(NamedTuple):
    """A map of partitions' classes, with the training points drawn over them."""

    partitions: Sequence[Any]
    points: tuple[np.ndarray, np.ndarray] | None


@dataclasses.dataclass
class Results:
    """What an evaluation produced: the tables (split → method → figures, in row order), the
    number of test images per split, and the maps to draw."""

    tables: dict[str, dict[str, dict[str, Any]]]
    sizes: dict[str, int]
    maps: list[PredictionMap | PartitionMap] = dataclasses.field(default_factory=list)

    def flat(self) -> dict[str, dict[str, Any]]:
        """``"split/method" -> figures`` (the layout of ``results.json``)."""
        return {f"{s}/{m}": r for s, rows in self.tables.items() for m, r in rows.items()}


def write(results: Results, directory: str | os.PathLike, *, stem: str = "results",
          heading: str = "", tag: str = "", what: str = "accuracy (%) within each distance",
          files: bool = True, log: Callable[[str], None] = print) -> None:
    """The one writer of evaluation results.

    Prints each split's table (titled ``"<split> (<n> images, <tag>): <what>"``; columns: the
    accuracies, then :data:`RESULT_COLUMNS` — median km, GeoScore and the predicted-country
    accuracy in %, ``–`` for rows without it); with ``files`` (process 0, final evaluations) also writes
    ``<stem>.json`` (:func:`write_results`), ``<stem>.md`` (``heading`` then one Markdown table
    per split) and the maps (``predictions.png`` / ``partitions.png``) into ``directory``,
    every file atomically (a kill leaves the previous file or the new one, never a mix).
    """
    directory = os.fspath(directory)
    markdown = [heading] if heading else []
    for split, rows in results.tables.items():
        size = results.sizes.get(split)
        about = f"{size} images" + (f", {tag}" if tag else "") if size is not None else tag
        label = f"{split} ({about})" if about else split
        log("\n" + format_table(rows, metrics.PAPER_THRESHOLDS_KM, extra_columns=RESULT_COLUMNS,
                                title=f"{label}: {what}"))
        markdown.append(format_table(rows, metrics.PAPER_THRESHOLDS_KM, fmt="markdown",
                                     extra_columns=RESULT_COLUMNS,
                                     title=f"{split} ({size} images)") + "\n")
    if not files:
        return
    fileio.makedirs(directory)
    write_results(os.path.join(directory, f"{stem}.json"), results.flat())
    fileio.atomic_write(os.path.join(directory, f"{stem}.md"), "\n".join(markdown))
    for item in results.maps:
        if isinstance(item, PredictionMap):
            maps.plot_predictions(item.pred[:, 0], item.pred[:, 1], item.true[:, 0],
                                  item.true[:, 1], os.path.join(directory, "predictions.png"),
                                  title=f"{item.split}: {item.method}")
        else:
            maps.plot_partitions(list(item.partitions), os.path.join(directory, "partitions.png"),
                                 points=item.points)


def compare_runs(runs: Mapping[str, Mapping[str, Mapping[str, Any]]], row: str, *,
                 keep: Sequence[str] = (), path: str | None = None
                 ) -> dict[str, dict[str, Mapping[str, Any]]]:
    """Row ``row`` of several runs' tables side by side: ``{split: {label: figures}}`` for the
    splits of the first run, the rows named by the labels of ``runs`` (``{label: tables}``,
    e.g. two :func:`geojax.experiment.train_and_evaluate` results), after the first run's rows ``keep`` (e.g.
    its ``"constant (densest cell)"`` baseline) under their own names. A run without the split
    or the row raises ``KeyError`` naming both. With ``path``, also a Markdown file of one
    table per split (the columns of ``results.md``), written atomically."""
    if not runs:
        raise ValueError("runs is empty: give {label: tables} of at least one run.")
    labels = list(runs)

    def figures(label: str, split: str, name: str) -> Mapping[str, Any]:
        table = runs[label].get(split, {})
        if name not in table:
            raise KeyError(f"run {label!r} has no row {name!r} on split {split!r} (its rows: "
                           f"{list(table)}).")
        return table[name]

    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for split in runs[labels[0]]:
        out[split] = {name: figures(labels[0], split, name) for name in keep}
        out[split].update({label: figures(label, split, row) for label in labels})
    if path:
        fileio.atomic_write(path, "\n".join(
            format_table(rows, fmt="markdown", extra_columns=RESULT_COLUMNS,
                                title=f"{split}: {row}") + "\n" for split, rows in out.items()))
    return out
