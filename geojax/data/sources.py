"""Readers for on-disk datasets.

Today: coordinates from a metadata CSV (the Im2GPS / Im2GPS3k / YFCC4k / GWS15k
layout: ``IMG_ID`` or ``IMG_FILE``, ``LAT``, ``LON``, optional ``AUTHOR`` and
scene columns), which is what partition building needs.

Bad rows are never fatal alone and never silent: a row whose coordinates are
missing, non-numeric, non-finite or out of range (|LAT| > 90 — some published
Im2GPS files have LAT and LON swapped, which is reported, not silently
swapped) is skipped, counted and listed by id in the returned report; more
than ``max_bad_fraction`` of bad rows is an error.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os

import numpy as np

from geojax.geo import sphere


@dataclasses.dataclass
class ReadReport:
    """What a reader skipped, by reason, with the ids of the skipped rows."""

    path: str
    rows: int = 0
    kept: int = 0
    skipped: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def skip(self, reason: str, row_id: str) -> None:
        self.skipped.setdefault(reason, []).append(row_id)

    @property
    def num_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def summary(self, max_ids: int = 5) -> str:
        if not self.skipped:
            return f"{self.path}: {self.kept} rows read, none skipped."
        parts = [f"{len(ids)} {reason} (e.g. {', '.join(ids[:max_ids])})" for reason, ids in self.skipped.items()]
        return f"{self.path}: {self.kept} of {self.rows} rows read; skipped " + "; ".join(parts) + "."


def _column(header: list[str], names: tuple[str, ...], path: str, required: bool = True) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for n in names:
        if n in lowered:
            return lowered.index(n)
    if required:
        raise ValueError(f"{path}: no {names[0].upper()} column (looked for {', '.join(names)}); header is {header}.")
    return None


def read_coordinates_csv(path: str | os.PathLike, *, max_bad_fraction: float = 0.01,
                         return_report: bool = False):
    """(lat, lng) float64 arrays from a metadata CSV; see the module docstring for bad rows.

    Returns ``(lat, lng)``, or ``(lat, lng, ids, report)`` with ``return_report=True``.
    """
    path = os.fspath(path)
    report = ReadReport(path)
    lats, lngs, ids = [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected a header with LAT and LON columns.") from None
        c_lat = _column(header, ("lat", "latitude"), path)
        c_lng = _column(header, ("lon", "lng", "longitude"), path)
        c_id = _column(header, ("img_id", "img_file", "id"), path, required=False)
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            report.rows += 1
            row_id = row[c_id] if c_id is not None and c_id < len(row) else f"line {line_no}"
            try:
                lat, lng = float(row[c_lat]), float(row[c_lng])
            except (IndexError, ValueError):
                report.skip("rows with missing or non-numeric coordinates", row_id)
                continue
            if not (math.isfinite(lat) and math.isfinite(lng)):
                report.skip("rows with NaN/infinite coordinates", row_id)
                continue
            if abs(lat) > 90:
                reason = ("rows with |LAT| > 90 (LAT/LON swapped?)" if abs(lng) <= 90
                          else "rows with |LAT| > 90")
                report.skip(reason, row_id)
                continue
            lats.append(lat)
            lngs.append(lng)
            ids.append(row_id)
    report.kept = len(lats)
    if report.rows and report.num_skipped / report.rows > max_bad_fraction:
        raise ValueError(f"too many bad rows ({report.num_skipped} of {report.rows}, more than "
                         f"{max_bad_fraction:.1%}): {report.summary()} Fix the file or raise max_bad_fraction.")
    if not lats:
        raise ValueError(f"{path}: no usable coordinates. {report.summary()}")
    if report.num_skipped:
        print(report.summary())
    lat = np.array(lats, np.float64)
    lng = np.array(lngs, np.float64)
    lng = sphere.wrap_lng(lng)
    if return_report:
        return lat, lng, ids, report
    return lat, lng
