"""The HTTP/2 codec's pure-Python twin: h2's ``H2Connection``, configured as the proxy runs it.

Owns how one connection's h2 state machine is built: raw-bytes headers, inbound validation on
and outbound re-validation off (``connection.py`` says why that is safe), our local SETTINGS
from the first frame, the inbound frame size we advertise, and the bounded HPACK decoder that
enforces the header-list bounds (``decoder.py``). ``_codec_c`` (libnghttp2) builds a connection
with the same subset of this API and the same events; ``tests/unit/http2/test_nghttp2_codec.py``
feeds both the same bytes. ``request_head`` and ``response_head`` (a block checked and split)
are ``fields``': h2 leaves field syntax beyond its own rules to them.
Must not depend on asyncio or on anything of the proxy above the codec.
"""

from __future__ import annotations

from collections.abc import Mapping

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes, Settings

from meshproxy.http2.decoder import BoundedDecoder
from meshproxy.http2.fields import request_head, response_head

__all__ = ["CODEC", "new_connection", "request_head", "response_head"]

CODEC = "h2"


def new_connection(
    *, client: bool, settings: Mapping[SettingCodes, int], max_header_list: int, max_headers: int
) -> H2Connection:
    """A client or server connection advertising ``settings`` (SETTINGS code → value), refusing a
    header block of more than ``max_header_list`` bytes (RFC 7541 §4.1) or ``max_headers`` fields."""
    conn = H2Connection(
        H2Configuration(
            client_side=client,
            header_encoding=None,
            validate_inbound_headers=True,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    conn.local_settings = Settings(client=client, initial_values=dict(settings))
    conn.max_inbound_frame_size = conn.local_settings.max_frame_size
    conn.decoder = BoundedDecoder(max_header_list, max_headers)
    return conn
