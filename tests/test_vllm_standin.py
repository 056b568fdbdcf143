"""melrl through TRL's own vLLM code, on the CPU stand-in of vLLM 0.31.0 (tests/vllm_standin): MEL training with
vLLM colocated (1 and 2 processes, sleep mode, guided analyses) and in server mode (2 processes, over HTTP), and
`melrl eval --backend vllm`. They test TRL's and melrl's integration code (what they ask of vLLM and what they do
with its answers), not vLLM.

Each run is one process tree (tests/vllm_run.py) with the stand-in first on PYTHONPATH; what the stand-in was asked
to do comes back in its event log, what the trainer saw in `rank{R}.json`.
"""

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import regex

from melrl.cli import preset_path
from melrl.jsonl import read_jsonl
from melrl.method.guidance import SectionGuidance
from tests.helpers import STANDIN_VLLM, free_port, standin_env
from tests.vllm_run import ANALYSIS_BUDGET, GUIDED_ANALYSIS_BUDGET, REPLAY_BUDGET

ROOT = Path(__file__).resolve().parents[1]
ROLLOUT_BUDGET, GROUP = 12, 4  # tests.test_trainer.make_config
STEPS = 2


def _events_module():
    spec = importlib.util.spec_from_file_location("standin_events", STANDIN_VLLM / "vllm" / "_events.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


read_events = _events_module().read


def launch(command, env, timeout=600):
    result = subprocess.run(list(map(str, command)), cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@dataclass
class Run:
    """One training run on the stand-in: its run files, what each rank recorded and the stand-in's event log."""

    metrics: list[dict]
    experiences: list[dict]
    ranks: list[dict]
    events: list[dict]

    def of(self, event: str, rank: int = 0) -> list[dict]:
        return [e for e in self.events if e["event"] == event and e["rank"] == rank]

    def tensors_loaded_before_each_generate(self, rank: int = 0) -> list[int]:
        counts, loaded = [], 0
        for e in (e for e in self.events if e["rank"] == rank):
            if e["event"] == "load_weights":
                loaded += len(e["names"])
            elif e["event"] == "generate":
                counts.append(loaded)
                loaded = 0
        return counts


def train(model_dir, base: Path, *options, processes: int = 1) -> Run:
    events, run_dir = base / "events", base / "run"
    events.mkdir(parents=True, exist_ok=True)  # the server, when there is one, writes there too
    module = ["-m", "tests.vllm_run", model_dir, run_dir, *options]
    launcher = [] if processes == 1 else ["-m", "accelerate.commands.launch", "--config_file",
                                          preset_path("accelerate/cpu_2proc.yaml"), "--main_process_port", free_port()]
    launch([sys.executable, *launcher, *module], standin_env(events))
    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in range(processes)]
    return Run(read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(run_dir / "experiences.jsonl"), ranks,
               read_events(events))


@pytest.fixture(scope="module")
def colocate(tiny_model_dir, tmp_path_factory):
    return train(tiny_model_dir, tmp_path_factory.mktemp("colocate"))


@pytest.fixture(scope="module")
def sleep_guided(tiny_model_dir, tmp_path_factory):
    """2 processes, each with its own colocated engine, in sleep mode, with guided analyses."""
    return train(tiny_model_dir, tmp_path_factory.mktemp("sleep-guided"), "--sleep", "--guidance", processes=2)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """2 training processes against the stand-in's HTTP server (`vllm_mode: server`), guided analyses."""
    base = tmp_path_factory.mktemp("server")
    (base / "events").mkdir()  # the server's and the trainers' events
    port = free_port()
    served = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_model_dir, "--port", str(port),
         "--logprobs-mode", "processed_logprobs"],
        cwd=ROOT, env=standin_env(base / "events"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:  # TRL's client waits for the server to come up
        run = train(tiny_model_dir, base, "--server", f"http://127.0.0.1:{port}", "--guidance", processes=2)
    finally:
        served.terminate()
        served.wait(timeout=30)
    return run


def phases(metrics: list[dict], analysis_budget: int, processes: int = 1) -> list[tuple[int, int]]:
    """(requests, max_tokens) of each generate call that every process makes: rollouts, analyses, replays (spread
    over the processes, padded to equal counts)."""
    calls = []
    for m in metrics:
        calls += [(8 // processes, ROLLOUT_BUDGET), (-(-m["constructed"] // processes), analysis_budget)]
        calls += [(-(-m["replayed"] // processes), REPLAY_BUDGET)] if m["replayed"] else []
    return calls


def assert_mel_trained(run: Run) -> None:
    assert [m["step"] for m in run.metrics] == [1, 2]
    assert sum(m["kept"] for m in run.metrics) > 0
    assert all((m["nll"] is not None) == (m["kept"] > 0) for m in run.metrics)  # the NLL on the kept ones


def assert_every_call_used_the_policys_weights(run: Run, rank: int = 0) -> None:
    """The weights each generate call ran on are the policy's at that call: no sync was missed."""
    calls = run.ranks[rank]["calls"]
    generated = run.of("generate", rank)[: len(calls)]
    assert [c["checksum"] for c in calls] == pytest.approx([e["weights_checksum"] for e in generated], rel=1e-12)
    assert calls[0]["checksum"] != pytest.approx(calls[-1]["checksum"])  # the policy moved in between


def assert_sampling_matches_the_policy(run: Run, rank: int = 0) -> None:
    """TRL's importance-sampling metrics: the engine's log-probabilities of the sampled tokens agree with the
    policy's, at step 2 too (after an optimizer step)."""
    differences = [line["sampling/sampling_logp_difference/max"] for line in run.ranks[rank]["log_history"]
                   if "sampling/sampling_logp_difference/max" in line]
    assert len(differences) == STEPS and max(differences) < 1e-4


def test_colocate_trains_mel_with_its_own_budgets_on_the_synced_engine(colocate):
    assert_mel_trained(colocate)
    (rank,) = colocate.ranks
    generated = colocate.of("generate")
    expected = phases(colocate.metrics, ANALYSIS_BUDGET)
    assert [(e["requests"], e["params"][0]["max_tokens"]) for e in generated[: len(expected)]] == expected
    assert [call["completions"] for call in rank["calls"]] == [e["completions"] for e in generated[: len(expected)]]
    assert all(e["params"][0]["regex"] is None for e in generated)
    assert_every_call_used_the_policys_weights(colocate)
    assert_sampling_matches_the_policy(colocate)
    # one full sync per generation batch, before its rollouts; analyses and replays reuse it
    parameters = colocate.of("init")[0]["parameters"]
    rollouts = [i for i, call in enumerate(rank["calls"]) if call["num_generations"] == GROUP]
    loaded = colocate.tensors_loaded_before_each_generate()[: len(expected)]
    assert loaded == [parameters if i in rollouts else 0 for i in range(len(expected))]
    assert len(colocate.of("reset_prefix_cache")) == STEPS + 1  # and the greedy check's sync
    assert all(0 < e["analysis_tokens"] <= ANALYSIS_BUDGET for e in colocate.experiences)


def test_a_missed_weight_sync_shows_in_the_engines_completion(colocate):
    greedy = colocate.ranks[0]["greedy"]
    assert greedy["synced"] == greedy["policy"]
    assert greedy["stale"] != greedy["policy"]  # the last optimizer step, not yet pushed


def test_two_processes_in_sleep_mode_wake_and_reload_their_engines_for_every_generate_call(sleep_guided):
    assert_mel_trained(sleep_guided)
    rank0, rank1 = sleep_guided.ranks
    assert rank0["final_checksum"] == rank1["final_checksum"]
    assert [e["seed"] for r in (0, 1) for e in sleep_guided.of("init", r)] == [0, 1]  # TRL: the process index
    expected = phases(sleep_guided.metrics, GUIDED_ANALYSIS_BUDGET, processes=2)
    for r in (0, 1):
        generated = sleep_guided.of("generate", r)
        assert [(e["requests"], e["params"][0]["max_tokens"]) for e in generated] == expected
        assert_every_call_used_the_policys_weights(sleep_guided, r)
        assert_sampling_matches_the_policy(sleep_guided, r)
        parameters = sleep_guided.of("init", r)[0]["parameters"]

        def name(e):
            return {"sleep": f"sleep {e.get('level')}", "wake_up": f"wake {e.get('tags')}",
                    "load_weights": "load"}.get(e["event"], e["event"])

        trace = [name(e) for e in sleep_guided.events if e["rank"] == r]
        # TRL's sleep level 2 discards the weights after every generate call: each call wakes and reloads them all
        cycle = ["wake ['weights']", *["load"] * parameters, "reset_prefix_cache", "wake ['kv_cache']", "generate",
                 "sleep 2"]
        assert trace == ["init", "sleep 2", *cycle * len(expected)]


def test_guided_analyses_reach_vllm_as_a_structured_outputs_regex(sleep_guided):
    pattern = SectionGuidance.for_budget("compact", GUIDED_ANALYSIS_BUDGET).regex
    for r in (0, 1):
        regexes = [e["params"][0]["regex"] for e in sleep_guided.of("generate", r)]
        budgets = [e["params"][0]["max_tokens"] for e in sleep_guided.of("generate", r)]
        assert regexes == [pattern if budget == GUIDED_ANALYSIS_BUDGET else None for budget in budgets]
        assert budgets.count(GUIDED_ANALYSIS_BUDGET) == STEPS
    for e in sleep_guided.experiences:  # the stand-in held every analysis to the skeleton
        assert regex.fullmatch(pattern, e["analysis"], partial=e["truncated"]), e["analysis"]
    assert any(not e["truncated"] for e in sleep_guided.experiences)  # some reached the end of the skeleton


def test_server_mode_sends_every_ranks_prompts_in_one_request_and_slices_the_answers(server):
    run, served = server, server.events
    assert_mel_trained(run)
    requests = [e for e in served if e["event"] == "completion_request"]
    answers = [e for e in served if e["event"] == "generate"]
    rank0, rank1 = run.ranks
    assert len(requests) == len(answers) == len(rank0["calls"]) == len(rank1["calls"])
    pattern = SectionGuidance.for_budget("compact", GUIDED_ANALYSIS_BUDGET).regex
    for request, answer, mine, theirs in zip(requests, answers, rank0["calls"], rank1["calls"], strict=True):
        assert mine["num_generations"] == theirs["num_generations"]
        group = mine["num_generations"]
        # TRL gathers every rank's prompts and sends each distinct one once, with n completions
        assert request["prompts"] == (mine["prompts"] + theirs["prompts"])[::group]
        assert answer["params"][0]["n"] == group
        budget = answer["params"][0]["max_tokens"]
        assert answer["params"][0]["regex"] == (pattern if budget == GUIDED_ANALYSIS_BUDGET else None)
        assert set(request["fields"]) >= {"prompt", "max_tokens", "n", "return_token_ids"}
        assert answer["completions"] == mine["completions"] + theirs["completions"]
    assert {e["params"][0]["max_tokens"] for e in answers} == {ROLLOUT_BUDGET, GUIDED_ANALYSIS_BUDGET, REPLAY_BUDGET}
    assert not [e for e in served if e["event"] in ("ignored_request_fields", "server_error")]  # vLLM 0.31.0's fields
    # weights: the main process announces and streams every tensor once per step (NCCL, replaced here)
    pushes = rank0["pushes"]
    assert pushes[0]["init_communicator"].startswith("cpu") and rank1["pushes"] == []
    assert len(pushes) == 1 + STEPS
    assert all(p["metadata"] == p["names"] and len(p["names"]) == rank0["parameters"] for p in pushes[1:])
    assert len([e for e in served if e["event"] == "reset_prefix_cache"]) == STEPS


def test_eval_on_vllm_gives_the_transformers_back_ends_greedy_answers(tiny_model_dir, tmp_path):
    from melrl.cli import main

    common = ["eval", "--model", tiny_model_dir, "--benchmarks", "arith", "--limit", "3", "--k", "2",
              "--max-new-tokens", "8", "--template", "short", "--no-progress"]
    (tmp_path / "events").mkdir()
    launch([sys.executable, "-m", "melrl", *common, "--backend", "vllm", "--output-dir", tmp_path / "vllm"],
           standin_env(tmp_path / "events"))
    assert main([*common, "--backend", "transformers", "--output-dir", str(tmp_path / "transformers")]) == 0
    on_vllm, on_transformers = (read_jsonl(tmp_path / name / "samples.jsonl") for name in ("vllm", "transformers"))
    assert [r["greedy"] for r in on_vllm] == [r["greedy"] for r in on_transformers]
    assert all("seed" not in s for r in on_vllm for s in r["samples"])  # the engine is seeded once
    assert [len(r["samples"]) for r in on_vllm] == [2, 2, 2]
    assert json.loads((tmp_path / "vllm" / "results.json").read_text())["config"]["backend"] == "vllm"
    events = read_events(tmp_path / "events")
    (call,) = [e for e in events if e["event"] == "generate"]
    # batched sampling: per problem one greedy request and one request for its k samples, none with a seed of its own
    assert call["requests"] == 3 * 2
    assert sorted((p["temperature"], p["n"]) for p in call["params"]) == [(0.0, 1), (0.6, 2)]  # distinct settings
    assert {p["max_tokens"] for p in call["params"]} == {8} and {p["seed"] for p in call["params"]} == {None}


# ---------------------------------------------------------------- the stand-in's own contract


@pytest.fixture(scope="module")
def vllm_standin():
    """The stand-in imported into this process for the duration of the module, then forgotten."""
    sys.path.insert(0, str(STANDIN_VLLM))
    try:
        import vllm

        yield vllm
    finally:
        sys.path.remove(str(STANDIN_VLLM))
        for name in [name for name in sys.modules if name == "vllm" or name.startswith("vllm.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def engine(vllm_standin, tiny_model_dir):
    return vllm_standin.LLM(model=tiny_model_dir, seed=0, max_model_len=256, enable_sleep_mode=True)


def test_sampling_params_take_exactly_the_fields_of_vllm_0_31_0(vllm_standin):
    from vllm._api import API

    assert API["source"]["wheel"].startswith("vllm-0.31.0-")
    defaults = {name: value for name, value in API["SamplingParams"].items()
                if not name.startswith("_") and value != "<not a literal>"}
    assert {"n", "temperature", "max_tokens", "stop_token_ids", "structured_outputs", "logprobs"} <= set(defaults)
    vllm_standin.SamplingParams(**defaults)  # every field at vLLM's default
    with pytest.raises(TypeError, match="Unexpected keyword argument 'max_new_tokens'"):
        vllm_standin.SamplingParams(max_new_tokens=8)  # transformers' name, not vLLM's
    with pytest.raises(NotImplementedError, match="presence_penalty"):
        vllm_standin.SamplingParams(presence_penalty=0.5)  # vLLM's, not implemented by the stand-in
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        vllm_standin.SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="one kind of structured outputs"):
        vllm_standin.StructuredOutputsParams()
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_model_length'"):
        vllm_standin.LLM(model="unused", max_model_length=128)  # TRL's config name, not vLLM's


def greedy(engine, vllm, ids, **params):
    out = engine.generate([{"prompt_token_ids": ids}], vllm.SamplingParams(temperature=0.0, **params),
                          use_tqdm=False)
    return out[0].outputs[0]


def test_stand_in_stops_where_vllm_stops(engine, vllm_standin):
    free = greedy(engine, vllm_standin, [5, 6, 7], max_tokens=6)
    assert len(free.token_ids) == 6 and free.finish_reason == "length"
    stop = free.token_ids[2]
    first = free.token_ids.index(stop)
    stopped = greedy(engine, vllm_standin, [5, 6, 7], max_tokens=6, stop_token_ids=[stop])
    assert stopped.token_ids == free.token_ids[: first + 1]  # the stop token included, as in vLLM
    assert (stopped.finish_reason, stopped.stop_reason) == ("stop", stop)
    with pytest.raises(ValueError, match="longer than the maximum model length of 256"):
        greedy(engine, vllm_standin, list(range(5, 300)))


def test_stand_in_generates_from_the_weights_loaded_into_it_and_refuses_discarded_ones(engine, vllm_standin):
    import torch

    model = engine.llm_engine.model_executor.driver_worker.model_runner.model
    original = {name: p.detach().clone() for name, p in engine.engine.parameters.items()}
    before = greedy(engine, vllm_standin, [5, 6, 7], max_tokens=6).token_ids
    model.load_weights((name, t + 0.05 * torch.randn_like(t)) for name, t in original.items())
    assert greedy(engine, vllm_standin, [5, 6, 7], max_tokens=6).token_ids != before
    with pytest.raises(KeyError, match="not a parameter"):
        model.load_weights([("lm_head.bias", torch.zeros(3))])
    engine.sleep(level=2)
    with pytest.raises(RuntimeError, match="sleeps"):
        greedy(engine, vllm_standin, [5, 6, 7])
    with pytest.raises(RuntimeError, match="while the weights sleep"):
        model.load_weights(original.items())
    engine.wake_up(tags=["weights"])
    engine.wake_up(tags=["kv_cache"])
    with pytest.raises(RuntimeError, match="discarded the weights"):
        greedy(engine, vllm_standin, [5, 6, 7])
    model.load_weights(original.items())
    assert greedy(engine, vllm_standin, [5, 6, 7], max_tokens=6).token_ids == before
