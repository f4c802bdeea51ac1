"""gRPC vocabulary both codecs need: local-reply status mapping and the grpc-timeout header.

Owns Envoy's HTTP-status → gRPC-status table for local replies (``Grpc::Utility::
httpToGrpcStatus``), with one departure: a 504 the proxy generates for a timeout becomes
DEADLINE_EXCEEDED (4), what the caller's deadline logic expects; the reverse table
(``grpcToHttpStatus``) by which outlier detection counts gRPC responses. Parsing and writing
``grpc-timeout`` (gRPC over HTTP/2, "Timeout"). Must not import asyncio or either codec.
"""

from __future__ import annotations

OK, CANCELLED, UNKNOWN, DEADLINE_EXCEEDED = 0, 1, 2, 4
PERMISSION_DENIED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 7, 12, 13, 14, 16

_FROM_HTTP = {
    400: INTERNAL,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,
    429: UNAVAILABLE,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
}

# grpc-timeout units (the value is at most 8 ASCII digits).
_UNITS = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}


# Envoy's Grpc::Utility::grpcToHttpStatus: how a gRPC status counts for outlier detection.
_TO_HTTP = (200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401)


def http_status_for(grpc_status: int) -> int:
    """The HTTP status a gRPC status counts as (500 for codes outside the table)."""
    return _TO_HTTP[grpc_status] if 0 <= grpc_status < len(_TO_HTTP) else 500


def status_for(http_status: int) -> int:
    """The grpc-status a local reply with ``http_status`` carries."""
    return _FROM_HTTP.get(http_status, UNKNOWN)


def is_grpc(content_type: bytes | None) -> bool:
    return content_type is not None and content_type.startswith(b"application/grpc")


def parse_timeout(value: bytes) -> float | None:
    """Seconds of a ``grpc-timeout`` value such as ``100m``; None when malformed."""
    value = value.strip()
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _UNITS.get(value[-1])
    return None if unit is None else int(value[:-1]) * unit


def format_timeout(seconds: float) -> bytes:
    """A ``grpc-timeout`` value for ``seconds``: milliseconds, rounded up, within 8 digits."""
    ms = -int(-seconds * 1000 // 1)
    if ms <= 99_999_999:
        return b"%dm" % max(ms, 1)
    return b"%dS" % min(-int(-seconds // 1), 99_999_999)


def percent_encode(message: bytes) -> bytes:
    """grpc-message is percent-encoded outside printable ASCII (and '%' itself)."""
    out = bytearray()
    for b in message:
        if 0x20 <= b <= 0x7E and b != 0x25:
            out.append(b)
        else:
            out += b"%%%02X" % b
    return bytes(out)


def local_reply_headers(
    http_status: int, message: bytes, grpc_status: int | None = None
) -> list[tuple[bytes, bytes]]:
    """A trailers-only gRPC response (HTTP 200, grpc-status/grpc-message in the one HEADERS);
    the gRPC status is ``grpc_status``, or the one Envoy maps ``http_status`` to."""
    code = status_for(http_status) if grpc_status is None else grpc_status
    return [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"%d" % code),
        (b"grpc-message", percent_encode(message)),
    ]
