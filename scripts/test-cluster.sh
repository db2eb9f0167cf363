#!/usr/bin/env bash
# The cluster tests (tests/cluster): `data prepare --executor ray|slurm` on a local Ray cluster and
# a one-node Slurm, and examples/slurm/train.sbatch through sbatch. Run after scripts/test.sh
# (it made .venv). Installs what they need (idempotent, quiet): Debian's Slurm and munge (root),
# bloomforge's `cluster` extra (ray); starts Slurm (scripts/slurm-local.sh; the tests start and
# stop Ray themselves), runs `pytest tests/cluster`, and stops Slurm even when a test fails.
#   bash scripts/test-cluster.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for exe in slurmctld slurmd sbatch munged; do
  command -v "$exe" >/dev/null || need=(slurmctld slurmd slurm-client munge)
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "test-cluster: installing ${need[*]} needs root" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || bash scripts/setup.sh
. .venv/bin/activate
python -c "import ray" 2>/dev/null || pip install --quiet -e ".[cluster]"

export BLOOMFORGE_SLURM_DIR=${BLOOMFORGE_SLURM_DIR:-$(mktemp -d /tmp/bloomforge-slurm.XXXXXX)}
trap 'bash scripts/slurm-local.sh stop' EXIT
bash scripts/slurm-local.sh start
eval "$(bash scripts/slurm-local.sh env)"
export BLOOMFORGE_CLUSTER_TESTS=1
python -m pytest tests/cluster -q "$@"
