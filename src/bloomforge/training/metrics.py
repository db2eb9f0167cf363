"""Run metrics: a jsonl log, TensorBoard events and a progress line.

In: one dict of scalars per logged step (loss, lr, grad norm, batch size, tokens/s, TFLOPs,
MFU, memory, skipped steps) and per validation. Out: RUN/metrics.jsonl (one JSON object per
line, the machine-readable record; rewritten at resume so it never holds steps the resumed run
repeats), RUN/tb/ (TensorBoard, under `train/` and `valid/`), and a line on the console
(`MetricsLog.info`: the `bloomforge` logger at INFO, `bloomforge.log`'s one format).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from bloomforge import files
from bloomforge import log as console

log = logging.getLogger(__name__)


def device_peak_tflops(device: torch.device) -> float | None:
    """Datasheet dense bf16 peak (the one GPU table: bloomforge.hardware); None when unknown."""
    if device.type != "cuda":
        return None
    from bloomforge.hardware import gpu_from_device_name

    gpu = gpu_from_device_name(torch.cuda.get_device_name(device))
    return gpu.peak_tflops if gpu is not None else None


def peak_memory_gb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


class MetricsLog:
    def __init__(
        self,
        run: Path,
        resume_step: int | None = None,
        tensorboard: bool = True,
        enabled: bool = True,
    ):
        """`enabled=False` (ranks other than 0 under torchrun): write and log nothing."""
        self.enabled = enabled
        self.path = run / "metrics.jsonl"
        self._file = None
        self._tb = None
        if not enabled:
            return
        console.configure()  # the progress lines are a run's output, with or without the CLI
        if resume_step is not None:
            self._truncate(resume_step)
        elif self.path.exists():
            self.path.unlink()
        self._file = open(self.path, "a")  # noqa: SIM115  # files: append, open for the run
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run / "tb"), purge_step=resume_step)
            except ImportError:  # tensorboard is optional at run time
                self._tb = None

    def _truncate(self, step: int) -> None:
        """Drop records of steps after `step`: the resumed run writes them again."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                break  # a line cut by the kill: everything after it is gone too
        files.write_text(self.path, "".join(f"{k}\n" for k in kept))

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and value == value:
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def info(self, text: str) -> None:
        """A line on the console (the logger at INFO), from rank 0 only."""
        if self.enabled:
            log.info(text, stacklevel=2)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(step: int, total: int | None, m: dict[str, Any], eta: float | None) -> str:
    parts = [f"step {step}" + (f"/{total}" if total else "")]
    parts.append(f"loss {m['loss']:.4f}" if m.get("loss") is not None else "loss -")
    parts.append(f"lr {m['lr']:.2e}")
    if m.get("grad_norm") is not None:
        parts.append(f"gnorm {m['grad_norm']:.3f}")
    parts.append(f"bs {m['batch_size']}")
    parts.append(f"{m['tokens_per_s']:,.0f} tok/s")
    parts.append(f"{m['tflops']:.2f} TFLOPs")
    if m.get("mfu") is not None:
        parts.append(f"MFU {100 * m['mfu']:.1f}%")
    if m.get("memory_gb") is not None:
        parts.append(f"mem {m['memory_gb']:.1f}G")
    if m.get("skipped"):
        parts.append(f"skipped {m['skipped']}")
    if eta is not None:
        parts.append(f"ETA {format_duration(eta)}")
    return " | ".join(parts)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (RUN/metrics.jsonl or the file itself), in order;
    [] when there is none. A line cut short by a killed run ends the list there."""
    path = path / "metrics.jsonl" if path.is_dir() else path
    rows: list[dict[str, Any]] = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows
