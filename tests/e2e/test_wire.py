"""The wire evidence itself: a capture on a pod's veth shows what a TLS handshake offered and chose.

Parsing a hello from bytes made by an independent TLS stack (Python's ``ssl`` module over a
memory BIO), then a real handshake between two pods with ``tcpdump`` on the client pod's veth:
the ClientHello's SNI and key shares and the ServerHello's group as an observer sees them. The
mesh tests rely on this to assert X25519MLKEM768 between sidecars.
"""

from __future__ import annotations

import select
import ssl
import subprocess
import sys
from pathlib import Path

from certs import make_leaf, write_leaf
from tls_hello import X25519, first_handshake_message, parse_hello

from controlplane.demo.pods import READY_TIMEOUT, Pods

from .wire import capture, hellos

_TLS_SERVER = """
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
with socket.create_server(("0.0.0.0", 8443)) as srv:
    print("ready", flush=True)
    conn, _ = srv.accept()
    with ctx.wrap_socket(conn, server_side=True) as tls:
        tls.sendall(b"hello over tls\\n")
"""


def test_a_client_hello_made_by_another_stack_parses() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="hello.mesh")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass  # the ClientHello is written; the server's answer would come next
    message = first_handshake_message(outgoing.read())
    assert message is not None
    hello = parse_hello(message)
    assert hello.kind == "client"
    assert hello.sni == "hello.mesh"
    assert X25519 in hello.groups and hello.key_shares and set(hello.key_shares) <= set(hello.groups)


def test_a_handshake_between_pods_is_seen_on_the_veth(pods: Pods, tmp_path: Path) -> None:
    a, b = pods.add("a"), pods.add("b")
    cert, key, _ = write_leaf(make_leaf(), tmp_path / "server")
    server = subprocess.Popen(
        b.argv([sys.executable, "-c", _TLS_SERVER, str(cert), str(key)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    b.processes.append(server)
    assert server.stdout is not None
    ready, _, _ = select.select([server.stdout], [], [], READY_TIMEOUT)
    assert ready and server.stdout.readline().strip() == "ready", server.stderr
    client = (
        "import socket, ssl, sys\n"
        "ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n"
        "with ctx.wrap_socket(socket.create_connection((sys.argv[1], 8443), timeout=10),"
        " server_hostname='hello') as tls:\n"
        "    print(tls.recv(100).decode().strip())\n"
    )
    pcap = tmp_path / "a.pcap"
    with capture(a, pcap):
        answer = a.run(sys.executable, "-c", client, b.ipv4).stdout.strip()
    assert answer == "hello over tls"
    seen = hellos(pcap.read_bytes())
    client_hellos = [h for h in seen if h.kind == "client"]
    server_hellos = [h for h in seen if h.kind == "server"]
    assert len(client_hellos) == 1 and len(server_hellos) == 1, seen
    ch, sh = client_hellos[0], server_hellos[0]
    assert ch.flow[0] == a.ipv4 and ch.flow[2:] == (b.ipv4, 8443)
    assert ch.sni == "hello"
    assert sh.flow == (b.ipv4, 8443, a.ipv4, ch.flow[1])
    assert sh.selected in ch.key_shares and not sh.retry
