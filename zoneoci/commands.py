"""The image verbs of ``zonehost``: pull, images, rmi, prune, push.

``register(verbs)`` adds them to an argparse sub-parser set; ``run(args)`` executes the chosen one and returns
the exit code (0, or 1 with one line on stderr naming what went wrong). ``python3 -m zoneoci`` is the same
command line on its own. Options common to all: ``--store DIR`` (default ``$ZONE_CONTENT_STORE`` or
/var/lib/zone/content), ``--authfile`` (else REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR/containers/auth.json,
~/.docker/config.json), ``--cert-dir`` (certs.d root, default /etc/containers/certs.d), ``--registries-conf``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from zoneoci.errors import OCIError

if TYPE_CHECKING:   # the registry client (urllib3, ssl) is imported by the verbs that use it: `--help` stays fast
    from zoneoci.client import RegistryClient
    from zoneoci.store import ContentStore, ImageRecord

VERBS = ("pull", "images", "rmi", "prune", "push")


def add_registry_options(parser: argparse.ArgumentParser) -> None:
    """``--store``, ``--authfile``, ``--cert-dir``, ``--registries-conf``: the options every command that pulls
    or pushes takes (``zonehost run`` and zonebuild's publish too)."""
    parser.add_argument("--store", metavar="DIR", help="content store (default $ZONE_CONTENT_STORE or "
                        "/var/lib/zone/content)")
    parser.add_argument("--authfile", metavar="FILE", help="auth.json with registry credentials")
    parser.add_argument("--cert-dir", metavar="DIR", help="certs.d root: DIR/<host:port>/*.crt are trusted CAs")
    parser.add_argument("--registries-conf", metavar="FILE", help="registries.conf (insecure and blocked registries)")


def register(verbs: argparse._SubParsersAction) -> None:
    """Add pull, images, rmi, prune and push to ``verbs`` (``parser.add_subparsers()``)."""
    p = verbs.add_parser("pull", help="pull an image by reference into the content store")
    p.add_argument("reference", metavar="REF", help="e.g. 127.0.0.1:5000/app:1.0 or ...@sha256:...")
    p.add_argument("--platform", default=None, help="os/arch[/variant] (default: this host's)")
    p.add_argument("--parallel", type=int, default=6, help="blob downloads at once (default 6, as skopeo)")
    add_registry_options(p)
    p = verbs.add_parser("images", help="list the images in the content store")
    add_registry_options(p)
    p = verbs.add_parser("rmi", help="remove image names (and the content no other image uses)")
    p.add_argument("names", metavar="IMAGE", nargs="+", help="reference, familiar name or digest (prefix)")
    add_registry_options(p)
    p = verbs.add_parser("prune", help="remove content no image name reaches")
    add_registry_options(p)
    p = verbs.add_parser("push", help="push an image from the store, or an OCI layout directory, to a registry")
    p.add_argument("source", metavar="IMAGE|LAYOUT", help="an image in the store, or an OCI layout directory")
    p.add_argument("destination", metavar="REF", help="where to push, e.g. 127.0.0.1:5000/kernel:6.1")
    p.add_argument("--layout-name", help="which image of the layout (its ref.name annotation)")
    p.add_argument("--chunk-size", type=int, default=None, metavar="BYTES", help="upload in chunks of BYTES")
    add_registry_options(p)


def exit_quickly() -> None:
    """For a command line that is done and about to exit: hide every object that exists now from the cyclic
    garbage collector (gc.freeze), so the collections of interpreter shutdown do not walk the thousands of
    objects the imports and the verb made (~15 ms after a pull: urllib3, ssl, http.client). Shutdown itself
    is unchanged: modules are torn down, files flushed and closed, atexit handlers run."""
    import gc

    gc.freeze()


def store_from_args(args: argparse.Namespace) -> ContentStore:
    from zoneoci.store import ContentStore

    return ContentStore(getattr(args, "store", None))


def client_from_args(args: argparse.Namespace) -> RegistryClient:
    """A registry client with the trust, credentials and insecure registries the options (or the containers
    conventions' defaults) name."""
    from zoneoci.client import RegistryClient
    from zoneoci.hosts import DEFAULT_CERTS_DIRS, RegistryHosts

    conf = getattr(args, "registries_conf", None)
    cert_dir = getattr(args, "cert_dir", None)
    hosts = RegistryHosts.load(Path(conf) if conf else None,
                               (Path(cert_dir),) if cert_dir else DEFAULT_CERTS_DIRS)
    authfile = getattr(args, "authfile", None)
    return RegistryClient(hosts, auth_paths=[Path(authfile)] if authfile else None,
                          parallel=max(1, getattr(args, "parallel", 6) or 6))


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _split_name(record: ImageRecord) -> tuple[str, str]:
    name = record.name.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return (name[:colon], name[colon + 1:]) if colon > slash else (name, "<none>")


def cmd_pull(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from zoneoci.manifest import Platform
    from zoneoci.pull import pull

    store = store_from_args(args)
    platform = Platform.parse(args.platform) if args.platform else None
    quiet = getattr(args, "quiet", False)
    with client_from_args(args) as client:
        image = pull(args.reference, store, client, platform=platform,
                     progress=None if quiet else lambda line: print(line, file=err, flush=True))
        stats = client.stats
    if not quiet:
        print(f"pulled {image.record.name} ({image.record.platform}): {stats.blobs} blobs, "
              f"{_size(stats.downloaded)} downloaded", file=err)
    print(image.digest, file=out)
    return 0


def cmd_images(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from zoneoci.digest import short

    store = store_from_args(args)
    records = store.records()
    rows = [(r, store.usage(r)) for r in records]
    if getattr(args, "json", False):
        json.dump([{**r.to_json(), "size": size} for r, size in rows], out, indent=1)
        out.write("\n")
        return 0
    table = [("REPOSITORY", "TAG", "DIGEST", "PLATFORM", "SIZE", "PULLED")]
    for record, size in rows:
        repository, tag = _split_name(record)
        table.append((repository, tag, short(record.target.digest), record.platform, _size(size), record.pulled))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip(), file=out)
    return 0


def cmd_rmi(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from zoneoci.store import BlobBusy

    store = store_from_args(args)
    status = 0
    names: set[str] = set()
    for name in args.names:
        try:
            names.add(store.lookup(name).name)
        except OCIError as e:
            print(f"{args.prog}: rmi: {e}", file=err)
            status = 1
    if names:
        store.remove_refs(names)
        for name in sorted(names):
            print(f"untagged: {name}", file=out)
        try:
            freed = store.gc(wait=False)
            if freed.blobs_removed:
                print(f"deleted {freed.blobs_removed} blobs ({_size(freed.bytes_freed)})", file=out)
        except BlobBusy:
            print("a pull is in progress: unused content stays until the next prune", file=err)
    return status


def cmd_prune(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = store_from_args(args).gc()
    print(f"deleted {result.blobs_removed} blobs ({_size(result.bytes_freed)}); {result.kept} in use", file=out)
    return 0


def cmd_push(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from zoneoci.push import push
    from zoneoci.reference import parse_reference

    quiet = getattr(args, "quiet", False)
    progress = None if quiet else (lambda line: print(line, file=err, flush=True))
    source = Path(args.source)
    dest = parse_reference(args.destination)
    with client_from_args(args) as client:
        if source.is_dir() and (source / "oci-layout").is_file():
            result = push(dest, client, layout=source, layout_name=args.layout_name, chunk_size=args.chunk_size,
                          progress=progress)
        else:
            result = push(dest, client, store=store_from_args(args), image=args.source, chunk_size=args.chunk_size,
                          progress=progress)
    if result.skipped_platforms and not quiet:
        print(f"not pushed (not in the store): {', '.join(result.skipped_platforms)}", file=err)
    print(result.digest, file=out)
    return 0


HANDLERS = {"pull": cmd_pull, "images": cmd_images, "rmi": cmd_rmi, "prune": cmd_prune, "push": cmd_push}


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Execute ``args.verb``; every failure is one line on ``err`` (``<prog>: <what>: <why>``) and exit 1."""
    out, err = out or sys.stdout, err or sys.stderr
    if not hasattr(args, "prog"):
        args.prog = "zonehost"
    try:
        return HANDLERS[args.verb](args, out, err)
    except OCIError as e:
        print(f"{args.prog}: {e}", file=err)
        return 1
    except OSError as e:
        print(f"{args.prog}: {args.verb}: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=err)
        return 1
    except KeyboardInterrupt:
        print(f"{args.prog}: {args.verb}: interrupted", file=err)
        return 130
