"""A real registry for tests and benchmarks: a CA and server certificate made here, Debian's docker-registry 2.8
with TLS and htpasswd auth on 127.0.0.1 (a port the kernel picks, its own state directory), skopeo to fill it,
and small OCI layouts to push. Shared by tests/oci, tests/host, qemu-tests and bench/pull.py; each starts its
own registry and stops it."""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import io
import ipaddress
import json
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD = "zoneuser", "s3cret-pass"


# ---- PKI -----------------------------------------------------------------------------------------------------

@dataclass
class PKI:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_pki(directory: Path) -> PKI:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it (EC P-256, valid for a day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zoneoci test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    pki = PKI(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return pki


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd entry: Debian's htpasswd (apache2-utils) if installed, else the bcrypt library."""
    if shutil.which("htpasswd"):
        done = subprocess.run(["htpasswd", "-nbB", user, password], capture_output=True, text=True, check=True)
        return done.stdout.strip()
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}"


# ---- the registry ------------------------------------------------------------------------------------------

@dataclass
class Registry:
    host: str                 # "127.0.0.1:PORT"
    process: subprocess.Popen
    state: Path
    certs_d: Path             # certs.d root with <host>/ca.crt
    authfile: Path            # auth.json with USER's credentials
    registries_conf: Path     # empty (nothing insecure)

    def client_options(self) -> list[str]:
        """The options that make zonehost (pull, push, run) and zonebuild.publish trust and log in to it."""
        return ["--authfile", str(self.authfile), "--cert-dir", str(self.certs_d),
                "--registries-conf", str(self.registries_conf)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def skopeo_copy(self, source: str, dest_repo: str, *, fmt: str | None = None, all_images: bool = False) -> None:
        cmd = ["skopeo", "copy", "--quiet", "--dest-cert-dir", str(self.certs_d / self.host),
               "--dest-creds", f"{USER}:{PASSWORD}"]
        if fmt:
            cmd += ["--format", fmt]
        if all_images:
            cmd.append("--all")
        cmd += [source, f"docker://{self.host}/{dest_repo}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)}: {done.stderr.strip()}")

    def skopeo_inspect(self, repo: str, raw: bool = True) -> dict:
        cmd = ["skopeo", "inspect", "--cert-dir", str(self.certs_d / self.host), "--creds", f"{USER}:{PASSWORD}"]
        if raw:
            cmd.append("--raw")
        done = subprocess.run([*cmd, f"docker://{self.host}/{repo}"], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"skopeo inspect {repo}: {done.stderr.strip()}")
        return json.loads(done.stdout)


def start_registry(base: Path, pki: PKI) -> Registry:
    """docker-registry 2.8 with TLS and htpasswd auth on 127.0.0.1, port chosen by the kernel (read back from
    its 'listening on' log line)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        import pytest
        pytest.skip("Debian's docker-registry is not installed (apt-get install docker-registry)")
    base.mkdir(parents=True, exist_ok=True)
    (base / "htpasswd").write_text(htpasswd_line(USER, PASSWORD) + "\n")
    config = f"""version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {base / "data"}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
  tls:
    certificate: {pki.server_cert}
    key: {pki.server_key}
auth:
  htpasswd:
    realm: zoneoci-test
    path: {base / "htpasswd"}
"""
    (base / "config.yml").write_text(config)
    with open(base / "registry.log", "wb") as log:
        process = subprocess.Popen([binary, "serve", str(base / "config.yml")], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    host = None
    while time.monotonic() < deadline and host is None:
        if process.poll() is not None:
            raise AssertionError(f"docker-registry exited: {(base / 'registry.log').read_text()[-2000:]}")
        for line in (base / "registry.log").read_text(errors="replace").splitlines():
            if 'msg="listening on ' in line:
                host = line.split('msg="listening on ', 1)[1].split('"', 1)[0].split(',', 1)[0].strip()
        time.sleep(0.05)
    if host is None:
        process.kill()
        raise AssertionError("docker-registry did not say where it listens within 30 s")
    certs_d = base / "certs.d"
    (certs_d / host).mkdir(parents=True)
    shutil.copy(pki.ca_cert, certs_d / host / "ca.crt")
    authfile = base / "auth.json"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    conf = base / "registries.conf"
    conf.write_text("")
    return Registry(host, process, base, certs_d, authfile, conf)


@contextmanager
def running_registry(base: Path) -> Iterator[Registry]:
    """A registry with a CA of its own under ``base``, stopped on leaving (the tests' fixtures)."""
    registry = start_registry(base, make_pki(base / "pki"))
    try:
        yield registry
    finally:
        registry.stop()


# ---- images --------------------------------------------------------------------------------------------------

def tar_of(files: dict[str, bytes], mtime: int = 0) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class LayoutBuilder:
    """An OCI layout with any number of images (and an optional multi-platform index) for skopeo to push."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.entries: list[dict] = []

    def blob(self, data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    def image(self, layers: list[bytes], *, arch: str = "amd64", compress: bool = True,
              cmd: list[str] | None = None) -> dict:
        """Config + manifest for uncompressed layer tars (gzip-compressed in the blob when ``compress``)."""
        descs, diff_ids = [], []
        for tar in layers:
            diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
            if compress:
                descs.append(self.blob(gzip.compress(tar, mtime=0, compresslevel=1),
                                       "application/vnd.oci.image.layer.v1.tar+gzip"))
            else:
                descs.append(self.blob(tar, "application/vnd.oci.image.layer.v1.tar"))
        config = {"architecture": arch, "os": "linux", "config": {"Cmd": cmd or ["sh"], "Env": ["PATH=/bin"]},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        config_desc = self.blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_desc, "layers": descs}
        desc = self.blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
        desc["platform"] = {"architecture": arch, "os": "linux"}
        return desc

    def name(self, desc: dict, ref_name: str) -> None:
        self.entries.append({**desc, "annotations": {"org.opencontainers.image.ref.name": ref_name}})
        self.write_index()

    def index(self, manifests: list[dict], ref_name: str) -> dict:
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
        desc = self.blob(json.dumps(index).encode(), "application/vnd.oci.image.index.v1+json")
        self.name(desc, ref_name)
        return desc

    def write_index(self) -> None:
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.entries}))


