"""The jitted training step under ``jax.shard_map`` (:mod:`train_step`), its state
(:mod:`train_state`), optimizers and schedules (:mod:`optimizers`) and gradient caching
(:mod:`gradcache`).

May import: model, losses, runtime.
"""
