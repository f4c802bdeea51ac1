"""The HPACK decoder of every HTTP/2 connection: hpack's, stopped at the header-list bounds.

Owns ``BoundedDecoder``, which h2 calls for each complete header block (HEADERS and its
CONTINUATIONs, request or response headers or trailers). It refuses a block, while decoding
it, as soon as the block decodes to more than ``max_headers`` fields or more than
``max_header_list_size`` bytes counted as RFC 7541 §4.1 counts them (name + value + 32 per
field, as Envoy counts ``max_request_headers_kb``). hpack bounds only the size; without a count,
one-byte references to a small dynamic-table entry turned 1.2 MB on the wire into about
1.2 million header fields (issue 12, finding 11).

The refusal is hpack's ``OversizedHeaderListError``, which h2 turns into GOAWAY
ENHANCE_YOUR_CALM for the whole connection: decoding stops at the bound, so the HPACK
dynamic table no longer matches the peer's and the connection cannot go on (RFC 7541 §2.2).
Envoy resets only the stream because nghttp2 finishes decoding such a block in C; finishing it
here would cost pure-Python work per byte of an attacker's block, which is what the bound is for.

The loop is hpack 4's ``Decoder.decode`` (same private helpers) with the count added; h2 always
asks for raw bytes. Must not depend on h2 or on anything of the proxy.
"""

from __future__ import annotations

from hpack import Decoder
from hpack.exceptions import HPACKDecodingError, OversizedHeaderListError
from hpack.struct import HeaderTuple
from hpack.table import table_entry_size


class BoundedDecoder(Decoder):
    def __init__(self, max_header_list_size: int, max_headers: int) -> None:
        super().__init__(max_header_list_size)
        self.max_headers = max_headers

    def decode(self, data: bytes, raw: bool = True) -> list[HeaderTuple]:  # h2 asks for bytes only
        view = memoryview(data)
        headers: list[HeaderTuple] = []
        size = 0
        count = 0
        at = 0
        end = len(data)
        while at < end:
            first = data[at]
            if first & 0x80:
                header, used = self._decode_indexed(view[at:])
            elif first & 0x40:
                header, used = self._decode_literal_index(view[at:])
            elif first & 0x20:
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                used = self._update_encoding_context(view[at:])
                header = None
            else:
                header, used = self._decode_literal_no_index(view[at:])
            if header:
                headers.append(header)
                count += 1
                size += table_entry_size(header[0], header[1])
                if count > self.max_headers:
                    raise OversizedHeaderListError(f"more than {self.max_headers} header fields")
                if size > self.max_header_list_size:
                    limit = self.max_header_list_size
                    raise OversizedHeaderListError(f"a header list larger than {limit} bytes")
            at += used
        self._assert_valid_table_size()
        return headers
