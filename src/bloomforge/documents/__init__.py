"""Reading raw documents, below every stage: text, jsonl, parquet (+gz/zst) and web archives
(WARC/WET) in; `Document`s with their language, source and provenance out (`inputs`,
`warc`). The data stage, the tokenizer and evaluation all read through it."""
