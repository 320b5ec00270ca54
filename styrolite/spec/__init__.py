"""OCI runtime-spec config.json: typed model (model.py), parser and validator.

``load_config(bundle + "/config.json")`` is the usual entry point; every problem is a ConfigError whose
``path`` is the JSON path of the bad field.
"""

from styrolite.spec.defaults import DEFAULT_CAPABILITIES, DEFAULT_DEVICES, default_config
from styrolite.spec.features import features
from styrolite.spec.model import Spec
from styrolite.spec.parse import ConfigFileError, load_config, load_process, parse_config, parse_process, read_json
from styrolite.spec.serialize import to_json_obj
from styrolite.spec.validate import validate_process, validate_resources, validate_spec
from styrolite.spec.vocabulary import CAPABILITY_NUMBERS, RLIMIT_NUMBERS

__all__ = [
    "CAPABILITY_NUMBERS",
    "DEFAULT_CAPABILITIES",
    "DEFAULT_DEVICES",
    "RLIMIT_NUMBERS",
    "ConfigFileError",
    "Spec",
    "default_config",
    "features",
    "load_config",
    "load_process",
    "parse_config",
    "parse_process",
    "read_json",
    "to_json_obj",
    "validate_process",
    "validate_resources",
    "validate_spec",
]
