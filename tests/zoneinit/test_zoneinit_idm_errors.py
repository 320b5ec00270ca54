"""PID 1's errors become IDM wire codes in one place (zoneinit/idm/errors.py), with the cause chain."""

from __future__ import annotations

from idm.errors import HANDLER_FAILED, INVALID_ARGUMENT, NOT_FOUND, IdmError
from styrolite.errors import ContainerError, NotFoundError, StateError
from zoneinit.errors import ZoneConfigError
from zoneinit.idm.errors import translated, wire_error


def test_each_error_kind_has_its_code_and_one_line():
    cause = ContainerError("create container 'web'")
    cause.__cause__ = OSError(28, "No space left on device")
    assert (wire_error(NotFoundError("no container 'x'")).code, wire_error(FileNotFoundError()).code) == (
        NOT_FOUND, NOT_FOUND)
    for error in (StateError("running"), ValueError("bad"), ZoneConfigError("$.args", "empty")):
        assert wire_error(error).code == INVALID_ARGUMENT
    failed = wire_error(cause)
    assert failed.code == HANDLER_FAILED
    assert failed.message == "create container 'web': [Errno 28] No space left on device"
    assert wire_error(IdmError("no exec", NOT_FOUND)).code == NOT_FOUND
    assert wire_error(RuntimeError("boom")).message == "RuntimeError: boom"


def test_an_unexpected_crash_is_logged_with_its_traceback():
    logged: list[str] = []

    def crash(_req: object) -> None:
        raise RuntimeError("boom")

    handler = translated("crash", crash, logged.append)
    try:
        handler(None)  # type: ignore[arg-type]
    except IdmError as e:
        assert e.code == HANDLER_FAILED and isinstance(e.__cause__, RuntimeError)
    assert len(logged) == 1 and "Traceback" in logged[0] and "'crash'" in logged[0]
    handler = translated("known", lambda _req: (_ for _ in ()).throw(NotFoundError("gone")), logged.append)
    try:
        handler(None)  # type: ignore[arg-type]
    except IdmError as e:
        assert e.code == NOT_FOUND
    assert len(logged) == 1  # an expected error is an answer, not a crash
