"""The accelerators the planner knows: peak dense bf16 TFLOPs, memory and board power.

In: a GPU name (`a100-80gb`). Out: a `GPU` record. Peak numbers are the vendors' *dense* tensor
throughput (datasheets quote 2x "with sparsity"; we never use those); memory is what the card
exposes to programs in GiB; power is the board's TDP / max power in W, which the energy estimate
multiplies by a utilisation factor.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from bloomforge.errors import BloomforgeError


@dataclass(frozen=True)
class GPU:
    name: str
    peak_tflops: float  # dense bf16 tensor-core TFLOPs (fp16 where the card has no bf16)
    memory_gib: float
    tdp_w: float
    source: str
    note: str = ""


GPUS: dict[str, GPU] = {
    g.name: g
    for g in (
        GPU(
            "v100",
            125.0,
            32.0,
            300.0,
            "NVIDIA Tesla V100 datasheet (SXM2): 125 TFLOPs tensor, 32 GB HBM2, 300 W",
            "no bf16: fp16 tensor-core peak",
        ),
        GPU(
            "a100-40gb",
            312.0,
            40.0,
            400.0,
            "NVIDIA A100 datasheet (SXM4): 312 TFLOPs bf16 dense, 40 GB HBM2, 400 W",
        ),
        GPU(
            "a100-80gb",
            312.0,
            80.0,
            400.0,
            "NVIDIA A100 datasheet (SXM4): 312 TFLOPs bf16 dense, 80 GB HBM2e, 400 W; "
            "BLOOM's Jean Zay nodes (Luccioni et al. 2022 use 400 W)",
        ),
        GPU(
            "h100-sxm",
            989.0,
            80.0,
            700.0,
            "NVIDIA H100 datasheet (SXM5): 1979 TFLOPs bf16 with sparsity = 989 dense, 80 GB, "
            "700 W",
        ),
        GPU(
            "h100-pcie",
            756.0,
            80.0,
            350.0,
            "NVIDIA H100 datasheet (PCIe): 1513 TFLOPs bf16 with sparsity = 756 dense, 80 GB, "
            "300-350 W",
        ),
        GPU(
            "h200",
            989.0,
            141.0,
            700.0,
            "NVIDIA H200 datasheet (SXM): 1979 TFLOPs bf16 with sparsity = 989 dense, 141 GB "
            "HBM3e, up to 700 W",
        ),
        GPU(
            "l4",
            121.0,
            24.0,
            72.0,
            "NVIDIA L4 datasheet: 242 TFLOPs bf16 with sparsity = 121 dense, 24 GB GDDR6, 72 W",
        ),
        GPU(
            "mi250x",
            383.0,
            128.0,
            560.0,
            "AMD Instinct MI250X datasheet (OAM): 383 TFLOPs bf16 dense, 128 GB HBM2e, 560 W",
        ),
        GPU(
            "mi300x",
            1307.4,
            192.0,
            750.0,
            "AMD Instinct MI300X datasheet (OAM): 1307.4 TFLOPs bf16 dense, 192 GB HBM3, 750 W",
        ),
        GPU(
            "cpu",
            2.0,
            256.0,
            250.0,
            "placeholder, not a measurement: a two-socket server with AVX-512 bf16",
            "placeholder: pass --achieved-tflops measured on your machine",
        ),
    )
}


def get_gpu(name: str) -> GPU:
    key = name.lower()
    if key not in GPUS:
        near = difflib.get_close_matches(key, GPUS, n=1, cutoff=0.4)
        hint = f"did you mean '{near[0]}'?" if near else "known: " + ", ".join(GPUS)
        raise BloomforgeError(f"unknown --gpu '{name}' ({hint})")
    return GPUS[key]


def gpu_from_device_name(device_name: str) -> GPU | None:
    """The table entry for a name as `torch.cuda.get_device_name` reports it, None if unknown.

    E.g. "NVIDIA H100 80GB HBM3" -> h100-sxm, "NVIDIA A100-SXM4-40GB" -> a100-40gb.
    """
    name = device_name.lower()
    rules = (
        ("h200", "h200"),
        ("h100", "h100-pcie" if "pcie" in name else "h100-sxm"),
        ("a100", "a100-40gb" if "40gb" in name else "a100-80gb"),
        ("v100", "v100"),
        ("mi300x", "mi300x"),
        ("mi250x", "mi250x"),
        (" l4", "l4"),
    )
    return next((GPUS[key] for frag, key in rules if frag in f" {name}"), None)
