"""The CLI end to end: import (every HF folder layout), export, generate, and its error lines."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import BloomForCausalLM

from bloomforge.checkpoint import load_checkpoint
from bloomforge.cli import main
from bloomforge.tokenizer import byte_level_tokenizer
from helpers import left_padded, tiny_hf_bloom

STAGES = ["data", "tokenizer", "train", "eval", "export", "import", "generate", "plan",
          "scaling", "ablate", "run", "demo", "model"]  # fmt: skip


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for stage in STAGES:
        assert f"\n    {stage}" in out


def test_model_info_176b(capsys):
    code, out, _ = run(capsys, "model", "info", "bloom-176b")
    assert code == 0 and "176,247,271,424" in out and "70 x 14336" in out
    code, out, _ = run(capsys, "model", "info", "bloom-1b7", "--json")
    assert json.loads(out)["params"] == 1_722_408_960


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["model", "info", "bloom-56m"], "did you mean 'bloom-560m'"),
        (
            ["model", "info", "tiny", "model.n_layr=2"],
            "unknown key 'model.n_layr' (did you mean 'model.n_layer'?)",
        ),
        (["model", "info", "tiny", "n_layer=two"], "key 'model.n_layer': expected int"),
        (["export", "nowhere", "out"], "nowhere: no such checkpoint folder"),
        (["import", "nowhere", "out"], "config.json: missing"),
        (["run", "nowhere.yaml", "--out", "x"], "nowhere.yaml: no such file"),
        (["train", "nowhere.yaml"], "nowhere.yaml"),
    ],
)
def test_errors_are_one_line(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("bloomforge: ") and err.count("\n") == 1
    assert message in err


def _hf_folder(tmp_path, layout: str, vocab: int = 300):
    """Write a tiny HF BLOOM folder the way the hub stores it in one of several layouts."""
    hf = tiny_hf_bloom(n_head=6, hidden=48, vocab=vocab)
    folder = tmp_path / f"hf_{layout}"
    hf.save_pretrained(folder)  # config.json + model.safetensors
    byte_level_tokenizer().save(str(folder / "tokenizer.json"))
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if layout != "safetensors":
        (folder / "model.safetensors").unlink()
    if layout == "bin_no_prefix":  # the official bigscience .bin files have no "transformer."
        state = {
            k.removeprefix("transformer."): v for k, v in state.items() if k != "lm_head.weight"
        }
        torch.save(state, folder / "pytorch_model.bin")
    elif layout == "sharded":
        keys = sorted(state)
        half = len(keys) // 2
        weight_map = {}
        for i, part in enumerate((keys[:half], keys[half:])):
            name = f"model-0000{i + 1}-of-00002.safetensors"
            save_file({k: state[k] for k in part}, folder / name)
            weight_map |= dict.fromkeys(part, name)
        index = {"metadata": {}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        # a stray file beside the shards must not be read as weights
        save_file({"x": torch.zeros(1)}, folder / "adapter_model.safetensors")
    return hf, folder


@pytest.mark.parametrize("layout", ["safetensors", "bin_no_prefix", "sharded"])
def test_import_export_round_trip(tmp_path, capsys, layout):
    hf, folder = _hf_folder(tmp_path, layout)
    assert run(capsys, "import", folder, tmp_path / "ckpt")[0] == 0
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "config.yaml").is_file() and ckpt.tokenizer_file is not None
    assert ckpt.recipe.model.n_head == 6 and ckpt.recipe.model.padded_vocab_size == 300
    ids, mask = left_padded(2, 10, 300, [0, 4])
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask).logits
        real = mask.bool()
        got = ckpt.model.eval()(ids, attention_mask=mask)
        torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)

    assert run(capsys, "export", tmp_path / "ckpt", tmp_path / "hf_out")[0] == 0
    back = BloomForCausalLM.from_pretrained(tmp_path / "hf_out", local_files_only=True).eval()
    for (k, v), (k2, v2) in zip(
        sorted(hf.state_dict().items()), sorted(back.state_dict().items()), strict=True
    ):
        assert k == k2 and torch.equal(v, v2), k


def test_exported_tokenizer_loads_in_transformers(tmp_path, capsys):
    from transformers import AutoTokenizer

    _, folder = _hf_folder(tmp_path, "safetensors")
    run(capsys, "import", folder, tmp_path / "ckpt")
    run(capsys, "export", tmp_path / "ckpt", tmp_path / "hf_out")
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf_out", local_files_only=True)
    text = "Le chat\tnoir 日本 👍"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.pad_token_id == 3 and tok.eos_token_id == 2


def test_generate_cli_matches_transformers_greedy(tmp_path, capsys):
    hf, folder = _hf_folder(tmp_path, "safetensors", vocab=260)  # = the byte tokenizer's size
    run(capsys, "import", folder, tmp_path / "ckpt")
    code, out, _ = run(capsys, "generate", tmp_path / "ckpt", "--prompt", "Le chat",
                       "--max-new-tokens", 8, "--json")  # fmt: skip
    assert code == 0
    tok = byte_level_tokenizer()
    ids = torch.tensor([tok.encode("Le chat").ids])
    expected = hf.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=3, eos_token_id=2)
    new = [t for t in expected[0, ids.shape[1] :].tolist() if t >= 4]
    assert json.loads(out)[0]["continuation"] == tok.decode(new)


def test_generate_sampling_is_seeded(tmp_path, capsys):
    assert run(capsys, "model", "init", "micro", tmp_path / "m", "vocab_size=260")[0] == 0
    args = ["generate", tmp_path / "m", "--prompt", "a", "--prompt", "bonjour", "--temperature",
            "0.8", "--top-p", "0.9", "--seed", "1", "--max-new-tokens", "6"]  # fmt: skip
    assert run(capsys, *args)[1] == run(capsys, *args)[1]


def test_refuses_variants_bloom_cannot_express(tmp_path, capsys):
    run(capsys, "model", "init", "micro", tmp_path / "m", "vocab_size=260", "position=rotary")
    code, _, err = run(capsys, "export", tmp_path / "m", tmp_path / "hf")
    assert code == 2 and "model.position=rotary" in err
    assert not (tmp_path / "hf").exists()
