"""`data search`: full-text search over a prepared folder's documents, with provenance.

In: PREPARED/documents/SOURCE/LANGUAGE/*.jsonl.gz (written by `data prepare`; each document's
metadata carries `source`, `language`, and the raw input's `file`, `line` and `url` when the
record had one). Out: PREPARED/search/index.sqlite, an SQLite FTS5 index (the ROOTS search tool
idea on an embedded engine: Python's own sqlite3, no server), and `search(...)` -> hits with a
snippet and provenance (source, language, input file and line, URL, document id, and the prepared
file and line it was read from).

The index is kept up to date incrementally: each prepared file is recorded with its size and
modification time (ns); `update_index` re-reads only files that are new or whose size or mtime
changed, and drops the rows of files that changed or are gone, in one transaction. A folder that
did not change costs one `stat` per file. The first build writes a temporary file and renames it.
Text is tokenised by FTS5's `unicode61` tokenizer with diacritics folded (`zephyr` finds
`zéphyr`); scripts without spaces between words (Chinese, Japanese, Thai) match whole runs only.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bloomforge import files
from bloomforge.errors import BloomforgeError

log = logging.getLogger(__name__)

INDEX = Path("search") / "index.sqlite"
SCHEMA_VERSION = "1"
_SUFFIXES = (".jsonl.gz", ".jsonl")
_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files(
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    first_rowid INTEGER NOT NULL, last_rowid INTEGER NOT NULL, documents INTEGER NOT NULL);
CREATE VIRTUAL TABLE docs USING fts5(
    text, source UNINDEXED, language UNINDEXED, input_file UNINDEXED, input_line UNINDEXED,
    url UNINDEXED, doc_id UNINDEXED, path UNINDEXED, path_line UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2');
"""


@dataclass
class IndexUpdate:
    """What one `update_index` call did."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    documents: int = 0  # documents in the index afterwards
    builds: int = 0  # how many times the index has been written to, this call included
    rebuilt: bool = False  # created from scratch (no index, or an older schema)

    @property
    def wrote(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.rebuilt)


def check_fts5() -> None:
    """A one-line error when this Python's SQLite was built without FTS5."""
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
    except sqlite3.OperationalError as e:
        raise BloomforgeError(
            f"data search: this Python's SQLite {sqlite3.sqlite_version} has no FTS5 ({e}); "
            "use a Python whose sqlite3 is built with FTS5 (CPython's official builds are)"
        ) from None
    finally:
        con.close()


def index_path(prepared: str | Path) -> Path:
    return Path(prepared) / INDEX


def _documents_dir(prepared: Path) -> Path:
    folder = prepared / "documents"
    if not folder.is_dir():
        raise BloomforgeError(
            f"{folder}: no such folder (a folder written by `bloomforge data prepare` holds "
            "documents/)"
        )
    return folder


def _prepared_files(prepared: Path) -> dict[str, os.stat_result]:
    """{path relative to PREPARED: stat} of the document files (one directory walk)."""
    folder = _documents_dir(prepared)
    found: dict[str, os.stat_result] = {}
    for root, _, names in os.walk(folder):
        for name in names:
            if name.endswith(_SUFFIXES):
                path = Path(root, name)
                found[path.relative_to(prepared).as_posix()] = path.stat()
    return dict(sorted(found.items()))


def _open(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=60, isolation_level=None)  # explicit transactions
    con.execute("PRAGMA journal_mode=DELETE")
    return con


def _valid(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        con = _open(path)
        try:
            row = con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return False
    return row is not None and row[0] == SCHEMA_VERSION


def _create(path: Path) -> None:
    """A new empty index, written aside and renamed into place."""
    with files.atomic_path(path) as tmp:
        con = sqlite3.connect(tmp)
        try:
            con.executescript(_SCHEMA)
            con.execute("INSERT INTO meta VALUES ('schema', ?), ('builds', '0')", (SCHEMA_VERSION,))
            con.commit()
        finally:
            con.close()


def _rows(prepared: Path, rel: str) -> Any:
    """(text, source, language, input file, input line, url, id, path, line) per document."""
    path = prepared / rel
    opener = gzip.open if rel.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                meta = doc.get("metadata") or {}
                text = doc["text"]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise BloomforgeError(
                    f"{path} line {number}: not a prepared document ({e})"
                ) from None
            yield (
                text,
                str(meta.get("source", "")),
                str(meta.get("language", "")),
                meta.get("file"),
                meta.get("line"),
                meta.get("url"),
                doc.get("id"),
                rel,
                number,
            )


def update_index(prepared: str | Path) -> IndexUpdate:
    """Bring PREPARED/search/index.sqlite up to date with PREPARED/documents (see module doc)."""
    check_fts5()
    prepared = Path(prepared)
    on_disk = _prepared_files(prepared)
    path = index_path(prepared)
    report = IndexUpdate()
    if not _valid(path):
        _create(path)
        report.rebuilt = True
    con = _open(path)
    try:
        known = {
            r[0]: r[1:]
            for r in con.execute("SELECT path, size, mtime_ns, first_rowid, last_rowid FROM files")
        }
        stale = [
            p
            for p, (size, mtime, *_) in known.items()
            if p not in on_disk or (on_disk[p].st_size, on_disk[p].st_mtime_ns) != (size, mtime)
        ]
        fresh = [
            p
            for p, st in on_disk.items()
            if p not in known or (st.st_size, st.st_mtime_ns) != tuple(known[p][:2])
        ]
        report.removed = sum(p not in on_disk for p in stale)
        report.changed = sum(p in on_disk for p in stale)
        report.added = len(fresh) - report.changed
        report.unchanged = len(on_disk) - len(fresh)
        if stale or fresh or report.rebuilt:
            con.execute("BEGIN IMMEDIATE")
            try:
                for p in stale:
                    first, last = known[p][2:]
                    con.execute("DELETE FROM docs WHERE rowid BETWEEN ? AND ?", (first, last))
                    con.execute("DELETE FROM files WHERE path = ?", (p,))
                for p in fresh:
                    _add_file(con, prepared, p, on_disk[p])
                con.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'builds'"
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            # chatter: a search's output is its hits (the counts are the returned IndexUpdate)
            log.debug(
                "search index %s: %d files added, %d changed, %d removed",
                path,
                report.added,
                report.changed,
                report.removed,
            )
        report.documents = con.execute("SELECT COALESCE(SUM(documents), 0) FROM files").fetchone()[
            0
        ]
        report.builds = int(con.execute("SELECT value FROM meta WHERE key='builds'").fetchone()[0])
    finally:
        con.close()
    return report


def _add_file(con: sqlite3.Connection, prepared: Path, rel: str, st: os.stat_result) -> None:
    start = con.execute("SELECT COALESCE(MAX(rowid), 0) FROM docs").fetchone()[0] + 1
    rowid = start - 1
    batch: list[tuple] = []
    for row in _rows(prepared, rel):
        rowid += 1
        batch.append((rowid, *row))
        if len(batch) >= 2000:
            con.executemany(
                "INSERT INTO docs(rowid, text, source, language, input_file, "
                "input_line, url, doc_id, path, path_line) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                batch,
            )
            batch.clear()
    if batch:
        con.executemany(
            "INSERT INTO docs(rowid, text, source, language, input_file, input_line, "
            "url, doc_id, path, path_line) VALUES (?,?,?,?,?,?,?,?,?,?)",
            batch,
        )
    con.execute(
        "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
        (rel, st.st_size, st.st_mtime_ns, start, rowid, rowid - start + 1),
    )


def _phrases(query: str) -> str:
    """The query's words as quoted FTS5 strings (all must match): for text that is not a valid
    FTS5 expression (stray quotes, colons, parentheses)."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in query.split())


def search(
    prepared: str | Path,
    query: str,
    lang: str | None = None,
    limit: int = 10,
    source: str | None = None,
    update: bool = True,
) -> list[dict[str, Any]]:
    """Best matches first (FTS5's bm25), after bringing the index up to date (`update=False`:
    the index as it is, e.g. for a series of queries on a folder known not to change).

    `query` is an FTS5 query (words, "a phrase", OR, NOT, prefix*); anything that is not valid
    FTS5 syntax is searched as its words. Each hit: source, language, file and line of the raw
    input, url (or None), id, the prepared file and line, and a snippet with the matches in
    [brackets].
    """
    if not query.strip():
        raise BloomforgeError("data search: the query is empty")
    if limit < 1:
        raise BloomforgeError(f"data search: --limit {limit}: must be at least 1")
    if update or not index_path(prepared).is_file():
        update_index(prepared)
    con = _open(index_path(Path(prepared)))
    sql = (
        "SELECT source, language, input_file, input_line, url, doc_id, path, path_line, "
        "snippet(docs, 0, '[', ']', '…', 16) FROM docs WHERE docs MATCH ?"
    )
    args: list[Any] = []
    if lang:
        sql += " AND language = ?"
        args.append(lang)
    if source:
        sql += " AND source = ?"
        args.append(source)
    sql += " ORDER BY bm25(docs) LIMIT ?"
    try:
        try:
            rows = con.execute(sql, [query, *args, limit]).fetchall()
        except sqlite3.OperationalError:  # not FTS5 syntax (a stray quote, colon, bracket)
            try:
                rows = con.execute(sql, [_phrases(query), *args, limit]).fetchall()
            except sqlite3.OperationalError as e:
                raise BloomforgeError(f"data search: query {query!r}: {e}") from None
    finally:
        con.close()
    keys = ("source", "language", "file", "line", "url", "id", "prepared_file")
    return [
        {**dict(zip(keys, r[:7], strict=True)), "prepared_line": r[7], "snippet": r[8]}
        for r in rows
    ]


def format_hit(hit: dict[str, Any]) -> str:
    """Two lines: where the document came from, then its snippet."""
    where = f"{hit['source']} [{hit['language']}] {hit['file']}"
    if hit["line"] is not None:
        where += f":{hit['line']}"
    if hit["url"]:
        where += f" <{hit['url']}>"
    where += f"  ({hit['prepared_file']}:{hit['prepared_line']})"
    snippet = " ".join(str(hit["snippet"]).split())
    return f"{where}\n    {snippet}"
