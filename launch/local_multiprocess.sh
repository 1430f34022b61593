#!/usr/bin/env bash
# Runs one geojax job as N processes on this machine (jax.distributed over localhost), the
# way a multi-host job runs: every process executes the same command with its own index.
#
#   launch/local_multiprocess.sh 2 --config=configs/planet.py:runlocal --workdir=/tmp/mp
#
# Each process sees its own CPU device(s); add XLA_FLAGS=--xla_force_host_platform_device_count=K
# to give each K fake devices.
set -euo pipefail
num_processes="${1:?usage: $0 NUM_PROCESSES [geojax.main flags...]}"
shift
port="${GEOJAX_COORDINATOR_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
pids=()
for ((i = 0; i < num_processes; i++)); do
  python3 -m geojax.main "$@" --coordinator_address="127.0.0.1:${port}" \
    --num_processes="${num_processes}" --process_id="${i}" &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do wait "${pid}" || status=$?; done
exit "${status}"
