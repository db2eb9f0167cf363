"""Which device a command runs on: one resolver for every stage.

In: a device name from a recipe key or a CLI flag ("auto", "cpu", "cuda", "cuda:1", ...) and the
option's name for messages. Out: a usable device name ("auto" becomes cuda when available, else
cpu, as lm-eval's hf model chooses), or a one-line BloomforgeError naming the option when the
device does not exist on this machine.
"""

from __future__ import annotations

import torch

from bloomforge.errors import BloomforgeError


def resolve_device(device: str | None, option: str = "device") -> str:
    """The device to evaluate or generate on: unset or "auto" means cuda if available, else cpu
    (lm-eval's hf model does the same); a CUDA device on a machine without one, or a device
    torch cannot run on here (tpu, meta, mps off macOS), is an error naming `option`, not a
    traceback from deep inside the checkpoint loader."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    usable = "cpu, cuda, cuda:N or auto"
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise BloomforgeError(f"{option}={device}: not a device ({usable})") from e
    backend = {"mps": torch.backends.mps, "xpu": getattr(torch, "xpu", None)}.get(dev.type)
    if dev.type not in ("cpu", "cuda") and not (backend and backend.is_available()):
        raise BloomforgeError(f"{option}={device}: not available on this machine ({usable})")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BloomforgeError(
            f"{option}={device}: CUDA is not available on this machine (use {option}=cpu, "
            f"or {option}=auto: cuda if available, else cpu)"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise BloomforgeError(
            f"{option}={device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device
