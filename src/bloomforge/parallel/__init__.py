"""Parallelism, kept out of the model: the device mesh and what each dimension does to a model.

In: a built BloomLM, the recipe's `parallel` section and the world from `torchrun`. Out: the same
model, sharded in torchtitan's order (tensor parallel, activation checkpointing, compile, FSDP2
per block then root), or cut into pipeline stages with a schedule; the gradient-norm and
tied-embedding synchronisation the training loop needs. Modules: `dims` (mesh shape and checks),
`env` (process group from torchrun's environment), `tensor` (DTensor TP), `fsdp` (FSDP2),
`pipeline` (stages and schedules), `grads` (clipping across shards).
"""
