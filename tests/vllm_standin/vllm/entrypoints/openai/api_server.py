"""The HTTP endpoints of `vllm serve` that TRL 1.16's `VLLMClient` calls, on the stand-in's `Engine`:

    python -m vllm.entrypoints.openai.api_server --model DIR --port PORT [--logprobs-mode processed_logprobs]

`GET /health`, `/v1/models`, `/server_info?config_format=json`, `/get_world_size`; `POST /v1/completions` (token-id
prompts, `n` completions each, prompt-major, with `token_ids`, `prompt_token_ids` and `token_id:N` logprobs, the
request's fields checked against vLLM 0.31.0's `CompletionRequest`), `/reset_prefix_cache`. The weight-transfer
endpoints (`/init_weight_transfer_engine`, `/update_weights`, ...) answer 501: vLLM moves weights over NCCL, which
the stand-in does not have. Each completion request is written to the event log with the prompts it carried.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from vllm._api import API
from vllm._engine import Engine
from vllm._events import record
from vllm.sampling_params import SamplingParams, StructuredOutputsParams

# CompletionRequest fields that map onto SamplingParams under the same name
_SAMPLING_FIELDS = ("n", "temperature", "top_p", "top_k", "min_p", "max_tokens", "logprobs", "seed", "stop_token_ids",
                    "repetition_penalty", "ignore_eos", "skip_special_tokens")
_WEIGHT_TRANSFER = ("/init_weight_transfer_engine", "/update_weights", "/start_weight_update",
                    "/finish_weight_update")


class Server:
    def __init__(self, model: str, logprobs_mode: str, max_model_len: int | None):
        self.model = model
        self.engine = Engine(model, max_model_len=max_model_len, logprobs_mode=logprobs_mode)
        self.lock = threading.Lock()

    def completions(self, body: dict) -> dict:
        ignored = sorted(set(body) - set(API["CompletionRequest"]))
        if ignored:  # vLLM logs and ignores fields it does not know; the stand-in records them
            record("ignored_request_fields", fields=ignored)
        prompts = body["prompt"]
        if not (isinstance(prompts, list) and prompts and all(isinstance(p, list) for p in prompts)):
            raise ValueError("the stand-in server takes token-id prompts (a list of lists of ints)")
        kwargs = {name: body[name] for name in _SAMPLING_FIELDS if body.get(name) is not None}
        if body.get("structured_outputs") is not None:
            kwargs["structured_outputs"] = StructuredOutputsParams(**body["structured_outputs"])
        params = SamplingParams(**kwargs)
        record("completion_request", prompts=prompts, fields=sorted(body))
        with self.lock:
            results = self.engine.generate(prompts, [params] * len(prompts), source="/v1/completions")
        choices = []
        for prompt, outputs in zip(prompts, results):
            for output in outputs:
                choices.append({
                    "index": len(choices), "text": output.text, "token_ids": output.token_ids,
                    "prompt_token_ids": prompt if body.get("return_token_ids") else None,
                    "finish_reason": output.finish_reason, "stop_reason": output.stop_reason,
                    "logprobs": self._logprobs(output) if params.logprobs is not None else None,
                })
        return {"object": "text_completion", "model": self.model, "choices": choices}

    @staticmethod
    def _logprobs(output) -> dict:
        # return_tokens_as_token_ids: every token is written "token_id:<id>"
        name = "token_id:{}".format
        return {
            "tokens": [name(t) for t in output.token_ids],
            "token_logprobs": [position[t].logprob for t, position in zip(output.token_ids, output.logprobs)],
            "top_logprobs": [{name(i): lp.logprob for i, lp in position.items()} for position in output.logprobs],
            "text_offset": [],
        }

    def server_info(self) -> dict:
        return {"vllm_config": {
            "model_config": {"model": self.model, "logprobs_mode": self.engine.logprobs_mode,
                             "max_model_len": self.engine.max_model_len},
            "weight_transfer_config": {"backend": "nccl"},
        }}


def make_handler(server: Server):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802
            path = urlparse(self.path).path.rstrip("/")
            answers = {
                "/health": lambda: {},
                "/v1/models": lambda: {"object": "list", "data": [{"id": server.model, "object": "model"}]},
                "/server_info": server.server_info,
                "/get_world_size": lambda: {"world_size": 1},
            }
            if path not in answers:
                return self._reply(404, {"error": f"no route {path}"})
            self._reply(200, answers[path]())

        def do_POST(self):  # noqa: N802
            path = urlparse(self.path).path.rstrip("/")
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if path in _WEIGHT_TRANSFER:
                return self._reply(501, {"error": "NCCL weight transfer is not part of the CPU stand-in"})
            try:
                if path == "/v1/completions":
                    return self._reply(200, server.completions(body))
                if path == "/reset_prefix_cache":
                    return self._reply(200, {"success": server.engine.reset_prefix_cache()})
            except (TypeError, ValueError, NotImplementedError) as error:  # a request vLLM would refuse too
                return self._reply(400, {"error": f"{type(error).__name__}: {error}"})
            except Exception as error:  # noqa: BLE001 - answered, so that the client fails with the reason
                record("server_error", path=path, error=f"{type(error).__name__}: {error}")
                return self._reply(500, {"error": f"{type(error).__name__}: {error}"})
            self._reply(404, {"error": f"no route {path}"})

        def log_message(self, *args):  # quiet
            pass

    return Handler


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--logprobs-mode", default="raw_logprobs")
    parser.add_argument("--max-model-len", type=int, default=None)
    args = parser.parse_args(argv)
    server = Server(args.model, args.logprobs_mode, args.max_model_len)
    ThreadingHTTPServer((args.host, args.port), make_handler(server)).serve_forever()


if __name__ == "__main__":
    main()
