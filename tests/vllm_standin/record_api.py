"""Record, from a vLLM wheel's own source, the names the stand-in accepts (writes `vllm/api.json`).

    pip download vllm==0.31.0 --no-deps -d /tmp/vllmwheel
    python tests/vllm_standin/record_api.py /tmp/vllmwheel/vllm-0.31.0-cp38-abi3-manylinux_2_28_x86_64.whl

Read with `ast` (nothing of the wheel is imported): the fields of `SamplingParams` and `StructuredOutputsParams`
(`vllm/sampling_params.py`) with their defaults where they are literals, the parameters of `LLM.__init__` and
`LLM.generate` (`vllm/entrypoints/llm.py`), the fields of `EngineArgs` (`vllm/engine/arg_utils.py`: what `LLM(...)`
passes its other keywords to) and of the OpenAI server's `CompletionRequest`
(`vllm/entrypoints/openai/completion/protocol.py`).
"""

import ast
import hashlib
import json
import sys
import zipfile
from pathlib import Path

_NOT_LITERAL = "<not a literal>"


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(node for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name == name)


def _default(node) -> object:
    if node is None:
        return _NOT_LITERAL
    if isinstance(node, ast.Call):  # field(default=...) / Field(None, ...)
        for keyword in node.keywords:
            if keyword.arg == "default":
                return _default(keyword.value)
        return _default(node.args[0]) if node.args else _NOT_LITERAL
    try:
        return ast.literal_eval(node)
    except ValueError:
        return _NOT_LITERAL


def fields(tree: ast.Module, name: str) -> dict[str, object]:
    """Annotated class attributes in order, each with its default where it is a literal."""
    return {node.target.id: _default(node.value) for node in _class(tree, name).body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


def parameters(tree: ast.Module, cls: str, method: str) -> list[str]:
    function = next(node for node in _class(tree, cls).body
                    if isinstance(node, ast.FunctionDef) and node.name == method)
    return [arg.arg for arg in function.args.args + function.args.kwonlyargs if arg.arg != "self"]


def record(wheel: Path) -> dict:
    with zipfile.ZipFile(wheel) as archive:
        def tree(path: str) -> ast.Module:
            return ast.parse(archive.read(path).decode())

        sampling = tree("vllm/sampling_params.py")
        llm = tree("vllm/entrypoints/llm.py")
        return {
            "source": {"wheel": wheel.name, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()},
            "SamplingParams": fields(sampling, "SamplingParams"),
            "StructuredOutputsParams": fields(sampling, "StructuredOutputsParams"),
            "LLM.__init__": parameters(llm, "LLM", "__init__"),
            "LLM.generate": parameters(llm, "LLM", "generate"),
            "EngineArgs": list(fields(tree("vllm/engine/arg_utils.py"), "EngineArgs")),
            "CompletionRequest": list(fields(tree("vllm/entrypoints/openai/completion/protocol.py"),
                                             "CompletionRequest")),
        }


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "vllm" / "api.json"
    out.write_text(json.dumps(record(Path(sys.argv[1])), indent=1) + "\n")
    print(f"wrote {out}")
