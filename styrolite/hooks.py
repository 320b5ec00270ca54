"""OCI hooks: each hook runs with the container's state JSON on stdin (runtime-spec config.md#posix-platform-hooks).

When they run, and where:
- ``prestart`` (deprecated) and ``createRuntime``: runtime namespace, after the container's namespaces and
  rootfs mounts exist, before pivot_root.
- ``createContainer``: container namespaces, before pivot_root (run by the container's init).
- ``startContainer``: container namespaces, after ``start``, right before the user process is executed.
- ``poststart``: runtime namespace, after the user process started, before ``start`` returns.
- ``poststop``: runtime namespace, after the container is deleted, before ``delete`` returns.
A failing hook fails the operation, except poststart/poststop, whose failures are logged (the spec's rule).
"""

from __future__ import annotations

import json
import subprocess

from styrolite.errors import ContainerError
from styrolite.logs import log
from styrolite.spec.model import Hook


class HookError(ContainerError):
    pass


def run_hooks(phase: str, hooks: list[Hook], state: dict, *, must_succeed: bool = True) -> None:
    payload = json.dumps(state).encode()
    for index, hook in enumerate(hooks):
        try:
            run_hook(hook, payload)
        except HookError as e:
            message = f"{phase} hook #{index} ({hook.path})"
            if must_succeed:
                raise HookError(message) from e
            log.warning("%s: %s", message, e)


def run_hook(hook: Hook, state_json: bytes) -> None:
    args = hook.args or [hook.path]
    # no env: the runtime's own environment, as runc and crun pass it (the hook finds PATH, ...)
    env = dict(item.split("=", 1) for item in hook.env if "=" in item) if hook.env else None
    try:
        completed = subprocess.run(
            args, executable=hook.path, input=state_json, env=env, capture_output=True,
            timeout=hook.timeout if hook.timeout else None, close_fds=True,
        )
    except subprocess.TimeoutExpired:
        raise HookError(f"timed out after {hook.timeout}s") from None
    except OSError as e:
        raise HookError(f"cannot run: {e.strerror}") from None
    if completed.returncode != 0:
        stderr = completed.stderr.decode(errors="replace").strip().splitlines()
        detail = f": {stderr[-1]}" if stderr else ""
        status = (f"killed by signal {-completed.returncode}" if completed.returncode < 0
                  else f"exit status {completed.returncode}")
        raise HookError(f"{status}{detail}")
