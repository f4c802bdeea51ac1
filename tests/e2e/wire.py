"""Wire evidence for the pod tests: what a TLS handshake offered and chose, read off a capture.

Owns running ``tcpdump`` on a pod's ``eth0`` (the veth), reading the pcap file it writes
(Ethernet, IPv4 and IPv6, TCP), putting each flow's first bytes back in order, and parsing the
cleartext part of TLS 1.3 handshakes from them (``tests/tls_hello.py``): the ClientHello's SNI,
supported groups and key shares, and the ServerHello's selected group and cipher suite. It is
what an observer on the wire sees, independent of what either proxy reports about itself.
Depends only on the standard library, ``tls_hello`` and the tcpdump binary.
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import signal
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from tls_hello import Flow, Hello, first_handshake_message, parse_hello

_FLOW_BYTES = 64 * 1024  # a handshake's cleartext part fits well within this
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


class _InPod(Protocol):
    netns: str

    def argv(self, argv: list[str], user: int | None = None) -> list[str]: ...


@contextlib.contextmanager
def capture(pod: _InPod, path: Path, interface: str = "eth0") -> Iterator[Path]:
    """``tcpdump`` on ``interface`` inside ``pod`` writing TCP to ``path`` while the block runs.

    Returns once tcpdump says it is listening (so nothing sent inside the block is missed), and
    stops it with SIGINT (which flushes the file) when the block ends."""
    # --immediate-mode: with libpcap's TPACKET_V3 ring, packets still in an unfilled block when
    # SIGINT arrives are never written (a short handshake then shows "0 packets captured").
    tcpdump = ["tcpdump", "-i", interface, "--immediate-mode", "-U", "-s", "0", "-n", "-w", str(path), "tcp"]
    argv = pod.argv(tcpdump)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], _START_TIMEOUT)
        line = proc.stderr.readline() if ready else ""
        if "listening on" not in line:
            raise RuntimeError(f"tcpdump in {pod.netns} did not start: {line.strip()!r}")
        yield path
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def hellos(pcap: bytes) -> list[Hello]:
    """Every TLS ClientHello and ServerHello at the start of a TCP flow in the capture."""
    found: list[Hello] = []
    for flow, stream in _streams(pcap).items():
        if stream[:1] != b"\x16":
            continue  # not TLS (or not from its start)
        message = first_handshake_message(stream)
        if message is None:
            raise ValueError(f"{flow}: the capture holds an incomplete TLS handshake message")
        found.append(parse_hello(message, flow))
    return found


# --- pcap → ordered TCP payloads per flow ---------------------------------------------------


def _streams(pcap: bytes) -> dict[Flow, bytes]:
    segments: dict[Flow, list[tuple[int, bytes]]] = {}
    for frame in _frames(pcap):
        parsed = _tcp(frame)
        if parsed is not None and parsed[2]:
            flow, seq, payload = parsed
            segments.setdefault(flow, []).append((seq, payload))
    return {flow: _in_order(parts) for flow, parts in segments.items()}


def _frames(pcap: bytes) -> Iterator[bytes]:
    if len(pcap) < 24:
        return
    magic = pcap[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"not a pcap file (magic {magic.hex()})")
    (linktype,) = struct.unpack_from(endian + "I", pcap, 20)
    if linktype != 1:
        raise ValueError(f"capture link type {linktype}, expected Ethernet (1)")
    offset = 24
    while offset + 16 <= len(pcap):
        _, _, captured, _ = struct.unpack_from(endian + "IIII", pcap, offset)
        offset += 16
        yield pcap[offset : offset + captured]
        offset += captured


def _tcp(frame: bytes) -> tuple[Flow, int, bytes] | None:
    if len(frame) < 14:
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    ip = frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20 and ip[9] == 6:
        header = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        src, dst = _ipv4(ip[12:16]), _ipv4(ip[16:20])
        segment = ip[header:total]
    elif ethertype == 0x86DD and len(ip) >= 40 and ip[6] == 6:
        length = int.from_bytes(ip[4:6], "big")
        src, dst = _ipv6(ip[8:24]), _ipv6(ip[24:40])
        segment = ip[40 : 40 + length]
    else:
        return None
    if len(segment) < 20:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", segment)
    data_offset = (segment[12] >> 4) * 4
    return (src, sport, dst, dport), seq, segment[data_offset:]


def _ipv4(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def _ipv6(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw))


def _in_order(parts: list[tuple[int, bytes]]) -> bytes:
    """The flow's first bytes, segments placed by sequence number (retransmissions overlap)."""
    parts.sort(key=lambda p: p[0])
    start = parts[0][0]
    out = bytearray()
    for seq, payload in parts:
        at = (seq - start) % (1 << 32)
        if at > len(out):
            break  # a gap: a segment was not captured; what follows cannot be placed
        out += payload[len(out) - at :]
        if len(out) >= _FLOW_BYTES:
            break
    return bytes(out)
