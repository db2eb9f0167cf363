"""CLI of the science stage: `bloomforge plan`, `scaling fit`, `carbon`, `ablate`.

In: argv parsed by `bloomforge.cli`. Out: a text report (or json with `--json`) on stdout and
the files asked for (`--out`, `--plot`). Heavy imports (scipy, matplotlib) stay in handlers.
"""

from __future__ import annotations

import argparse
import json

from bloomforge import files


def register(commands: argparse._SubParsersAction) -> None:
    _add_plan(commands)
    scaling = commands.add_parser("scaling", help="fit scaling laws to (N, D, loss) runs")
    ssub = scaling.add_subparsers(title="scaling commands", metavar="ACTION")
    fit = ssub.add_parser("fit", help="fit a law to runs.csv (columns N, D, loss[, name])")
    fit.add_argument(
        "runs",
        help="CSV with columns N (or params, n_params, model_size), D (or tokens), loss "
        "and optionally name; any case",
    )
    fit.add_argument("--form", choices=("chinchilla", "kaplan", "compute"), default="chinchilla")
    fit.add_argument(
        "--grid",
        choices=("small", "hoffmann"),
        default="small",
        help="initialisation grid (hoffmann: the paper's 4500 starts; slow)",
    )
    fit.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="K",
        help="K resampled refits for percentile confidence intervals",
    )
    fit.add_argument("--ci", type=float, default=95.0, help="interval level in %% (default 95)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--compute", type=float, help="FLOPs budget for the optimal allocation")
    fit.add_argument("--plot", help="PNG of loss vs compute with the fitted iso-N curves")
    fit.add_argument("--out", help="json of the law (read by `plan --law`)")
    fit.add_argument("--json", action="store_true", help="print machine-readable json")
    fit.set_defaults(func=_run_scaling_fit)
    scaling.set_defaults(func=lambda args: (scaling.print_help(), 0)[1])

    carbon = commands.add_parser("carbon", help="energy and CO2 of a run, without and with PUE")
    src = carbon.add_mutually_exclusive_group(required=True)
    src.add_argument("--energy-mwh", type=float, help="IT energy used (MWh), before the PUE")
    src.add_argument("--gpu-hours", type=float, help="GPU-hours (with --gpu)")
    carbon.add_argument("--gpu", default="a100-80gb", help="GPU whose TDP is used (default A100)")
    carbon.add_argument("--gpu-power-w", type=float, help="power per GPU instead of the TDP")
    carbon.add_argument(
        "--utilisation",
        type=float,
        default=1.0,
        help="average fraction of the power drawn (default 1.0)",
    )
    carbon.add_argument(
        "--node-overhead-w",
        type=float,
        default=0.0,
        help="CPU/RAM/network watts per GPU added to the GPU power",
    )
    carbon.add_argument("--pue", type=float, default=1.0, help="power usage effectiveness")
    _add_grid(carbon)
    carbon.add_argument("--json", action="store_true", help="print machine-readable json")
    carbon.set_defaults(func=_run_carbon)

    from bloomforge.science.ablate_cli import add_ablate

    add_ablate(commands)


def _add_grid(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--grid-gco2-per-kwh", type=float, help="grid carbon intensity")
    g.add_argument("--country", help="ISO alpha-3 code for the built-in table (FRA, USA, ...)")


def _add_plan(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("plan", help="compute, memory, time, energy for a budget or a shape")
    p.add_argument("--gpu", default="a100-80gb", help="GPU type (a100-80gb, h100-sxm, ...)")
    p.add_argument("--gpus", type=int, help="number of GPUs")
    p.add_argument("--days", type=float, help="wall-clock days of the budget (with --gpus)")
    p.add_argument("--gpu-hours", type=float, help="budget in GPU-hours")
    p.add_argument(
        "--achieved-tflops",
        type=float,
        help="hardware TFLOPs per GPU actually sustained (default 0.4 x peak)",
    )
    p.add_argument(
        "--recompute",
        action="store_true",
        help="full activation recomputation (8ND FLOPs; BLOOM trained this way)",
    )
    p.add_argument(
        "--selective-recompute",
        action="store_true",
        help="recompute attention only (Korthikanti et al. 2022)",
    )
    p.add_argument("--sequence-parallel", action="store_true")
    p.add_argument(
        "--optimal",
        default="chinchilla",
        help="N/D rule: chinchilla (D = 20N), hoffmann or epoch (fitted laws)",
    )
    p.add_argument("--law", help="a law json from `bloomforge scaling fit --out`")
    p.add_argument("--model", help="preset (bloom-176b, ...) to cost instead of a budget")
    p.add_argument("--tokens", type=float, help="tokens to train --model on")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--zero", type=int, default=1, choices=(0, 1, 2, 3))
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--shapes", type=int, default=5, help="candidate shapes to list")
    p.add_argument("--utilisation", type=float, default=1.0, help="power fraction for energy")
    p.add_argument("--pue", type=float, default=1.0)
    _add_grid(p)
    p.add_argument("--json", action="store_true", help="print machine-readable json")
    p.set_defaults(func=_run_plan)


def _grid(args: argparse.Namespace) -> tuple[float, str] | None:
    from bloomforge.science.carbon import grid_intensity

    if args.grid_gco2_per_kwh is not None:
        return args.grid_gco2_per_kwh, "given"
    if args.country:
        g = grid_intensity(args.country)
        return g.gco2_per_kwh, f"{args.country.upper()}: {g.source}"
    return None


def _run_plan(args: argparse.Namespace) -> int:
    from bloomforge.errors import BloomforgeError
    from bloomforge.hardware import get_gpu
    from bloomforge.model.config import ModelConfig
    from bloomforge.science.carbon import co2_tonnes
    from bloomforge.science.laws import load_law
    from bloomforge.science.memory import Layout
    from bloomforge.science.plan import format_plan, plan_budget, plan_model

    gpu = get_gpu(args.gpu)
    if args.recompute and args.selective_recompute:
        raise BloomforgeError("--recompute and --selective-recompute exclude each other")
    recompute = "full" if args.recompute else ("selective" if args.selective_recompute else "none")
    try:
        layout = Layout(
            tp=args.tp,
            pp=args.pp,
            zero=args.zero,
            micro_batch=args.micro_batch,
            seq_len=args.seq_len,
            recompute=recompute,
            sequence_parallel=args.sequence_parallel,
        )
    except ValueError as e:
        raise BloomforgeError(str(e)) from e
    common = dict(
        gpus=args.gpus,
        tflops=args.achieved_tflops,
        layout=layout,
        utilisation=args.utilisation,
        pue=args.pue,
    )
    if args.model:
        if args.tokens is None:
            raise BloomforgeError("--model needs --tokens (how many tokens to train on)")
        try:
            cfg = ModelConfig.from_name(args.model, max_seq_len=args.seq_len)
        except ValueError as e:
            raise BloomforgeError(str(e)) from e
        plan = plan_model(cfg, args.tokens, gpu, **common)
    else:
        if args.gpu_hours is not None:
            gpu_hours = args.gpu_hours
        elif args.gpus and args.days:
            gpu_hours = args.gpus * args.days * 24.0
        else:
            raise BloomforgeError("give a budget (--gpus N --days D, or --gpu-hours H) or --model")
        law = load_law(args.law) if args.law else None
        plan = plan_budget(
            gpu,
            gpu_hours,
            recompute=recompute == "full",
            rule=args.optimal,
            law=law,
            n_shapes=args.shapes,
            **common,
        )
    grid = _grid(args)
    if grid is not None:
        plan["grid"], plan["grid_source"] = grid
        plan["co2_tonnes"] = co2_tonnes(plan["energy"]["energy_mwh"], grid[0])
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan, gpu.memory_gib))
    return 0


def _run_scaling_fit(args: argparse.Namespace) -> int:
    from bloomforge.science.laws import ScalingLaw
    from bloomforge.science.scaling import bootstrap, fit_law, plot_fit, read_runs

    runs = read_runs(args.runs)
    fit = fit_law(runs, args.form, args.grid, source=f"scaling fit of {args.runs}")
    ci = {}
    if args.bootstrap > 0:
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("bootstrap refits", total=args.bootstrap)
            ci = bootstrap(
                runs,
                fit,
                args.bootstrap,
                seed=args.seed,
                level=args.ci,
                compute=args.compute,
                on_step=lambda: progress.advance(task),
            )
    law = ScalingLaw(fit.law.form, fit.law.params, fit.law.source, ci)
    result = {
        **law.to_dict(),
        "n_runs": fit.n_runs,
        "objective": fit.objective,
        "huber_delta": 1e-3,
        "bootstrap": args.bootstrap,
        "ci_level": args.ci,
    }
    if args.compute is not None:
        result["compute"] = args.compute
        if law.form == "compute":
            result["optimal"] = {"loss": law.loss_at_compute(args.compute)}
        else:
            n, d = law.optimal(args.compute)
            result["optimal"] = {"params": n, "tokens": d, "loss": law.loss(n, d)}
    if args.out:
        files.write_json(args.out, result, indent=2, ensure_ascii=True, newline=False)
    if args.plot:
        plot_fit(runs, law, args.plot)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{law.form} law from {fit.n_runs} runs: {law.describe()}")
    for name, value in law.params.items():
        interval = f"  [{ci[name][0]:.4g}, {ci[name][1]:.4g}]" if name in ci else ""
        print(f"  {name:<8} {value:.4g}{interval}")
    if "optimal" in result:
        o = result["optimal"]
        if "params" in o:
            extra = ""
            if "N_opt" in ci:
                extra = (
                    f"  N {args.ci:g}% CI [{ci['N_opt'][0]:.3e}, {ci['N_opt'][1]:.3e}],"
                    f" D [{ci['D_opt'][0]:.3e}, {ci['D_opt'][1]:.3e}]"
                )
            print(
                f"optimal for C = {args.compute:.3e}: N = {o['params']:.3e}, "
                f"D = {o['tokens']:.3e}, loss {o['loss']:.4f}{extra}"
            )
        else:
            print(f"predicted loss at C = {args.compute:.3e}: {o['loss']:.4f}")
    for what, path in (("law", args.out), ("plot", args.plot)):
        if path:
            print(f"wrote {what} {path}")
    return 0


def _run_carbon(args: argparse.Namespace) -> int:
    from bloomforge.errors import BloomforgeError
    from bloomforge.hardware import get_gpu
    from bloomforge.science.carbon import (
        carbon_report,
        energy_from_gpu_hours,
        energy_from_mwh,
        format_carbon,
    )

    grid = _grid(args)
    if grid is None:
        raise BloomforgeError("give --grid-gco2-per-kwh or --country")
    if args.energy_mwh is not None:
        energy = energy_from_mwh(args.energy_mwh, args.pue)
    else:
        power = args.gpu_power_w if args.gpu_power_w is not None else get_gpu(args.gpu).tdp_w
        energy = energy_from_gpu_hours(
            args.gpu_hours, power, args.utilisation, args.pue, args.node_overhead_w
        )
    report = carbon_report(energy, *grid)
    print(json.dumps(report, indent=2) if args.json else format_carbon(report))
    return 0
