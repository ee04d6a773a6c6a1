"""JSON-Schema checks of a user's file, the first violation as one line naming the key: the experiment config
(``workflow/schemas/config.schema.yaml``, saccader.pipeline.config) and a model bundle's card
(``saccader/models/card.schema.yaml``, saccader.models.bundle)."""

from __future__ import annotations

import copy

from jsonschema import Draft202012Validator, validators

__all__ = ["Validator", "first_problem", "describe"]


def _with_defaults(cls):
    """A validator class that also writes each property's ``default`` into the instance (jsonschema FAQ)."""
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


def _is_integer(checker, instance) -> bool:
    """A whole number as JSON and YAML write it: 10, never 10.0 (which a size or a count in torch refuses) nor a
    bool. JSON Schema itself counts 10.0 as an integer."""
    return isinstance(instance, int) and not isinstance(instance, bool)


Validator = _with_defaults(validators.extend(
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer)))


def describe(error, noun: str = "config key", example: str = "config.yaml") -> str:
    """One line for a jsonschema ``error``: the key (``noun`` names what keys are), its value, the rule it breaks;
    ``example`` is the file a missing key can be copied from."""
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return f"unknown {noun} {where + '.' if error.absolute_path else ''}{unknown[0]}; allowed keys here: " \
               f"{', '.join(allowed)}"
    if error.validator == "enum":
        return f"{noun} {where} = {error.instance!r} is not allowed; use one of {error.validator_value}"
    if error.validator == "type":
        return f"{noun} {where} = {error.instance!r} has the wrong type; expected {error.validator_value}"
    if error.validator == "required":
        return f"{noun} {where} is missing {error.message.split()[0]}; add it (see {example} for an example)"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bound = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[error.validator]
        return f"{noun} {where} = {error.instance!r} is out of range; fix: set it {bound} {error.validator_value}"
    if error.validator == "uniqueItems":
        return f"{noun} {where} has repeated values {error.instance}; each must be unique"
    return f"{noun} {where} = {error.instance!r} is invalid: {error.message}"


def first_problem(schema: dict, instance, noun: str = "config key", example: str = "config.yaml") -> str | None:
    """The first violation of ``schema`` by ``instance`` (shallowest first) as ``describe`` words it, or None.
    Fills the schema's defaults into ``instance`` on the way."""
    errors = sorted(Validator(schema).iter_errors(instance), key=lambda e: (len(e.absolute_path), list(e.path)))
    return describe(errors[0], noun, example) if errors else None
