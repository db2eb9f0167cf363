"""examples/slurm/train.sbatch, submitted with sbatch to the one-node Slurm: torchrun starts 2 CPU
processes (gloo, data parallel) that train the micro model for 6 steps.

Checked: the job ends COMPLETED with exit code 0 (sbatch --wait), the run has its metrics and a
final checkpoint written by 2 ranks (its RNG file holds world_size 2 and both ranks' states),
and its losses are a single-process run's (the same recipe in this process) within 1e-5.
"""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import torch
from corpus import EN, FR, document
from safetensors.torch import load_file

from bloomforge.recipe import load_recipe
from bloomforge.training.loop import Trainer
from token_data import write_token_folder

REPO = Path(__file__).resolve().parents[2]
STEPS = 6


def overrides(tokens: Path, out: Path | None = None) -> list[str]:
    """The recipe, as test_parallel's but 6 steps of the micro model; `out` unless None."""
    base = {
        "model": "micro",
        "data.tokens": tokens,
        "data.seq_len": 32,
        "train.global_batch_size": 8,
        "train.micro_batch_size": 2,
        "train.lr": 3e-3,
        "train.min_lr": 3e-4,
        "train.warmup_tokens": 512,
        "train.decay_tokens": STEPS * 8 * 32,
        "train.max_tokens": STEPS * 8 * 32,
        "train.precision": "fp32",
        "train.save_every": 3,
        "train.log_every": 1,
    }
    if out is not None:
        base["out"] = out
    return [f"{k}={v}" for k, v in base.items()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def test_sbatch_example_trains_with_two_processes(tmp_path, slurm):
    rng = random.Random(0)
    tokens = tmp_path / "tokens"
    groups = {("t", "fr"): [document(rng, FR) for _ in range(60)]}
    groups[("t", "en")] = [document(rng, EN) for _ in range(60)]
    write_token_folder(tokens, groups)
    reference = tmp_path / "reference"
    Trainer(load_recipe(None, overrides(tokens, reference))).fit()

    run = tmp_path / "run"
    env = {
        "RECIPE": str(REPO / "tests" / "data" / "empty_recipe.yaml"),  # all from overrides
        "RUN": str(run),
        "GPUS_PER_NODE": "2",
        "PARALLEL": "",  # data parallel over the 2 processes
        "RDZV_PORT": str(free_port()),
        "VENV": sys.prefix,
    }
    exports = ",".join(f"{k}={v}" for k, v in env.items())
    cmd = [
        "sbatch", "--wait", "--parsable", f"--partition={slurm}", "--nodes=1",
        "--gpus-per-node=0", "--cpus-per-task=2", "--time=00:10:00",
        f"--output={tmp_path}/%x-%j.out", f"--export=ALL,{exports}",
        str(REPO / "examples" / "slurm" / "train.sbatch"), *overrides(tokens),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=540, cwd=tmp_path)
    logs = "\n".join(p.read_text()[-3000:] for p in tmp_path.glob("bloomforge-*.out"))
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{logs}"
    job_id = re.match(r"\d+", done.stdout.strip()).group(0)
    job = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    assert "JobState=COMPLETED" in job and "ExitCode=0:0" in job and "NumNodes=1" in job
    assert logs.count(f"done: step {STEPS}") == 1, logs  # rank 0 prints it, once

    final = run / "checkpoints" / f"step_{STEPS:08d}"
    assert (final / "model.safetensors").is_file()
    rng = load_file(final / "rng.safetensors")
    assert int(rng["world_size"].item()) == 2 and "rank1.torch" in rng
    got, want = losses(run), losses(reference)
    assert len(got) == len(want) == STEPS
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=0)
