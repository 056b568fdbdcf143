"""Generate answers for a few problems with the evaluation's transformers back end and verify them (`melrl solve`)."""

from __future__ import annotations

from melrl.verify.answers import extract_answer
from melrl.data import load_records
from melrl.models import load_model_and_tokenizer
from melrl.method.prompts import ANSWER_FORMAT, render, solve_text
from melrl.verify.verifier import verify_batch


def solve_and_verify(model_name, dataset, *, split=None, limit=4, template="qwen-boxed", max_new_tokens=256,
                     data_dir=None, do_sample=False) -> list[dict]:
    from melrl.evaluation.backends import Request, TransformersBackend

    records = load_records(dataset, split, data_dir=data_dir, limit=limit)
    model, tokenizer = load_model_and_tokenizer(model_name)
    model.eval()
    temperature = 1.0 if do_sample else 0.0
    requests = [Request(render(tokenizer, solve_text(r.problem, template)), temperature, i if do_sample else None,
                        max_new_tokens) for i, r in enumerate(records)]
    texts = [c.text for c in TransformersBackend(model, tokenizer).generate(requests)]
    answer_format = ANSWER_FORMAT[template]
    verdicts = verify_batch(texts, [r.answer for r in records], answer_format=answer_format)
    return [
        {"id": r.id, "problem": r.problem, "gold": r.answer, "completion": text,
         "answer": extract_answer(text, answer_format), "correct": ok}
        for r, text, ok in zip(records, texts, verdicts)
    ]
