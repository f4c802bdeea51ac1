"""The Kubernetes API as the discovery source and the CA use it: JSON lists, watch streams, POSTs.

Owns the one place ``kubernetes_asyncio`` is used: loading the client configuration (a
kubeconfig file, or the pod's service account when none is given: ``KUBERNETES_SERVICE_HOST``
and ``/var/run/secrets/kubernetes.io/serviceaccount``) and three calls on its ``ApiClient``, all
with raw JSON: no generated model classes, so a list of 10,000 endpoints is parsed once, into
dicts. `Api.get` reads one document, `Api.watch` yields the events of a chunked watch stream
(one JSON object a line, each line bounded by `MAX_EVENT_BYTES`), `Api.post` creates,
`Api.merge_patch` patches (a status subresource). A non-2xx
answer is an `ApiError` carrying the ``Status`` object's code, reason and message.

Must not depend on: the mesh model, the controlplane's state, the CA.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config

from controlplane.k8s.errors import ApiError, KubernetesError
from controlplane.k8s.objects import JsonObject

MAX_EVENT_BYTES = 16 * 1024 * 1024  # one watch event (an object); the API server's own limit is 3 MiB
CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 60.0  # a list or a POST; watches are bounded by their timeoutSeconds instead
MERGE_PATCH = "application/merge-patch+json"
WATCH_READ_MARGIN = 30.0  # past the server's timeoutSeconds, a silent stream is a dead one


class Api:
    """An authenticated connection to one API server (the client's connection pool)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._client = api_client

    @classmethod
    async def connect(cls, kubeconfig: Path | None) -> Api:
        """From ``kubeconfig`` (its current context), else the in-cluster service account;
        `KubernetesError` saying which could not be read, and why."""
        configuration = client.Configuration()
        try:
            if kubeconfig is not None:
                await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
            else:
                config.load_incluster_config(client_configuration=configuration)
        except Exception as exc:  # the library's loaders raise YAML, OS, key and their own errors
            # (a refusal naming the flag is the answer to all of them; no traceback)
            where = f"--kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster service account"
            raise KubernetesError(f"{where}: cannot configure the Kubernetes client ({exc})") from None
        return cls(client.ApiClient(configuration))

    @property
    def host(self) -> str:
        return str(self._client.configuration.host)

    async def close(self) -> None:
        await self._client.close()

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> JsonObject:
        response = await self._call("GET", path, params, None, REQUEST_TIMEOUT)
        async with response:
            return await _document(response, path)

    async def post(self, path: str, body: JsonObject) -> JsonObject:
        response = await self._call("POST", path, None, body, REQUEST_TIMEOUT)
        async with response:
            return await _document(response, path)

    async def merge_patch(self, path: str, body: JsonObject) -> JsonObject:
        """A JSON merge patch (RFC 7386), as ``kubectl patch --type merge`` sends it."""
        response = await self._call("PATCH", path, None, body, REQUEST_TIMEOUT, MERGE_PATCH)
        async with response:
            return await _document(response, path)

    async def watch(self, path: str, params: Mapping[str, str], timeout: float) -> AsyncIterator[JsonObject]:
        """The events of one watch request (``watch=true`` is added), until the server ends it."""
        read = aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT, sock_read=timeout + WATCH_READ_MARGIN)
        response = await self._call("GET", path, {**params, "watch": "true"}, None, read)
        async with response:
            if response.status != 200:
                raise _error(path, response.status, await response.read())
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if len(pending) > MAX_EVENT_BYTES:
                    raise ApiError(path, 0, "EventTooLarge", f"a watch event over {MAX_EVENT_BYTES} bytes")
                for line in lines:
                    if line.strip():
                        yield _json(path, line)
            if pending.strip():
                yield _json(path, pending)

    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: JsonObject | None,
        timeout: float | aiohttp.ClientTimeout,
        content_type: str = "application/json",
    ) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await self._client.call_api(
            path,
            method,
            query_params=list((params or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        return response


async def _document(response: aiohttp.ClientResponse, path: str) -> JsonObject:
    data = await response.read()
    if not 200 <= response.status <= 299:
        raise _error(path, response.status, data)
    return _json(path, data)


def _json(path: str, data: bytes) -> JsonObject:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ApiError(path, 0, "BadResponse", f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ApiError(path, 0, "BadResponse", f"a JSON {type(value).__name__}, not an object")
    return value


def _error(path: str, status: int, data: bytes) -> ApiError:
    """The ``Status`` object the API server sends with an error, or what there was instead."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return status_error(path, body, status)
    return ApiError(path, status, "", data[:200].decode("utf-8", "replace"))


def status_error(path: str, status: Mapping[str, Any], code: int = 0) -> ApiError:
    """An `ApiError` from a ``Status`` object (an error response, or a watch's ERROR event)."""
    return ApiError(
        path, int(status.get("code") or code), str(status.get("reason", "")), str(status.get("message", ""))
    )
