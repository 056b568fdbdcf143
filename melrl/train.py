"""`melrl train`: load the model and data named in the run arguments and train with MELTrainer."""

from __future__ import annotations

import logging

from .config import MELConfig, RunArguments
from .data import load_records_with_report
from .models import load_model_and_tokenizer
from .prompts import render, solve_text

logger = logging.getLogger("melrl.train")


def load_run_records(run: RunArguments, seed: int):
    """The problems of a run, from the registry, a local file or the hub."""
    options = {"n": run.arith_size, "level": run.arith_level} if run.dataset_name == "arith" else {}
    records, skipped = load_records_with_report(
        run.dataset_name,
        run.dataset_split,
        data_dir=run.data_dir,
        limit=run.dataset_limit,
        skip_invalid=run.skip_invalid,
        seed=seed,
        **options,
    )
    if not records:
        raise ValueError(f"dataset {run.dataset_name!r} gave no problems")
    if skipped:
        logger.warning("skipped %d malformed rows of %s", skipped, run.dataset_name)
    return records


def build_train_dataset(records, tokenizer, template: str):
    """A `datasets.Dataset` with the rendered solve prompt and the columns MEL needs (problem, answer, id)."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "prompt": [render(tokenizer, solve_text(r.problem, template)) for r in records],
            "problem": [r.problem for r in records],
            "answer": [r.answer for r in records],
            "id": [r.id for r in records],
        }
    )


def build_trainer(run: RunArguments, config: MELConfig, callbacks=None):
    from .trainer import MELTrainer

    records = load_run_records(run, config.seed)
    model, tokenizer = load_model_and_tokenizer(run.model_name_or_path, dtype=run.dtype)
    dataset = build_train_dataset(records, tokenizer, config.prompt_template)
    return MELTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks)


def run_training(run: RunArguments, config: MELConfig, callbacks=None):
    trainer = build_trainer(run, config, callbacks)
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(config.output_dir)
    return trainer
