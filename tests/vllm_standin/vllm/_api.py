"""What vLLM 0.31.0 accepts, as `record_api.py` read it from the wheel (`api.json` names the wheel and its sha256).

The stand-in takes every keyword the real class takes and refuses the others as vLLM does (so a misspelt or
removed setting fails here as it would on a GPU); a setting it takes but does not implement may only be given
at vLLM's default value, so that it never silently generates something vLLM would not.
"""

import json
from pathlib import Path

API = json.loads(Path(__file__).with_name("api.json").read_text())
SOURCE = f"vLLM 0.31.0 ({API['source']['wheel']}, sha256 {API['source']['sha256'][:12]}...)"
NOT_LITERAL = "<not a literal>"


def public(names) -> list[str]:
    return [name for name in names if not name.startswith("_")]


def refuse_unknown(owner: str, given, accepted) -> None:
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise TypeError(f"{owner}: unexpected keyword argument {unknown[0]!r} (not a keyword of {SOURCE})")


def refuse_unimplemented(owner: str, given: dict, defaults: dict, implemented) -> None:
    for name, value in given.items():
        if name in implemented:
            continue
        default = defaults.get(name, NOT_LITERAL)
        if default == NOT_LITERAL or value != default:
            raise NotImplementedError(f"{owner}: the CPU stand-in does not implement {name}={value!r}")
