"""Fitting scaling laws to (N, D, loss) runs, with bootstrap confidence intervals and a plot.

In: a CSV with the parameter count, the token count and the loss (headers N / params / n_params /
model_size, D / tokens, loss, any case; optional name). Out: a `ScalingLaw` (see `laws`), percentile
confidence intervals from a bootstrap over runs, a json file `plan --law` reads, a PNG.

Fitting follows Hoffmann et al. 2022, section 3.3 / appendix D.2: minimise the Huber loss
(δ = 1e-3) between the predicted and observed *log* loss with L-BFGS, from a grid of
initialisations, keeping the best. For the Chinchilla form the prediction is written
log L = LSE(a - α log N, b - β log D, e) with A = e^a, B = e^b, E = e^e, which keeps A, B, E
positive and the problem smooth.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bloomforge import files
from bloomforge.errors import BloomforgeError
from bloomforge.science.laws import ScalingLaw

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, appendix D.2


@dataclass(frozen=True)
class Runs:
    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    names: list[str]

    @property
    def compute(self) -> np.ndarray:
        return 6.0 * self.n * self.d

    def take(self, idx: np.ndarray) -> Runs:
        return Runs(self.n[idx], self.d[idx], self.loss[idx], [self.names[i] for i in idx])


# The header names people give each quantity (any case). The first is the one messages use.
COLUMNS = {
    "parameters": ("N", "params", "n_params", "model_size"),
    "tokens": ("D", "tokens"),
    "loss": ("loss",),
}


def _columns(path: Path, fieldnames: list[str] | None) -> dict[str, str]:
    """Which header of the file holds each quantity; a one-line error if one is absent."""
    header = {c.strip().lower(): c for c in (fieldnames or [])}
    found, problems = {}, []
    for quantity, accepted in COLUMNS.items():
        hits = [header[a.lower()] for a in accepted if a.lower() in header]
        if not hits:
            problems.append(f"no column for {quantity} (accepted, any case: {', '.join(accepted)})")
        elif len(hits) > 1:
            problems.append(f"columns {' and '.join(hits)} both give {quantity}; keep one")
        else:
            found[quantity] = hits[0]
    if problems:
        seen = ", ".join(fieldnames or []) or "none"
        raise BloomforgeError(f"{path}: {'; '.join(problems)} (header: {seen})")
    if "name" in header:
        found["name"] = header["name"]
    return found


def read_runs(path: str | Path) -> Runs:
    """CSV with one run per line: parameters, tokens, loss under any name in `COLUMNS`."""
    path = Path(path)
    if not path.is_file():
        raise BloomforgeError(f"{path}: no such file")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        cols = _columns(path, reader.fieldnames)
        keys = [cols[q] for q in COLUMNS]
        what = f"{keys[0]}, {keys[1]} and {keys[2]}"
        n, d, loss, names = [], [], [], []
        for line, row in enumerate(reader, start=2):
            try:
                vals = [float(row[k]) for k in keys]
            except (TypeError, ValueError):
                raise BloomforgeError(f"{path} line {line}: {what} must be numbers") from None
            if min(vals) <= 0 or not all(map(math.isfinite, vals)):
                raise BloomforgeError(f"{path} line {line}: {what} must be positive")
            n.append(vals[0])
            d.append(vals[1])
            loss.append(vals[2])
            names.append(row.get(cols.get("name", ""), "") or f"run{line - 1}")
    if len(n) < 5:
        raise BloomforgeError(f"{path}: {len(n)} runs; a fit needs at least 5")
    return Runs(np.array(n), np.array(d), np.array(loss), names)


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative, elementwise, divided by δ².

    The scale does not move the minimum, but with δ = 1e-3 the raw sum is ~1e-6 and L-BFGS-B's
    stopping rule (relative decrease against max(|f|, 1)) would stop at the first step.
    """
    a = np.abs(r)
    quad = a <= delta
    value = np.where(quad, 0.5 * r * r, delta * (a - 0.5 * delta)) / delta**2
    grad = np.where(quad, r, delta * np.sign(r)) / delta**2
    return value, grad


def _chinchilla_objective(theta: np.ndarray, ln_n, ln_d, ln_l, delta):
    a, b, e, alpha, beta = theta
    z = np.stack([a - alpha * ln_n, b - beta * ln_d, np.full_like(ln_n, e)])
    zmax = z.max(axis=0)
    w = np.exp(z - zmax)
    lse = zmax + np.log(w.sum(axis=0))
    w /= w.sum(axis=0)  # softmax: d lse / d z
    value, g = _huber(lse - ln_l, delta)
    grad = np.array(
        [
            (g * w[0]).sum(),
            (g * w[1]).sum(),
            (g * w[2]).sum(),
            -(g * w[0] * ln_n).sum(),
            -(g * w[1] * ln_d).sum(),
        ]
    )
    return value.sum(), grad


def _kaplan_objective(theta, ln_n, ln_d, ln_l, delta):
    ln_nc, ln_dc, alpha_n, alpha_d = theta
    alpha_d = max(alpha_d, 1e-6)
    pred = alpha_d * np.logaddexp(alpha_n / alpha_d * (ln_nc - ln_n), ln_dc - ln_d)
    return _huber(pred - ln_l, delta)[0].sum()


def _compute_objective(theta, ln_c, ln_l, delta):
    e, a, gamma = theta
    return _huber(np.logaddexp(e, a - gamma * ln_c) - ln_l, delta)[0].sum()


# Initialisation grids. Hoffmann et al. used α, β in {0, 0.5, ..., 2}, e in {-1, -.5, ..., 1},
# a, b in {0, 5, ..., 25}; "hoffmann" is that grid, "small" a coarser one for quick fits.
GRIDS = {
    "small": {
        "chinchilla": [[0, 5, 10, 20], [0, 5, 10, 20], [-1, 0, 1], [0.25, 0.5, 1], [0.25, 0.5, 1]],
        "kaplan": [[15, 25, 35], [15, 25, 35], [0.05, 0.1, 0.3], [0.05, 0.1, 0.3]],
        "compute": [[-1, 0, 1], [0, 5, 10, 20], [0.05, 0.1, 0.3]],
    },
    "hoffmann": {
        "chinchilla": [
            list(range(0, 30, 5)),
            list(range(0, 30, 5)),
            [-1, -0.5, 0, 0.5, 1],
            [0, 0.5, 1, 1.5, 2],
            [0, 0.5, 1, 1.5, 2],
        ],
        "kaplan": [[10, 20, 30, 40], [10, 20, 30, 40], [0.03, 0.1, 0.3], [0.03, 0.1, 0.3]],
        "compute": [[-1, -0.5, 0, 0.5, 1], [0, 5, 10, 15, 20, 25], [0.03, 0.1, 0.3, 1]],
    },
}


def _minimise(
    form: str, runs: Runs, starts, delta: float, polish: int = 4
) -> tuple[np.ndarray, float]:
    from scipy.optimize import minimize

    ln_n, ln_d, ln_l = np.log(runs.n), np.log(runs.d), np.log(runs.loss)
    if form == "chinchilla":
        fun, jac = (lambda t: _chinchilla_objective(t, ln_n, ln_d, ln_l, delta)), True
    elif form == "kaplan":
        fun, jac = (lambda t: _kaplan_objective(t, ln_n, ln_d, ln_l, delta)), None
    else:
        ln_c = np.log(runs.compute)
        fun, jac = (lambda t: _compute_objective(t, ln_c, ln_l, delta)), None

    def value(x: np.ndarray) -> float:
        f = fun(x)
        return float(f[0] if jac else f)

    # Score every grid point, polish the best few: running L-BFGS from all 432 (or Hoffmann's
    # 4500) starts costs minutes, and starts in a bad basin land on worse optima anyway.
    starts = [np.asarray(x0, dtype=float) for x0 in starts]
    with np.errstate(all="ignore"):
        scores = [value(x0) for x0 in starts]
    order = sorted(
        range(len(starts)), key=lambda i: scores[i] if math.isfinite(scores[i]) else math.inf
    )
    best_x, best_f = None, math.inf
    for i in order[:polish]:
        res = minimize(fun, starts[i], jac=jac, method="L-BFGS-B", options={"maxiter": 2000})
        f = float(res.fun)
        if math.isfinite(f) and f < best_f:
            best_x, best_f = res.x, f
    if best_x is None:
        raise BloomforgeError(f"the {form} fit did not converge from any initialisation")
    return best_x, best_f


def _to_law(form: str, x: np.ndarray, source: str) -> ScalingLaw:
    if form == "chinchilla":
        a, b, e, alpha, beta = x
        p = {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}
    elif form == "kaplan":
        ln_nc, ln_dc, alpha_n, alpha_d = x
        p = {"Nc": math.exp(ln_nc), "Dc": math.exp(ln_dc), "alpha_N": alpha_n, "alpha_D": alpha_d}
    else:
        e, a, gamma = x
        p = {"E": math.exp(e), "A": math.exp(a), "gamma": gamma}
    return ScalingLaw(form, {k: float(v) for k, v in p.items()}, source)


@dataclass
class Fit:
    law: ScalingLaw
    x: np.ndarray  # raw optimiser coordinates (log-parameters), the bootstrap's starting point
    objective: float
    n_runs: int


def fit_law(
    runs: Runs,
    form: str = "chinchilla",
    grid: str = "small",
    delta: float = HUBER_DELTA,
    source: str = "fit",
) -> Fit:
    if form not in GRIDS[grid]:
        raise BloomforgeError(f"unknown --form '{form}' (chinchilla, kaplan, compute)")
    starts = list(itertools.product(*GRIDS[grid][form]))
    x, f = _minimise(form, runs, starts, delta)
    return Fit(_to_law(form, x, source), x, f, len(runs.n))


def bootstrap(
    runs: Runs,
    fit: Fit,
    k: int,
    seed: int = 0,
    delta: float = HUBER_DELTA,
    level: float = 95.0,
    compute: float | None = None,
    on_step: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Percentile intervals over `k` refits on runs resampled with replacement (Efron 1979).

    Each refit starts from the full-data optimum and two nudges of it rather than the whole
    grid: the resampled problems sit next to the original one, and 1000 grid searches would
    take minutes.
    """
    rng = np.random.default_rng(seed)
    x0 = fit.x
    starts = [x0, x0 * 1.05, x0 * 0.95]
    samples: dict[str, list[float]] = {name: [] for name in fit.law.params}
    if compute is not None and fit.law.form != "compute":
        samples["N_opt"], samples["D_opt"] = [], []
    m = len(runs.n)
    for _ in range(k):
        idx = rng.integers(0, m, size=m)
        x, _ = _minimise(fit.law.form, runs.take(idx), starts, delta)
        law = _to_law(fit.law.form, x, "bootstrap")
        for name, value in law.params.items():
            samples[name].append(value)
        if "N_opt" in samples:
            n_opt, d_opt = law.optimal(compute)
            samples["N_opt"].append(n_opt)
            samples["D_opt"].append(d_opt)
        if on_step is not None:
            on_step()
    lo, hi = (100 - level) / 2, 100 - (100 - level) / 2
    return {
        name: [float(np.percentile(v, lo)), float(np.percentile(v, hi))]
        for name, v in samples.items()
    }


def plot_fit(runs: Runs, law: ScalingLaw, out: str | Path) -> None:
    """Loss vs compute (C = 6ND): the runs, iso-N curves of the law and its efficient frontier."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = runs.compute
    c_grid = np.logspace(math.log10(c.min()) - 0.3, math.log10(c.max()) + 0.3, 200)
    fig, ax = plt.subplots(figsize=(7, 5))
    sizes = np.unique(runs.n)
    cmap = plt.get_cmap("viridis")
    norm = matplotlib.colors.LogNorm(sizes.min(), max(sizes.max(), sizes.min() * 1.01))
    ax.scatter(c, runs.loss, c=runs.n, cmap=cmap, norm=norm, s=18, zorder=3, label="runs")
    if law.form != "compute":
        shown = sizes if len(sizes) <= 8 else sizes[np.linspace(0, len(sizes) - 1, 8).astype(int)]
        for n in shown:
            ax.plot(
                c_grid,
                [law.loss(n, ci / (6 * n)) for ci in c_grid],
                color=cmap(norm(n)),
                lw=1,
                alpha=0.8,
            )
        frontier = [law.loss(*law.optimal(ci)) for ci in c_grid]
        ax.plot(c_grid, frontier, "k--", lw=1.5, label="compute-optimal frontier")
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label="parameters N (iso-N curves)")
    else:
        ax.plot(c_grid, [law.loss_at_compute(ci) for ci in c_grid], "k--", label="L(C)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C = 6ND (FLOPs)")
    ax.set_ylabel("loss")
    ax.set_title(law.describe(), fontsize=9)
    ax.legend()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        files.write_figure(out, fig, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
