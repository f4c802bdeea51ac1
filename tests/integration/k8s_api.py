"""A local Kubernetes API server for the tests: list, watch, and TokenReview, driven by a script.

No API server binary can run on these machines, so this one speaks the parts of the protocol
the Kubernetes source and the CA use, over HTTPS with a bearer token, exactly as
``kube-apiserver`` puts them on the wire:

- ``GET <collection>``: a ``<Kind>List`` whose ``metadata.resourceVersion`` is the store's
  current version; ``limit`` and ``continue`` page it;
- ``GET <collection>?watch=true&resourceVersion=N``: HTTP 200, a chunked body of one JSON event a
  line: every change after ``N`` (``ADDED``/``MODIFIED``/``DELETED`` with the object at its new
  resourceVersion), then changes as the test makes them, ``BOOKMARK`` events when the test asks
  (only to watches that sent ``allowWatchBookmarks=true``), until ``timeoutSeconds`` or the
  test ends the streams. A resourceVersion older than the last compaction (`expire`) gets one
  ``ERROR`` event holding a ``Status`` with code 410 (reason ``Expired``), as the real server's
  "too old resource version";
- ``POST /apis/authentication.k8s.io/v1/tokenreviews``: the projected-token check, with
  audiences, answered from `FakeKubeApi.accounts`;
- ``PATCH <custom object>/status`` (a JSON merge patch): the status subresource;
- an unknown collection is a 404 ``Status`` (a CRD not installed); `fail` scripts error answers.

Every request is recorded in ``requests`` (method, path, query), so tests assert what the
client sent (resourceVersion, bookmarks, relists). Object builders for the kinds discovery reads
are in ``tests/k8s_objects.py``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import ssl
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from k8s_objects import NODES, PODS, SERVICES, SLICES

from controlplane.k8s.annotations import TOKEN_AUDIENCE

JsonObject = dict[str, Any]
API_TOKEN = "fake-api-server-token-of-the-controlplane"
KINDS = {
    SERVICES: ("v1", "ServiceList"),
    PODS: ("v1", "PodList"),
    NODES: ("v1", "NodeList"),
    SLICES: ("discovery.k8s.io/v1", "EndpointSliceList"),
}
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


@dataclass
class Collection:
    objects: dict[tuple[str, str], JsonObject] = field(default_factory=dict)
    events: list[tuple[int, str, JsonObject]] = field(default_factory=list)
    floor: int = 0  # watches from a resourceVersion below this get 410
    watchers: list[asyncio.Queue[JsonObject | None]] = field(default_factory=list)
    bookmarkers: set[int] = field(default_factory=set)  # ids of queues that allow bookmarks


@dataclass(frozen=True)
class Account:
    """Who a projected service-account token is, and for which audiences it was issued."""

    namespace: str
    name: str
    audiences: tuple[str, ...]
    username: str = ""  # another user than the service account (a person's or a node's token)
    checks_audiences: bool = True  # False: an API server that ignores spec.audiences


class FakeKubeApi:
    def __init__(
        self,
        *,
        served: tuple[str, ...] = tuple(KINDS),
        host: str = "127.0.0.1",
        accounts_file: Path | None = None,
    ) -> None:
        self.host = host
        self.accounts_file = accounts_file  # `_file_accounts`
        self.version = 1000
        self.collections: dict[str, Collection] = {path: Collection() for path in served}
        self.accounts: dict[str, Account] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.reviews: list[JsonObject] = []
        self.status_patches: list[tuple[str, JsonObject]] = []
        self._failures: dict[str, list[int]] = defaultdict(list)
        self._runner: web.AppRunner | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="fake-kube-api-")
        self.port = 0

    # ------------------------------------------------------------------ life

    async def start(self) -> FakeKubeApi:
        cert, key, self.ca_pem = _server_certificate(self.host)
        directory = Path(self._dir.name)
        (directory / "tls.crt").write_bytes(cert)
        (directory / "tls.key").write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        self.end_watches()
        if self._runner is not None:
            await self._runner.cleanup()
        self._dir.cleanup()

    async def __aenter__(self) -> FakeKubeApi:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def kubeconfig(self, token: str = API_TOKEN) -> Path:
        """A kubeconfig file for this server (its CA, the bearer token)."""
        path = Path(self._dir.name) / "kubeconfig"
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fake",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(doc))
        return path

    # ------------------------------------------------------------------ the script

    def serve(self, path: str) -> None:
        """Start serving a collection (a CRD installed)."""
        self.collections.setdefault(path, Collection())

    def put(self, path: str, obj: JsonObject) -> int:
        """Create or replace ``obj``: ADDED or MODIFIED to the watches; its new resourceVersion."""
        collection = self.collections[path]
        metadata = obj.setdefault("metadata", {})
        key = (metadata.get("namespace", ""), metadata["name"])
        kind = "MODIFIED" if key in collection.objects else "ADDED"
        return self._record(collection, kind, key, obj)

    def delete(self, path: str, namespace: str, name: str) -> int:
        collection = self.collections[path]
        obj = collection.objects[(namespace, name)]
        return self._record(collection, "DELETED", (namespace, name), obj)

    def lose_events(self, path: str, objects: list[JsonObject]) -> None:
        """Make ``objects`` the collection's content without telling any watch (what a client
        misses while its resourceVersion falls out of the server's window): only a list sees it."""
        collection = self.collections[path]
        collection.objects.clear()
        for obj in objects:
            self.version += 1
            obj = json.loads(json.dumps(obj))
            obj["metadata"]["resourceVersion"] = str(self.version)
            collection.objects[(obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj

    def bookmark(self, path: str) -> None:
        """A BOOKMARK at the current resourceVersion to every watch of ``path`` that allows them."""
        collection = self.collections[path]
        event = {
            "type": "BOOKMARK",
            "object": {"kind": "Bookmark", "metadata": {"resourceVersion": str(self.version)}},
        }
        for queue in collection.watchers:
            if id(queue) in collection.bookmarkers:
                queue.put_nowait(event)

    def expire(self, path: str) -> None:
        """Compaction: resourceVersions before now are gone. Open watches get the 410 ERROR event
        (the real server's answer once its watch cache moved past them) and end."""
        collection = self.collections[path]
        self.version += 1
        collection.floor = self.version
        collection.events.clear()
        for queue in collection.watchers:
            queue.put_nowait(_expired_event(path))
            queue.put_nowait(None)

    def end_watches(self, path: str | None = None) -> None:
        """End the open watch streams (what a ``timeoutSeconds`` expiry does)."""
        for p, collection in self.collections.items():
            if path is None or p == path:
                for queue in collection.watchers:
                    queue.put_nowait(None)

    def fail(self, path: str, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests to ``path`` with ``status`` and a Status body."""
        self._failures[path].extend([status] * times)

    def watches(self, path: str) -> list[dict[str, str]]:
        return [q for m, p, q in self.requests if m == "GET" and p == path and q.get("watch") == "true"]

    def lists(self, path: str) -> list[dict[str, str]]:
        return [q for m, p, q in self.requests if m == "GET" and p == path and q.get("watch") != "true"]

    def open_watches(self, path: str) -> int:
        return len(self.collections[path].watchers)

    def _record(self, collection: Collection, kind: str, key: tuple[str, str], obj: JsonObject) -> int:
        self.version += 1
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["resourceVersion"] = str(self.version)
        if kind == "DELETED":
            collection.objects.pop(key, None)
        else:
            collection.objects[key] = obj
        event = {"type": kind, "object": obj}
        collection.events.append((self.version, kind, obj))
        for queue in collection.watchers:
            queue.put_nowait(event)
        return self.version

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        query = dict(request.query)
        self.requests.append((request.method, path, query))
        if request.headers.get("Authorization") != f"Bearer {API_TOKEN}":
            return _status(401, "Unauthorized", "the bearer token is not the controlplane's")
        if self._failures.get(path):
            code = self._failures[path].pop(0)
            return _status(code, "InternalError" if code >= 500 else "Failure", "scripted by the test")
        if request.method == "POST" and path == TOKEN_REVIEWS:
            return web.json_response(self._review(await request.json()), status=201)
        if request.method == "PATCH" and path.endswith("/status"):
            return self._patch_status(path, request.headers.get("Content-Type", ""), await request.json())
        collection = self.collections.get(path)
        if request.method != "GET" or collection is None:
            return _status(404, "NotFound", f"the server could not find the requested resource ({path})")
        if query.get("watch") == "true":
            return await self._watch(request, path, collection, query)
        return web.json_response(self._list(path, collection, query))

    def _patch_status(self, path: str, content_type: str, body: JsonObject) -> web.Response:
        """A merge patch of a custom object's status subresource
        (``/apis/G/V/namespaces/NS/PLURAL/NAME/status``): only ``status`` changes, a MODIFIED
        event follows, as the API server does."""
        parts = path.strip("/").split("/")  # apis G V namespaces NS PLURAL NAME status
        collection = self.collections.get("/" + "/".join([*parts[:3], parts[5]])) if len(parts) == 8 else None
        obj = collection.objects.get((parts[4], parts[6])) if collection is not None else None
        if collection is None or obj is None or content_type != "application/merge-patch+json":
            return _status(404 if obj is None else 415, "NotFound", f"cannot patch {path} ({content_type})")
        self.status_patches.append((path, body))
        obj = json.loads(json.dumps(obj))
        obj["status"] = {**(obj.get("status") or {}), **(body.get("status") or {})}
        self._record(collection, "MODIFIED", (parts[4], parts[6]), obj)
        return web.json_response(collection.objects[(parts[4], parts[6])])

    def _list(self, path: str, collection: Collection, query: dict[str, str]) -> JsonObject:
        items = [collection.objects[k] for k in sorted(collection.objects)]
        start = int(query.get("continue", "0") or 0)
        limit = int(query.get("limit", "0") or 0) or len(items)
        page = items[start : start + limit]
        api_version, kind = KINDS.get(path, ("meshproxy.io/v1alpha1", "List"))
        metadata: JsonObject = {"resourceVersion": str(self.version)}
        if start + limit < len(items):
            metadata["continue"] = str(start + limit)
        return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "items": page}

    async def _watch(
        self, request: web.Request, path: str, collection: Collection, query: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        since = int(query.get("resourceVersion") or 0)
        if since < collection.floor:
            await response.write(_line(_expired_event(path)))
            return response
        queue: asyncio.Queue[JsonObject | None] = asyncio.Queue()
        for version, kind, obj in collection.events:
            if version > since:
                queue.put_nowait({"type": kind, "object": obj})
        collection.watchers.append(queue)
        if query.get("allowWatchBookmarks") == "true":
            collection.bookmarkers.add(id(queue))
        timeout = float(query.get("timeoutSeconds") or 1800)
        try:
            async with asyncio.timeout(timeout):
                while (event := await queue.get()) is not None:
                    await response.write(_line(event))
        except (TimeoutError, ConnectionResetError):
            pass
        finally:
            if queue in collection.watchers:
                collection.watchers.remove(queue)
            collection.bookmarkers.discard(id(queue))
        return response

    def _review(self, body: JsonObject) -> JsonObject:
        self.reviews.append(body)
        spec = body.get("spec") or {}
        wanted = list(spec.get("audiences") or [])
        token = str(spec.get("token", ""))
        account = self.accounts.get(token) or self._file_accounts().get(token)
        status: JsonObject
        if account is None:
            status = {"authenticated": False, "error": "invalid bearer token"}
        elif wanted and account.checks_audiences and not set(wanted) & set(account.audiences):
            status = {
                "authenticated": False,
                "error": f"token audiences {list(account.audiences)} are invalid for the target "
                f"audiences {wanted}",
            }
        else:
            status = {
                "authenticated": True,
                "user": {
                    "username": account.username
                    or f"system:serviceaccount:{account.namespace}:{account.name}",
                    "uid": f"uid-{account.namespace}-{account.name}",
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{account.namespace}"],
                },
                "audiences": (
                    [a for a in wanted if a in account.audiences] if account.checks_audiences else []
                ),
            }
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": spec,
            "status": status,
        }

    def _file_accounts(self) -> dict[str, Account]:
        """The kubelet's part, for the pods harness: every token in ``accounts_file`` (the
        bootstrap tokens format, ``<token> spiffe://<td>/ns/<ns>/sa/<name>``, which the harness
        writes for each sidecar it starts) is that service account's projected token for the
        controlplane's audience. Read at each review: sidecars start after the server."""
        if self.accounts_file is None or not self.accounts_file.exists():
            return {}
        accounts = {}
        for line in self.accounts_file.read_text().splitlines():
            token, _, identity = line.partition(" ")
            _, _, path = identity.strip().removeprefix("spiffe://").partition("/")
            parts = path.split("/")
            if len(parts) == 4 and parts[0] == "ns" and parts[2] == "sa":
                accounts[token] = Account(parts[1], parts[3], (TOKEN_AUDIENCE,))
        return accounts


def _line(event: JsonObject) -> bytes:
    return json.dumps(event).encode() + b"\n"


def _expired_event(path: str) -> JsonObject:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": f"too old resource version ({path})",
            "reason": "Expired",
            "code": 410,
        },
    }


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


def _server_certificate(host: str) -> tuple[bytes, bytes, bytes]:
    """A CA and a serving certificate for the IP ``host`` (PEM chain, key, CA)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return leaf.public_bytes(pem), key_pem, ca.public_bytes(pem)


async def _serve_script(host: str, kubeconfig: Path, accounts_file: Path) -> None:
    """The server in a process of its own (a pod of the e2e tests): it writes ``kubeconfig``,
    prints ``ready``, then runs one JSON command a line from stdin (``{"op": "put", "path",
    "object"}``, ``{"op": "delete", "path", "namespace", "name"}``), answering each with the
    new resourceVersion, until stdin ends."""
    async with FakeKubeApi(host=host, accounts_file=accounts_file) as fake:
        kubeconfig.write_text(fake.kubeconfig().read_text())
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command = json.loads(line)
            if command["op"] == "put":
                version = fake.put(command["path"], command["object"])
            else:
                version = fake.delete(command["path"], command["namespace"], command["name"])
            print(version, flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"] or len(sys.argv) != 5:
        sys.exit("usage: python -m integration.k8s_api serve HOST KUBECONFIG ACCOUNTS_FILE")
    asyncio.run(_serve_script(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])))
