"""The HCM's local_reply_config over real sockets, through both codecs: a mapper chosen by
status, by response flag or by request header rewrites the status, body and headers of local
replies; a text or JSON body format with command operators; replies it does not match keep the
default format; upstream responses are never touched.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .harness import http_listener, route
from .serving import serving

CODECS = ("HTTP/1.1", "HTTP/2")
LOCAL_REPLY = {
    "mappers": [
        {
            "filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 404}}}},
            "status_code": 410,
            "body": {"inline_string": "gone"},
            "headers_to_add": [{"header": {"key": "x-mapped", "value": "404"}}],
        },
        {
            "filter": {
                "and_filter": {
                    "filters": [
                        {"response_flag_filter": {"flags": ["FI"]}},
                        {"header_filter": {"header": {"name": "x-json", "present_match": True}}},
                    ]
                }
            },
            "body_format_override": {
                "json_format": {
                    "code": "%RESPONSE_CODE%",
                    "flags": "%RESPONSE_FLAGS%",
                    "detail": {"message": "%LOCAL_REPLY_BODY%", "id": "%REQ(x-id):4%"},
                    "missing": "%REQ(x-none)%",
                }
            },
        },
    ],
    "body_format": {"text_format": "[%RESPONSE_CODE%] %LOCAL_REPLY_BODY% (%REQ(:path)%)\n"},
}
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def listener() -> dict[str, Any]:
    routes = [route("/echo"), {"match": {"prefix": "/teapot"}, "direct_response": {"status": 418}}]
    ln = http_listener(routes, local_reply_config=LOCAL_REPLY)
    manager = ln["filter_chains"][0]["filters"][0]["typed_config"]
    abort = {"@type": FAULT, "abort": {"header_abort": {}, "percentage": {"numerator": 100}}}
    manager["http_filters"].insert(0, {"name": "fault", "typed_config": abort})
    return ln


@pytest.mark.parametrize("codec", CODECS)
async def test_local_replies_follow_the_mappers_and_body_formats(codec: str) -> None:
    async with serving(listener(), codec) as (proxy, c):
        missing = await c.get(proxy.url("/nowhere?q=1"))
        teapot = await c.get(proxy.url("/teapot"))
        aborted = await c.get(
            proxy.url("/echo"),
            headers={"x-envoy-fault-abort-request": "503", "x-json": "1", "x-id": "abcdefgh"},
        )
        upstream = await c.get(proxy.url("/echo"))
    assert (missing.status_code, missing.text) == (410, "[410] gone (/nowhere?q=1)\n")
    assert missing.headers["x-mapped"] == "404"
    assert missing.headers["content-type"] == "text/plain"
    assert (teapot.status_code, teapot.text) == (418, "[418]  (/teapot)\n")  # no mapper matched
    assert "x-mapped" not in teapot.headers
    assert aborted.status_code == 503
    assert aborted.headers["content-type"] == "application/json"
    assert json.loads(aborted.content) == {
        "code": 503,
        "flags": "FI",
        "detail": {"message": "fault filter abort", "id": "abcd"},
        "missing": "-",
    }
    assert upstream.status_code == 200 and upstream.json()["path"] == "/echo"
