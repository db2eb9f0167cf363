"""Data: reading raw and prepared text (inputs), token shards and the training mixture loader.

ROOTS-style preparation (filters, dedup, PII, data card) lands here too (issue 6).
"""
