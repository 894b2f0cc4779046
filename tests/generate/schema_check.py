"""Check a value against a JSON schema: with ``jsonschema_rs`` when installed, else by hand for
the keywords the structured-output tests use."""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
}


def validate(schema: dict[str, Any], value: Any) -> None:
    """Raise AssertionError unless ``value`` is valid under ``schema``."""
    try:
        import jsonschema_rs
    except ImportError:
        _check(schema, value, "$")
        return
    errors = [str(e) for e in jsonschema_rs.validator_for(schema).iter_errors(value)]
    assert not errors, errors


def _check(schema: dict[str, Any], value: Any, where: str) -> None:
    known = {"type", "properties", "required", "additionalProperties", "items", "maxItems", "enum"}
    known |= {"maxLength", "minimum", "maximum"}
    assert set(schema) <= known, f"the hand check does not know {sorted(set(schema) - known)}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, _TYPES[kind]) and not (
            kind in ("integer", "number") and isinstance(value, bool)
        )
        assert ok, f"{where}: {value!r} is not {kind}"
    if isinstance(value, dict):
        assert set(schema.get("required", [])) <= set(value), f"{where}: missing {schema['required']}"
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(properties), f"{where}: extra keys {set(value) - set(properties)}"
        for key, item in value.items():
            if key in properties:
                _check(properties[key], item, f"{where}.{key}")
    if isinstance(value, list):
        assert len(value) <= schema.get("maxItems", len(value)), f"{where}: too many items"
        for index, item in enumerate(value):
            _check(schema.get("items", {}), item, f"{where}[{index}]")
    if isinstance(value, str):
        assert len(value) <= schema.get("maxLength", len(value)), f"{where}: longer than maxLength"
    if isinstance(value, int | float) and not isinstance(value, bool):
        assert schema.get("minimum", value) <= value <= schema.get("maximum", value), f"{where}: out of range"
