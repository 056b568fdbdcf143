"""The method, engine-free: prompts, pairs, meta-experience parsing and checks, advantages and loss terms.

Nothing here imports trl or transformers, so that another engine can reuse it."""
