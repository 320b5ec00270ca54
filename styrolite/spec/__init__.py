"""OCI runtime-spec config.json: typed model (model.py), parser and validator.

``load_config(bundle + "/config.json")`` is the usual entry point; every problem is a ConfigError whose
``path`` is the JSON path of the bad field. The names below are imported on first use, so a caller that
only parses (``styrolite create``) does not load the defaults, the features document or the serializer.
"""

from __future__ import annotations

_EXPORTS = {
    "CAPABILITY_NUMBERS": "vocabulary",
    "RLIMIT_NUMBERS": "vocabulary",
    "DEFAULT_CAPABILITIES": "defaults",
    "DEFAULT_DEVICES": "defaults",
    "default_config": "defaults",
    "Spec": "model",
    "ConfigFileError": "parse",
    "load_config": "parse",
    "load_process": "parse",
    "parse_config": "parse",
    "parse_process": "parse",
    "read_json": "parse",
    "to_json_obj": "serialize",
    "validate_process": "validate",
    "validate_resources": "validate",
    "validate_spec": "validate",
}
__all__ = [  # noqa: RUF022 (grouped as _EXPORTS)
    "CAPABILITY_NUMBERS", "RLIMIT_NUMBERS", "DEFAULT_CAPABILITIES", "DEFAULT_DEVICES", "default_config", "features",
    "Spec", "ConfigFileError", "load_config", "load_process", "parse_config", "parse_process", "read_json",
    "to_json_obj", "validate_process", "validate_resources", "validate_spec",
]

# imported eagerly: the submodule of the same name would otherwise replace the function on the package
from styrolite.spec.features import features  # noqa: E402


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
