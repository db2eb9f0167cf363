"""Evaluation: zero-shot tasks and perplexity per language, and a model class for lm-eval.

In: a checkpoint (a `BloomLM` + tokenizer) and local task files / texts. Out: accuracies with
standard errors, perplexity and bits per byte, as json and a table. `scoring` is the one scorer
(log-likelihood, rolling log-likelihood, greedy generation) used by `bloomforge eval` and by the
`bloomforge` model of lm-evaluation-harness (`harness`). Modules: scoring, metrics, tasks,
builtin_tasks, evaluate, harness, lm_eval_cli, commands.
"""
