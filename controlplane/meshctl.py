"""``meshctl``: the command line over the controlplane's management API.

Owns the commands (``status``, ``get``, ``apply -f FILE [--dry-run]``, ``validate -f FILE``,
``proxies``, ``split SERVICE v1=90 v2=10 [--dry-run]``, ``events``, ``inventory``; and the offline
Kubernetes commands ``inject``, ``install``, ``uninstall`` of `controlplane.k8s.commands`), the
token (``--token-file``, else ``$MESHCTL_TOKEN``, else the local controlplane's ``meshctl.token``
in its state directory; sent as ``authorization: Bearer``), and the two renderings of every answer:
readable tables by default, ``-o json`` (one JSON document; ``events`` writes one JSON object per
line) for scripts. Exit codes: 0 success, 1 a refused config or shift (its problems are printed),
2 usage error, 3 the controlplane is unreachable or refused the call (status and message printed).

Must not depend on: the controlplane's internals (the state directory's location is a convention
it shares, `controlplane.state_dir`); it is a plain gRPC client of the proto.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from controlplane import state_dir
from controlplane.k8s import commands as k8s_commands
from meshproxy._gen.mesh.v1 import management_pb2 as pb
from meshproxy._gen.mesh.v1 import management_pb2_grpc as pb_grpc

DEFAULT_SERVER = "127.0.0.1:15010"
TIMEOUT = 10.0


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshctl", description="manage a meshproxy mesh through its controlplane"
    )
    p.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"controlplane HOST:PORT (default {DEFAULT_SERVER})"
    )
    p.add_argument(
        "--token-file",
        type=Path,
        help="file holding the management token (default: $MESHCTL_TOKEN, else STATE_DIR/meshctl.token)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help=f"the local controlplane's state directory (default: ${state_dir.ENV}, else "
        "$XDG_STATE_HOME/meshproxy, else ~/.local/state/meshproxy)",
    )
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="config version, groups and proxies at a glance")
    sub.add_parser("get", help="print the mesh config being served")
    for name, text in (("apply", "apply a mesh config"), ("validate", "validate a mesh config only")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("-f", "--file", required=True, type=Path, help="mesh YAML ('-' for stdin)")
        if name == "apply":
            cmd.add_argument("--dry-run", action="store_true", help="validate and show, change nothing")
    sub.add_parser("proxies", help="connected proxies and their ACK/NACK state per resource type")
    split = sub.add_parser("split", help="shift a service's traffic between versions")
    split.add_argument("service")
    split.add_argument("weights", nargs="+", help="VERSION=WEIGHT ...")
    split.add_argument("--dry-run", action="store_true")
    sub.add_parser("events", help="stream config and xDS events until interrupted")
    sub.add_parser(
        "inventory",
        help="the crypto inventory the sidecars report: per peer identity, the TLS groups, signature "
        "algorithms and versions its connections negotiated, and classical fallbacks",
    )
    k8s_commands.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in k8s_commands.COMMANDS:  # offline: no controlplane, no token
        return k8s_commands.run(args, args.state_dir or state_dir.default_location())
    try:
        metadata = _metadata(args.token_file, args.state_dir or state_dir.default_location())
        with grpc.insecure_channel(args.server) as channel:
            return _run(args, pb_grpc.MeshManagementStub(channel), metadata)
    except UsageError as exc:
        print(f"meshctl: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        code = exc.code().name if exc.code() else "UNKNOWN"
        print(f"meshctl: {args.server}: {code}: {exc.details()}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 0


def _metadata(token_file: Path | None, state: Path) -> list[tuple[str, str]]:
    token = os.environ.get("MESHCTL_TOKEN", "")
    if token_file is None and not token and (state / state_dir.MESHCTL_TOKEN).exists():
        token_file = state / state_dir.MESHCTL_TOKEN
    if token_file is not None:
        try:
            words = token_file.read_text(encoding="utf-8").split()
        except OSError as exc:
            raise UsageError(f"--token-file: cannot read {token_file}: {exc.strerror}") from None
        if not words:
            raise UsageError(f"--token-file: {token_file} is empty")
        token = words[0]
    return [("authorization", f"Bearer {token}")] if token else []


def _run(args: argparse.Namespace, stub: pb_grpc.MeshManagementStub, md: list[tuple[str, str]]) -> int:
    as_json = args.output == "json"
    if args.command == "status":
        config = stub.GetConfig(pb.GetConfigRequest(), metadata=md, timeout=TIMEOUT)
        proxies = stub.ListProxies(pb.ListProxiesRequest(), metadata=md, timeout=TIMEOUT)
        return _print_status(config, proxies, as_json)
    if args.command == "get":
        config = stub.GetConfig(pb.GetConfigRequest(), metadata=md, timeout=TIMEOUT)
        if as_json:
            _json(config)
        else:
            print(f"# version {config.version}, from {config.source}")
            print(config.mesh_yaml, end="" if config.mesh_yaml.endswith("\n") else "\n")
        return 0
    if args.command in ("apply", "validate"):
        text = _read(args.file)
        if args.command == "validate":
            response = stub.Validate(pb.ValidateRequest(mesh_yaml=text), metadata=md, timeout=TIMEOUT)
        else:
            request = pb.ApplyRequest(mesh_yaml=text, dry_run=args.dry_run)
            response = stub.Apply(request, metadata=md, timeout=TIMEOUT)
        return _print_outcome(response, as_json)
    if args.command == "split":
        request = pb.ShiftTrafficRequest(
            service=args.service, weights=_weights(args.weights), dry_run=args.dry_run
        )
        return _print_outcome(stub.ShiftTraffic(request, metadata=md, timeout=TIMEOUT), as_json)
    if args.command == "inventory":
        inventory = stub.Inventory(pb.InventoryRequest(), metadata=md, timeout=TIMEOUT)
        if as_json:
            _json(inventory)
        else:
            _print_inventory(inventory)
        return 0
    if args.command == "proxies":
        proxies = stub.ListProxies(pb.ListProxiesRequest(), metadata=md, timeout=TIMEOUT)
        if as_json:
            _json(proxies)
        else:
            _print_proxies(proxies)
        return 0
    for event in stub.WatchEvents(pb.WatchEventsRequest(), metadata=md):  # "events"
        if as_json:
            print(json.dumps(_dict(event)), flush=True)
        else:
            where = f"{event.node_id} ({event.group}) " if event.node_id else ""
            what = _short(event.type_url)
            line = f"{event.at.ToJsonString()} {event.kind:<12} {where}{what} {event.version} {event.message}"
            print(line.rstrip())
            sys.stdout.flush()
    return 0


def _read(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"-f: cannot read {path}: {exc}") from None


def _weights(items: list[str]) -> dict[str, int]:
    weights = {}
    for item in items:
        version, sep, weight = item.partition("=")
        if not sep or not version or not weight.isdigit():
            raise UsageError(f"{item!r}: write VERSION=WEIGHT, e.g. v1=90 v2=10")
        weights[version] = int(weight)
    return weights


# ----------------------------------------------------------------------------- rendering


def _dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _json(message: Any) -> None:
    print(json.dumps(_dict(message), indent=2, sort_keys=True))


def _short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1] if type_url else ""


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _groups_table(groups: Sequence[pb.GroupSummary]) -> None:
    rows = [["GROUP", "LISTENERS", "ROUTES", "CLUSTERS", "ENDPOINTS"]]
    for g in groups:
        counts = [
            str(len(g.resources[t].names)) if t in g.resources else "0"
            for t in ("Listener", "RouteConfiguration", "Cluster", "ClusterLoadAssignment")
        ]
        rows.append([g.name, *counts])
    _table(rows)


def _print_outcome(response: pb.ApplyResponse, as_json: bool) -> int:
    if as_json:
        _json(response)
    elif not response.ok:
        print(f"refused ({len(response.problems)} problem(s)); still serving version {response.version}:")
        for problem in response.problems:
            print(f"  {problem}")
    else:
        state = (
            f"applied: version {response.version}" if response.applied else "valid (dry run): nothing changed"
        )
        print(state)
        _groups_table(response.groups)
    return 0 if response.ok else 1


def _print_status(config: pb.GetConfigResponse, proxies: pb.ListProxiesResponse, as_json: bool) -> int:
    nacking = [p for p in proxies.proxies if p.nacking]
    if as_json:
        status = {
            "version": config.version,
            "source": config.source,
            "applied_at": config.applied_at.ToJsonString() if config.HasField("applied_at") else "",
            "xds_resources_file": config.xds_resources_file,
            "groups": [_dict(g) for g in config.groups],
            "proxies": len(proxies.proxies),
            "nacking": [p.node_id for p in nacking],
        }
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    print(f"config version {config.version} from {config.source}, applied {config.applied_at.ToJsonString()}")
    if config.xds_resources_file:
        print(f"raw xDS resources: {config.xds_resources_file}")
    print(f"proxies connected: {len(proxies.proxies)}, NACKing: {len(nacking)}")
    for p in nacking:
        for r in p.resources:
            if r.nacking:
                print(f"  {p.node_id} ({p.group}) NACKed {_short(r.type_url)}: {r.last_nack_message}")
    print()
    _groups_table(config.groups)
    return 0


def _print_proxies(response: pb.ListProxiesResponse) -> None:
    if not response.proxies:
        print("no proxies connected")
        return
    rows = [["NODE", "GROUP", "STREAM", "TYPE", "SENT", "ACKED", "NACKS", "LAST NACK"]]
    for p in response.proxies:
        for r in p.resources or [pb.ResourceState()]:
            last = r.last_nack_message.replace("\n", " ")
            nack = ("NACKING: " if r.nacking else "") + last[:80]
            row = [p.node_id, p.group, p.stream_kind, _short(r.type_url), r.version_sent, r.version_acked]
            rows.append([*row, str(r.nack_count), nack])
    _table(rows)


def _print_inventory(response: pb.InventoryResponse) -> None:
    if not response.peers:
        print("no peer identity reported yet")
        return
    rows = [["PEER", "GROUPS", "SIGNATURES", "VERSIONS", "CLASSICAL", "LAST SEEN", "REPORTED BY"]]
    for p in response.peers:
        fallbacks = str(p.classical_fallbacks)
        if p.classical_fallbacks:
            fallbacks += f" (last {p.last_classical_fallback.ToJsonString()})"
        rows.append(
            [
                p.peer,
                ",".join(sorted({c.group for c in p.connections})),
                ",".join(sorted({c.sigalg for c in p.connections})),
                ",".join(sorted({c.version for c in p.connections})),
                fallbacks,
                p.last_seen.ToJsonString(),
                ",".join(p.reporters),
            ]
        )
    _table(rows)


if __name__ == "__main__":
    sys.exit(main())
