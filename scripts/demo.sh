#!/usr/bin/env bash
# The main job until `bloomforge demo` (issue 9) lands: multilingual text -> BLOOM-style
# tokenizer with a fertility table -> token shards -> a tiny BLOOM trained for a few minutes on
# CPU -> zero-shot evaluation and perplexity -> generation -> Hugging Face export, reloaded with
# transformers. Text: ../shared/data when it is beside the repo, else this Python's stdlib source.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
OUT=${OUT:-demo_out}
SHARED=../shared/data
rm -rf "$OUT"
mkdir -p "$OUT/text"
if [ -d "$SHARED/corpus" ]; then
  for lang in en fr es pt id vi ca eu zh; do
    head -n 1500 "$SHARED/corpus/$lang.txt" > "$OUT/text/$lang.txt"
  done
  FERT=(--text "$SHARED/ud/fr.txt" --text "$SHARED/ud/en.txt" --text "$SHARED/ud/zh.txt"
        --text "$SHARED/ud/eu.txt")
  EVAL=(--tasks xcopa,copa --data "$SHARED/eval" --limit 50 --perplexity "fr=$SHARED/ud/fr.txt")
else
  STDLIB=$(python -c 'import os; print(os.path.dirname(os.__file__))')
  cat "$STDLIB"/[a-m]*.py > "$OUT/text/code.txt"
  FERT=(--text "code=$OUT/text/code.txt")
  EVAL=(--perplexity "code=$OUT/text/code.txt")
fi
set -x
bloomforge model info bloom-176b
bloomforge tokenizer train --input "$OUT"/text/*.txt --vocab-size 8000 --alpha 0.3 --out "$OUT/tok"
bloomforge tokenizer fertility --tokenizer "$OUT/tok" "${FERT[@]}" --out "$OUT/fertility"
bloomforge data tokenize --tokenizer "$OUT/tok" --input "$OUT"/text/*.txt --out "$OUT/tokens"
bloomforge train recipes/tiny.yaml --dry-run data.seq_len=128
bloomforge train recipes/tiny.yaml data.tokens="$OUT/tokens" data.group_by=language \
  data.alpha=0.3 data.seq_len=128 train.max_tokens=4e5 train.warmup_tokens=2e4 \
  train.decay_tokens=4e5 train.log_every=10 train.eval_every=100 out="$OUT/run"
bloomforge eval "$OUT/run" "${EVAL[@]}" --out "$OUT/eval.json"
bloomforge generate "$OUT/run" --prompt "Le chat" --prompt "The cat" --max-new-tokens 20 \
  --temperature 0.8 --top-p 0.9 --seed 1
bloomforge export "$OUT/run" "$OUT/hf"
python - "$OUT/hf" <<'PY'
import sys
from transformers import AutoTokenizer, BloomForCausalLM
model = BloomForCausalLM.from_pretrained(sys.argv[1], local_files_only=True)
tok = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
out = model.generate(**tok("Le chat", return_tensors="pt"), max_new_tokens=8, do_sample=False)
print("transformers loaded the export:", sum(p.numel() for p in model.parameters()), "params;",
      repr(tok.decode(out[0])))
PY
