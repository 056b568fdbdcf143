"""Generate answers for a few problems with plain batched `generate` and verify them (`melrl solve`)."""

from __future__ import annotations

from .answers import extract_answer
from .data import load_records
from .models import load_model_and_tokenizer
from .prompts import ANSWER_FORMAT, render, solve_text
from .verifier import verify_batch


def solve_and_verify(model_name, dataset, *, split=None, limit=4, template="qwen-boxed", max_new_tokens=256,
                     data_dir=None, do_sample=False) -> list[dict]:
    import torch

    records = load_records(dataset, split, data_dir=data_dir, limit=limit)
    model, tokenizer = load_model_and_tokenizer(model_name)
    model.eval()
    prompts = [render(tokenizer, solve_text(r.problem, template)) for r in records]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    answer_format = ANSWER_FORMAT[template]
    verdicts = verify_batch(texts, [r.answer for r in records], answer_format=answer_format)
    return [
        {"id": r.id, "problem": r.problem, "gold": r.answer, "completion": text,
         "answer": extract_answer(text, answer_format), "correct": ok}
        for r, text, ok in zip(records, texts, verdicts)
    ]
