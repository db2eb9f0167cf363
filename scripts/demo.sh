#!/usr/bin/env bash
# The main job until `bloomforge demo` lands: inspect the BLOOM family, create a tiny model,
# generate with it, export it to Hugging Face format and load it back with transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
OUT=${OUT:-demo_out}
set -x
bloomforge model info bloom-1b7
bloomforge model info bloom-176b
bloomforge model init tiny "$OUT/ckpt" vocab_size=260 --tokenizer bytes
bloomforge generate "$OUT/ckpt" --prompt "Le chat" --prompt "The cat" --max-new-tokens 20 \
  --temperature 0.8 --top-p 0.9 --seed 1
bloomforge export "$OUT/ckpt" "$OUT/hf"
python - "$OUT/hf" <<'PY'
import sys
from transformers import AutoTokenizer, BloomForCausalLM
model = BloomForCausalLM.from_pretrained(sys.argv[1], local_files_only=True)
tok = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
out = model.generate(**tok("Le chat", return_tensors="pt"), max_new_tokens=5, do_sample=False)
print("transformers loaded the export:", sum(p.numel() for p in model.parameters()), "params;",
      repr(tok.decode(out[0])))
PY
