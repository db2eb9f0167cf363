"""The cluster tests: `data prepare` on a real Ray cluster and a real Slurm, and
examples/slurm/train.sbatch through sbatch. Collected only with BLOOMFORGE_CLUSTER_TESTS=1, which
scripts/test-cluster.sh sets after it has started Slurm (scripts/slurm-local.sh); the Ray cluster
is started here (`ray start --head --block` on 127.0.0.1, 2 CPUs) and stopped by its process id.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

ENABLED = os.environ.get("BLOOMFORGE_CLUSTER_TESTS") == "1"
if not ENABLED:  # the main `python -m pytest` run: this folder's tests are not even imported
    collect_ignore_glob = ["test_*.py"]


def pytest_terminal_summary(terminalreporter) -> None:
    if not ENABLED:
        terminalreporter.write_line(
            "tests/cluster not collected: the Ray/Slurm tests run with scripts/test-cluster.sh "
            "(it starts the services and sets BLOOMFORGE_CLUSTER_TESTS=1)"
        )


REPO = Path(__file__).resolve().parents[2]
if ENABLED:
    sys.path.insert(0, str(REPO / "tests"))  # token_data, shared with the main suite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster(NamedTuple):
    address: str
    temp_dir: Path  # Ray's --temp-dir: session_latest/logs holds the workers' logs


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[RayCluster]:
    """A one-node Ray cluster (2 CPUs) for the session; RAY_ADDRESS points at it."""
    if shutil.which("ray") is None:
        pytest.fail("the 'ray' command is missing: pip install -e '.[cluster]'")
    port = free_port()
    temp = Path(f"/tmp/bf-ray-{os.getpid()}")  # Ray's socket paths must stay short
    log = tmp_path_factory.mktemp("ray") / "ray.log"
    cmd = [
        "ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
        "--num-cpus=2", "--include-dashboard=false", "--object-store-memory=100000000",
        "--disable-usage-stats", f"--temp-dir={temp}",
    ]  # fmt: skip
    # Token authentication off for the cluster and every driver of the session (this process,
    # the local Ray of a test): Ray turns it on for `ray start` when ~/.ray/auth_token exists,
    # but not for a driver connecting to it.
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    with log.open("w") as f:
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        address = f"127.0.0.1:{port}"
        os.environ["RAY_ADDRESS"] = address
        yield RayCluster(address, temp)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        # SIGTERM makes `ray start --block` stop every process it started
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # what it started is in its own process group
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm() -> str:
    """The partition of the running one-node Slurm (scripts/slurm-local.sh start)."""
    conf = os.environ.get("SLURM_CONF", "")
    if not conf or not Path(conf).is_file() or shutil.which("sinfo") is None:
        pytest.fail("no Slurm: run `bash scripts/slurm-local.sh start` and export SLURM_CONF")
    done = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True)
    assert done.returncode == 0 and "idle" in done.stdout, done.stdout + done.stderr
    return done.stdout.split()[0].rstrip("*")
