"""lm-eval's own command line with the `bloomforge` model registered.

In: exactly lm-eval's arguments, e.g.
    python -m bloomforge.evaluation.lm_eval_cli --model bloomforge \
        --model_args checkpoint=CKPT --tasks my_task --include_path tasks/ --device cpu
Out: whatever lm-eval prints and writes. lm-eval 0.4.x does not discover third-party models
through package entry points, so this wrapper imports `bloomforge.evaluation.harness` (which
registers the model) and then hands over to `lm_eval.__main__.cli_evaluate` unchanged. A
bloomforge error (a bad model_args value, `device=cuda` without CUDA) prints as one line, exit 2.
"""

from __future__ import annotations

import sys


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    import bloomforge.evaluation.harness  # noqa: F401  (registers --model bloomforge)
    from bloomforge.errors import BloomforgeError

    try:
        cli_evaluate()
    except BloomforgeError as e:
        print(f"bloomforge-lm-eval: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
