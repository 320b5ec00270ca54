"""``zonehost``: run and manage zones from the host, in the manner of docker/ctr/xl.

    zonehost run [--backend qemu|xen] [--name N] [--memory MiB] [--rm] [-e K=V] [--kernel REF]
                 [--extension REF]... [--module NAME]... [--pull missing|always|never] IMAGE|REF [-- CMD...]
    zonehost ps | inspect ZONE | exec [-i] [-t] [--zone] ZONE CMD... | logs ZONE | stop ZONE | kill ZONE | rm ZONE
    zonehost pull REF | images | rmi IMAGE... | prune | push IMAGE|LAYOUT REF       (--json)

Every error is one line on stderr (``zonehost: ...``) and a non-zero exit: 2 for bad usage, 1 otherwise.
``run`` exits with the container's exit code (128+signo for a signal death).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from host import output
from host.errors import HostError
from host.zonedef import BACKENDS, PULL_POLICIES
from idm.errors import IdmError
from styrolite.errors import StyroliteError, describe
from zoneoci import commands as image_commands

EXIT_USAGE = 2
EXIT_FAILURE = 1


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage on one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zonehost", description="Run containers in their own lightweight VM (a zone).")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--state-dir", help="zone state directory (default $ZONE_STATE or /var/lib/zone/zones)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    run = verbs.add_parser("run", help="boot a zone, run IMAGE's command in it, exit with its exit code")
    run.add_argument("--backend", choices=BACKENDS, default="qemu")
    run.add_argument("--name", help="zone name (default: generated)")
    run.add_argument("--memory", "-m", type=_positive_int, default=256, metavar="MIB", help="memory in MiB")
    run.add_argument("--vcpus", type=_positive_int, default=1)
    run.add_argument("--rm", action="store_true", help="remove the zone when the container exits")
    run.add_argument("-d", "--detach", action="store_true", help="leave the zone running in the background")
    run.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    run.add_argument("--net", action="store_true", help="user-mode networking (address 10.0.2.15/24)")
    run.add_argument("--userns", action=argparse.BooleanOptionalAction, default=True,
                     help="run the container in a user namespace, its root mapped to zone uid 65536 (default: on)")
    run.add_argument("--address", help="zone address CIDR (implies --net)")
    run.add_argument("--kernel", metavar="REF|LAYOUT",
                     help="kernel OCI image: a reference or a layout directory (default: the host config's "
                          "images.kernel, else $ZONE_KERNEL, else built here from linux-image-cloud-amd64)")
    run.add_argument("--extension", action="append", default=[], metavar="REF|LAYOUT",
                     help="a system extension image to attach (repeatable; after the host config's)")
    run.add_argument("--module", action="append", default=[], metavar="NAME",
                     help="a kernel module to load at boot, from the extensions or the addons (repeatable)")
    run.add_argument("--pull", choices=PULL_POLICIES, default=None,
                     help="when to pull references: missing (default), always, never")
    image_commands.add_registry_options(run)
    run.add_argument("--initrd", help="zone initrd (default: built by zonebuild)")
    run.add_argument("--kernel-arg", action="append", default=[], metavar="ARG",
                     help="extra kernel command line word (e.g. zone.debug)")
    run.add_argument("--timing", action="store_true", help="print the zone's boot phase timings")
    run.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the zone to be ready")
    run.add_argument("image", metavar="IMAGE", nargs="?",
                     help="an image reference (127.0.0.1:5000/app:1.0, ...@sha256:...), an OCI layout dir or "
                          "image tar, or 'busybox' (built in)")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD", help="command override (after --)")

    verbs.add_parser("ps", help="list zones and their containers")

    inspect = verbs.add_parser("inspect", help="a zone's definition, components (digests) and, if it runs, zone.info")
    inspect.add_argument("zone", metavar="ZONE")

    exec_ = verbs.add_parser("exec", help="run a command in a zone's container")
    exec_.add_argument("-i", "--interactive", action="store_true", help="forward stdin")
    exec_.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    exec_.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    exec_.add_argument("-w", "--workdir", help="working directory in the container")
    exec_.add_argument("-u", "--user", help="UID[:GID]")
    exec_.add_argument("--container", help="container id (default: the zone's main container)")
    exec_.add_argument("--zone", dest="zone_level", action="store_true",
                       help="a zone-level debug exec instead: in PID 1's namespaces, with the system extensions' "
                            "tools (never in a container)")
    exec_.add_argument("zone", metavar="ZONE")
    exec_.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")

    logs = verbs.add_parser("logs", help="the zone's container output (or --console: its serial console)")
    logs.add_argument("--console", action="store_true", help="the zone's serial console log instead")
    logs.add_argument("zone", metavar="ZONE")

    stop = verbs.add_parser("stop", help="shut a zone down (IDM zone.shutdown, then kill after --timeout)")
    stop.add_argument("--timeout", "-t", type=float, default=40.0,
                      help="seconds to wait for the power-off before killing (the zone's own grace is 10 s)")
    stop.add_argument("zone", metavar="ZONE")

    kill = verbs.add_parser("kill", help="send a signal to a zone's container (default: the main one)")
    kill.add_argument("-s", "--signal", default="SIGKILL", help="name or number (default SIGKILL)")
    kill.add_argument("zone", metavar="ZONE")
    kill.add_argument("container", metavar="CONTAINER", nargs="?", default="main")

    rm = verbs.add_parser("rm", help="remove a stopped zone (-f: stop it first)")
    rm.add_argument("-f", "--force", action="store_true")
    rm.add_argument("zone", metavar="ZONE")
    image_commands.register(verbs)   # pull, images, rmi, prune, push (zoneoci)
    for sub in (run, exec_, logs, stop, kill, rm, inspect, verbs.choices["ps"],
                *(verbs.choices[v] for v in image_commands.VERBS)):   # `zonehost ps --json` works too
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
        sub.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb == "run" and not args.image:
        parser.error("run: missing IMAGE (a reference, an OCI layout dir, an image tar, or 'busybox')")
    if args.verb == "exec" and not args.command:
        parser.error("exec: missing the command to run (zonehost exec ZONE CMD...)")
    output.configure(quiet=args.quiet, json_output=args.json)
    if args.state_dir:
        os.environ["ZONE_STATE"] = args.state_dir
    if args.verb in image_commands.VERBS:
        try:
            apply_registry_defaults(args)
        except HostError as e:
            print(f"zonehost: {describe(e)}", file=sys.stderr)
            return EXIT_FAILURE
        args.prog = "zonehost"
        code = image_commands.run(args)
        if argv is None:  # a program run, about to exit
            image_commands.exit_quickly()
        return code
    from host import commands  # after parsing: `--help` and usage errors stay fast
    try:
        return commands.dispatch(args)
    except (HostError, StyroliteError, IdmError) as e:
        print(f"zonehost: {describe(e)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("zonehost: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE
    except OSError as e:   # e.g. no permission on the state directory: still one line
        print(f"zonehost: {e}", file=sys.stderr)
        return EXIT_FAILURE


def apply_registry_defaults(args: argparse.Namespace) -> None:
    """The host config's [registry] settings where the command line gave none."""
    from host.hostconfig import load_host_config

    config = load_host_config()
    for name in ("store", "authfile", "cert_dir", "registries_conf"):
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(config, name))


if __name__ == "__main__":
    raise SystemExit(main())
