"""Who writes the meta-experiences (setting `analyst`): the policy itself (`policy`, the paper's self-analysis) or,
beyond the paper, an external model behind an OpenAI-compatible chat-completions API (`endpoint`,
`melrl.training.analyst_client`).

An endpoint analyst gets the same analysis prompt as the policy, the text before the policy's chat template as
one user message (the server applies its own template). Its reply is tokenized by the policy's tokenizer, with the
policy's end token after it unless it was cut at its budget (`finish_reason: length`, counted as truncated), and cut
to `analysis_max_new_tokens` of the policy's tokens (truncated too). From there it is judged, replayed and
internalized like the policy's own analysis, the NLL conditioned on the policy's tokenization of the analysis prompt.

The analyst is asked once per analysis, on the main process, and every process gets the same replies
(`decided_on_main`), hence the same kept sets. A request that fails after its retries is counted in
`analyst_failed` and its pair is skipped (not constructed).
"""

from __future__ import annotations

import logging

from melrl.method.meta_phase import MetaExperienceJob
from melrl.method.prompts import analysis_text
from melrl.training.agreement import decided_on_main
from melrl.training.analyst_client import AnalystReply, EndpointSettings, request_analyses
from melrl.training.generation import analysis_guidance, generate_distributed

ANALYSTS = ("policy", "endpoint")
"""Who writes the meta-experiences: `policy` (the paper's) or `endpoint` (ours: an external served model)."""

POLICY_ANALYST = {"kind": "policy"}

logger = logging.getLogger(__name__)


def write_analyses(trainer, jobs: list[MetaExperienceJob]) -> list[MetaExperienceJob]:
    """Fill in each job's analysis (text, policy token ids, `truncated`, `analyst`); return the jobs that got one,
    in order (all of them, unless an endpoint request failed)."""
    if trainer.args.analyst == "endpoint":
        return _from_endpoint(trainer, jobs)
    generated = generate_distributed(trainer, [job.analysis_prompt_ids for job in jobs],
                                     trainer.args.analysis_max_new_tokens, guidance=analysis_guidance(trainer))
    for job, ids in zip(jobs, generated, strict=True):
        job.analysis_ids = ids
        job.analysis = trainer.processing_class.decode(ids, skip_special_tokens=True)
        job.truncated = not ids or ids[-1] not in trainer.eos_token_ids
        job.analyst = POLICY_ANALYST
    return jobs


def _from_endpoint(trainer, jobs: list[MetaExperienceJob]) -> list[MetaExperienceJob]:
    args = trainer.args
    settings = EndpointSettings.from_config(args)
    prompts = [analysis_text(job.problem, job.incorrect_solution, job.correct_solution, args.analysis_prompt)
               for job in jobs]
    replies = decided_on_main(trainer.accelerator, lambda: request_analyses(settings, prompts))
    written = []
    for job, reply in zip(jobs, replies, strict=True):
        if reply.error is None:
            take_reply(job, reply, trainer.processing_class, trainer.eos_token_ids[0], args.analysis_max_new_tokens)
            written.append(job)
    failed = [reply for reply in replies if reply.error is not None]
    if failed:
        logger.warning("analyst %s failed on %d of %d analyses, skipped (first: %s after %d attempt(s))",
                       settings.model, len(failed), len(jobs), failed[0].error, failed[0].attempts)
    trainer.stats.add(analyst_failed=len(failed))
    return written


def take_reply(job: MetaExperienceJob, reply: AnalystReply, tokenizer, eos_token_id: int, budget: int) -> None:
    """The analyst's reply as the job's analysis, in the policy's tokens: its end token after a reply that ended by
    itself; truncated when the server cut it (`finish_reason: length`) or it exceeds `budget` policy tokens."""
    ids = list(tokenizer(reply.text, add_special_tokens=False)["input_ids"])
    job.truncated = reply.finish_reason == "length" or len(ids) + 1 > budget
    job.analysis_ids = ids[:budget] if job.truncated else ids + [eos_token_id]
    job.analysis = tokenizer.decode(job.analysis_ids, skip_special_tokens=True) if len(ids) > budget else reply.text
    job.analyst = reply.record()
