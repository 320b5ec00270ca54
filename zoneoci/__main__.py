"""``python3 -m zoneoci pull|images|rmi|prune|push ...``: the image verbs of zonehost on their own."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from zoneoci.commands import exit_quickly, register, run


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="zoneoci", description="Pull, list, remove and push OCI images (the host content store)")
    parser.add_argument("--json", action="store_true", help="machine-readable output (images)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True
    register(verbs)
    args = parser.parse_args(argv)
    args.prog = parser.prog
    code = run(args)
    if argv is None:  # a program run, about to exit (not a caller in a long-lived process)
        exit_quickly()
    return code


if __name__ == "__main__":
    sys.exit(main())
