"""Griffe extension for the settings reference: every field of a settings dataclass gets a row.

A settings dataclass is one whose fields carry `help` metadata, as TRL's and `HfArgumentParser`'s do.

The class docstring's `Parameters:` sections describe the fields (type and default come from the code). A field
that no section names gets a row with its `help` (`field(metadata={"help": ...})`, what `melrl train --help`
prints) in the last section, or in a new one, so the reference lists every setting; a field with neither is a
warning, which fails the strict build.
"""

from __future__ import annotations

import ast
from typing import Any

from griffe import (
    Class,
    DocstringParameter,
    DocstringSectionParameters,
    ExprCall,
    ExprDict,
    ExprKeyword,
    Extension,
    get_logger,
)

logger = get_logger("melrl-docs")
FIELD = "dataclasses.field"
NO_HELP = object()  # the field has no help at all; None: a help the source does not spell out (an f-string)


class FieldHelp(Extension):
    def on_class(self, *, cls: Class, **kwargs: Any) -> None:
        fields = dict(_fields(cls))
        if cls.docstring is None or not any(help_text is not NO_HELP for help_text in fields.values()):
            return
        sections = [s for s in cls.docstring.parsed if isinstance(s, DocstringSectionParameters)]
        if not sections:
            sections = [DocstringSectionParameters([])]
            cls.docstring.parsed.append(sections[0])
        documented = {parameter.name for section in sections for parameter in section.value}
        parameters = cls.parameters
        for name, help_text in fields.items():
            if name in documented:
                continue
            if not isinstance(help_text, str):
                logger.warning(f"{cls.path}.{name}: documented neither in the class docstring nor by a literal help")
                continue
            parameter = parameters[name] if name in parameters else None
            sections[-1].value.append(DocstringParameter(
                name, description=help_text, annotation=parameter.annotation if parameter else None,
                value=parameter.default if parameter else None))


def _fields(cls: Class) -> list[tuple[str, object]]:
    """(name, help) of the class's own `field(...)` attributes, in source order: the help's text, None or NO_HELP."""
    found = []
    for name, attribute in cls.attributes.items():
        if attribute.inherited or not isinstance(attribute.value, ExprCall):
            continue
        if attribute.value.function.canonical_path != FIELD:
            continue
        found.append((name, _help(attribute.value)))
    return found


def _help(call: ExprCall) -> object:
    for argument in call.arguments:
        if isinstance(argument, ExprKeyword) and argument.name == "metadata" and isinstance(argument.value, ExprDict):
            for key, value in zip(argument.value.keys, argument.value.values):
                if str(key) in ("'help'", '"help"'):
                    try:
                        return ast.literal_eval(str(value))
                    except (ValueError, SyntaxError):
                        return None  # an f-string: only the running code knows its text
    return NO_HELP
