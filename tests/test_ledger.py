"""The removal ledger adds up over datatrove tasks: in = kept + removed, per source and language."""

from __future__ import annotations

from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor

from bloomforge.data.ledger import IN, KEPT, CountedFilter, read_ledger


class _ShortFilter(CountedFilter):
    ledger_name = "short"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return (False, "too_short") if len(doc.text) < 5 else True


def _docs(rank: int = 0, world_size: int = 1):
    texts = ["ab", "hello world", "héllo", "x", "long enough"]
    for i, text in enumerate(texts):
        if i % world_size == rank:
            lang = "fr" if i % 2 else "en"
            yield Document(text=text, id=str(i), metadata={"source": "s", "language": lang})


def _reader(data, rank: int = 0, world_size: int = 1):
    yield from _docs(rank, world_size)


def test_ledger_adds_up_over_tasks(tmp_path):
    LocalPipelineExecutor(
        pipeline=[_reader, _ShortFilter()], tasks=2, logging_dir=str(tmp_path / "logs")
    ).run()
    rows = {(r.language, r.outcome): (r.documents, r.bytes) for r in read_ledger(tmp_path)}
    # en: "ab", "héllo", "long enough"; fr: "hello world", "x" (hand-counted, UTF-8 bytes)
    assert rows[("en", IN)] == (3, 2 + 6 + 11)
    assert rows[("en", KEPT)] == (2, 6 + 11)
    assert rows[("en", "too_short")] == (1, 2)
    assert rows[("fr", IN)] == (2, 11 + 1)
    assert rows[("fr", KEPT)] == (1, 11)
    assert rows[("fr", "too_short")] == (1, 1)
