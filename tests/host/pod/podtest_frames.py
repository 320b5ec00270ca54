"""Raw ethernet on a tap fd, standing in for a zone: answers ARP and ICMP echo for the pod IP, and pings.

Each frame read from a tap opened with IFF_VNET_HDR starts with a 10-byte virtio_net_hdr (all zero here:
no offloads were negotiated); frames written get a zero header in front.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
REPLY_TTL = 42    # a TTL no Linux stack uses by default: a reply carrying it came from this responder


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def ip_header(src: bytes, dst: bytes, payload_len: int, ttl: int, proto: int = 1, ident: int = 0) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident, 0, ttl, proto, 0, src, dst)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:]


@dataclass
class TapResponder:
    """A thread that plays the zone on ``fd``: ARP replies for ``ip`` with ``mac``, ICMP echo replies
    (TTL 42), and it can send its own echo requests to learn the way out (tap -> veth)."""

    fd: int
    mac: str
    ip: str
    vnet_hdr: bool = True
    frames_in: int = 0
    echo_replies_seen: list[tuple[str, int]] = field(default_factory=list)   # (source ip, ICMP id)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _peer_mac: bytes | None = None

    def __enter__(self) -> TapResponder:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _write(self, frame: bytes) -> None:
        os.write(self.fd, (b"\0" * 10 if self.vnet_hdr else b"") + frame)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            frame = data[10:] if self.vnet_hdr else data
            self.frames_in += 1
            self._handle(frame)

    def _handle(self, frame: bytes) -> None:
        if len(frame) < 14:
            return
        dst, src, ethertype = frame[:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
        body = frame[14:]
        me, my_ip = mac_bytes(self.mac), socket.inet_aton(self.ip)
        if ethertype == ETH_P_ARP and len(body) >= 28:
            op = struct.unpack("!H", body[6:8])[0]
            sender_mac, sender_ip, target_ip = body[8:14], body[14:18], body[24:28]
            if op == 1 and target_ip == my_ip:
                arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 2, me, my_ip, sender_mac, sender_ip)
                self._write(sender_mac + me + struct.pack("!H", ETH_P_ARP) + arp)
            return
        if ethertype != ETH_P_IP or len(body) < 28 or dst not in (me, b"\xff" * 6):
            return
        header_len = (body[0] & 0x0F) * 4
        proto, src_ip, dst_ip = body[9], body[12:16], body[16:20]
        if proto != 1 or dst_ip != my_ip:
            return
        icmp = body[header_len:struct.unpack("!H", body[2:4])[0]]
        self._peer_mac = src
        if icmp[0] == ICMP_ECHO_REQUEST:
            reply = bytes([ICMP_ECHO_REPLY, 0, 0, 0]) + icmp[4:]
            reply = reply[:2] + struct.pack("!H", checksum(reply)) + reply[4:]
            packet = ip_header(my_ip, src_ip, len(reply), REPLY_TTL) + reply
            self._write(src + me + struct.pack("!H", ETH_P_IP) + packet)
        elif icmp[0] == ICMP_ECHO_REPLY:
            self.echo_replies_seen.append((socket.inet_ntoa(src_ip), struct.unpack("!H", icmp[4:6])[0]))

    def ping_out(self, gateway_mac: str, gateway_ip: str, ident: int) -> None:
        """Send one echo request from the pod IP to ``gateway_ip`` (the zone talking first)."""
        icmp = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, 1) + b"zone-says-hello"
        icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
        packet = ip_header(socket.inet_aton(self.ip), socket.inet_aton(gateway_ip), len(icmp), 64) + icmp
        self._write(mac_bytes(gateway_mac) + mac_bytes(self.mac) + struct.pack("!H", ETH_P_IP) + packet)


def ping(dst: str, *, count: int = 3, timeout: float = 3.0, ident: int = 0x5A5A) -> list[int]:
    """ICMP echo from the calling thread's network namespace; returns the TTL of each reply received."""
    ttls = []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(timeout)
        for seq in range(1, count + 1):
            icmp = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq) + b"ping-from-the-bridge"
            icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
            sock.sendto(icmp, (dst, 0))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    packet, (source, _) = sock.recvfrom(65536)
                except TimeoutError:
                    break
                header_len = (packet[0] & 0x0F) * 4
                reply = packet[header_len:]
                if source == dst and reply[0] == ICMP_ECHO_REPLY and struct.unpack("!HH", reply[4:8]) == (ident, seq):
                    ttls.append(packet[8])
                    break
    return ttls
