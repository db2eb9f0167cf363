"""Ablation results as tables and plots.

In: the per-variant result dicts of `bloomforge.science.ablate.run_grid` and the grid's eval
settings. Out: OUT/report.md (markdown table + notes), OUT/results.csv (the same columns),
OUT/results.json (everything), OUT/loss_curves.png (training loss of every variant against
tokens) and OUT/extrapolation.png (validation loss against evaluation length), all written
atomically; `markdown_table` is also what the command prints.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from bloomforge import files
from bloomforge.science.ablate import EvalSpec, Grid, is_number
from bloomforge.tables import decimals, md_table


def _fmt(x: Any, digits: int = 4) -> str:
    """A result with `digits` decimals; n/a when missing or not finite (a diverged loss)."""
    return decimals(x if is_number(x) else None, digits, missing="n/a")


def table_rows(results: list[dict[str, Any]], spec: EvalSpec) -> list[dict[str, str]]:
    """One row per variant: column name -> text (the same for markdown and CSV)."""
    groups = sorted({g for r in results for g in r["valid"]["groups"]})
    rows = []
    for r in results:
        row = {"variant": r["name"], "params": f"{r['params']:,}"}
        row["valid loss (mean)"] = _fmt(r["valid"]["mean"])
        for g in groups:
            row[f"valid {g}"] = _fmt(r["valid"]["groups"].get(g))
        for k in spec.extrapolation:
            e = r["extrapolation"][str(k)]
            row[f"loss @{k}x ({e['length']})"] = _fmt(e["mean"])
        row["final train loss"] = _fmt(r["final_train_loss"])
        row["tokens/s"] = _fmt(r["tokens_per_s"], 0)
        for task, t in (r.get("tasks") or {}).items():
            row[f"{task} {t['metric']}"] = _fmt(t["value"])
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    """The rows as a markdown table, columns those of the first row ('' when there is none)."""
    if not rows:
        return ""
    cols = list(rows[0])
    return md_table(cols, [[r.get(c, "") for c in cols] for r in rows])


def _atomic_text(path: Path, text: str) -> None:
    files.write_text(path, text)


def _notes(results: list[dict[str, Any]]) -> list[str]:
    notes = []
    for r in results:
        for k, e in r["extrapolation"].items():
            if e["mean"] is None and e["note"]:
                notes.append(f"- {r['name']} @{k}x: n/a ({e['note']})")
    return notes


def write_report(grid: Grid, results: list[dict[str, Any]], out: str | Path) -> dict[str, Path]:
    """Write report.md, results.csv, results.json and the two plots; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(results, grid.eval)
    table = markdown_table(rows)
    first = grid.variants[0].recipe
    budget = first.train.max_tokens
    header = [
        f"# Ablation: {grid.path.name}",
        "",
        f"Varied: {', '.join(f'`{k}` {v}' for k, v in grid.vary.items())}. "
        f"Shared budget: {budget if budget is not None else first.train.decay_tokens:,} tokens "
        f"at sequence length {first.data.seq_len}, seed {first.seed}.",
        "",
        "Validation loss: held-out windows of every group (mean = unweighted mean of groups). "
        f"`loss @kx`: held-out loss at k x the training length ({grid.eval.samples} windows per "
        "group at 1x, samples // k at kx). tokens/s: median training throughput from "
        "metrics.jsonl (first step left out).",
        "",
        table,
        "",
    ]
    notes = _notes(results)
    if notes:
        header += ["Notes:", *notes, ""]
    header += ["![training loss](loss_curves.png)", "", "![extrapolation](extrapolation.png)", ""]
    paths = {
        "report": out / "report.md",
        "csv": out / "results.csv",
        "json": out / "results.json",
        "loss_plot": out / "loss_curves.png",
        "extrapolation_plot": out / "extrapolation.png",
    }
    _atomic_text(paths["report"], "\n".join(header))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["variant"])
    writer.writeheader()
    writer.writerows(rows)
    _atomic_text(paths["csv"], buf.getvalue())
    doc = {"grid": str(grid.path), "vary": grid.vary, "variants": results}
    _atomic_text(paths["json"], json.dumps(doc, indent=2) + "\n")
    _plot_curves(results, paths["loss_plot"])
    _plot_extrapolation(results, grid.eval, paths["extrapolation_plot"])
    return paths


def _save(fig: Any, path: Path) -> None:
    files.write_figure(path, fig, dpi=120, bbox_inches="tight")


def _plot_curves(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        if r["curve"]:
            tokens, loss = zip(*r["curve"], strict=True)
            ax.plot(tokens, loss, label=r["name"], linewidth=1.2)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("training loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def _plot_extrapolation(results: list[dict[str, Any]], spec: EvalSpec, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        pts = [
            (e["length"], e["mean"])
            for e in (r["extrapolation"][str(k)] for k in spec.extrapolation)
            if is_number(e["mean"])
        ]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=r["name"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel("validation loss")
    ax.set_title("length extrapolation (trained at the smallest length)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
