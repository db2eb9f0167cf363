"""Every advertised model and training option on the path `bloomforge train` runs.

Each option goes through `Trainer.train_step` on batches of several rows without padding (what
training feeds the model), and the assertions would fail if the option did nothing:
- implementations that must agree do agree: sdpa vs reference attention (loss and every
  gradient), compile vs eager, activation recompute vs not, and FlexAttention's forward (eager
  and compiled with inductor: PyTorch has no flex backward on CPU) vs sdpa, also on packed
  documents and prefix-LM batches;
- options that change the model or the objective change the loss (positions, MLP, embedding
  LayerNorm, prefix-LM, loss on targets only, position reweighting, precision).
Plus the regression tests of issue 15: flex with ALiBi on multi-row batches, prefix-LM that
trained as causal, validation that computed the output-weight gradient under no_grad, and
`bloomforge train model.attn_impl=flex` on a CPU.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from bloomforge.cli import main
from bloomforge.model import BloomLM
from bloomforge.model.config import ModelConfig
from bloomforge.recipe import load_recipe
from bloomforge.training.loop import Trainer
from bloomforge.training.objective import IGNORE, Objective
from token_data import corpus_lines, write_token_folder

POSITIONS = ["alibi", "none", "learned", "sinusoidal", "rotary"]
MLPS = ["gelu", "swiglu", "geglu", "reglu"]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens")
    write_token_folder(out, {("ud", "fr"): corpus_lines("fr", 120)})
    return out


def _trainer(tokens, out, **extra) -> Trainer:
    base = {
        "model": "micro",
        "data.tokens": tokens,
        "data.seq_len": 24,
        "train.global_batch_size": 4,
        "train.micro_batch_size": 2,  # two micro-batches of two rows, no padding
        "train.lr": 1e-3,
        "train.warmup_tokens": 0,
        "train.decay_tokens": 10_000,
        "train.max_tokens": 10_000,
        "train.precision": "fp32",
        "train.save_every": 0,
        "out": out,
        **extra,
    }
    return Trainer(load_recipe(None, [f"{k}={v}" for k, v in base.items()]))


def _step(tokens, out, **extra) -> tuple[float, dict[str, torch.Tensor]]:
    """The first train_step's loss and the gradients the optimizer received."""
    trainer = _trainer(tokens, out, **extra)
    grads: dict[str, torch.Tensor] = {}
    # checkpoint_wrapper and compile wrap blocks; the parameters' own names stay
    wrappers = ("_checkpoint_wrapped_module.", "_orig_mod.")
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    for key, name in names.items():
        for w in wrappers:
            name = name.replace(w, "")
        names[key] = name

    def record(opt, args, kwargs):
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    grads[names[id(p)]] = p.grad.detach().float().clone()

    trainer.optimizers[0].register_step_pre_hook(record)
    metrics = trainer.train_step()
    assert metrics.get("skip_reason") is None, metrics
    return metrics["loss"], grads


def _assert_same(a, b, rtol=1e-4, atol=1e-6):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=rtol, atol=atol, msg=name)


# -- options that change the model or the objective -------------------------------------------
@pytest.fixture(scope="module")
def baseline(tokens, tmp_path_factory):
    return _step(tokens, tmp_path_factory.mktemp("base") / "run")


@pytest.mark.parametrize(
    "key,value",
    [("model.position", p) for p in POSITIONS[1:]]
    + [("model.mlp", m) for m in MLPS[1:]]
    + [("model.embedding_layernorm", "false"), ("model.attention", "prefix_lm")]
    + [("model.hidden_dropout", "0.1"), ("model.attention_dropout", "0.1")]
    + [("train.reweight_loss_based_on_position_frequency", "true")]
    + [("train.precision", "bf16"), ("train.precision", "fp16")],
)
def test_each_option_runs_and_changes_the_step(tokens, tmp_path, baseline, key, value):
    extra = {"train.initial_scale_power": 8} if value == "fp16" else {}  # no overflow at step 1
    loss, grads = _step(tokens, tmp_path / "run", **{key: value}, **extra)
    assert torch.isfinite(torch.tensor(loss))
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert loss != baseline[0], f"{key}={value} gave the baseline's loss"
    if key == "train.precision":
        assert loss == pytest.approx(baseline[0], rel=2e-2)  # rounding only, same model


def test_loss_on_targets_only_changes_the_prefix_lm_loss(tokens, tmp_path):
    on = _step(tokens, tmp_path / "a", **{"model.attention": "prefix_lm"})
    off = _step(
        tokens,
        tmp_path / "b",
        **{"model.attention": "prefix_lm", "train.loss_on_targets_only": "false"},
    )
    assert on[0] != off[0]


# -- implementations that must agree ----------------------------------------------------------
@pytest.mark.parametrize(
    "position,attention", list(itertools.product(POSITIONS, ["causal", "prefix_lm"]))
)
def test_sdpa_and_reference_attention_agree_in_train_step(tokens, tmp_path, position, attention):
    kw = {"model.position": position, "model.attention": attention}
    sdpa = _step(tokens, tmp_path / "s", **kw, **{"model.attn_impl": "sdpa"})
    ref = _step(tokens, tmp_path / "r", **kw, **{"model.attn_impl": "reference"})
    _assert_same(sdpa, ref)


@pytest.mark.parametrize("attention", ["causal", "prefix_lm"])
def test_activation_checkpointing_gives_the_same_step(tokens, tmp_path, baseline, attention):
    kw = {"model.attention": attention, "model.mlp": "swiglu"}
    plain = _step(tokens, tmp_path / "p", **kw)
    recompute = _step(tokens, tmp_path / "r", **kw, **{"train.activation_checkpointing": "true"})
    _assert_same(plain, recompute, rtol=1e-6, atol=1e-7)


def test_compile_gives_the_same_step(tokens, tmp_path):
    kw = {"model.attention": "prefix_lm", "train.activation_checkpointing": "true"}
    eager = _step(tokens, tmp_path / "e", **kw)
    compiled = _step(tokens, tmp_path / "c", **kw, **{"train.compile": "true"})
    _assert_same(eager, compiled, rtol=1e-4, atol=1e-5)


# -- FlexAttention: forward on CPU against sdpa -----------------------------------------------
def _model(impl: str, **kw) -> BloomLM:
    cfg = ModelConfig.from_name("micro", attn_impl=impl, **kw)
    return BloomLM.build(cfg, seed=3).eval()


@pytest.mark.parametrize("attention", ["causal", "prefix_lm"])
@pytest.mark.parametrize("position", ["alibi", "rotary"])
def test_flex_forward_matches_sdpa_on_training_batches(attention, position):
    """3 rows, no padding, positions (1, T) as training builds them: the ALiBi score_mod used to
    index positions by batch row (IndexError for row 1); packed documents as a second case."""
    torch.manual_seed(0)
    samples = torch.randint(0, 500, (3, 33))
    batch = Objective(prefix_lm=attention == "prefix_lm", seed=1).batch(samples, [0, 1, 2])
    kw = batch.forward_kwargs()
    docs = torch.tensor([[0] * 10 + [1] * 14 + [2] * 8] * 3)
    with torch.no_grad():
        sdpa = _model("sdpa", attention=attention, position=position)
        flex = _model("flex", attention=attention, position=position)
        for extra in ({}, {"doc_ids": docs}):
            want = sdpa(batch.inputs, **kw, **extra)
            got = flex(batch.inputs, **kw, **extra)
            assert got.item() == pytest.approx(want.item(), rel=1e-5)
            logits_want = sdpa(batch.inputs, prefix_len=batch.prefix_len, **extra)
            logits_got = flex(batch.inputs, prefix_len=batch.prefix_len, **extra)
            torch.testing.assert_close(logits_got, logits_want, rtol=1e-4, atol=1e-5)


def test_flex_forward_compiled_with_inductor_matches_sdpa():
    torch.manual_seed(0)
    samples = torch.randint(0, 500, (3, 33))
    batch = Objective(prefix_lm=True, seed=1).batch(samples, [0, 1, 2])
    sdpa = _model("sdpa", attention="prefix_lm")
    flex = _model("flex", attention="prefix_lm")
    for block in flex.layers.values():
        block.compile(backend="inductor")
    with torch.no_grad():
        want = sdpa(batch.inputs, prefix_len=batch.prefix_len)
        got = flex(batch.inputs, prefix_len=batch.prefix_len)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_train_with_flex_on_cpu_is_a_one_line_error(tokens, tmp_path, capsys):
    code = main(
        [
            "train",
            "recipes/tiny.yaml",
            f"data.tokens={tokens}",
            "model.attn_impl=flex",
            f"out={tmp_path / 'run'}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "model.attn_impl=flex" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


# -- prefix-LM: Megatron's objective ----------------------------------------------------------
def _megatron_masks(tokens: torch.Tensor, prefix: list[int]):
    """megatron/utils.py get_ltor_masks_and_position_ids, per-row prefix, transcribed:
    (attention allowed (B, T, T), loss_mask (B, T))."""
    B, T = tokens.shape
    att = torch.tril(torch.ones(B, T, T))
    loss_mask = torch.ones(B, T)
    for b in range(B):
        att[b, : prefix[b], : prefix[b]] = 1
        loss_mask[b, : prefix[b] - 1] = 0.0
    return att > 0.5, loss_mask


def test_prefix_lm_batch_is_megatrons(tokens, tmp_path):
    samples = torch.randint(0, 500, (64, 25))
    batch = Objective(prefix_lm=True, seed=7).batch(samples, range(64))
    prefix = batch.prefix_len.tolist()
    assert min(prefix) >= 1 and max(prefix) <= 24 and len(set(prefix)) > 5  # randint(1, T)
    allowed, loss_mask = _megatron_masks(batch.inputs, prefix)
    assert torch.equal(batch.targets != IGNORE, loss_mask > 0)
    model = _model("reference", attention="prefix_lm")
    spec = model._mask_spec(64, 24, 0, None, batch.prefix_len, None, None, torch.device("cpu"))
    assert torch.equal(spec.allowed()[:, 0], allowed)
    # the same sample draws the same prefix whatever else is in its batch (any layout, resume)
    again = Objective(prefix_lm=True, seed=7).batch(samples[10:12], [10, 11])
    assert again.prefix_len.tolist() == prefix[10:12]


def test_prefix_lm_loss_is_the_masked_mean_over_targets(tokens, tmp_path):
    samples = torch.randint(0, 500, (2, 25))
    obj = Objective(prefix_lm=True, seed=7, reweight_by_position=True)
    batch = obj.batch(samples, [0, 1])
    model = _model("reference", attention="prefix_lm")
    with torch.no_grad():
        loss = model(batch.inputs, **batch.forward_kwargs())
        logits = model(batch.inputs, prefix_len=batch.prefix_len).double()
    # Megatron: loss_mask (targets only) * reweight_loss_mask_, sum(losses * mask) / mask.sum()
    _, mask = _megatron_masks(batch.inputs, batch.prefix_len.tolist())
    mask = mask.double() * (torch.arange(24, 0, -1).double() / 25 * 2)
    ce = F.cross_entropy(logits.flatten(0, 1), samples[:, 1:].flatten(), reduction="none")
    want = (ce * mask.flatten()).sum() / mask.sum()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_prefix_lm_and_causal_runs_differ_through_the_cli(tokens, tmp_path):
    """Before the fix a prefix_lm run trained as plain causal: bit-identical losses."""
    import json

    def run(name, *extra):
        out = tmp_path / name
        args = ["train", "recipes/tiny.yaml", f"data.tokens={tokens}", "model=micro"]
        args += ["data.seq_len=24", "train.global_batch_size=4", "train.micro_batch_size=2"]
        args += ["train.max_tokens=288", "train.warmup_tokens=0", "train.decay_tokens=288"]
        assert main([*args, f"out={out}", *extra]) == 0
        rows = (out / "metrics.jsonl").read_text().splitlines()
        return [json.loads(r)["loss"] for r in rows if json.loads(r)["kind"] == "train"]

    causal = run("causal")
    prefix = run("prefix", "model.attention=prefix_lm")
    assert len(causal) == len(prefix) == 3
    assert all(a != b for a, b in zip(causal, prefix, strict=True))


# -- validation computes no gradient work -----------------------------------------------------
class _Shapes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes: set[tuple[int, ...]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.shapes.add(tuple(t.shape))
        return out


def test_validation_computes_no_output_weight_gradient(tokens, tmp_path):
    trainer = _trainer(tokens, tmp_path / "run")
    weight_shape = tuple(trainer.model.output_weight.shape)  # (V, h)
    with _Shapes() as seen:
        results = trainer.validate()
    assert results and weight_shape not in seen.shapes
    # and with gradients on, the fused loss does produce it (so the check can fail)
    with _Shapes() as seen:
        trainer.train_step()
    assert weight_shape in seen.shapes
