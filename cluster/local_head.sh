#!/usr/bin/env bash
# Start a local Ray head for trying `ray job submit` (see README "Running on a Ray cluster").
#   cluster/local_head.sh            # starts the head, prints how to submit
# Stop it with `ray stop` (note: that stops EVERY Ray process on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
source .venv/bin/activate
ray start --head --num-cpus="${NUM_CPUS:-4}" --dashboard-host=127.0.0.1
cat <<MSG

Submit the default recipe (Ray 2.60 uses token auth: the client needs RAY_AUTH_MODE=token):
  RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
      python -m rlvr.cli.main train recipes/tiny-cpu.yaml trainer.total_steps=20 run.output_dir=\$PWD/runs
MSG
