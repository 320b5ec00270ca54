"""The runtime options containerd sends with a task's Create (and on the stdin of ``start``).

containerd's CRI plugin turns the ``options`` table of a runtime handler whose ``runtime_type`` it does not
know (anything but runc) into ``runtimeoptions.v1.Options {type_url, config_path}``, e.g.

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.edera.options]
      ConfigPath = "/etc/zone/shim.toml"

and sends it as a protobuf ``Any``. Other option types (runc's, from a misconfigured handler) carry nothing
for this shim and are refused by name, so a wrong config is an error, not silently ignored.
"""

from __future__ import annotations

from typing import Any

from shim.ttrpc.status import InvalidArgument

TYPE_URL = "runtimeoptions.v1.Options"


def config_path(options: Any) -> str:
    """``config_path`` of a runtimeoptions.v1.Options Any (``""`` when containerd sent no options)."""
    if options is None or not options.type_url:
        return ""
    if options.type_url.rsplit("/", 1)[-1] != TYPE_URL:
        raise InvalidArgument(f"runtime options of type {options.type_url!r}: containerd-shim-zone-v2 reads "
                              f"{TYPE_URL} (options.ConfigPath in the runtime handler's config)")
    from google.protobuf.message import DecodeError

    from shim.protos import runtimeoptions_pb2

    message = runtimeoptions_pb2.Options()
    try:
        message.ParseFromString(options.value)
    except DecodeError as e:
        raise InvalidArgument(f"runtime options: not a valid {TYPE_URL}: {e}") from e
    return message.config_path
