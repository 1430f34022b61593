r"""geojax entry point: flags → mode → library call.

    python -m geojax.main --config=configs/cplanet.py [--workdir=DIR] [--mode=partition]
    python -m geojax.main --config=configs/hierarchical.py:runlocal --config.data.train_size=50000

``--config`` is an ml_collections config file (``get_config(arg)``; ``:arg``
after the path, e.g. ``:runlocal``); any field can be overridden with
``--config.a.b=value``.  ``--workdir`` defaults to ``./workdir/<config name>``.

Modes:
  partition  build the config's partitions into the workdir and report their
             oracle accuracy (works today; the default until training lands).
"""

from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory (default ./workdir/<config name>).")
flags.DEFINE_enum("mode", "partition", ["partition"], "What to run.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/cplanet.py")
    workdir = FLAGS.workdir or os.path.join("workdir", config.get("name", "run"))
    if FLAGS.mode == "partition":
        from geojax import partition_job  # pylint: disable=import-outside-toplevel

        partition_job.run(config, workdir)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
