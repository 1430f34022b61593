"""The command line: ``python -m geojax.data.sources convert|tfds|finalize|info ...``.

``convert --workers=W`` writes the output shards with W processes; ``convert --shard_index=I
--num_shards=N`` (the same command on N hosts, I = 0 ... N-1, one shared ``--out``) writes share
I of the output shards, and the last share to finish writes ``metadata.json``; ``finalize
--out=DIR`` writes it for a folder whose last share died after its shards were written.

``convert --format-out=tfds`` writes a TFDS ArrayRecord dataset instead
(:func:`geojax.data.sources.tfds_format.convert_to_tfds`, the ``tfds`` extra): ``--out`` is the
TFDS data folder, the dataset ``<out>/<name>/<tfds-version>/`` with the one split
``--tfds-split`` (one host; ``--workers`` processes). ``tfds --split NAME=DIR ...`` writes a
TFDS dataset with several splits from geojax ArrayRecord folders (each converted by
``convert`` from any format, e.g. MP-16 shards as ``train`` and an Im2GPS3k CSV as
``im2gps3k``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence


from geojax.data.sources import tfds_format
from geojax.data.sources.array_record import (ArrayRecordSource, convert_to_array_record,
                                              finalize_array_record)
from geojax.data.sources.csv_folder import CsvImageFolderSource
from geojax.data.sources.mp16 import Mp16MsgpackSource
from geojax.data.sources.osv5m import Osv5mSource

# ----------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m geojax.data.sources",
                                     description="Convert geolocation datasets to ArrayRecord.",
                                     allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert", help="read a dataset, print its report, write ArrayRecord "
                                               "(geojax's, or a TFDS dataset)")
    conv.add_argument("--format", required=True, choices=("csv", "mp16", "osv5m"))
    conv.add_argument("--out", required=True,
                      help="output folder (must not exist unless --overwrite); with "
                           "--format-out=tfds the TFDS data folder, the dataset going to "
                           "<out>/<name>/<tfds-version>")
    conv.add_argument("--format-out", default="array_record", choices=("array_record", "tfds"),
                      help="array_record: geojax's ArrayRecord folder (default); tfds: a TFDS "
                           "ArrayRecord dataset (pip install 'geojax[tfds]')")
    conv.add_argument("--tfds-split", default=None,
                      help="tfds: the split's name (default: osv5m's --split, else train)")
    conv.add_argument("--tfds-version", default="1.0.0", help="tfds: the dataset version")
    conv.add_argument("--csv", help="csv/mp16: the metadata CSV")
    conv.add_argument("--images", help="csv: the image folder")
    conv.add_argument("--shards", help="mp16: glob or folder of shard_N.msg")
    conv.add_argument("--key-column", default="IMG_ID", help="mp16: CSV column holding the shard ids")
    conv.add_argument("--root", help="osv5m: dataset folder")
    conv.add_argument("--split", default="train", choices=("train", "test"), help="osv5m: split")
    conv.add_argument("--max-bad-fraction", type=float, default=0.01)
    conv.add_argument("--partial", action="store_true", help="mp16/osv5m: only some shards/zips present")
    conv.add_argument("--output-shards", type=int, default=None,
                      help="output ArrayRecord files (default: one per 10,000 records, at least "
                           "--num_shards)")
    conv.add_argument("--workers", type=int, default=1, help="processes writing shards on this host")
    conv.add_argument("--shard_index", type=int, default=0,
                      help="this host's share of a conversion over --num_shards hosts (0-based)")
    conv.add_argument("--num_shards", type=int, default=1,
                      help="hosts converting into the same --out, each with its --shard_index")
    conv.add_argument("--name", default="geojax",
                      help="the dataset's name (tfds: a TFDS name, lower case, digits and _)")
    conv.add_argument("--image-format", default="png", choices=("png", "jpeg"),
                      help="encoding of decoded images (GeoWorld); encoded bytes are copied as they are")
    conv.add_argument("--check-images", action=argparse.BooleanOptionalAction, default=True,
                      help="decode every image and drop (and count) the undecodable ones "
                           "(default); --no-check-images stores the bytes unchecked")
    conv.add_argument("--overwrite", action="store_true")
    fin = commands.add_parser("finalize", help="write metadata.json of a conversion over hosts whose "
                                               "shares are all finished")
    fin.add_argument("--out", required=True)
    tfds = commands.add_parser("tfds", help="write a TFDS dataset with several splits from geojax "
                                             "ArrayRecord folders (pip install 'geojax[tfds]')")
    tfds.add_argument("--split", action="append", required=True, metavar="NAME=DIR",
                      help="a split: its TFDS name and the geojax ArrayRecord folder holding it "
                           "(repeat for each split)")
    tfds.add_argument("--out", required=True,
                      help="the TFDS data folder; the dataset goes to <out>/<name>/<version>")
    tfds.add_argument("--name", required=True, help="the TFDS dataset name (lower case, digits, _)")
    tfds.add_argument("--version", default="1.0.0", help="the dataset version")
    tfds.add_argument("--output-shards", type=int, default=None,
                      help="output files per split (default: one per 10,000 records)")
    tfds.add_argument("--workers", type=int, default=1, help="processes writing shards")
    tfds.add_argument("--check-images", action=argparse.BooleanOptionalAction, default=False,
                      help="decode every image again and drop the undecodable ones (default: "
                           "no, convert checked them)")
    tfds.add_argument("--overwrite", action="store_true")
    info = commands.add_parser("info", help="print the metadata of a converted dataset")
    info.add_argument("dir")
    return parser


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is None]
    if missing:
        raise ValueError(f"--format={args.format} needs {' '.join(missing)}.")


def _tfds_splits(specs: Sequence[str]) -> dict[str, ArrayRecordSource]:
    """``NAME=DIR`` arguments → {split name: the ArrayRecord source in DIR}."""
    splits: dict[str, ArrayRecordSource] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--split {spec!r}: write NAME=DIR, e.g. --split train=/data/mp16_ar")
        if name in splits:
            raise ValueError(f"--split {name} is given twice; each split once")
        splits[name] = ArrayRecordSource(folder)
    return splits


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status. ``convert`` prints one summary at the end
    (the readers' warnings of skipped rows are held back: the summary includes them)."""
    args = _parser().parse_args(argv)
    readers_log = logging.getLogger("geojax.data.sources")
    level = readers_log.level
    readers_log.setLevel(logging.ERROR)
    try:
        if args.command == "convert" and args.format_out == "tfds":
            if args.num_shards != 1 or args.shard_index != 0:
                raise ValueError("--format-out=tfds converts on one host: drop --shard_index and "
                                 "--num_shards (use --workers for more processes).")
            tfds_format.import_tfds()  # before reading the dataset: says which extra is missing
        if args.command == "tfds":
            tfds_format.import_tfds()
            tfds_format.convert_to_tfds(_tfds_splits(args.split), args.out, name=args.name,
                                        version=args.version, num_shards=args.output_shards,
                                        check_images=args.check_images, workers=args.workers,
                                        overwrite=args.overwrite)
            return 0
        if args.command == "info":
            print(json.dumps(ArrayRecordSource(args.dir).metadata, indent=1))
            return 0
        if args.command == "finalize":
            finalize_array_record(args.out)
            return 0
        if args.format == "csv":
            _require(args, "csv", "images")
            source = CsvImageFolderSource(args.csv, args.images, max_bad_fraction=args.max_bad_fraction)
        elif args.format == "mp16":
            _require(args, "shards", "csv")
            source = Mp16MsgpackSource(args.shards, args.csv, key_column=args.key_column,
                                       max_bad_fraction=args.max_bad_fraction, partial=args.partial)
        else:
            _require(args, "root")
            source = Osv5mSource(args.root, args.split, max_bad_fraction=args.max_bad_fraction,
                                 partial=args.partial)
        if args.format_out == "tfds":
            split = args.tfds_split or (args.split if args.format == "osv5m" else "train")
            tfds_format.convert_to_tfds({split: source}, args.out, name=args.name,
                                        version=args.tfds_version, num_shards=args.output_shards,
                                        image_format=args.image_format,
                                        check_images=args.check_images, workers=args.workers,
                                        overwrite=args.overwrite)
            return 0
        convert_to_array_record(source, args.out, num_shards=args.output_shards, name=args.name,
                                overwrite=args.overwrite, image_format=args.image_format,
                                check_images=args.check_images, workers=args.workers,
                                share_index=args.shard_index, num_shares=args.num_shards)
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        readers_log.setLevel(level)
    return 0

