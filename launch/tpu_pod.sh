#!/usr/bin/env bash
# Runs a geojax job on every host of a Cloud TPU pod slice. jax.distributed picks the
# coordinator and process ids up from the TPU environment (--jax_distributed).
#
#   launch/tpu_pod.sh my-tpu us-central2-b --config=configs/cplanet.py --workdir=gs://bucket/run
#
# TPU name and zone may instead come from TPU_NAME and ZONE in the environment
# (`TPU_NAME=my-tpu ZONE=us-central2-b launch/tpu_pod.sh --config=...`). GEOJAX_DIR is the
# repository's path on the hosts (default: $HOME/geojax); it must be present at that path on
# every host (e.g. cloned by a startup script) with `pip install -e '.[tpu]'` run there once.
# Everything is checked here, before any host is contacted.
set -euo pipefail
usage="usage: $0 [TPU_NAME ZONE] --config=CONFIG [geojax.main flags...]"
fail() { echo "tpu_pod.sh: $1" >&2; echo "${usage}" >&2; exit 2; }
if [[ $# -ge 2 && "$1" != --* && "$2" != --* ]]; then
  TPU_NAME="$1" ZONE="$2"
  shift 2
fi
[[ -n "${TPU_NAME:-}" ]] || fail "no TPU name: give it as the first argument or set TPU_NAME."
[[ -n "${ZONE:-}" ]] || fail "no zone: give it as the second argument or set ZONE (e.g. us-central2-b)."
[[ " $* " == *" --config="* ]] || fail "no --config=...: name the config to run on the pod."
command -v gcloud >/dev/null || fail "gcloud is not on PATH: install the Google Cloud CLI and log in."
args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" --worker=all \
  --command="cd ${GEOJAX_DIR:-\$HOME/geojax} && python3 -m geojax.main --jax_distributed${args}"
