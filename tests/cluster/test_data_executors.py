"""`bloomforge data prepare --executor ray|slurm` on real clusters gives the local executor's run.

The reference is the same config run with the local executor: every output file (final
documents, excluded, malformed, PII originals, intermediate work files) must hold the same
records, and stats.json (ledger, reader counts, totals, PII, dedup summary) must be equal but
for `settings`. The tasks must have run where claimed: in the Ray cluster's worker processes
(their logs under the cluster's session folder), and as Slurm job arrays with the config's
partition and time limit, each job activating the venv bloomforge runs from (PATH without it).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus import write_config, write_corpus

from bloomforge.cli import main
from bloomforge.data.prepare import jobs as jobs_mod
from bloomforge.data.prepare import prepare
from bloomforge.data.prepare.config import load_prepare_config
from bloomforge.errors import BloomforgeError

OUTPUT_FOLDERS = ("documents", "excluded", "malformed", "restricted", "work/filtered")


def records(out: Path) -> dict[str, list[str]]:
    """Every jsonl record under the output folders, per file, sorted (order within a file may
    differ between executors; which task wrote which file may not)."""
    found = {}
    for folder in (*OUTPUT_FOLDERS, "work/deduped"):
        for path in sorted((out / folder).rglob("*.jsonl*")):
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as f:
                found[str(path.relative_to(out))] = sorted(f.read().splitlines())
    return found


def stats(out: Path) -> dict:
    data = json.loads((out / "stats.json").read_text())
    data.pop("settings")  # executor name, start and end times
    return data


def assert_same_run(got: Path, reference: Path) -> None:
    want = records(reference)
    assert records(got) == want
    assert stats(got) == stats(reference)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, slurm):
    """The inputs, their config (with a slurm: section) and the local executor's run."""
    root = tmp_path_factory.mktemp("corpus")
    job_name = f"bf-test-{os.getpid()}"
    slurm_section = {"partition": slurm, "time": "00:10:00", "job_name": job_name}
    config = write_config(root, write_corpus(root / "in"), slurm=slurm_section)
    local = root / "local"
    assert main(["data", "prepare", "--config", str(config), "--out", str(local)]) == 0
    s = json.loads((local / "stats.json").read_text())
    # the run is not trivial: filters and dedup removed documents, and some were kept
    removed = {step for t in s["totals"].values() for step in t["removed"]}
    assert {"number_words", "stopwords", "dedup_exact", "dedup_minhash"} <= removed
    assert s["totals"]["fr"]["final"] > 10 and s["totals"]["web"]["final"] > 10
    assert len(records(local)) >= 8
    return root, config, local, job_name


def ray_actors(temp_dir: Path) -> int:
    """RankWorker actors (datatrove's Ray task runners) the cluster has started so far: Ray
    writes `:actor_name:RankWorker` into the log of each worker process that hosts one."""
    logs = temp_dir / "session_latest" / "logs"
    return sum(p.read_text().count(":actor_name:RankWorker") for p in logs.glob("worker-*.out"))


def test_ray_executor_gives_the_local_run(corpus, ray_cluster):
    root, config, local, _ = corpus
    out = root / "ray"
    before = ray_actors(ray_cluster.temp_dir)
    args = ["data", "prepare", "--config", str(config), "--out", str(out), "--executor", "ray"]
    assert main([*args, "--workers", "2"]) == 0
    assert_same_run(out, local)
    assert json.loads((out / "stats.json").read_text())["settings"]["executor"] == "ray"
    # every task ran on the cluster the fixture started, one actor per task
    stages = jobs_mod.build_jobs(load_prepare_config(config), out)
    assert ray_actors(ray_cluster.temp_dir) - before == sum(s.tasks for s in stages)


class Crash:
    """A pipeline step that fails task 1 of its stage (pickled by value into the Ray workers)."""

    name = "crash"

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        if rank == 1:
            raise RuntimeError("injected failure")
        return data


def test_ray_failed_task_stops_the_run_with_its_stage(corpus, ray_cluster, monkeypatch):
    """Without RAY_ADDRESS: on a Ray started for the run, shut down when it stops (ray_cluster
    only for its session settings: no token authentication, so nothing written to ~/.ray)."""
    import ray
    import ray.cloudpickle

    root, config, _, _ = corpus
    build = jobs_mod.build_jobs

    def with_crash(cfg, out):
        stages = build(cfg, out)
        assert stages[0].name == "filter/fr" and stages[0].tasks == 2
        stages[0].pipeline.insert(1, Crash())
        return stages

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(jobs_mod, "build_jobs", with_crash)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = root / "ray-crash"
    error = r"stage filter/fr: 1 of 2 tasks failed \(ranks \[1\]\); see .*filter/fr/logs/"
    with pytest.raises(BloomforgeError, match=error):
        prepare(load_prepare_config(config), out, executor="ray")
    assert not (out / "stats.json").exists()
    completed = sorted(p.relative_to(out / "logs") for p in out.glob("logs/**/completions/*"))
    assert completed == [Path("filter/fr/completions/00000")]  # task 0 ran, nothing after
    assert "injected failure" in (out / "logs/filter/fr/logs/task_00001.log").read_text()
    assert not ray.is_initialized()


def test_ray_address_without_a_cluster_is_a_one_line_error(corpus, monkeypatch, capsys):
    root, config, _, _ = corpus
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    args = ["--config", str(config), "--out", str(root / "ray-none"), "--executor", "ray"]
    assert main(["data", "prepare", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"bloomforge: RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers")


def _squeue(job_name: str) -> list[str]:
    done = subprocess.run(
        ["squeue", "-h", "-o", "%i %j %T %r"], capture_output=True, text=True, check=True
    )
    return [line for line in done.stdout.splitlines() if job_name in line]


def test_slurm_executor_gives_the_local_run(corpus, slurm, monkeypatch, capsys):
    root, config, local, job_name = corpus
    out = root / "slurm"
    # The jobs must find bloomforge and datatrove's launch_pickled_pipeline through the venv
    # bloomforge activates for them (slurm.venv_path unset), not through the caller's PATH.
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    monkeypatch.setenv("PATH", path)
    args = ["data", "prepare", "--config", str(config), "--out", str(out), "--executor", "slurm"]
    assert main(args) == 0
    assert "Slurm stages" in capsys.readouterr().out
    deadline = time.monotonic() + 400
    while (left := _squeue(job_name)) and time.monotonic() < deadline:
        assert not any("DependencyNeverSatisfied" in line for line in left), left
        time.sleep(2)
    logs = sorted((out / "logs" / "slurm").rglob("*.out"))
    tails = "\n".join(f"== {p}\n{p.read_text()[-1500:]}" for p in logs[-3:])
    assert not left and (out / "stats.json").is_file(), f"jobs left: {left}\n{tails}"
    assert_same_run(out, local)

    script = (out / "logs" / "filter" / "fr" / "launch_script.slurm").read_text()
    assert f"source {sys.prefix}/bin/activate" in script
    job_id = re.match(r"(\d+)_", logs[0].name).group(1)
    job = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    assert "JobState=COMPLETED" in job and f"Partition={slurm}" in job
    assert "TimeLimit=00:10:00" in job and "CPUs/Task=1" in job
