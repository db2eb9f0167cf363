"""Finding duplicates: per-task signatures, then one task that decides what each document is.

In: documents tagged by `PositionReader`. Out, under the dedup work folder:
`signatures/NNNNN.npz` per task (position, language, normalised-text key, URL key, SimHash
fingerprint, template-line keys) and, from `ResolveDuplicates` (one task),
`resolved.npz` (every position with its removal reason code, 0 = keep), `templates.npz`
(sorted keys of template lines) and `summary.json` (counts per method and language).

Every method keeps the first document of each group in corpus order, so a removed document
always has an earlier kept one it duplicates (directly or through a chain), whatever the method
and however many tasks ran.
"""

from __future__ import annotations

import struct
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline

from bloomforge import files

from .config import DedupConfig
from .io import RESOLVED, TEMPLATES, DedupStep, language, load_arrays, position
from .near import first_of_components, group_representatives, simhash_representatives
from .text import shingle_hashes, simhash, template_line_keys, text_key, url_key

REASONS = ("kept", "exact_text", "exact_url", "simhash", "minhash")
CODE = {name: code for code, name in enumerate(REASONS)}


class DedupSignatures(DedupStep):
    """Computes every document's keys and passes the document on (to MinHash's signature step)."""

    name = "bloomforge dedup signatures"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        cfg = self.config
        cols: dict[str, list] = defaultdict(list)
        for doc in data:
            with self.track_time():
                pos, lang = position(doc), language(doc)
                cols["pos"].append(pos)
                cols["lang"].append(lang)
                cols["text"].append(text_key(doc.text) if cfg.exact_text else 0)
                cols["url"].append(url_key(doc.metadata.get("url")) if cfg.exact_url else 0)
                shingles = shingle_hashes(doc.text, cfg.simhash_window) if cfg.simhash else None
                cols["has_sim"].append(shingles is not None and shingles.size > 0)
                cols["sim"].append(simhash(shingles) if shingles is not None else 0)
                if cfg.template_lines:
                    keys = template_line_keys(doc.text, lang, cfg.template_min_chars)
                    cols["line_pos"] += [pos] * len(keys)
                    cols["line_key"] += keys
            yield doc
        files.write_arrays(
            self.work_file(f"signatures/{rank:05d}.npz"),
            pos=np.array(cols["pos"], dtype=np.uint64),
            lang=np.array(cols["lang"], dtype=str),
            text=np.array(cols["text"], dtype=np.uint64),
            url=np.array(cols["url"], dtype=np.uint64),
            sim=np.array(cols["sim"], dtype=np.uint64),
            has_sim=np.array(cols["has_sim"], dtype=bool),
            line_pos=np.array(cols["line_pos"], dtype=np.uint64),
            line_key=np.array(cols["line_key"], dtype=np.uint64),
        )


def _minhash_cluster_ids(folder: Path, rank_positions: dict[int, np.ndarray]) -> dict[int, int]:
    """position -> cluster id, from datatrove's MinhashDedupCluster `.clusters` files."""
    clusters: dict[int, int] = {}
    for path in sorted(folder.glob("*.clusters")):
        positions = rank_positions[int(path.name.split(".")[0])]
        raw = path.read_bytes()
        for doc_idx, cluster in struct.iter_unpack("<II", raw):
            clusters[int(positions[doc_idx])] = cluster
    return clusters


SENTINEL = 0xFFFFFFFF  # datatrove's doc id for a match with an index (not used here)


def minhash_pairs(
    sig_dir: Path, bucket_dir: Path, config: DedupConfig, offsets: np.ndarray
) -> np.ndarray:
    """Near-duplicate pairs (P, 2) of global document indices (`offsets[rank] + doc index`).

    The candidates are what datatrove's `MinhashDedupBuckets` found (documents sharing one band
    of `minhash_hashes_per_bucket` hashes, written to `*.dups`). A candidate is kept when the two
    documents' whole signatures (datatrove's `*.minhash.sig`, every band) agree on at least
    `minhash_min_similarity` of their hashes, the MinHash estimate of their Jaccard similarity.
    Without this check a band shared by chance joins documents of Jaccard 0.2-0.3 (one in four
    such pairs with 20 bands x 3 rows): formulaic text (message catalogues) loses documents that
    are not copies. Only the signatures of candidate documents are held in memory."""
    found = [np.fromfile(p, dtype="<u4").reshape(-1, 4) for p in sorted(bucket_dir.glob("*.dups"))]
    raw = np.concatenate(found) if found else np.zeros((0, 4), np.uint32)
    raw = raw[raw[:, 0] != SENTINEL].astype(np.int64)
    pairs = np.stack([offsets[raw[:, 0]] + raw[:, 1], offsets[raw[:, 2]] + raw[:, 3]], axis=1)
    if pairs.size == 0 or config.minhash_min_similarity <= 0:
        return pairs
    needed = np.unique(pairs)
    per = config.minhash_hashes_per_bucket
    sigs = np.zeros((needed.size, config.minhash_buckets * per), dtype=np.uint64)
    record = np.dtype([("hashes", "<u8", (per,)), ("doc", "<u4")])
    for band in range(config.minhash_buckets):
        for path in sorted((sig_dir / f"bucket_{band:03d}").glob("*.minhash.sig")):
            rows = np.fromfile(path, dtype=record)
            index = offsets[int(path.name.split(".")[0])] + rows["doc"].astype(np.int64)
            at = np.searchsorted(needed, index).clip(max=needed.size - 1)
            hit = needed[at] == index
            sigs[at[hit], band * per : (band + 1) * per] = rows["hashes"][hit]
    a, b = np.searchsorted(needed, pairs[:, 0]), np.searchsorted(needed, pairs[:, 1])
    agree = (sigs[a] == sigs[b]).mean(axis=1)
    return pairs[agree >= config.minhash_min_similarity]


def _write_clusters(folder: Path, ranks: list[int], offsets: np.ndarray, rep: np.ndarray) -> None:
    """The verified clusters in the layout of datatrove's MinhashDedupCluster `.clusters` files
    (per task: document index, cluster id), for the readers of that layout (`data inspect`).
    `rep`: per global document index, its cluster's first document (the cluster id)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.clusters"):
        old.unlink()
    members = np.flatnonzero(np.bincount(rep, minlength=rep.size)[rep] > 1)
    for i, rank in enumerate(ranks):
        end = offsets[ranks[i + 1]] if i + 1 < len(ranks) else rep.size
        mine = members[(members >= offsets[rank]) & (members < end)]
        if mine.size:
            rows = np.stack([mine - offsets[rank], rep[mine]], axis=1).astype("<u4")
            files.write_array(folder / f"{rank:06d}.clusters", rows)


class ResolveDuplicates(DedupStep):
    """One task: reads all signatures (and MinHash clusters) and decides every document."""

    name = "bloomforge dedup resolve"

    def __init__(self, work_dir: str, config: DedupConfig, minhash_dir: str | None = None) -> None:
        super().__init__(work_dir, config)
        self.minhash_dir = minhash_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        self.single_task(world_size)
        parts, rank_positions = [], {}
        for path in sorted(self.work_file("signatures").glob("*.npz")):
            part = load_arrays(path)
            rank_positions[int(path.stem)] = part["pos"]
            parts.append(part)
        with self.track_time():
            cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
            if cols:  # corpus order; line arrays carry their own positions
                order = np.argsort(cols["pos"], kind="stable")
                cols = {k: v if k.startswith("line_") else v[order] for k, v in cols.items()}
            summary, reasons, templates = self._resolve(cols, rank_positions)
        pos = cols.get("pos", np.zeros(0, np.uint64))
        files.write_arrays(self.work_file(RESOLVED), pos=pos, reason=reasons)
        files.write_arrays(self.work_file(TEMPLATES), keys=templates)
        summary_file = self.work_file("summary.json")
        files.write_json(summary_file, summary, sort_keys=True, ensure_ascii=True, newline=False)
        if data is not None:
            yield from data

    def _resolve(self, cols: dict[str, np.ndarray], rank_positions: dict[int, np.ndarray]):
        cfg = self.config
        if not cols or cols["pos"].size == 0:
            return {"documents": 0}, np.zeros(0, np.uint8), np.zeros(0, np.uint64)
        n = cols["pos"].size
        reason = np.zeros(n, dtype=np.uint8)
        reps: dict[str, np.ndarray] = {}
        if cfg.exact_text:
            reps["exact_text"] = group_representatives(cols["text"])
        if cfg.exact_url:
            reps["exact_url"] = group_representatives(cols["url"])
        if cfg.simhash:
            has = np.flatnonzero(cols["has_sim"])
            rep = np.arange(n)
            rep[has] = has[
                simhash_representatives(
                    cols["sim"][has], cfg.simhash_max_distance, cfg.simhash_blocks
                )
            ]
            reps["simhash"] = rep
        if cfg.minhash and self.minhash_dir:
            reps["minhash"] = self._minhash(cols["pos"], rank_positions)
        removed: dict[str, Counter] = {}
        clusters_found: dict[str, Counter] = {}
        for method, rep in reps.items():  # earlier methods name the reason first
            dup = rep != np.arange(n)
            reason[dup & (reason == 0)] = CODE[method]
            removed[method] = Counter(cols["lang"][dup].tolist())
            firsts = np.unique(rep[dup])
            clusters_found[method] = Counter(cols["lang"][firsts].tolist())
        templates, per_lang = self._templates(cols, reason)
        summary = {
            "documents": int(n),
            "duplicates": {m: dict(c) for m, c in removed.items()},
            "clusters": {m: dict(c) for m, c in clusters_found.items()},
            "removed_by_reason": {
                REASONS[c]: int((reason == c).sum()) for c in range(1, len(REASONS))
            },
            "template_lines": per_lang,
        }
        return summary, reason, templates

    def _minhash(self, pos: np.ndarray, rank_positions: dict[int, np.ndarray]) -> np.ndarray:
        """Index of each document's first near copy (corpus order), from verified pairs."""
        folder = Path(self.minhash_dir)
        ranks = sorted(rank_positions)
        sizes = np.array([rank_positions[r].size for r in ranks], dtype=np.int64)
        offsets = np.zeros(max(ranks) + 1, dtype=np.int64)
        offsets[ranks] = np.cumsum(sizes) - sizes
        pairs = minhash_pairs(folder / "sigs", folder / "buckets", self.config, offsets)
        where = np.concatenate([rank_positions[r] for r in ranks])  # global index -> position
        at = np.searchsorted(pos, where)  # global index -> corpus order
        rep = first_of_components(pos.size, at[pairs])
        _write_clusters(folder / "clusters", ranks, offsets, rep[at])
        return rep

    def _templates(self, cols: dict[str, np.ndarray], reason: np.ndarray):
        """Keys of lines seen >= template_min_count times in documents that stay."""
        if not self.config.template_lines or cols["line_key"].size == 0:
            return np.zeros(0, np.uint64), {}
        doc = np.searchsorted(cols["pos"], cols["line_pos"])
        stays = reason[doc] == 0
        keys, counts = np.unique(cols["line_key"][stays], return_counts=True)
        templates = keys[counts >= self.config.template_min_count]
        is_template = np.isin(cols["line_key"], templates) & stays
        langs = cols["lang"][doc[is_template]]
        per_lang: dict[str, int] = {}
        for lang in np.unique(langs):
            per_lang[str(lang)] = int(np.unique(cols["line_key"][is_template][langs == lang]).size)
        return templates, per_lang


def load_resolved(work_dir: str) -> tuple[np.ndarray, np.ndarray]:
    data = load_arrays(Path(work_dir) / RESOLVED)
    return data["pos"], data["reason"]
