#!/usr/bin/env bash
# Runs a geojax job on every host of a Cloud TPU pod slice. jax.distributed picks the
# coordinator and process ids up from the TPU environment (--jax_distributed).
#
#   launch/tpu_pod.sh my-tpu us-central2-b --config=configs/cplanet.py --workdir=gs://bucket/run
#
# The repository must be present at the same path on every host (e.g. cloned by a startup
# script) and `pip install -e '.[tpu]'` run there once.
set -euo pipefail
tpu="${1:?usage: $0 TPU_NAME ZONE [geojax.main flags...]}"
zone="${2:?usage: $0 TPU_NAME ZONE [geojax.main flags...]}"
shift 2
args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "${tpu}" --zone="${zone}" --worker=all \
  --command="cd \$HOME/geojax && python3 -m geojax.main --jax_distributed${args}"
