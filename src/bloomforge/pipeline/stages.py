"""The stages of `bloomforge run`, each a call into its package's Python API.

In: a `runner.Context` (run folder + recipe). Out: the stage's folder in the run and a dict of
details for its record:

  corpus    corpus/<source>.jsonl + manifest.json        data.corpus.gather_corpus
  data      data/documents/, data/stats.json             data.prepare.prepare
  tokenizer tokenizer/tokenizer.json, fertility.json     tokenizer.train.train_tokenizer,
                                                         tokenizer.report.fertility_report
  tokens    heldout/<lang>.jsonl, tokens/manifest.json   data.tokenize.tokenize_corpus
  train     train/ (checkpoints, metrics.jsonl)           training.train.train
  mtf       xp3/<lang>.jsonl + manifest.json              mtf.build.build
  finetune  finetune/ (checkpoints, metrics.jsonl,        training.train.train (data.mtf),
            rank_eval.json: before and after)             evaluation.run.evaluate (prompts)
  eval      eval/results.json                             evaluation.run.evaluate,
                                                          model.generate.generate_text
  export    hf/ (BloomForCausalLM folder)                 interop.hf.export_hf, check_export
            (eval and export take finetune/ when the recipe finetunes, else train/)
Each stage calls the same library function as the stage's own CLI command; the recipe is the
one `bloomforge.recipe.Recipe` (`train` and `finetune` take it with the run's paths filled in).
  report    report.html, MODEL_CARD.md, DATA_CARD.md      pipeline.report
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from bloomforge import files
from bloomforge.errors import BloomforgeError
from bloomforge.files import atomic_directory
from bloomforge.pipeline.layout import SCRATCH_PREFIX, RunLayout
from bloomforge.pipeline.runner import Context, Stage, Stopped, clear
from bloomforge.recipe import PrepareConfig, Recipe

L = RunLayout(Path())  # relative names: a stage's outputs, checked under any run folder


def _rel(path: Path) -> str:
    return path.as_posix()


def _documents(ctx: Context) -> Path:
    path = ctx.layout.documents
    if not path.is_dir():
        raise BloomforgeError(f"{path}: no prepared documents (run the data stage)")
    return path


def corpus_stage(ctx: Context) -> dict[str, Any]:
    from bloomforge.data.corpus import gather_corpus

    with atomic_directory(ctx.layout.corpus) as tmp:
        manifest = gather_corpus(ctx.recipe.corpus, tmp)
    for note in manifest["notes"]:
        ctx.echo(f"[corpus] {note}")
    langs = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in manifest["languages"].items())
    ctx.echo(f"[corpus] {len(manifest['sources'])} sources; {langs}")
    return {"languages": manifest["languages"], "skipped": manifest["skipped"]}


def prepare_config(ctx: Context) -> PrepareConfig:
    """The recipe's `prepare` section, with the gathered corpus as its sources when it names
    none."""
    cfg = ctx.recipe.prepare
    if ctx.recipe.corpus is not None and not cfg.sources:
        from bloomforge.data.corpus import data_sources

        manifest = json.loads(ctx.layout.corpus_manifest.read_text())
        sources = data_sources(manifest, ctx.layout.corpus.resolve())
        cfg = dataclasses.replace(cfg, sources=sources)
    return cfg


def data_stage(ctx: Context) -> dict[str, Any]:
    from bloomforge.data.prepare import prepare

    config = prepare_config(ctx)
    out = ctx.layout.data
    if not ctx.resume:  # new settings: start over (same settings: datatrove skips done tasks)
        clear(out)
    stats = prepare(config, str(out), workers=ctx.recipe.workers)
    return {"summary": {k: v for k, v in (stats or {}).items() if not isinstance(v, dict | list)}}


def tokenizer_stage(ctx: Context) -> dict[str, Any]:
    from bloomforge.documents.inputs import ReadStats, parse_inputs, read_documents
    from bloomforge.tokenizer.fertility import load_eval_texts
    from bloomforge.tokenizer.report import fertility_report
    from bloomforge.tokenizer.train import save_trained, train_tokenizer

    cfg, out = ctx.recipe.tokenizer, ctx.layout.tokenizer
    specs = parse_inputs([str(_documents(ctx))])
    result = train_tokenizer(
        specs, cfg.vocab_size, cfg.alpha, cfg.max_bytes_per_language, cfg.seed, cfg.min_frequency
    )
    save_trained(out, result, cfg.vocab_size)
    # Fertility text: the user's, else the first documents of each language (whitespace words).
    if cfg.fertility:
        eval_specs = parse_inputs(cfg.fertility)
    else:
        sample: dict[str, list[str]] = defaultdict(list)
        short = set(result.plan.languages)  # stop reading once every language has its sample
        for doc in read_documents(specs, ReadStats()):
            if len(sample[doc.language]) < cfg.fertility_docs:
                sample[doc.language].append(doc.text)
                if len(sample[doc.language]) == cfg.fertility_docs:
                    short.discard(doc.language)
                    if not short:
                        break
        text_file = ctx.layout.fertility_text
        with files.atomic_file(text_file) as f:
            for lang, texts in sample.items():
                for t in texts:
                    f.write(json.dumps({"text": t, "language": lang}, ensure_ascii=False) + "\n")
        eval_specs = parse_inputs([str(text_file)])
    report = fertility_report(out, load_eval_texts(eval_specs))
    report.write(out)
    vocab = result.tokenizer.get_vocab_size()
    ctx.echo(f"[tokenizer] {vocab} tokens; {len(report.table['languages'])} languages in fertility")
    return {"vocab_size": vocab, "documents": result.read_stats.documents}


def heldout_strides(counts: dict[str, int], every: int, cap: int) -> dict[str, int]:
    """Per language, hold out every k-th document: k = `every`, smaller for a language with
    fewer than `every * cap` documents so that it still gets up to `cap` (never k < 2)."""
    return {lang: max(2, min(every, n // max(cap, 1))) for lang, n in counts.items()}


def tokens_stage(ctx: Context) -> dict[str, Any]:
    """Hold out a few documents per language (perplexity text, prompts), tokenize the rest."""
    import tempfile
    from collections import Counter

    from bloomforge.data.tokenize import safe_segment, tokenize_corpus
    from bloomforge.documents.inputs import ReadStats, parse_inputs, read_documents

    cfg, stats = ctx.recipe.tokens, ReadStats()
    for litter in ctx.layout.tokens_scratch():  # left by a killed attempt
        clear(litter)
    specs = parse_inputs([str(_documents(ctx))])
    counts = Counter(doc.language for doc in read_documents(specs))  # pass 1: sizes
    strides = heldout_strides(counts, cfg.heldout_every, cfg.heldout_docs)
    seen: Counter[str] = Counter()
    held: dict[str, list[str]] = defaultdict(list)
    with tempfile.TemporaryDirectory(dir=ctx.run, prefix=SCRATCH_PREFIX) as tmp:
        train_file = Path(tmp) / "train.jsonl"
        with open(train_file, "w", encoding="utf-8") as f:  # files: scratch, removed after
            for doc in read_documents(specs, stats):
                lang = doc.language
                seen[lang] += 1
                if seen[lang] % strides[lang] == 0 and len(held[lang]) < cfg.heldout_docs:
                    held[lang].append(doc.text)
                    continue
                meta = {"language": lang, "source": doc.source}
                f.write(json.dumps({"text": doc.text, "metadata": meta}, ensure_ascii=False))
                f.write("\n")
        with atomic_directory(ctx.layout.heldout) as out:
            for lang, texts in sorted(held.items()):
                with files.atomic_file(out / ctx.layout.heldout_file(safe_segment(lang)).name) as f:
                    for t in texts:
                        f.write(json.dumps({"text": t, "language": lang}, ensure_ascii=False))
                        f.write("\n")
        manifest = tokenize_corpus(
            ctx.layout.tokenizer,
            [str(train_file)],
            ctx.layout.tokens,
            workers=ctx.recipe.workers,
            shard_tokens=cfg.shard_tokens,
        )
    tokens = sum(s["tokens"] for s in manifest["shards"])
    ctx.echo(f"[tokens] {tokens:,} tokens; held out {sum(map(len, held.values()))} documents")
    return {"tokens": tokens, "heldout": {k: len(v) for k, v in held.items()}}


def training_recipe(ctx: Context) -> Recipe:
    """The recipe the train stage runs (`bloomforge train`'s): the run's own, its loader on
    OUT/tokens, its tokenizer OUT/tokenizer, its run folder OUT/train."""
    r = ctx.recipe
    return dataclasses.replace(
        r,
        data=dataclasses.replace(r.data, tokens=str(ctx.layout.tokens)),
        tokenizer=dataclasses.replace(r.tokenizer, path=str(ctx.layout.tokenizer)),
        out=str(ctx.layout.train),
    )


def train_stage(ctx: Context) -> dict[str, Any] | Stopped:
    from bloomforge.training.train import train

    out = ctx.layout.train
    if not ctx.resume:
        clear(out)
    result = train(training_recipe(ctx))
    if result.stopped:  # saved a checkpoint; the next `run` resumes from it
        return Stopped(result.stopped)
    keys = ("step", "tokens", "skipped", "skip_reasons", "emissions_kg")
    return {k: result.summary[k] for k in keys}


def mtf_stage(ctx: Context) -> dict[str, Any]:
    from bloomforge.mtf.build import Task, build

    cfg = ctx.recipe.mtf
    if not cfg.tasks or not cfg.templates:
        raise BloomforgeError("mtf: set mtf.templates and mtf.tasks (dataset name: path)")
    tasks = [Task(name, path) for name, path in cfg.tasks.items()]
    manifest = build(
        tasks, cfg.templates, ctx.layout.xp3, max_per_dataset=cfg.max_per_dataset, seed=cfg.seed
    )
    total = manifest["totals"]["written"]
    ctx.echo(f"[mtf] {total:,} prompted records in {len(manifest['files'])} language(s)")
    return {"records": total, "languages": sorted(manifest["files"])}


def finetune_recipe(ctx: Context) -> Recipe:
    """The recipe the finetune stage runs (`bloomforge finetune`'s): the `finetune` section's
    data, train and eval in place of the run's, on OUT/xp3, from the trained model (or
    `finetune.init`, whose shape and tokenizer it then takes), into OUT/finetune."""
    from bloomforge.model.config import ModelConfig

    r, ft = ctx.recipe, ctx.recipe.finetune
    return dataclasses.replace(
        r,
        model=ModelConfig(),  # the shape is the init's
        data=dataclasses.replace(ft.data, mtf=str(ctx.layout.xp3)),
        tokenizer=dataclasses.replace(
            r.tokenizer, path=None if ft.init else str(ctx.layout.tokenizer)
        ),
        train=ft.train,
        eval=ft.eval,
        init=ft.init or str(ctx.layout.train),
        out=str(ctx.layout.finetune),
    )


def _rank_eval(path: str | Path, cfg, device: str) -> dict[str, Any]:
    """Prompted rank evaluation of the model at `path` (a checkpoint, run or HF folder)."""
    from bloomforge.evaluation.run import evaluate, load_scorer

    return evaluate(load_scorer(path, device, cfg.batch_size), cfg)["prompted"]


def finetune_stage(ctx: Context) -> dict[str, Any] | Stopped:
    from bloomforge.devices import resolve_device
    from bloomforge.training.train import train

    ft = ctx.recipe.finetune
    out = ctx.layout.finetune
    if not ctx.resume:
        clear(out)
    recipe = finetune_recipe(ctx)
    device = resolve_device(ft.train.device, "finetune.train.device")
    before = _rank_eval(recipe.init, ft.eval, device) if ft.eval.tasks else None
    result = train(recipe)
    if result.stopped:  # saved a checkpoint; the next `run` resumes from it
        return Stopped(result.stopped)
    details = {k: result.summary[k] for k in ("step", "tokens", "skipped", "skip_reasons")}
    loader = result.loader  # the mixture's tokens per language, as the loader counted them
    details["mixture_tokens"] = {
        g: loader.tokens(g) + loader.tokens(g, "valid") for g in loader.groups
    }
    if before is not None:
        after = _rank_eval(out, ft.eval, device)
        files.write_json(
            ctx.layout.rank_eval, {"before": before, "after": after}, ensure_ascii=True
        )
        for task in after:
            for lang, s in after[task]["summary"].items():
                b = before[task]["summary"][lang]["median"]
                ctx.echo(f"[finetune] {task} {lang}: median acc {b:.3f} -> {s['median']:.3f}")
        details["rank_eval"] = {
            task: {lang: s["median"] for lang, s in after[task]["summary"].items()}
            for task in after
        }
    return details


def _prompts(ctx: Context) -> dict[str, list[str]]:
    cfg = ctx.recipe.eval.generate
    if cfg.prompts:
        return cfg.prompts
    from bloomforge.documents.inputs import ReadStats, parse_inputs, read_documents

    prompts: dict[str, list[str]] = defaultdict(list)
    held = ctx.layout.heldout
    if held.is_dir() and any(held.iterdir()):
        for doc in read_documents(parse_inputs([str(held)]), ReadStats()):
            words = doc.text.split()[: cfg.prompt_words]
            if words and len(prompts[doc.language]) < cfg.prompts_per_language:
                prompts[doc.language].append(" ".join(words))
    return dict(prompts)


def eval_stage(ctx: Context) -> dict[str, Any]:
    from bloomforge.checkpoint import resolve_checkpoint
    from bloomforge.devices import resolve_device
    from bloomforge.evaluation.run import evaluate, load_scorer
    from bloomforge.model.generate import Sampling, generate_text

    cfg = ctx.recipe.eval
    device = resolve_device(ctx.recipe.train.device, "train.device")
    model = ctx.layout.final_model(ctx.recipe.finetune is not None)
    scorer = load_scorer(model, device, cfg.batch_size)
    heldout = ctx.layout.heldout
    inputs = [f"{k}={v}" for k, v in cfg.perplexity.items()]
    if not inputs and any(heldout.glob("*.jsonl")):
        inputs = [str(heldout)]
    results: dict[str, Any] = {"checkpoint": str(resolve_checkpoint(model))}
    results.update(evaluate(scorer, cfg, inputs))
    gen = cfg.generate
    sampling = Sampling(
        max_new_tokens=gen.max_new_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        seed=gen.seed,
    )
    # One batch for every language: one seeded random stream, a different draw for each row.
    pairs = [(lang, p) for lang, prompts in _prompts(ctx).items() for p in prompts]
    texts = generate_text(scorer.model, scorer.tokenizer, [p for _, p in pairs], sampling, device)
    results["generations"] = {}
    for (lang, prompt), text in zip(pairs, texts, strict=True):
        results["generations"].setdefault(lang, []).append({"prompt": prompt, "continuation": text})
    with atomic_directory(ctx.layout.eval) as tmp:
        files.write_json(tmp / ctx.layout.eval_results.name, results)
    ppl = results.get("perplexity", {})
    ctx.echo(
        "[eval] "
        + ", ".join(f"{k} bpb {v['bits_per_byte']:.2f}" for k, v in ppl.items() if k[0] != "_")
    )
    return {"languages": sorted(k for k in ppl if not k.startswith("_"))}


def export_stage(ctx: Context) -> dict[str, Any]:
    from bloomforge.interop.hf import check_export, export_hf

    model = ctx.layout.final_model(ctx.recipe.finetune is not None)
    out = export_hf(model, ctx.layout.hf)
    details: dict[str, Any] = {"folder": str(out)}
    if ctx.recipe.export.check:
        details["check"] = check_export(model, out)
        ctx.echo(f"[export] transformers logits match ours (max |diff| {details['check']:.2e})")
    return details


def report_stage(ctx: Context) -> dict[str, Any]:
    from bloomforge.pipeline.report import write_report

    files = write_report(ctx.run, ctx.recipe)
    ctx.echo(f"[report] {', '.join(str(f) for f in files)}")
    return {"files": [f.name for f in files]}


def pipeline_stages(recipe: Recipe) -> list[Stage]:
    """The stages of `recipe` in order (corpus only when the recipe has a corpus section); a
    one-line error for a key `bloomforge run` sets itself."""
    from bloomforge.typed_config import ConfigError

    for key, value, what in (
        ("data.tokens", recipe.data.tokens, "OUT/tokens"),
        ("data.mtf", recipe.data.mtf, "OUT/xp3"),
        ("tokenizer.path", recipe.tokenizer.path, "OUT/tokenizer"),
        ("out", recipe.out, "--out"),
        ("init", recipe.init, "it trains from scratch; finetune.init starts the finetune stage"),
    ):
        if value is not None:
            raise ConfigError(f"key '{key}': set by `bloomforge run` ({what}); remove it")
    stages = []
    if recipe.corpus is not None:
        stages.append(Stage("corpus", (), (_rel(L.corpus_manifest),), corpus_stage))
    data_needs = ("corpus",) if recipe.corpus is not None else ()
    stages += [
        Stage("data", data_needs, (_rel(L.documents),), data_stage),
        Stage("tokenizer", ("data",), (_rel(L.tokenizer_json),), tokenizer_stage),
        Stage(
            "tokens",
            ("data", "tokenizer"),
            (_rel(L.tokens_manifest), _rel(L.heldout)),
            tokens_stage,
        ),
        Stage("train", ("tokens",), (_rel(L.train_checkpoints),), train_stage),
    ]
    final: tuple[str, ...] = ("train",)
    if recipe.finetune is not None:
        ft_needs = ("mtf",) if recipe.finetune.init else ("mtf", "train")
        stages += [
            Stage("mtf", (), (_rel(L.xp3_manifest),), mtf_stage),
            Stage("finetune", ft_needs, (_rel(L.finetune_checkpoints),), finetune_stage),
        ]
        final = ("train", "finetune")
    stages += [
        Stage("eval", (*final, "tokens"), (_rel(L.eval_results),), eval_stage),
        Stage("export", final, (_rel(L.hf_config),), export_stage),
        Stage(
            "report",
            ("data", "tokenizer", "tokens", *final, "eval", "export"),
            tuple(_rel(p) for p in L.reports),
            report_stage,
        ),
    ]
    return stages
