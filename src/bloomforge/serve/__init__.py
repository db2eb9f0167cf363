"""Serving: `bloomforge serve CKPT`, an OpenAI-compatible completions API with log-probs.

In: a checkpoint (run folder, checkpoint folder or exported HF BLOOM folder). Out: an HTTP
server (FastAPI + uvicorn) that lm-eval's `local-completions` and the `openai` client use
unchanged, and a playground page. `load_engine` and `create_app` are the library entry points.
"""

from bloomforge.serve.loading import load_engine

__all__ = ["load_engine"]
