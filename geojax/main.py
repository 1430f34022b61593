r"""geojax entry point: flags → mode → library call.

    python -m geojax.main --config=configs/cplanet.py [--workdir=DIR] [--mode=partition]
    python -m geojax.main --config=configs/hierarchical.py:runlocal --config.data.train_size=50000

``--config`` is an ml_collections config file (``get_config(arg)``; ``:arg``
after the path, e.g. ``:runlocal``); any field can be overridden with
``--config.a.b=value``.  ``--workdir`` defaults to ``./workdir/<config name>``.

Modes:
  train      (default) build the partitions, train every stage of the config (resuming
             from the workdir's checkpoints), evaluate, write results.json / results.md /
             predictions.png into the workdir (``geojax.experiment.train_and_evaluate``).
  eval       evaluate the finished run in the workdir again (``experiment.evaluate_workdir``).
  partition  only build the config's partitions and report their oracle accuracy
             (``experiment.partition_report``).

Library INFO logs (Orbax, grain) are hidden unless ``--verbosity=0`` is given.
Before JAX starts, the CPU tuning of ``geojax.runtime.configure_cpu`` is applied (opt out with
``GEOJAX_XLA_CPU_DEFAULTS=0`` / ``GEOJAX_MALLOC_DEFAULTS=0``).
Multi-host: every host runs the same command; set ``--jax_distributed`` (or the usual
``JAX_COORDINATOR_ADDRESS`` / cluster environment) to call ``jax.distributed.initialize``.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from geojax import runtime

config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Output directory (default ./workdir/<config name>).")
flags.DEFINE_enum("mode", "train", ["train", "eval", "partition"], "What to run.")
flags.DEFINE_bool("jax_distributed", False, "Call jax.distributed.initialize() first (multi-host; "
                  "arguments from the cluster environment or the flags below).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host without a "
                    "cluster environment).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # library INFO logs (Orbax, grain) only on request
        logging.set_verbosity(logging.WARNING)
    # JAX and the library load here, after runtime.configure_cpu() (see the __main__ block), so
    # that no thread of theirs allocates before the malloc settings.
    import jax  # pylint: disable=import-outside-toplevel
    from geojax import experiment  # pylint: disable=import-outside-toplevel
    from geojax.training import train  # pylint: disable=import-outside-toplevel

    if FLAGS.jax_distributed or FLAGS.coordinator_address:
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    config = FLAGS.config
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/cplanet.py")
    workdir = FLAGS.workdir or os.path.join("workdir", config.get("name", "run"))
    if FLAGS.mode == "partition":
        experiment.partition_report(config, workdir)
    elif FLAGS.mode == "eval":
        experiment.evaluate_workdir(config, workdir)
    else:
        try:
            experiment.train_and_evaluate(config, workdir)
        except train.Preempted as stop:  # SIGTERM: a checkpoint was saved
            raise SystemExit(f"preempted: {stop}") from None


if __name__ == "__main__":
    runtime.configure_cpu()  # before app.run parses --config: nothing has started JAX yet
    flags.mark_flags_as_required(["config"])
    app.run(main)
