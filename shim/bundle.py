"""An OCI bundle as containerd hands it to the shim: its config.json and the CRI annotations in it."""

from __future__ import annotations

import json
import os
from typing import Any

from shim.ttrpc.status import InvalidArgument

SANDBOX_ID = "io.kubernetes.cri.sandbox-id"  # the pod a container belongs to
CONTAINER_TYPE = "io.kubernetes.cri.container-type"  # "sandbox" for the pod's sandbox, else "container"


def read_spec(bundle: str) -> dict[str, Any]:
    """The bundle's OCI runtime spec; InvalidArgument naming what is wrong with it."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except OSError as e:
        raise InvalidArgument(f"bundle {bundle}: cannot read config.json: {e.strerror}") from e
    except ValueError as e:
        raise InvalidArgument(f"bundle {bundle}: config.json is not valid JSON: {e}") from e
    if not isinstance(spec, dict):
        raise InvalidArgument(f"bundle {bundle}: config.json is not a JSON object")
    annotations = spec.get("annotations")
    if annotations is not None and not (isinstance(annotations, dict)
                                        and all(isinstance(v, str) for v in annotations.values())):
        raise InvalidArgument(f"bundle {bundle}: annotations is not an object of strings")
    return spec


def annotations(spec: dict[str, Any]) -> dict[str, str]:
    return spec.get("annotations") or {}


def pod_of(spec: dict[str, Any], container_id: str) -> str:
    """The pod (sandbox id) a container belongs to; a container without one is a pod of its own."""
    return annotations(spec).get(SANDBOX_ID) or container_id


def is_sandbox(spec: dict[str, Any]) -> bool:
    return annotations(spec).get(CONTAINER_TYPE) == "sandbox"
