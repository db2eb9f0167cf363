"""Data: ROOTS-style preparation (filters, dedup, PII), the data card, inspection and search of
the prepared corpus, token shards, and the training mixture loader.

In: raw documents (`bloomforge.documents`) and the recipe's `corpus`, `prepare`, `tokens` and
`data` sections (`data.config`, `data.prepare.config`). Out: prepared folders, token shards and
batches. Modules: `prepare` (datatrove jobs), `filters`, `dedup`, `pii`, `report`, `inspect`,
`search`, `corpus` (text found on this machine), `tokenize`, `shards`, `loader`.
"""
