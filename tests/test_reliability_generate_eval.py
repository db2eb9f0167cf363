"""Issue 21 for `generate` and `eval`: what a user types ends in output or one line, never a
traceback or a run that does not end.

Each case goes through the CLI (`bloomforge.cli.main`): a capped `--max-new-tokens` (and the
generation really stopping there), streamed output, a tokenizer larger than the model's
vocabulary, a builtin task file missing a field, a device this machine lacks, an empty
perplexity file.
"""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from bloomforge.cli import main
from bloomforge.errors import BloomforgeError
from bloomforge.model import BloomLM, ModelConfig
from bloomforge.model.config import check_vocab
from bloomforge.model.generate import Sampling, generate_text
from bloomforge.tokenizer import byte_level_tokenizer

CONTEXT = 256  # the micro preset's max_seq_len


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> bool:
    return err.startswith("bloomforge: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rel") / "m"
    assert main(["model", "init", "micro", str(folder), "vocab_size=260"]) == 0
    return folder


@pytest.fixture
def forwards(monkeypatch):
    """Counts model forwards; more than `forwards.stop_after` fails the test at once (a run
    that ignores the cap ends here instead of running for minutes)."""
    calls = {"n": 0, "stop_after": 10 * CONTEXT}
    forward = BloomLM.forward

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > calls["stop_after"]:
            raise AssertionError(f"generation ran past {calls['stop_after']} forwards")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(BloomLM, "forward", counted)
    return calls


# --- 1. generation bounds ------------------------------------------------------------------
def test_max_new_tokens_past_the_context_is_one_line(ckpt, capsys, forwards):
    code, out, err = run(capsys, "generate", ckpt, "--prompt", "Le chat", "--max-new-tokens",
                         100000)  # fmt: skip
    assert code == 2 and one_line(err) and out == ""
    # 7 byte tokens of prompt in a 256-token context: 249 new tokens at most
    assert "--max-new-tokens=100000" in err and "249" in err and "--max-length" in err
    assert forwards["n"] == 0  # refused before the model ran


def test_generation_stops_at_the_cap(ckpt, capsys, forwards):
    forwards["stop_after"] = CONTEXT - 7
    code, out, _ = run(capsys, "generate", ckpt, "--prompt", "Le chat", "--max-new-tokens",
                       CONTEXT - 7, "--json")  # fmt: skip
    assert code == 0 and forwards["n"] <= CONTEXT - 7
    assert len(json.loads(out)[0]["continuation"].encode()) <= CONTEXT - 7


def test_default_max_new_tokens_shrinks_to_what_fits(ckpt, capsys, forwards):
    prompt = "a" * (CONTEXT - 6)  # one byte token per character: 6 new tokens fit
    code, _, err = run(capsys, "generate", ckpt, "--prompt", prompt, "--json")
    assert code == 0, err
    assert forwards["n"] <= 6
    code, _, err = run(capsys, "generate", ckpt, "--prompt", "a" * CONTEXT)
    assert code == 2 and one_line(err) and "--prompt: 256 tokens" in err


def test_extrapolation_only_when_asked(ckpt, capsys, forwards, tmp_path):
    # ALiBi: --max-length past max_seq_len is the explicit request to extrapolate
    forwards["stop_after"] = 290
    code, out, err = run(capsys, "generate", ckpt, "--prompt", "Le chat", "--max-new-tokens", 290,
                         "--max-length", 300, "--json")  # fmt: skip
    assert code == 0, err
    assert forwards["n"] <= 290 and json.loads(out)[0]["continuation"]
    code, _, err = run(capsys, "generate", ckpt, "--prompt", "Le chat", "--max-new-tokens", 294,
                       "--max-length", 300)  # fmt: skip
    assert code == 2 and one_line(err) and "at most 293" in err and "--max-length=300" in err
    # learned positions end at max_seq_len: no extrapolation to ask for
    learned = tmp_path / "learned"
    assert main(["model", "init", "micro", str(learned), "vocab_size=260", "position=learned"]) == 0
    code, _, err = run(capsys, "generate", learned, "--prompt", "a", "--max-length", 300)
    assert code == 2 and one_line(err) and "--max-length=300" in err and "learned" in err


class Recorder:
    """sys.stdout that records, for each write, how many forwards had run by then."""

    def __init__(self, forwards):
        self.forwards, self.writes = forwards, []

    def write(self, text: str) -> int:
        self.writes.append((self.forwards["n"], text))
        return len(text)

    def flush(self) -> None:
        pass


def test_tokens_stream_before_the_end(ckpt, capsys, forwards, monkeypatch):
    prompts = ["Le chat", "bonjour", "日本"]
    argv = ["generate", ckpt, *[a for p in prompts for a in ("--prompt", p)],
            "--max-new-tokens", 30]  # fmt: skip
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0
    rows = json.loads(out)
    expected = "".join(p + r["continuation"] + "\n" for p, r in zip(prompts, rows, strict=True))
    forwards["n"] = 0
    stdout = Recorder(forwards)
    monkeypatch.setattr("sys.stdout", stdout)
    assert main([str(a) for a in argv]) == 0
    total = forwards["n"]
    text_writes = [(n, t) for n, t in stdout.writes if t.strip()]
    # the first prompt's continuation is on the terminal while the model is still running...
    assert len([n for n, _ in text_writes if n < total]) >= 5
    # ...and what was written adds up to what --json returns, in prompt order
    assert "".join(t for _, t in stdout.writes) == expected


def test_streamed_pieces_hold_back_stop_strings_and_partial_characters(monkeypatch):
    import bloomforge.model.generate as G

    tok = byte_level_tokenizer()
    script = tok.encode("ok 日本 STOP tail", add_special_tokens=False).ids  # one id per byte
    step = {"n": 0}

    def scripted(logits, s, generator, vocab_limit):  # the model "says" the script
        step["n"] += 1
        return torch.full((logits.shape[0],), script[step["n"] - 1], dtype=torch.long)

    monkeypatch.setattr(G, "next_token", scripted)
    cfg = ModelConfig(n_layer=1, hidden=32, n_head=4, vocab_size=tok.get_vocab_size())
    m = BloomLM.build(cfg, seed=0).eval()
    pieces: list[tuple[int, str, bool]] = []
    s = Sampling(max_new_tokens=len(script), stop=["STOP"])
    texts = generate_text(m, tok, ["a"], s, on_text=lambda *a: pieces.append((step["n"], *a[1:])))
    assert texts == ["ok 日本 "]
    assert "".join(t for _, t, _ in pieces) == texts[0]
    assert [f for _, _, f in pieces] == [False] * (len(pieces) - 1) + [True]
    assert all("\ufffd" not in t and "S" not in t for _, t, _ in pieces)
    # "日" is three bytes: it comes out whole, once its third byte is generated
    assert (len("ok 日".encode()), "日") in [(n, t) for n, t, _ in pieces]
    assert pieces[0][0] == 1  # streamed from the first token on


# --- 2. a tokenizer larger than the model's vocabulary -------------------------------------
@pytest.fixture(scope="module")
def big_tokenizer_ckpt(ckpt, tmp_path_factory):
    from bloomforge.checkpoint import load_checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("big")
    vocab = {f"t{i}": i for i in range(500)}  # the model has 260 tokens in 384 rows
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(root / "big.json"))
    (root / "t.txt").write_text("t499 t300 t12\n")
    c = load_checkpoint(ckpt)  # the same weights, saved with another run's tokenizer
    return save_checkpoint(root / "m", c.model, c.recipe, root / "big.json")


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_tokenizer_larger_than_the_vocabulary(big_tokenizer_ckpt, capsys, command):
    ck = big_tokenizer_ckpt
    if command == "generate":
        argv = ["generate", ck, "--prompt", "t499 t300"]
    else:
        argv = ["eval", ck, "--perplexity", f"fr={ck.parent / 't.txt'}"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and one_line(err)
    assert str(ck / "tokenizer.json") in err and "500 tokens" in err and "384" in err


def test_export_refuses_a_tokenizer_larger_than_the_vocabulary(
    big_tokenizer_ckpt, capsys, tmp_path
):
    """`export` used to write the mismatched folder, exit 0."""
    code, _, err = run(capsys, "export", big_tokenizer_ckpt, tmp_path / "hf")
    assert code == 2 and one_line(err) and "500 tokens" in err
    assert not (tmp_path / "hf").exists()


def test_check_vocab_for_export(big_tokenizer_ckpt):
    from bloomforge.checkpoint import load_checkpoint

    c = load_checkpoint(big_tokenizer_ckpt)
    with pytest.raises(BloomforgeError, match=r"tokenizer.json: the tokenizer has 500 tokens"):
        check_vocab(c.tokenizer(), c.model.cfg, c.tokenizer_file)
    check_vocab(byte_level_tokenizer(), c.model.cfg, "bytes")  # 260 <= 384: fine


# --- 3. builtin task files are validated like custom ones ----------------------------------
COPA = {"premise": "The man broke his toe.", "choice1": "He dropped a hammer.",
        "choice2": "He ran.", "question": "cause", "label": 0}  # fmt: skip


@pytest.mark.parametrize(
    ("task", "file", "record", "message"),
    [
        ("copa", "copa/val.jsonl", {k: v for k, v in COPA.items() if k != "choice2"},
         "val.jsonl:2: record has no field 'choice2'"),
        ("copa", "copa/val.jsonl", {**COPA, "question": "why"},
         "val.jsonl:2: field 'question' is 'why', expected one of cause, effect"),
        ("xcopa", "xcopa/test.et.jsonl", {**COPA, "premise": 5},
         "test.et.jsonl:2: field 'premise' is int, expected a string"),
        ("hellaswag", "hellaswag/hellaswag_val.preprocessed.jsonl.gz",
         {"activity_label": "Cooking", "endings": ["a", "b"], "label": 0},
         "hellaswag_val.preprocessed.jsonl.gz:2: record has no field 'ctx'"),
        ("lambada", "lambada/lambada_test.jsonl", {"txt": "a b"},
         "lambada_test.jsonl:2: record has no field 'text'"),
    ],
)  # fmt: skip
def test_builtin_task_missing_field(ckpt, capsys, tmp_path, task, file, record, message):
    import gzip

    path = tmp_path / "data" / file
    path.parent.mkdir(parents=True)
    good = {
        "copa": COPA,
        "xcopa": COPA,
        "lambada": {"text": "a b c"},
        "hellaswag": {"activity_label": "A", "ctx": "b", "endings": ["c", "d"], "label": 1},
    }
    lines = "".join(json.dumps(r) + "\n" for r in (good[task], record))
    if file.endswith(".gz"):
        path.write_bytes(gzip.compress(lines.encode()))
    else:
        path.write_text(lines)
    if task == "xcopa":  # every language's file must exist; the bad one is read first
        for lang in ("ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"):
            (path.parent / f"test.{lang}.jsonl").write_text(json.dumps(COPA) + "\n")
    code, _, err = run(capsys, "eval", ckpt, "--tasks", task, "--data", tmp_path / "data")
    assert code == 2 and one_line(err) and message in err, err


# --- 4. devices this machine lacks ---------------------------------------------------------
DEVICES = ["tpu", "meta", "cuda:x"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])


@pytest.mark.parametrize("device", DEVICES)
def test_generate_on_a_missing_device(ckpt, capsys, device):
    code, out, err = run(capsys, "generate", ckpt, "--prompt", "a", "--device", device)
    assert code == 2 and one_line(err) and out == ""
    assert f"--device={device}:" in err and "weights" not in err


# --- 5. perplexity of an empty file ---------------------------------------------------------
@pytest.mark.parametrize(("content", "why"), [("", "empty"), ("\n  \n\n", "3 empty text")])
def test_perplexity_of_an_empty_file(ckpt, capsys, tmp_path, content, why):
    empty = tmp_path / "empty.txt"
    empty.write_text(content)
    (tmp_path / "fr.txt").write_text("Le chat dort.\n")
    out_json = tmp_path / "res.json"
    code, out, err = run(capsys, "eval", ckpt, "--perplexity", f"de={tmp_path / 'fr.txt'}",
                         "--perplexity", f"fr={empty}", "--out", out_json)  # fmt: skip
    assert code == 2 and one_line(err) and out == ""
    assert f"{empty}: no documents to score" in err and why in err
    assert not out_json.exists()


@pytest.mark.parametrize(("position", "max_length"), [("learned", 300), ("alibi", 0)])
def test_eval_max_length_the_model_cannot_use(capsys, tmp_path, position, max_length):
    ck = tmp_path / "m"
    assert main(["model", "init", "micro", str(ck), "vocab_size=260", f"position={position}"]) == 0
    (tmp_path / "fr.txt").write_text("Le chat dort. " * 40 + "\n")
    code, _, err = run(capsys, "eval", ck, "--perplexity", f"fr={tmp_path / 'fr.txt'}",
                       "--max-length", max_length)  # fmt: skip
    assert code == 2 and one_line(err) and f"max_length={max_length}:" in err
