"""How to reach a registry: TLS trust from certs.d, and plain HTTP only where registries.conf says insecure.

Follows the containers ecosystem (podman, skopeo, buildah), so a registry set up for them works here:

* ``/etc/containers/certs.d/<host[:port]>/``: every ``*.crt`` is a CA trusted (in addition to the system
  CAs) for that registry; a ``NAME.cert`` + ``NAME.key`` pair is a client certificate
  (containers-certs.d(5)). ``/etc/docker/certs.d`` is read the same way after it.
* ``registries.conf`` (containers-registries.conf(5), version 2 TOML, plus the v1 ``[registries.insecure]`` and
  ``[registries.block]`` tables) and its drop-in directory ``registries.conf.d/*.conf``: a ``[[registry]]`` whose
  ``prefix`` (or ``location``) matches the image name, longest match first, says ``insecure`` (TLS without
  verification, then plain HTTP if TLS fails) or ``blocked`` (refused). ``*.example.com`` prefixes match
  subdomains. Nothing else ever speaks plain HTTP.

Paths: ``CONTAINERS_REGISTRIES_CONF`` (as podman) or ``/etc/containers/registries.conf``; the certs.d roots are
a parameter (tests point them at their own directory).
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

from zoneoci.errors import ConfigFileError

DEFAULT_REGISTRIES_CONF = Path("/etc/containers/registries.conf")
DEFAULT_CERTS_DIRS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


@dataclass(frozen=True)
class RegistryRule:
    prefix: str
    insecure: bool = False
    blocked: bool = False

    def matches(self, name: str) -> bool:
        """``name`` is ``host[:port]/repository``."""
        if self.prefix.startswith("*."):
            host = name.split("/", 1)[0].rsplit(":", 1)[0] if not name.startswith("[") else ""
            return host.endswith(self.prefix[1:])
        return name == self.prefix or name.startswith(self.prefix.rstrip("/") + "/")


def _rules_from(document: dict, path: Path) -> list[RegistryRule]:
    rules: list[RegistryRule] = []
    entries = document.get("registry", [])
    if not isinstance(entries, list):
        raise ConfigFileError(f"{path}: [[registry]] must be an array of tables")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigFileError(f"{path}: registry[{i}] is not a table")
        prefix = entry.get("prefix") or entry.get("location")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigFileError(f"{path}: registry[{i}] needs a location or prefix")
        insecure, blocked = entry.get("insecure", False), entry.get("blocked", False)
        if not isinstance(insecure, bool) or not isinstance(blocked, bool):
            raise ConfigFileError(f"{path}: registry[{i}] ({prefix}): insecure and blocked must be true or false")
        rules.append(RegistryRule(prefix, insecure, blocked))
    v1 = document.get("registries", {})
    if isinstance(v1, dict):  # the version-1 format: [registries.insecure] registries = [...]
        for table, flag in (("insecure", "insecure"), ("block", "blocked")):
            names = (v1.get(table) or {}).get("registries", [])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ConfigFileError(f"{path}: registries.{table}.registries must be a list of strings")
            rules.extend(RegistryRule(n, **{flag: True}) for n in names)
    return rules


def load_registries_conf(path: Path | None = None) -> list[RegistryRule]:
    """The rules of ``path`` (default: $CONTAINERS_REGISTRIES_CONF or /etc/containers/registries.conf) and of
    its drop-in directory ``<path>.d``; a missing file means no rules. Later files override earlier ones."""
    if path is None:
        path = Path(os.environ.get("CONTAINERS_REGISTRIES_CONF") or DEFAULT_REGISTRIES_CONF)
    files = [path] if path.is_file() else []
    dropins = path.with_name(f"{path.name}.d")
    if dropins.is_dir():
        files += sorted(p for p in dropins.glob("*.conf") if p.is_file())
    rules: list[RegistryRule] = []
    if files:
        import tomllib  # only when there is a file to read: most pulls on a host without containers-common have none
    for file in files:
        try:
            document = tomllib.loads(file.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigFileError(f"{file}: cannot read ({e})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigFileError(f"{file}: not valid TOML ({e})") from None
        new = _rules_from(document, file)
        replaced = {r.prefix for r in new}
        rules = [r for r in rules if r.prefix not in replaced] + new
    return rules


@dataclass
class RegistryHosts:
    """Per-registry connection policy: which schemes to try and which TLS context to use."""

    rules: list[RegistryRule] = field(default_factory=list)
    certs_dirs: tuple[Path, ...] = DEFAULT_CERTS_DIRS

    def __post_init__(self) -> None:
        self._contexts: dict[tuple[str, bool, bool], ssl.SSLContext] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, registries_conf: Path | None = None, certs_dirs: tuple[Path, ...] | None = None) -> RegistryHosts:
        return cls(load_registries_conf(registries_conf), certs_dirs if certs_dirs is not None else DEFAULT_CERTS_DIRS)

    def rule_for(self, name: str) -> RegistryRule | None:
        """The longest-prefix rule for ``name`` (``host[:port]/repository`` or just ``host[:port]``)."""
        found = [r for r in self.rules if r.matches(name) or r.matches(name.split("/", 1)[0])]
        return max(found, key=lambda r: len(r.prefix), default=None)

    def is_insecure(self, host: str) -> bool:
        rule = self.rule_for(host)
        return bool(rule and rule.insecure)

    def is_blocked(self, name: str) -> bool:
        rule = self.rule_for(name)
        return bool(rule and rule.blocked)

    def schemes(self, host: str) -> tuple[str, ...]:
        """``("https",)``, or ``("https", "http")`` for a registry marked insecure."""
        return ("https", "http") if self.is_insecure(host) else ("https",)

    def own_cas(self, host: str) -> bool:
        """Does certs.d name a CA (``*.crt``) for ``host[:port]``?"""
        return any(entry.suffix == ".crt" for root in self.certs_dirs if (root / host).is_dir()
                   for entry in (root / host).iterdir())

    def ssl_context(self, host: str, *, system_cas: bool = True) -> ssl.SSLContext:
        """System CAs + certs.d CAs (+ a client certificate) for ``host[:port]``; no verification only for a
        registry marked insecure. ``system_cas=False`` leaves the system CAs out: loading them makes OpenSSL
        parse the whole system bundle (~35 ms, a tenth of a command-line pull), which a registry trusted
        through its certs.d CA does not need. Trust is the same either way only if the caller retries with
        the system CAs when verification fails (the transport does): a certificate that verifies against
        certs.d's CAs alone verifies against both, one that does not gets the full set."""
        insecure = self.is_insecure(host)
        system_cas = system_cas and not insecure  # nothing is verified for an insecure registry
        with self._lock:
            context = self._contexts.get((host, insecure, system_cas))
            if context is None:
                context = self._make_context(host, insecure, system_cas)
                self._contexts[(host, insecure, system_cas)] = context
            return context

    def _make_context(self, host: str, insecure: bool, system_cas: bool) -> ssl.SSLContext:
        # create_default_context() is this context (same protocol, options and verification) plus the system CAs
        context = ssl.create_default_context() if system_cas else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        for root in self.certs_dirs:
            directory = root / host
            if not directory.is_dir():
                continue
            for entry in sorted(directory.iterdir()):
                try:
                    if entry.suffix == ".crt":
                        context.load_verify_locations(cafile=str(entry))
                    elif entry.suffix == ".cert":
                        key = entry.with_suffix(".key")
                        if not key.is_file():
                            raise ConfigFileError(f"{entry}: client certificate without its key {key.name}")
                        context.load_cert_chain(str(entry), str(key))
                except (OSError, ssl.SSLError) as e:
                    raise ConfigFileError(f"{entry}: unusable certificate ({e})") from None
        return context
