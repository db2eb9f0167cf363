"""The README's shell examples: every `bloomforge` command line in its bash blocks (also under
torchrun) parses with the real CLI, every repository file it names exists, and the cheap ones
(model info, plan, carbon, help) run and exit 0. The expensive stages they show are exercised by
their own tests (train, eval, tokenizer, data prepare, run/demo)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bloomforge.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
RUN_FOR_REAL = ("model info", "plan ", "carbon ", "--help")


def _command_lines() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            # `[--opt X]` marks an optional part in the docs: check it as if given
            line = re.sub(r"\[(--[^\]]*)\]", r"\1", line)
            words = shlex.split(line, comments=True)
            if words:
                lines.append(" ".join(shlex.quote(w) for w in words))
    return lines


def _bloomforge_argv(words: list[str]) -> list[str] | None:
    if words[0] == "bloomforge":
        return words[1:]
    if words[0] == "torchrun":
        i = words.index("-m")
        assert words[i + 1] == "bloomforge", words
        return words[i + 2 :]
    return None


LINES = _command_lines()


def test_readme_has_the_two_fresh_machine_commands():
    assert "bash scripts/demo.sh" in LINES and "bash scripts/test.sh" in LINES
    assert sum(_bloomforge_argv(shlex.split(x)) is not None for x in LINES) >= 25


@pytest.mark.parametrize("line", LINES)
def test_readme_command_line(line, capsys):
    words = shlex.split(line)
    for word in words:  # repository files it names (recipes, examples, scripts) exist
        if re.match(r"^(recipes|examples|scripts|grids)/\S+\.\w+$", word):
            assert (REPO / word).is_file(), f"{word} named in README does not exist"
    if words[0] in ("bash", "sbatch"):
        assert (REPO / words[1]).is_file()
        return
    argv = _bloomforge_argv(words)
    if argv is None:
        return  # tensorboard, bloomforge-lm-eval, `. .venv/bin/activate`
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as e:
        if e.code == 0:  # --help
            return
        raise AssertionError(f"README line does not parse: {line}") from e
    overrides = getattr(args, "overrides", None)
    assert not extra or (isinstance(overrides, list) and all("=" in x for x in extra)), line
    if any(line.startswith(f"bloomforge {cmd}") for cmd in RUN_FOR_REAL):
        assert main(argv) == 0, line
