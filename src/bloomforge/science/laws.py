"""Scaling laws as values: loss as a function of N (parameters) and D (tokens), and the
compute-optimal split of a FLOP budget C = 6ND between them.

In: a law's form and parameters (published ones by name, or a `scaling fit` json). Out: predicted
loss and the optimal (N, D) for a compute budget.

Forms:
- "chinchilla": L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022, eq. 2). Its optimum under
  C = 6ND is closed-form (eq. 4): N_opt = G (C/6)^(β/(α+β)), D_opt = G^-1 (C/6)^(α/(α+β)),
  G = (αA / (βB))^(1/(α+β)).
- "kaplan": L(N, D) = ((N_c/N)^(α_N/α_D) + D_c/D)^α_D (Kaplan et al. 2020, eq. 1.5); its
  optimum is found numerically.
- "compute": L(C) = E + A/C^γ, a power law in compute alone (Kaplan et al. 2020, eq. 1.3 plus an
  irreducible term); it predicts loss but says nothing about the split.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloomforge.errors import BloomforgeError

PARAM_NAMES = {
    "chinchilla": ("E", "A", "B", "alpha", "beta"),
    "kaplan": ("Nc", "Dc", "alpha_N", "alpha_D"),
    "compute": ("E", "A", "gamma"),
}
TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022, table 3: ~20 tokens per parameter


@dataclass(frozen=True)
class ScalingLaw:
    form: str
    params: dict[str, float]
    source: str = ""
    ci: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.form not in PARAM_NAMES:
            raise ValueError(f"unknown law form '{self.form}' (known: {', '.join(PARAM_NAMES)})")
        missing = [k for k in PARAM_NAMES[self.form] if k not in self.params]
        if missing:
            raise ValueError(f"{self.form} law lacks parameter(s) {', '.join(missing)}")

    def loss(self, n: float, d: float) -> float:
        p = self.params
        if self.form == "chinchilla":
            return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]
        if self.form == "kaplan":
            ratio = p["alpha_N"] / p["alpha_D"]
            return ((p["Nc"] / n) ** ratio + p["Dc"] / d) ** p["alpha_D"]
        return self.loss_at_compute(6.0 * n * d)

    def loss_at_compute(self, c: float) -> float:
        if self.form == "compute":
            return self.params["E"] + self.params["A"] / c ** self.params["gamma"]
        n, d = self.optimal(c)
        return self.loss(n, d)

    def optimal(self, c: float) -> tuple[float, float]:
        """Compute-optimal (N, D) with C = 6ND (Kaplan et al. 2020, section 2.1)."""
        if self.form == "compute":
            raise BloomforgeError("a 'compute' law L(C) does not say how to split C into N and D")
        if self.form == "chinchilla":
            p = self.params
            a, b = p["alpha"], p["beta"]
            g = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))  # Hoffmann et al. 2022, eq. 4
            n = g * (c / 6.0) ** (b / (a + b))
            return n, c / (6.0 * n)
        from scipy.optimize import minimize_scalar

        lo, hi = math.log(1e3), math.log(c / 6.0 / 1e3)  # at least 1k params and 1k tokens
        res = minimize_scalar(
            lambda x: self.loss(math.exp(x), c / (6.0 * math.exp(x))),
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-9},
        )
        n = math.exp(res.x)
        return n, c / (6.0 * n)

    def to_dict(self) -> dict[str, Any]:
        return {"form": self.form, "params": self.params, "ci": self.ci, "source": self.source}

    def describe(self) -> str:
        p = self.params
        if self.form == "chinchilla":
            return (
                f"L(N, D) = {p['E']:.4g} + {p['A']:.4g}/N^{p['alpha']:.4g} "
                f"+ {p['B']:.4g}/D^{p['beta']:.4g}"
            )
        if self.form == "kaplan":
            return (
                f"L(N, D) = (({p['Nc']:.4g}/N)^({p['alpha_N']:.4g}/{p['alpha_D']:.4g}) "
                f"+ {p['Dc']:.4g}/D)^{p['alpha_D']:.4g}"
            )
        return f"L(C) = {p['E']:.4g} + {p['A']:.4g}/C^{p['gamma']:.4g}"


# Published fits of L(N, D) = E + A/N^α + B/D^β.
PUBLISHED = {
    # Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models"), section 3.3,
    # Approach 3.
    "hoffmann": ScalingLaw(
        "chinchilla",
        {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
        "Hoffmann et al. 2022, Approach 3",
    ),
    # Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt", Epoch AI), eq. 4:
    # the refit on Chinchilla's own data points; its optimum agrees with Approaches 1 and 2.
    "epoch": ScalingLaw(
        "chinchilla",
        {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
        "Besiroglu et al. 2024 (Epoch AI replication of Approach 3)",
    ),
}


def chinchilla_rule(c: float, tokens_per_param: float = TOKENS_PER_PARAM) -> tuple[float, float]:
    """D = 20 N with C = 6ND: N = sqrt(C / (6 * 20)) (Hoffmann et al. 2022, table 3)."""
    n = math.sqrt(c / (6.0 * tokens_per_param))
    return n, tokens_per_param * n


def load_law(path: str | Path) -> ScalingLaw:
    """A law written by `bloomforge scaling fit --out`."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise BloomforgeError(f"{path}: no such law file") from e
    except json.JSONDecodeError as e:
        raise BloomforgeError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or "form" not in data or "params" not in data:
        raise BloomforgeError(f"{path}: not a scaling law (needs keys 'form' and 'params')")
    try:
        return ScalingLaw(
            data["form"],
            {k: float(v) for k, v in data["params"].items()},
            str(data.get("source", path)),
            data.get("ci") or {},
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise BloomforgeError(f"{path}: {e}") from e
