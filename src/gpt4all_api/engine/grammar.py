"""JSON Schema to llama.cpp grammar (GBNF), refusing schema features the grammar cannot enforce.

The conversion itself is llama-cpp-python's `json_schema_to_gbnf`; this module decides what may
reach it. A keyword it would silently ignore (`minimum`, `uniqueItems`, …) is refused by name,
so a response that parses is a response that validates.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

from ..errors import InvalidRequest, UnsupportedParameter

# Keywords that constrain the output and that the grammar enforces.
ENFORCED = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "pattern",
    "minLength",
    "maxLength",
    "format",
}
# Keywords that only annotate or organise a schema.
ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "deprecated",
    "readOnly",
    "writeOnly",
    "strict",
    "nullable",
}
FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def check_schema(schema: Any, param: str) -> None:
    """Raise a 400 naming every keyword (and where) the grammar could not enforce."""
    problems: list[str] = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, bool):
            if node is False:
                problems.append(f"false schema at {path}")
            return
        if not isinstance(node, dict):
            raise InvalidRequest(f"invalid JSON schema at {path}: expected an object", param=param)
        for key, value in node.items():
            where = f"{path}/{key}"
            if key not in ENFORCED and key not in ANNOTATIONS:
                problems.append(f"'{key}' at {path}")
            elif key == "type":
                kinds = value if isinstance(value, list) else [value]
                if not all(isinstance(k, str) and k in TYPES for k in kinds):
                    raise InvalidRequest(f"invalid type {value!r} at {path}", param=param)
            elif key == "format" and value not in FORMATS:
                problems.append(f"format '{value}' at {path}")
            elif key == "$ref" and not (isinstance(value, str) and value.startswith("#/")):
                problems.append(f"non-local $ref '{value}' at {path}")
            elif key in ("properties", "$defs", "definitions"):
                if not isinstance(value, dict):
                    raise InvalidRequest(f"'{key}' must be an object at {path}", param=param)
                for name, sub in value.items():
                    visit(sub, f"{where}/{name}")
            elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
                if not isinstance(value, list) or not value:
                    raise InvalidRequest(f"'{key}' must be a non-empty list at {path}", param=param)
                for i, sub in enumerate(value):
                    visit(sub, f"{where}/{i}")
            elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
                visit(value, where)
        if "pattern" in node and ("minLength" in node or "maxLength" in node):
            problems.append(f"'pattern' together with a length limit at {path}")

    visit(schema, "#")
    if problems:
        raise UnsupportedParameter(
            "this JSON schema uses features the server cannot enforce: " + ", ".join(problems),
            param=param,
        )


_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def _strict_strings(gbnf: str) -> str:
    """JSON strings hold no raw control characters (RFC 8259): the converter's `char` rule lets
    them through, so a newline inside a string would make the output unparsable."""
    if "char ::=" not in gbnf:
        return gbnf  # no free-form strings in this grammar (e.g. a call without string arguments)
    if _LOOSE_CHAR not in gbnf:
        raise AssertionError("unexpected grammar from json_schema_to_gbnf: no char rule")
    return gbnf.replace(_LOOSE_CHAR, _JSON_CHAR)


def schema_grammar(schema: dict[str, Any], param: str, prop_order: list[str] | None = None) -> str:
    check_schema(schema, param)
    try:
        return _strict_strings(json_schema_to_gbnf(json.dumps(schema), prop_order))
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidRequest(
            f"could not turn the JSON schema into a grammar: {exc}", param=param
        ) from exc


def json_object_grammar() -> str:
    """Any JSON object (what `response_format: {"type": "json_object"}` asks for)."""
    return _strict_strings(json_schema_to_gbnf(json.dumps({"type": "object"})))
