"""`analyst: endpoint`: meta-experiences written by a model behind an OpenAI-compatible API, against a real HTTP server
on 127.0.0.1 (`tests.chat_server`): from the server to replay and the NLL, faults (a server that stops, a slow one,
one that fails, a wrong model name), the API key kept out of the run files, and two processes asking it once."""

import json
import os
import sys
import time
from pathlib import Path

import pytest
from transformers import TrainerCallback

import melrl.training.trainer as trainer_module
from melrl.cli import main, preset_path
from melrl.jsonl import read_jsonl
from melrl.method.meta_phase import MetaExperienceJob
from melrl.method.pairs import Pair
from melrl.method.prompts import analysis_text
from melrl.models import load_model_and_tokenizer
from melrl.training.analyst import take_reply
from melrl.training.analyst_client import AnalystReply, EndpointSettings, request_analyses
from melrl.training.trainer import MELTrainer
from tests.chat_server import MODEL, ChatServer, analysis
from tests.helpers import free_port
from tests.test_data_files import write_train_config
from tests.test_distributed import launch
from tests.test_trainer import make_config, make_dataset, parity_accuracy

SECRET = "sk-test-4f1c9e"


@pytest.fixture
def server():
    chat = ChatServer().start()
    yield chat
    chat.stop()


def endpoint_settings(base_url, **overrides):
    values = dict(analyst="endpoint", analyst_base_url=base_url, analyst_model=MODEL, analyst_timeout=5.0,
                  analyst_retries=1, analyst_backoff=0.01, analyst_max_new_tokens=200, analysis_max_new_tokens=200)
    return values | overrides


def train(tiny_model_dir, tmp_path, monkeypatch, base_url, callbacks=(), **overrides):
    monkeypatch.setenv("MELRL_ANALYST_API_KEY", SECRET)
    monkeypatch.setattr(trainer_module, "verify_batch", lambda texts, golds, **kw: [True] * len(texts))
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    config = make_config(tmp_path, **endpoint_settings(base_url, **{"max_steps": 1, **overrides}))
    trainer = MELTrainer(model=model, reward_funcs=[parity_accuracy], args=config, train_dataset=make_dataset(),
                         processing_class=tokenizer, callbacks=list(callbacks))
    trainer.train()
    run = Path(config.output_dir)
    return trainer, list(read_jsonl(run / "metrics.jsonl")), list(read_jsonl(run / "experiences.jsonl"))


def test_analyses_from_the_server_reach_replay_and_the_nll(tiny_model_dir, tmp_path, monkeypatch, server):
    trainer, metrics, records = train(tiny_model_dir, tmp_path, monkeypatch, server.base_url)
    assert records and len(server.requests) == len(records) == metrics[0]["constructed"] == metrics[0]["pairs"]
    texts = {analysis(n) for n in range(1, len(records) + 1)}
    tokenizer = trainer.processing_class
    for record in records:
        assert record["analysis"] in texts and record["parsed"] and record["replayed"] and record["kept"]
        # the analyst's text in the policy's tokens, closed by the policy's end token
        assert record["analysis_tokens"] == len(tokenizer(record["analysis"], add_special_tokens=False)["input_ids"]) + 1
        assert record["analyst"]["kind"] == "endpoint" and record["analyst"]["model"] == MODEL
        assert record["analyst"]["latency_s"] >= 0 and record["analyst"]["completion_tokens"] > 0
    # the same Appendix C prompt the policy would read, as one user message, with the configured budget
    sent = {r["messages"][0]["content"] for r in server.requests}
    assert sent == {analysis_text(r["problem"], r["incorrect_solution"], r["correct_solution"], "compact")
                    for r in records}
    assert all(r["max_tokens"] == 200 and r["model"] == MODEL for r in server.requests)
    line = metrics[0]
    assert line["kept"] == len(records) and line["analyst_failed"] == 0 and line["nll"] is not None
    assert line["nll_tokens"] == sum(r["analysis_tokens"] for r in records)
    # the key goes to the server only: never into a run file
    assert set(server.auth) == {f"Bearer {SECRET}"}
    for path in Path(trainer.args.output_dir).rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path


def test_a_server_that_stops_mid_run_skips_its_analyses(tiny_model_dir, tmp_path, monkeypatch, server):
    class StopAfterFirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            server.stop()

    _, metrics, records = train(tiny_model_dir, tmp_path, monkeypatch, server.base_url,
                                callbacks=[StopAfterFirstStep()], max_steps=2, analyst_timeout=2.0)
    first, second = metrics
    assert first["constructed"] > 0 and first["analyst_failed"] == 0
    assert second["pairs"] > 0 and second["analyst_failed"] == second["pairs"] and second["constructed"] == 0
    assert {r["step"] for r in records} == {1} and second["nll"] is None


def test_a_reply_cut_at_its_budget_counts_as_truncated(tiny_model_dir, server):
    server.mode = "length"
    settings = EndpointSettings.from_config(make_config(Path("/tmp"), **endpoint_settings(server.base_url)))
    [reply] = request_analyses(settings, ["prompt"])
    assert reply.finish_reason == "length" and reply.error is None
    _, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    job = MetaExperienceJob(Pair(0, 0, 1), "p0", "q", "1", "a", "b", [1, 2])
    take_reply(job, reply, tokenizer, eos_token_id=0, budget=200)
    assert job.truncated and job.analysis == reply.text  # and no end token after it
    assert job.analysis_ids == tokenizer(reply.text, add_special_tokens=False)["input_ids"]
    take_reply(job, AnalystReply(text=analysis(1), finish_reason="stop"), tokenizer, eos_token_id=0, budget=5)
    assert job.truncated and len(job.analysis_ids) == 5 and analysis(1).startswith(job.analysis)


def test_a_slow_server_past_the_timeout_fails_within_the_bound(server):
    server.mode, server.delay = "slow", 3.0
    settings = EndpointSettings(server.base_url, MODEL, "MELRL_ANALYST_API_KEY", max_new_tokens=16, temperature=1.0,
                                concurrency=2, timeout=0.3, retries=1, backoff=0.05)
    start = time.perf_counter()
    replies = request_analyses(settings, ["a", "b", "c"])
    elapsed = time.perf_counter() - start
    # two rounds of concurrency 2, each two attempts of 0.3 s plus a backoff: nowhere near the server's 3 s
    assert elapsed < 2.5, elapsed
    assert all(r.error == "no reply within analyst_timeout = 0.3 s" and r.attempts == 2 and not r.text
               for r in replies)


def test_a_failed_request_is_retried_then_succeeds(server):
    server.fail_first = 2
    settings = EndpointSettings(server.base_url, MODEL, "MELRL_ANALYST_API_KEY", max_new_tokens=16, temperature=1.0,
                                concurrency=1, timeout=5.0, retries=2, backoff=0.01)
    [reply] = request_analyses(settings, ["a"])
    assert reply.error is None and reply.attempts == 3 and reply.text == analysis(3)
    server.fail_first = 10
    [reply] = request_analyses(settings, ["a"])
    assert reply.attempts == 3 and "InternalServerError" in reply.error and reply.text == ""


@pytest.mark.parametrize("fault, message", [
    ("model", "melrl train: error: analyst_model 'no-such-model' is not served by {url} (GET /models lists: "
              "teacher-test; a request for it answered HTTP 404)"),
    ("unreachable", "melrl train: error: analyst_base_url http://127.0.0.1:{port}/v1 cannot be reached"),
])
def test_the_endpoint_is_checked_before_the_model_loads(tmp_path, capsys, server, fault, message):
    port = free_port()
    url = server.base_url if fault == "model" else f"http://127.0.0.1:{port}/v1"
    model = "no-such-model" if fault == "model" else MODEL
    config = write_train_config(tmp_path, analyst="endpoint", analyst_base_url=url, analyst_model=model,
                          analyst_timeout=5.0)
    assert main(["train", "--config", config]) == 2  # a model load would fail otherwise: there is no /no/such/model
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message.format(url=url, port=port)), err


def test_two_processes_ask_once_and_keep_the_same_texts(tiny_model_dir, tmp_path, server):
    output = tmp_path / "run"
    os.environ["MELRL_ANALYST_API_KEY"] = SECRET
    try:
        launch([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(preset_path("accelerate/cpu_2proc.yaml")), "--main_process_port", str(free_port()),
                "-m", "tests.analyst_mp_run", tiny_model_dir, str(output), server.base_url], output)
    finally:
        del os.environ["MELRL_ANALYST_API_KEY"]
    rank0, rank1 = (json.loads((output / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["analyses"] and rank0 == rank1  # the same texts, token ids and kept sets on both ranks
    assert len(server.requests) == len(rank0["analyses"])  # once per analysis, not once per rank
    assert {a["text"] for a in rank0["analyses"]} <= {analysis(n) for n in range(1, len(server.requests) + 1)}
    records = list(read_jsonl(output / "experiences.jsonl"))
    assert [r["analysis"] for r in records] == [a["text"] for a in rank0["analyses"]]


@pytest.mark.parametrize("values, match", [
    ({"analyst": "teacher"}, r"analyst: 'teacher' is not one of \('policy', 'endpoint'\)"),
    ({"analyst": "endpoint", "analyst_model": MODEL}, "analyst: endpoint needs analyst_base_url"),
    ({**endpoint_settings("http://127.0.0.1:1/v1"), "analysis_guidance": "sections"},
     "analysis_guidance: sections constrains the policy's own analyses"),
    ({**endpoint_settings("http://127.0.0.1:1/v1"), "analyst_timeout": 0}, "analyst_timeout must be > 0"),
])
def test_analyst_settings_are_checked(tmp_path, values, match):
    with pytest.raises(ValueError, match=match):
        make_config(tmp_path, **values)
    assert make_config(tmp_path).analyst == "policy"  # the paper's self-analysis by default
