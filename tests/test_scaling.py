"""Scaling-law fits recover known laws from synthetic runs; bootstrap CIs cover the truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bloomforge.cli import main
from bloomforge.science.laws import ScalingLaw, load_law
from bloomforge.science.scaling import Runs, bootstrap, fit_law, read_runs

TRUTH = ScalingLaw("chinchilla", {"E": 1.8, "A": 450.0, "B": 1500.0, "alpha": 0.34, "beta": 0.36})


def synthetic(law: ScalingLaw, noise: float = 0.002, seed: int = 0) -> Runs:
    """A 5 x 6 grid of (N, D) from 10M to 1B params and 1B to 100B tokens, with relative noise."""
    rng = np.random.default_rng(seed)
    n, d = np.meshgrid(np.logspace(7, 9, 5), np.logspace(9, 11, 6))
    n, d = n.ravel(), d.ravel()
    loss = np.array([law.loss(a, b) for a, b in zip(n, d, strict=True)])
    loss *= np.exp(rng.normal(0.0, noise, size=loss.shape))
    return Runs(n, d, loss, [f"r{i}" for i in range(len(n))])


def write_csv(path, runs: Runs) -> None:
    rows = ["name,N,D,loss"] + [
        f"{nm},{a:.6g},{b:.6g},{c:.8g}"
        for nm, a, b, c in zip(runs.names, runs.n, runs.d, runs.loss, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")


def test_chinchilla_fit_recovers_the_generating_law():
    law = fit_law(synthetic(TRUTH), "chinchilla").law
    p = law.params
    assert p["alpha"] == pytest.approx(0.34, abs=0.03)
    assert p["beta"] == pytest.approx(0.36, abs=0.03)
    assert p["E"] == pytest.approx(1.8, abs=0.05)
    # What the law is for: the optimum at a budget beyond the data, within 15%.
    n_true, _ = TRUTH.optimal(1e22)
    assert law.optimal(1e22)[0] == pytest.approx(n_true, rel=0.15)


def test_noise_free_fit_is_exact():
    law = fit_law(synthetic(TRUTH, noise=0.0), "chinchilla").law
    for k, v in TRUTH.params.items():
        assert law.params[k] == pytest.approx(v, rel=1e-3), k


def test_bootstrap_interval_contains_the_truth():
    runs = synthetic(TRUTH, seed=1)
    fit = fit_law(runs, "chinchilla")
    ci = bootstrap(runs, fit, k=40, seed=0, compute=1e22)
    for name in ("E", "alpha", "beta"):
        lo, hi = ci[name]
        assert lo <= TRUTH.params[name] <= hi, (name, lo, hi)
        assert lo <= fit.law.params[name] <= hi
    assert ci["N_opt"][0] <= TRUTH.optimal(1e22)[0] <= ci["N_opt"][1]


def test_kaplan_and_compute_forms_recover_their_laws():
    # Kaplan et al. 2020, eq. 1.5: alpha_N 0.076, alpha_D 0.095, N_c 6.4e13, D_c 1.8e13.
    kaplan = ScalingLaw("kaplan", {"Nc": 6.4e13, "Dc": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.095})
    law = fit_law(synthetic(kaplan, noise=0.0), "kaplan").law
    assert law.params["alpha_N"] == pytest.approx(0.076, rel=0.02)
    assert law.params["alpha_D"] == pytest.approx(0.095, rel=0.02)
    # Numeric optimum of the Kaplan form: a brute-force scan along C = 6ND agrees.
    c = 1e21
    grid = [10 ** (6 + i / 1000) for i in range(6001)]
    n_best = min(grid, key=lambda n: kaplan.loss(n, c / (6 * n)))
    assert kaplan.optimal(c)[0] == pytest.approx(n_best, rel=5e-3)

    power = ScalingLaw("compute", {"E": 1.7, "A": 60.0, "gamma": 0.07})
    n, d = np.meshgrid(np.logspace(7, 9, 4), np.logspace(9, 11, 4))
    c_runs = Runs(
        n.ravel(),
        d.ravel(),
        np.array([power.loss(a, b) for a, b in zip(n.ravel(), d.ravel(), strict=True)]),
        [],
    )
    fitted = fit_law(c_runs, "compute").law
    assert fitted.params["gamma"] == pytest.approx(0.07, rel=0.05)
    assert fitted.loss_at_compute(1e23) == pytest.approx(power.loss_at_compute(1e23), rel=1e-3)


def test_cli_fit_writes_law_plot_and_plan_reads_it(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    write_csv(csv, synthetic(TRUTH))
    out, png = tmp_path / "fit.json", tmp_path / "fit.png"
    argv = [
        "scaling",
        "fit",
        str(csv),
        "--form",
        "chinchilla",
        "--bootstrap",
        "10",
        "--compute",
        "1e22",
        "--out",
        str(out),
        "--plot",
        str(png),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "alpha" in text and "optimal for C" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(out.read_text())
    assert data["form"] == "chinchilla" and set(data["ci"]) >= {"alpha", "beta", "N_opt"}
    law = load_law(out)
    assert main(["plan", "--gpu-hours", "1e5", "--law", str(out), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    n, _ = law.optimal(plan["compute_model_flops"])
    assert plan["optimal"]["params"] == pytest.approx(n)


def test_bad_csv_is_named(tmp_path, capsys):
    bad = tmp_path / "runs.csv"
    bad.write_text("N,D\n1,2\n")
    assert main(["scaling", "fit", str(bad)]) == 2
    assert "no column for loss (accepted, any case: loss)" in capsys.readouterr().err
    bad.write_text("N,D,loss\n" + "1e7,1e9,3.0\n" * 5 + "1e7,many,3.0\n")
    with pytest.raises(Exception, match="line 7"):
        read_runs(bad)
    assert main(["plan", "--gpu-hours", "1e5", "--law", str(tmp_path / "nope.json")]) == 2
    assert "no such law file" in capsys.readouterr().err


def test_cli_fit_accepts_the_usual_column_names(tmp_path, capsys):
    runs = synthetic(TRUTH)

    def fit(header: str, order: tuple[int, ...] = (0, 1, 2)) -> dict:
        path = tmp_path / f"{header.replace(',', '_')}.csv"
        rows = [header] + [
            ",".join((f"{a:.6g}", f"{b:.6g}", f"{c:.8g}")[i] for i in order)
            for a, b, c in zip(runs.n, runs.d, runs.loss, strict=True)
        ]
        path.write_text("\n".join(rows) + "\n")
        assert main(["scaling", "fit", str(path), "--json"]) == 0
        return json.loads(capsys.readouterr().out)["params"]

    canonical = fit("N,D,loss")
    # Every alias at least once, mixed case, columns in another order than N, D, loss.
    assert fit("params,tokens,loss") == canonical
    assert fit("LOSS,Model_Size,D", (2, 0, 1)) == canonical
    assert fit("tokens,n_params,Loss", (1, 0, 2)) == canonical
    assert canonical["alpha"] == pytest.approx(0.34, abs=0.03)


def test_missing_and_doubled_columns_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "runs.csv"
    bad.write_text("size,count,value\n" + "1e7,1e9,3.0\n" * 5)
    assert main(["scaling", "fit", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err
    for quantity, accepted in (
        ("parameters", "N, params, n_params, model_size"),
        ("tokens", "D, tokens"),
        ("loss", "loss"),
    ):
        assert f"no column for {quantity} (accepted, any case: {accepted})" in err
    assert "(header: size, count, value)" in err
    bad.write_text("N,params,D,loss\n" + "1e7,1e7,1e9,3.0\n" * 5)
    assert main(["scaling", "fit", str(bad)]) == 2
    assert "columns N and params both give parameters" in capsys.readouterr().err
