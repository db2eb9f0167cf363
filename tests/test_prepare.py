"""`data prepare` end to end on tiny jsonl/txt/parquet inputs (filters and dedup off or faked).

Checked against hand counts of the inputs written here: documents kept, malformed records per
reason, provenance, ledger sums; the same corpus with 1 and 2 workers; a crashed run resumes
without redoing finished tasks; executors for Slurm are built; CLI errors are one line.
"""

from __future__ import annotations

import gzip
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove.data import Document

from bloomforge.cli import main
from bloomforge.data.ledger import CountedFilter, read_ledger
from bloomforge.data.prepare import (
    build_executors,
    config_from_inputs,
    load_prepare_config,
    prepare,
)
from bloomforge.data.prepare import jobs as jobs_mod
from bloomforge.data.prepare.config import PrepareConfig, SourceConfig
from bloomforge.documents.inputs import parse_inputs, read_documents
from bloomforge.errors import BloomforgeError

# The inputs, and what a reader must make of them (hand-counted).
FR_A = [
    '{"text": "Alpha one", "id": "x1", "url": "http://a/1"}',
    "{bad json",
    '{"body": "no text key"}',
    '{"text": "Alpha two"}',
]
FR_B = ['{"text": "Alpha three 8.8.8.8"}', '{"text": "Alpha four"}']
EN = ["Beta one, mail bob@example.org", "", "Beta two"]
WEB = {"text": ["Gamma one", None, "Gamma two @gammafan"], "id": [1, 2, 3]}
EXPECTED = {  # source -> (language, documents)
    "fr": ("fr", {"Alpha one", "Alpha two", "Alpha three PI:IP", "Alpha four"}),
    "en": ("en", {"Beta one, mail PI:EMAIL", "Beta two"}),
    "web": ("unknown", {"Gamma one", "Gamma two PI:USER"}),
}
SKIPPED = {
    "fr": {"bad JSON": 1, "missing text key 'text'": 1, "invalid UTF-8": 1},
    "en": {"empty text": 1},
    "web": {"missing text key 'text'": 1},
}


def write_inputs(root: Path) -> list[str]:
    (root / "fr").mkdir(parents=True)
    lines = [line.encode() for line in FR_A] + [b'{"text": "\xff bad"}']
    (root / "fr" / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with gzip.open(root / "fr" / "b.jsonl.gz", "wt") as f:
        f.write("\n".join(FR_B) + "\n")
    (root / "en.txt").write_text("\n".join(EN) + "\n")
    pq.write_table(pa.table(WEB), root / "web.parquet")
    return [f"fr={root}/fr/*.jsonl*", f"en={root}/en.txt", f"web={root}/web.parquet"]


def final_documents(out: Path) -> list[tuple[str, str, str, str]]:
    docs = []
    for path in sorted((out / "documents").rglob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            for line in f:
                d = json.loads(line)
                docs.append((d["id"], d["text"], json.dumps(d["metadata"], sort_keys=True), ""))
    return sorted(docs)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    specs = write_inputs(root / "in")
    config = config_from_inputs(specs, filters=False, dedup=False)
    stats = prepare(config, root / "out", workers=1)
    return root, specs, stats


def test_final_documents_readable_with_provenance(prepared):
    root, _, _ = prepared
    got: dict[str, set[str]] = {}
    for doc in read_documents(parse_inputs([str(root / "out" / "documents")])):
        assert doc.language == EXPECTED[doc.source][0]
        got.setdefault(doc.source, set()).add(doc.text)
    assert got == {s: texts for s, (_, texts) in EXPECTED.items()}
    by_id = {d[0]: json.loads(d[2]) for d in final_documents(root / "out")}
    first = by_id["fr/0/1"]  # a.jsonl line 1, the first file of the source
    assert first["file"].endswith("fr/a.jsonl") and first["line"] == 1
    assert first["orig_id"] == "x1" and first["url"] == "http://a/1"
    assert by_id["web/0/3"]["line"] == 3 and by_id["web/0/3"]["orig_id"] == "3"
    assert by_id["fr/1/1"]["file"].endswith("fr/b.jsonl.gz")


def test_stats_add_up(prepared):
    root, _, stats = prepared
    for source, (language, texts) in EXPECTED.items():
        reader = stats["reader"][source]
        assert reader["skipped"] == SKIPPED[source]
        assert reader["documents"] == len(texts)
        assert reader["records"] == len(texts) + sum(SKIPPED[source].values())
        t = stats["totals"][source]
        assert t["adds_up"] and t["read"] == t["final"] == len(texts)
        assert stats["final"][source][language]["documents"] == len(texts)
    # stats.json's rows are read_ledger's over OUT/logs (the contract's one source of truth)
    ledger = {
        (r.step, r.source, r.language, r.outcome): r.documents
        for r in read_ledger(root / "out" / "logs")
    }
    mine = {
        (r["step"], r["source"], r["language"], r["outcome"]): r["documents"]
        for r in stats["ledger"]
    }
    assert ledger == mine
    assert stats["pii"] == {
        "fr": {"fr": {"IP": 1}},
        "en": {"en": {"EMAIL": 1}},
        "web": {"unknown": {"USER": 1}},
    }
    on_disk = json.loads((root / "out" / "stats.json").read_text())
    assert on_disk["totals"] == stats["totals"]


def test_malformed_records_set_aside(prepared):
    root, _, _ = prepared
    aside = [
        json.loads(line)
        for p in sorted((root / "out" / "malformed").rglob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    where = {(Path(a["file"]).name, a["line"], a["reason"]) for a in aside}
    assert where == {
        ("a.jsonl", 2, "bad JSON"),
        ("a.jsonl", 3, "missing text key 'text'"),
        ("a.jsonl", 5, "invalid UTF-8"),
        ("en.txt", 2, "empty text"),
        ("web.parquet", 2, "missing text key 'text'"),
    }
    restricted = [
        json.loads(line)
        for p in (root / "out" / "restricted").rglob("*.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert sorted(r["original"] for r in restricted) == ["8.8.8.8", "@gammafan", "bob@example.org"]
    config = load_prepare_config(root / "out" / "config.yaml")
    assert [s.name for s in config.sources] == ["fr", "en", "web"]


def test_same_output_with_two_workers(prepared, tmp_path):
    root, specs, _ = prepared
    config = config_from_inputs(specs, filters=False, dedup=False)
    prepare(config, tmp_path / "out2", workers=2)
    assert final_documents(tmp_path / "out2") == final_documents(root / "out")


def test_crashed_run_resumes_without_redoing_finished_tasks(prepared, tmp_path, monkeypatch):
    root, specs, _ = prepared
    config = config_from_inputs(specs, filters=False, dedup=False)
    out = tmp_path / "out"
    real_run = jobs_mod.Tally.run

    def crash_on_web(self, data, rank=0, world_size=1):
        for doc in real_run(self, data, rank, world_size):
            if doc.metadata["source"] == "web":
                raise RuntimeError("injected crash")
            yield doc

    monkeypatch.setattr(jobs_mod.Tally, "run", crash_on_web)
    with pytest.raises(RuntimeError, match="injected crash"):
        prepare(config, out, workers=1)
    assert not (out / "stats.json").exists()
    done = sorted((out / "logs").glob("*/*/completions/*"))
    assert len(done) == 4 + 3  # filter: fr (2 files), en, web; final: fr (2 tasks), en
    stamps = {p: p.stat().st_mtime_ns for p in done}
    monkeypatch.setattr(jobs_mod.Tally, "run", real_run)
    stats = prepare(config, out, workers=1)
    assert {p: p.stat().st_mtime_ns for p in done} == stamps  # not run again
    assert (out / "logs" / "final" / "web" / "completions" / "00000").exists()
    assert final_documents(out) == final_documents(root / "out")
    assert all(t["adds_up"] for t in stats["totals"].values())


# A stand-in for bloomforge.data.filters (written by another helper), with the contract's API.
@dataclass
class _FakeFilterConfig:
    min_chars: int = 10


class _MinChars(CountedFilter):
    ledger_name = "min_chars"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return True if len(doc.text) >= self.n else (False, "too_short")


def test_filters_are_wired_and_removals_counted(prepared, tmp_path, monkeypatch):
    _, specs, _ = prepared
    fake = types.ModuleType("bloomforge.data.filters")
    fake.FilterConfig = _FakeFilterConfig
    fake.language_id_step = lambda config, language: _MinChars(0)  # keeps all: LID stand-in
    fake.filter_steps = lambda config: [_MinChars(config.min_chars)]
    fake.disabled_filters = lambda config: {}
    from bloomforge.data.filters import EachFilterAlone

    fake.EachFilterAlone = EachFilterAlone
    monkeypatch.setitem(sys.modules, "bloomforge.data.filters", fake)
    import bloomforge.data.prepare.jobs as jobs_module

    monkeypatch.setattr(jobs_module, "filters", fake)
    config = config_from_inputs(specs, filters=True, dedup=False)
    config.filters = {"min_chars": 10}
    stats = prepare(config, tmp_path / "out", workers=1)
    # < 10 characters: "Alpha one", "Alpha two", "Beta two", "Gamma one" (hand-counted)
    assert stats["totals"]["fr"]["removed"] == {"min_chars": {"too_short": 2}}
    assert stats["totals"]["en"]["removed"] == {"min_chars": {"too_short": 1}}
    assert stats["totals"]["web"]["removed"] == {"min_chars": {"too_short": 1}}
    assert all(t["adds_up"] for t in stats["totals"].values())
    excluded = [
        json.loads(line)
        for p in (tmp_path / "out" / "excluded").rglob("*.jsonl.gz")
        for line in gzip.decompress(p.read_bytes()).decode().splitlines()
    ]
    assert sorted(d["text"] for d in excluded) == [
        "Alpha one",
        "Alpha two",
        "Beta two",
        "Gamma one",
    ]
    assert {d["metadata"]["filter_reason"] for d in excluded} == {"too_short"}
    alone = stats["each_filter_alone"]  # one filter: alone = what the chain removed
    assert alone["fr"]["fr"]["min_chars"] == 2 and alone["en"]["en"]["min_chars"] == 1


def test_slurm_and_ray_executors(prepared, tmp_path):
    from datatrove.executor import SlurmPipelineExecutor

    _, specs, _ = prepared
    config = config_from_inputs(specs, filters=False, dedup=False)
    with pytest.raises(BloomforgeError, match=r"slurm\.partition"):
        build_executors(config, tmp_path / "o", executor="slurm")
    config.slurm.partition = "cpu"
    stages, executors = build_executors(config, tmp_path / "o", executor="slurm")
    assert all(isinstance(e, SlurmPipelineExecutor) for e in executors)
    assert [s.name for s in stages] == [
        "filter/fr",
        "filter/en",
        "filter/web",
        "final/fr",
        "final/en",
        "final/web",
        "stats",
    ]
    assert [e.tasks for e in executors] == [2, 1, 1, 2, 1, 1, 1]
    assert all(e.depends is p for e, p in zip(executors[1:], executors, strict=False))
    assert executors[0].partition == "cpu" and executors[0].time == "24:00:00"
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(BloomforgeError, match="'ray' package"):
            build_executors(config, tmp_path / "o", executor="ray")


def test_source_names_and_languages():
    config = config_from_inputs(["fr=" + __file__, "code=" + __file__, "web=" + __file__])
    assert [(s.name, s.language) for s in config.sources] == [
        ("fr", "fr"),
        ("code", "code"),  # programming code: no language id, no natural-language filters
        ("web", "auto"),  # three letters, but not an ISO 639-1 code
    ]
    assert [s.filters_on for s in config.sources] == [True, False, True]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "prepare",
                "--input",
                f"fr={tmp_path}/nope.jsonl",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nope.jsonl" in err and err.startswith("bloomforge: ")
    (tmp_path / "data.yaml").write_text(
        "sources:\n  - name: fr\n    paths: [fr.jsonl]\n    text_kye: body\n"
    )
    assert (
        main(
            [
                "data",
                "prepare",
                "--config",
                str(tmp_path / "data.yaml"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sources[0].text_kye" in err and "text_key" in err
    assert main(["data", "report", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stats.json" in err


def test_rerun_with_another_config_is_refused(prepared):
    root, specs, _ = prepared
    config = config_from_inputs(specs[:1], filters=False, dedup=False)
    with pytest.raises(BloomforgeError, match="different configuration"):
        prepare(config, root / "out")


def test_example_config_loads():
    example = Path(__file__).resolve().parents[1] / "examples" / "data.yaml"
    config = load_prepare_config(example)
    assert {s.name for s in config.sources} >= {"fr"}


def test_reader_sets_aside_bad_parquet_and_truncated_gzip(tmp_path):
    from bloomforge.documents.inputs import InputSpec, ReadStats, iter_documents

    table = pa.table({"text": pa.array([b"ok one", b"\xff\xfe", b"ok two"], pa.binary())})
    pq.write_table(table, tmp_path / "bin.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    whole = gzip.compress(b'{"text": "first"}\n' + b'{"text": "second"}\n' * 2000)
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    stats, aside = ReadStats(), []
    texts = []
    for name in ("bin.parquet", "broken.parquet", "cut.jsonl.gz"):
        spec = InputSpec(tmp_path / name)
        on_skip = lambda reason, line, raw, size, n=name: aside.append((n, line, reason))  # noqa: E731
        texts += [d.text for d in iter_documents(spec, stats, on_skip=on_skip)]
    assert texts[:2] == ["ok one", "ok two"] and texts[2] == "first"
    assert ("bin.parquet", 2, "invalid UTF-8") in aside
    assert ("broken.parquet", 1, "corrupt or truncated file") in aside
    assert [a[2] for a in aside if a[0] == "cut.jsonl.gz"] == ["corrupt or truncated file"]
    assert stats.skipped["corrupt or truncated file"] == 2


@pytest.mark.parametrize(("scope", "removed_from_b"), [("source", 0), ("corpus", 3)])
def test_dedup_scope_corpus_finds_copies_across_sources(tmp_path, scope, removed_from_b):
    """The same catalogue shipped by two packages: per-source dedup keeps both copies, corpus
    dedup keeps the first source's (sources in name order) and removes the other's."""
    lines = [
        "The quick brown fox jumps over the lazy dog near the river bank today.",
        "A journey of a thousand miles begins with a single step, they say.",
        "Colourless green ideas sleep furiously in the quiet library at night.",
    ]
    for name in ("a", "b"):
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    config = config_from_inputs(
        [f"a={tmp_path}/a.txt", f"b={tmp_path}/b.txt"], filters=False, dedup=True, pii=False
    )
    config.dedup_scope = scope
    stats = prepare(config, tmp_path / "out")
    assert stats["totals"]["a"]["final"] == 3
    assert stats["totals"]["b"]["final"] == 3 - removed_from_b
    assert all(t["adds_up"] for t in stats["totals"].values())
    removed_b = sum(n for r in stats["totals"]["b"]["removed"].values() for n in r.values())
    assert removed_b == removed_from_b


def test_dedup_scope_corpus_rejects_per_source_dedup_settings(tmp_path):
    with pytest.raises(ValueError, match="dedup_scope"):
        PrepareConfig(
            sources=[SourceConfig(name="a", paths=["x"], dedup=False)], dedup_scope="corpus"
        )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("dedup:\n  preset: rots\n", "key 'dedup.preset': expected one of 'default', 'roots'"),
        ("    format: wett\n", "key 'sources[0].format': expected one of 'auto', 'jsonl'"),
    ],
)
def test_dedup_preset_and_input_format_are_checked(tmp_path, capsys, section, message):
    (tmp_path / "a.warc.gz").write_bytes(b"")
    sources = f"sources:\n  - name: a\n    paths: [{tmp_path}/a.warc.gz]\n"
    (tmp_path / "data.yaml").write_text(sources + section)
    assert (
        main(
            [
                "data",
                "prepare",
                "--config",
                str(tmp_path / "data.yaml"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
