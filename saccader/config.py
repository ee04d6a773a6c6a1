"""Experiment configuration: one YAML file, validated against ``workflow/schemas/config.schema.yaml``.

The paper-scale experiment (``config.yaml``) and the embedded one (``config/embedded.yaml``) share one schema; only
values differ. Validation fills schema defaults and turns the first violation into one line naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from saccader.errors import UserError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


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


_Validator = _with_defaults(Draft202012Validator)


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _describe(error) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return f"unknown config key {where + '.' if error.absolute_path else ''}{unknown[0]}; allowed keys here: " \
               f"{', '.join(allowed)}"
    if error.validator == "enum":
        return f"config key {where} = {error.instance!r} is not allowed; use one of {error.validator_value}"
    if error.validator == "type":
        return f"config key {where} = {error.instance!r} has the wrong type; expected {error.validator_value}"
    if error.validator == "required":
        return f"config key {where} is missing {error.message.split()[0]}; add it (see config.yaml for an example)"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bound = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[error.validator]
        return f"config key {where} = {error.instance!r} is out of range; fix: set it {bound} {error.validator_value}"
    if error.validator == "uniqueItems":
        return f"config key {where} has repeated values {error.instance}; each must be unique"
    return f"config key {where} = {error.instance!r} is invalid: {error.message}"


def validate(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place (defaults filled) and return it; raise ``UserError`` on the first problem."""
    errors = sorted(_Validator(load_schema()).iter_errors(config), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise UserError(f"{source}: {_describe(errors[0])}")
    return config


def load(path: str | Path) -> dict:
    """Read, validate and return the config at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist",
                        "pass --config config.yaml (paper scale) or config/embedded.yaml (embedded default)")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    return validate(config, str(path))


def add_config_argument(parser) -> None:
    parser.add_argument("--config", required=True, help="experiment config YAML (config.yaml or config/embedded.yaml)")
