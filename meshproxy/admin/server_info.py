"""The admin's ``/server_info`` as Envoy's ``envoy.admin.v3.ServerInfo`` JSON.

Owns what tools that read Envoy's ``/server_info`` find: ``version``, ``state`` (``LIVE``,
``DRAINING``, ``PRE_INITIALIZING`` before the first complete configuration), the uptimes (one
epoch: meshproxy has no hot restart, so ``hot_restart_version`` is ``disabled``), the command
line options that apply (``concurrency``, ``mode``, ``disable_hot_restart``, ``service_node``,
``service_cluster``) and the bootstrap's ``node``. Every key parses as ServerInfo with unknown
fields refused; meshproxy's build facts (Python, event loop, OpenSSL, HTTP/2 codec, compiled
extensions: ``build_info.describe()``) have no ServerInfo field, so they are served at
``/server_info?format=meshproxy``. Must not be imported on the request path.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from meshproxy import __version__
from meshproxy.build_info import describe

if TYPE_CHECKING:
    from meshproxy.config.model import Config


def server_info(
    config: Config, *, ready: bool, draining: bool, started: float, concurrency: int, query: str
) -> dict[str, Any]:
    """Envoy's ServerInfo of a proxy started at ``started`` (monotonic), as JSON; with
    ``format=meshproxy`` in ``query``: state, uptime and ``build_info.describe()``."""
    state = "DRAINING" if draining else "LIVE" if ready else "PRE_INITIALIZING"
    uptime = f"{int(time.monotonic() - started)}s"
    if "format=meshproxy" in query.split("&"):
        return {**describe(), "state": state, "uptime_current_epoch": uptime}
    node: dict[str, Any] = {"id": config.node.id, "cluster": config.node.cluster}
    if config.bootstrap is not None and config.bootstrap.HasField("node"):
        node = json_format.MessageToDict(config.bootstrap.node)
    return {
        "version": f"meshproxy/{__version__}",
        "state": state,
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
        "hot_restart_version": "disabled",
        "command_line_options": {
            "concurrency": concurrency,
            "mode": "Serve",
            "disable_hot_restart": True,
            "service_node": config.node.id,
            "service_cluster": config.node.cluster,
        },
        "node": node,
    }
