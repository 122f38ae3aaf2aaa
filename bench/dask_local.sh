#!/usr/bin/env bash
# A Dask cluster on this machine, by hand: `dask scheduler` and two `dask worker` processes on
# 127.0.0.1, then `runpipeline --scheduler` against them; every process is stopped at the end.
#
#   bench/dask_local.sh [runpipeline options...]      e.g. bench/dask_local.sh --output-dir /tmp/out
#
# PORT (default 8786) and WORKERS (default 2) can be set in the environment; run from the repository
# (or set REPO): the workers import the engine and the plugins from there, as the driver does.
set -euo pipefail

REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${BIN:-$(dirname "$(command -v python)")}
PORT=${PORT:-8786}
WORKERS=${WORKERS:-2}
ADDRESS="tcp://127.0.0.1:${PORT}"
LOGS=$(mktemp -d)
export PYTHONPATH="${REPO}${PYTHONPATH:+:${PYTHONPATH}}"

pids=()
stop() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT

"$BIN/dask" scheduler --host 127.0.0.1 --port "$PORT" --no-dashboard >"$LOGS/scheduler.log" 2>&1 &
pids+=($!)
for n in $(seq 1 "$WORKERS"); do
    "$BIN/dask" worker "$ADDRESS" --nthreads 1 --name "worker-$n" --no-dashboard >"$LOGS/worker-$n.log" 2>&1 &
    pids+=($!)
done
# Wait until every worker has joined the scheduler (a minute at most).
"$BIN/python" - "$ADDRESS" "$WORKERS" <<'PY'
import os
import sys

from distributed import Client

with Client(sys.argv[1], timeout=60) as client:
    client.wait_for_workers(int(sys.argv[2]), timeout=60)
    pids = client.run(os.getpid)
    for address, worker in sorted(client.scheduler_info()["workers"].items()):
        print(f"worker {worker['name']} at {address}, pid {pids[address]}")
PY
echo "scheduler at $ADDRESS (logs in $LOGS)"
echo "\$ runpipeline --scheduler $ADDRESS $*"
"$BIN/python" -m core.cli --scheduler "$ADDRESS" "$@"
