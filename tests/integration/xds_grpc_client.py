"""A grpcio proxyless xDS client, run as a child process by ``test_grpc_proxyless.py``.

gRPC reads ``GRPC_XDS_BOOTSTRAP_CONFIG`` when its xDS client starts, which may be once per
process; a child process gets the bootstrap of the test that started it. Usage:
``python xds_grpc_client.py xds:///service``, then one command per line on stdin:
``call N`` makes N unary calls of ``/meshtest.Who/Name`` (answered with the backend's name) and
prints one JSON line ``{"counts": {name: n}, "errors": [...]}``; ``quit`` (or EOF) exits.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import grpc

METHOD = "/meshtest.Who/Name"
CALL_TIMEOUT = 5.0


def main(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        who = channel.unary_unary(METHOD)
        for line in sys.stdin:
            command = line.split()
            if not command or command[0] == "quit":
                break
            counts: Counter[str] = Counter()
            errors: list[str] = []
            for _ in range(int(command[1])):
                try:
                    counts[who(b"", timeout=CALL_TIMEOUT, wait_for_ready=True).decode()] += 1
                except grpc.RpcError as err:
                    errors.append(f"{err.code().name}: {err.details()}")
            print(json.dumps({"counts": dict(counts), "errors": errors}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
