"""Training: the single-process engine (loop, schedules, rampup, guards, checkpoints, metrics).

In: a recipe and token shards. Out: a run folder with checkpoints, metrics.jsonl, TensorBoard
events and a final model checkpoint. Parallelism is applied by `bloomforge.parallel`;
`train.train` is the entry point.
"""
