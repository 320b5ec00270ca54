"""containerd-shim-zone-v2: the command line containerd runs (see shim.launch) and the shim daemon.

    containerd-shim-zone-v2 [-namespace N] [-address A] [-publish-binary B] [-id ID] [-bundle DIR]
                            [-socket PATH] [-debug] [-v] [start|delete]

Flags are Go-style (`-flag value`, `-flag=value`, `--flag value`) because containerd passes them so.
Without an action the program is the long-running shim: it serves the Task service over ttrpc on the
socket `start` handed it (or -socket), publishes events, and exits after Shutdown (or SIGTERM/SIGINT).
Errors are one line on stderr and exit status 1, which containerd shows to its user.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading

from shim.launch import LISTEN_FD_ENV, LaunchError, ShimArgs, delete, start

VERSION = "0.1.0"
log = logging.getLogger("shim")


def parse(argv: list[str]) -> tuple[argparse.Namespace, str]:
    parser = argparse.ArgumentParser(prog="containerd-shim-zone-v2", allow_abbrev=False,
                                     description="containerd shim v2 that runs each pod in its own zone")
    for name, help_text in (("namespace", "namespace that owns the shim"), ("id", "id of the task"),
                            ("address", "grpc address back to main containerd"),
                            ("publish-binary", "path to publish binary (used for publishing events)"),
                            ("bundle", "path to the bundle if not workdir"), ("socket", "socket path to serve")):
        parser.add_argument(f"-{name}", f"--{name}", dest=name.replace("-", "_"), default="", help=help_text)
    parser.add_argument("-debug", "--debug", action="store_true", help="enable debug output in logs")
    parser.add_argument("-v", "--version", action="store_true", help="show the shim version and exit")
    parser.add_argument("action", nargs="?", default="", choices=["", "start", "delete"])
    options = parser.parse_args(argv)
    return options, options.action


def _args(options: argparse.Namespace) -> ShimArgs:
    # containerd 1.6 passes flags; later versions also set NAMESPACE and GRPC_ADDRESS in the environment
    namespace = options.namespace or os.environ.get("NAMESPACE", "")
    if not namespace:
        raise LaunchError("shim namespace cannot be empty")
    return ShimArgs(namespace=namespace, id=options.id, address=options.address or os.environ.get("GRPC_ADDRESS", ""),
                    publish_binary=options.publish_binary or "containerd",
                    bundle=os.path.abspath(options.bundle or os.getcwd()), debug=options.debug,
                    ttrpc_address=os.environ.get("TTRPC_ADDRESS", ""))


class _NonBlockingHandler(logging.Handler):
    """Log lines to a descriptor that may be containerd's non-blocking log FIFO: a full FIFO drops the line
    instead of stalling the shim."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(OSError):
            os.write(self.fd, (self.format(record) + "\n").encode(errors="replace"))


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """Libraries' chatter stays out of the shim's log unless it is a warning (pyroute2's debug output is
    every netlink message, whatever level its loggers are given)."""
    return record.levelno >= logging.WARNING or not record.name.startswith(("pyroute2", "asyncio"))


def serve(args: ShimArgs, listener: socket.socket) -> int:
    from shim.backends import load_backend
    from shim.events import PublishBinary, Publisher, TtrpcForwarder
    from shim.protos import shim_pb2
    from shim.task_service import TaskService
    from shim.ttrpc.server import Server

    transport = TtrpcForwarder(args.ttrpc_address) if args.ttrpc_address else \
        PublishBinary(args.publish_binary, args.address)
    publisher = Publisher(transport, args.namespace)
    done = threading.Event()
    service = TaskService(load_backend(), publisher, args.namespace, on_shutdown=done.set)
    server = Server()
    server.register_service(shim_pb2.DESCRIPTOR.services_by_name["Task"], service)

    def on_signal(signo: int, frame: object) -> None:
        log.info("signal %d: shutting down", signo)
        threading.Thread(target=service.stop, name="stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    path = listener.getsockname()
    server.serve_in_thread(listener)
    log.info("serving %s (namespace %s, pid %d)", args.id, args.namespace, os.getpid())
    while not done.wait(1.0):
        pass
    server.close(grace=2.0)  # the Shutdown call that got us here still answers
    publisher.close(5.0)
    if isinstance(path, str) and path:
        with contextlib.suppress(OSError):
            os.unlink(path)
    log.info("shim exited")
    return 0


def _listener(options: argparse.Namespace) -> socket.socket:
    inherited = os.environ.pop(LISTEN_FD_ENV, "")
    if inherited:
        return socket.socket(fileno=int(inherited))
    if options.socket:
        from shim.ttrpc.server import listen_unix

        return listen_unix(options.socket.removeprefix("unix://"))
    raise LaunchError("no socket to serve: run through `start`, or give -socket")


def main(argv: list[str] | None = None) -> int:
    options, action = parse(sys.argv[1:] if argv is None else argv)
    if options.version:
        print(f"containerd-shim-zone-v2:\n  Version:  {VERSION}\n  Python:   {sys.version.split()[0]}")
        return 0
    logging.basicConfig(level=logging.DEBUG if options.debug else logging.INFO,
                        format="time=%(asctime)s level=%(levelname)s msg=%(message)s runtime=io.containerd.zone.v2",
                        handlers=[_NonBlockingHandler(2)])
    logging.getLogger().handlers[0].addFilter(_quiet_libraries)
    try:
        args = _args(options)
        if action == "start":
            sys.stdout.write(start(args))
            sys.stdout.flush()
            return 0
        if action == "delete":
            from shim.backends import load_backend

            sys.stdout.buffer.write(delete(args, load_backend().cleanup_after_crash))
            sys.stdout.flush()
            return 0
        return serve(args, _listener(options))
    except (LaunchError, OSError) as e:
        print(f"containerd-shim-zone-v2: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        from shim.ttrpc.status import RpcError

        if isinstance(e, RpcError):
            print(f"containerd-shim-zone-v2: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
