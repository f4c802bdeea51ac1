"""compile_overload_manager: Envoy's overload_manager bootstrap field → OverloadConfig, every
refusal with its field path."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.overload.v3 import overload_pb2
from google.protobuf import json_format

from meshproxy.config.compile import compile_bootstrap
from meshproxy.config.compile_common import Ctx
from meshproxy.config.compile_overload import compile_overload_manager
from meshproxy.overload.config import (
    DISABLE_HTTP_KEEPALIVE,
    DOWNSTREAM_CONNECTIONS,
    EVENT_LOOP_LAG,
    FILE_DESCRIPTORS,
    FIXED_HEAP,
    REDUCE_TIMEOUTS,
    STOP_ACCEPTING_REQUESTS,
    Action,
    Monitor,
    OverloadConfig,
    TimerMinimum,
    Trigger,
)

T = "type.googleapis.com/"
HEAP = {
    "name": FIXED_HEAP,
    "typed_config": {
        "@type": T + "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
        "max_heap_size_bytes": 1 << 30,
    },
}
CONNECTIONS = {
    "name": DOWNSTREAM_CONNECTIONS,
    "typed_config": {
        "@type": T
        + "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
        "max_active_downstream_connections": 1000,
    },
}


def struct(inner: str, value: dict[str, Any], wrapper: str = "xds.type.v3.TypedStruct") -> dict[str, Any]:
    return {"@type": T + wrapper, "type_url": T + inner, "value": value}


FDS = {"name": FILE_DESCRIPTORS, "typed_config": struct("meshproxy.overload.v1.FileDescriptors", {})}
LAG = {
    "name": EVENT_LOOP_LAG,
    "typed_config": struct("meshproxy.overload.v1.EventLoopLag", {"max_lag": "0.5s"}),
}


def threshold(monitor: str, value: float) -> dict[str, Any]:
    return {"name": monitor, "threshold": {"value": value}}


def action(name: str, *triggers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": name, "triggers": list(triggers) or [threshold(FIXED_HEAP, 0.9)], **fields}


def scale_timers(*timers: dict[str, Any]) -> dict[str, Any]:
    return {
        "@type": T + "envoy.config.overload.v3.ScaleTimersOverloadActionConfig",
        "timer_scale_factors": list(timers),
    }


def compiled(doc: dict[str, Any]) -> tuple[OverloadConfig | None, list[str]]:
    ctx = Ctx("overload_manager", [])
    result = compile_overload_manager(json_format.ParseDict(doc, overload_pb2.OverloadManager()), ctx)
    assert (result is None) == bool(ctx.problems), "a config is returned exactly when there is no problem"
    return result, ctx.problems


def test_every_monitor_and_action_compiles() -> None:
    doc = {
        "refresh_interval": "0.25s",
        "resource_monitors": [HEAP, CONNECTIONS, FDS, LAG],
        "actions": [
            action(STOP_ACCEPTING_REQUESTS, threshold(FIXED_HEAP, 0.95), threshold(EVENT_LOOP_LAG, 1.0)),
            action(
                DISABLE_HTTP_KEEPALIVE,
                {
                    "name": FILE_DESCRIPTORS,
                    "scaled": {"scaling_threshold": 0.8, "saturation_threshold": 0.95},
                },
            ),
            action(
                "envoy.overload_actions.stop_accepting_connections", threshold(DOWNSTREAM_CONNECTIONS, 0.99)
            ),
            action(
                "envoy.overload_actions.reject_incoming_connections", threshold(DOWNSTREAM_CONNECTIONS, 1.0)
            ),
            action(
                REDUCE_TIMEOUTS,
                {"name": FIXED_HEAP, "scaled": {"scaling_threshold": 0.5, "saturation_threshold": 0.9}},
                typed_config=scale_timers(
                    {"timer": "HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_timeout": "2s"},
                    {"timer": "HTTP_DOWNSTREAM_STREAM_IDLE", "min_scale": {"value": 25}},
                ),
            ),
        ],
    }
    config, problems = compiled(doc)
    assert problems == []
    assert config == OverloadConfig(
        0.25,
        (
            Monitor(FIXED_HEAP, float(1 << 30)),
            Monitor(DOWNSTREAM_CONNECTIONS, 1000),
            Monitor(FILE_DESCRIPTORS, None),
            Monitor(EVENT_LOOP_LAG, 0.5),
        ),
        (
            Action(STOP_ACCEPTING_REQUESTS, (Trigger(FIXED_HEAP, 0.95), Trigger(EVENT_LOOP_LAG, 1.0))),
            Action(DISABLE_HTTP_KEEPALIVE, (Trigger(FILE_DESCRIPTORS, 0.8, 0.95),)),
            Action(
                "envoy.overload_actions.stop_accepting_connections", (Trigger(DOWNSTREAM_CONNECTIONS, 0.99),)
            ),
            Action(
                "envoy.overload_actions.reject_incoming_connections", (Trigger(DOWNSTREAM_CONNECTIONS, 1.0),)
            ),
            Action(
                REDUCE_TIMEOUTS,
                (Trigger(FIXED_HEAP, 0.5, 0.9),),
                (
                    TimerMinimum("HTTP_DOWNSTREAM_CONNECTION_IDLE", min_timeout=2.0),
                    TimerMinimum("HTTP_DOWNSTREAM_STREAM_IDLE", min_scale=0.25),
                ),
            ),
        ),
    )


def test_defaults_and_udpa_typed_struct_and_numeric_lag() -> None:
    lag = {
        "name": EVENT_LOOP_LAG,
        "typed_config": struct(
            "meshproxy.overload.v1.EventLoopLag", {"max_lag": 0.2}, "udpa.type.v1.TypedStruct"
        ),
    }
    fds = {
        "name": FILE_DESCRIPTORS,
        "typed_config": struct("meshproxy.overload.v1.FileDescriptors", {"max_open_fds": 4096}),
    }
    config, _ = compiled({"resource_monitors": [lag, fds]})
    assert config == OverloadConfig(
        1.0, (Monitor(EVENT_LOOP_LAG, 0.2), Monitor(FILE_DESCRIPTORS, 4096.0)), ()
    )


HEAP_TYPE = T + "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"


@pytest.mark.parametrize(
    ("doc", "problems"),
    [
        pytest.param(
            {"refresh_interval": "0s"},
            ["overload_manager.refresh_interval: must be greater than 0"],
            id="refresh-zero",
        ),
        pytest.param(
            {
                "loadshed_points": [
                    {
                        "name": "envoy.load_shed_points.tcp_listener_accept",
                        "triggers": [threshold(FIXED_HEAP, 0.9)],
                    }
                ]
            },
            [
                "overload_manager.loadshed_points: load shed points are not supported; use actions with the same triggers"
            ],
            id="loadshed-points",
        ),
        pytest.param(
            {"buffer_factory_config": {"minimum_account_to_track_power_of_two": 20}},
            [
                "overload_manager.buffer_factory_config: buffer accounting is not supported (meshproxy bounds every buffer instead)"
            ],
            id="buffer-factory",
        ),
        pytest.param(
            {
                "resource_monitors": [
                    {"name": "envoy.resource_monitors.cpu_utilization", "typed_config": HEAP["typed_config"]}
                ]
            },
            [
                'overload_manager.resource_monitors[0].name: "envoy.resource_monitors.cpu_utilization" is not a resource monitor meshproxy runs; use one of envoy.resource_monitors.fixed_heap, envoy.resource_monitors.global_downstream_max_connections, meshproxy.resource_monitors.file_descriptors, meshproxy.resource_monitors.event_loop_lag'
            ],
            id="unknown-monitor",
        ),
        pytest.param(
            {"resource_monitors": [{"typed_config": HEAP["typed_config"]}]},
            [
                "overload_manager.resource_monitors[0].name: is required; use one of envoy.resource_monitors.fixed_heap, envoy.resource_monitors.global_downstream_max_connections, meshproxy.resource_monitors.file_descriptors, meshproxy.resource_monitors.event_loop_lag"
            ],
            id="monitor-without-name",
        ),
        pytest.param(
            {"resource_monitors": [HEAP, HEAP]},
            [
                f'overload_manager.resource_monitors[1].name: "{FIXED_HEAP}" is configured twice; each monitor is given once'
            ],
            id="duplicate-monitor",
        ),
        pytest.param(
            {"resource_monitors": [{"name": FIXED_HEAP}]},
            [
                f"overload_manager.resource_monitors[0].typed_config: is required: {FIXED_HEAP} is configured by {HEAP_TYPE}"
            ],
            id="monitor-without-config",
        ),
        pytest.param(
            {"resource_monitors": [{"name": FIXED_HEAP, "typed_config": {"@type": HEAP_TYPE}}]},
            [
                "overload_manager.resource_monitors[0].typed_config.max_heap_size_bytes: must be greater than 0"
            ],
            id="heap-zero",
        ),
        pytest.param(
            {
                "resource_monitors": [
                    {
                        "name": DOWNSTREAM_CONNECTIONS,
                        "typed_config": {
                            "@type": CONNECTIONS["typed_config"]["@type"],
                            "max_active_downstream_connections": -1,
                        },
                    }
                ]
            },
            [
                "overload_manager.resource_monitors[0].typed_config.max_active_downstream_connections: must be greater than 0"
            ],
            id="connections-negative",
        ),
        pytest.param(
            {"resource_monitors": [{"name": FIXED_HEAP, "typed_config": CONNECTIONS["typed_config"]}]},
            [
                f'overload_manager.resource_monitors[0].typed_config: "{CONNECTIONS["typed_config"]["@type"]}" does not configure {FIXED_HEAP}; use {HEAP_TYPE}'
            ],
            id="monitor-wrong-config",
        ),
        pytest.param(
            {
                "resource_monitors": [
                    {
                        "name": FILE_DESCRIPTORS,
                        "typed_config": struct("meshproxy.overload.v1.EventLoopLag", {}),
                    }
                ]
            },
            [
                f'overload_manager.resource_monitors[0].typed_config: "meshproxy.overload.v1.EventLoopLag" does not configure {FILE_DESCRIPTORS}; use a TypedStruct with type_url type.googleapis.com/meshproxy.overload.v1.FileDescriptors'
            ],
            id="struct-monitor-wrong-type",
        ),
        pytest.param(
            {
                "resource_monitors": [
                    {
                        "name": EVENT_LOOP_LAG,
                        "typed_config": struct(
                            "meshproxy.overload.v1.EventLoopLag", {"max_lag": "soon", "period": 1}
                        ),
                    }
                ]
            },
            [
                "overload_manager.resource_monitors[0].typed_config.value.period: is not a field of meshproxy.overload.v1.EventLoopLag; use max_lag",
                "overload_manager.resource_monitors[0].typed_config.value.max_lag: 'soon' is not a duration; give seconds as a number or a string like \"0.010s\"",
            ],
            id="lag-bad-fields",
        ),
        pytest.param(
            {
                "resource_monitors": [
                    {"name": EVENT_LOOP_LAG, "typed_config": struct("meshproxy.overload.v1.EventLoopLag", {})}
                ]
            },
            ['overload_manager.resource_monitors[0].typed_config.value.max_lag: is required (e.g. "0.5s")'],
            id="lag-missing",
        ),
        pytest.param(
            {
                "resource_monitors": [
                    {
                        "name": EVENT_LOOP_LAG,
                        "typed_config": struct("meshproxy.overload.v1.EventLoopLag", {"max_lag": 0}),
                    }
                ]
            },
            ["overload_manager.resource_monitors[0].typed_config.value.max_lag: must be greater than 0"],
            id="lag-zero",
        ),
        pytest.param(
            {
                "resource_monitors": [
                    {
                        "name": FILE_DESCRIPTORS,
                        "typed_config": struct(
                            "meshproxy.overload.v1.FileDescriptors", {"max_open_fds": 1.5}
                        ),
                    }
                ]
            },
            [
                "overload_manager.resource_monitors[0].typed_config.value.max_open_fds: 1.5 must be a positive integer"
            ],
            id="fds-not-integer",
        ),
        pytest.param(
            {"resource_monitors": [HEAP], "actions": [action("envoy.overload_actions.shrink_heap")]},
            [
                "overload_manager.actions[0].name: shrink_heap is not supported: CPython keeps freed memory in its own arenas and cannot return it on demand; use stop_accepting_requests or reduce_timeouts"
            ],
            id="shrink-heap",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [action("envoy.overload_actions.reset_high_memory_stream")],
            },
            [
                'overload_manager.actions[0].name: "envoy.overload_actions.reset_high_memory_stream" is not an overload action meshproxy runs; use one of envoy.overload_actions.stop_accepting_requests, envoy.overload_actions.disable_http_keepalive, envoy.overload_actions.stop_accepting_connections, envoy.overload_actions.reject_incoming_connections, envoy.overload_actions.reduce_timeouts'
            ],
            id="unknown-action",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [action(STOP_ACCEPTING_REQUESTS), action(STOP_ACCEPTING_REQUESTS)],
            },
            [
                f'overload_manager.actions[1].name: "{STOP_ACCEPTING_REQUESTS}" is configured twice; give each action once'
            ],
            id="duplicate-action",
        ),
        pytest.param(
            {"resource_monitors": [HEAP], "actions": [{"name": STOP_ACCEPTING_REQUESTS}]},
            ["overload_manager.actions[0].triggers: an action needs at least one trigger"],
            id="no-triggers",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [action(STOP_ACCEPTING_REQUESTS, threshold(FILE_DESCRIPTORS, 0.9))],
            },
            [
                f'overload_manager.actions[0].triggers[0].name: "{FILE_DESCRIPTORS}" is not a configured resource monitor (configured: {FIXED_HEAP})'
            ],
            id="trigger-unknown-monitor",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [
                    action(STOP_ACCEPTING_REQUESTS, threshold(FIXED_HEAP, 0.9), threshold(FIXED_HEAP, 0.8))
                ],
            },
            [
                f'overload_manager.actions[0].triggers[1].name: "{FIXED_HEAP}" already triggers this action in triggers[0]'
            ],
            id="duplicate-trigger",
        ),
        pytest.param(
            {"resource_monitors": [HEAP], "actions": [action(STOP_ACCEPTING_REQUESTS, {"name": FIXED_HEAP})]},
            ["overload_manager.actions[0].triggers[0]: a trigger needs threshold or scaled"],
            id="trigger-empty",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [action(STOP_ACCEPTING_REQUESTS, threshold(FIXED_HEAP, 1.5))],
            },
            [
                "overload_manager.actions[0].triggers[0].threshold.value: 1.5 is out of range; use 0..1 (a fraction of the monitor's maximum)"
            ],
            id="threshold-above-one",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [
                    action(
                        STOP_ACCEPTING_REQUESTS,
                        {
                            "name": FIXED_HEAP,
                            "scaled": {"scaling_threshold": 0.9, "saturation_threshold": 0.8},
                        },
                    )
                ],
            },
            [
                "overload_manager.actions[0].triggers[0].scaled: scaling_threshold (0.9) must be less than saturation_threshold (0.8)"
            ],
            id="scaled-inverted",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [
                    action(
                        STOP_ACCEPTING_REQUESTS,
                        {
                            "name": FIXED_HEAP,
                            "scaled": {"scaling_threshold": -0.1, "saturation_threshold": 0.8},
                        },
                    )
                ],
            },
            [
                "overload_manager.actions[0].triggers[0].scaled.scaling_threshold: -0.1 is out of range; use 0..1 (a fraction of the monitor's maximum)"
            ],
            id="scaled-negative",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [
                    action(
                        STOP_ACCEPTING_REQUESTS,
                        typed_config=scale_timers(
                            {"timer": "HTTP_DOWNSTREAM_STREAM_IDLE", "min_timeout": "1s"}
                        ),
                    )
                ],
            },
            [
                f"overload_manager.actions[0].typed_config: {STOP_ACCEPTING_REQUESTS} takes no typed_config; remove it"
            ],
            id="typed-config-on-boolean-action",
        ),
        pytest.param(
            {"resource_monitors": [HEAP], "actions": [action(REDUCE_TIMEOUTS)]},
            [
                "overload_manager.actions[0].typed_config: reduce_timeouts is configured by type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig; got nothing"
            ],
            id="reduce-timeouts-without-config",
        ),
        pytest.param(
            {"resource_monitors": [HEAP], "actions": [action(REDUCE_TIMEOUTS, typed_config=scale_timers())]},
            [
                "overload_manager.actions[0].typed_config.timer_scale_factors: give at least one timer to scale"
            ],
            id="reduce-timeouts-empty",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [action(REDUCE_TIMEOUTS, typed_config=scale_timers({"min_timeout": "1s"}))],
            },
            [
                "overload_manager.actions[0].typed_config.timer_scale_factors[0].timer: UNSPECIFIED is not a timer; use one of HTTP_DOWNSTREAM_CONNECTION_IDLE, HTTP_DOWNSTREAM_STREAM_IDLE, TRANSPORT_SOCKET_CONNECT, HTTP_DOWNSTREAM_CONNECTION_MAX, HTTP_DOWNSTREAM_STREAM_FLUSH"
            ],
            id="timer-unspecified",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [
                    action(
                        REDUCE_TIMEOUTS,
                        typed_config=scale_timers(
                            {"timer": "HTTP_DOWNSTREAM_STREAM_IDLE", "min_timeout": "1s"},
                            {"timer": "HTTP_DOWNSTREAM_STREAM_IDLE", "min_timeout": "2s"},
                        ),
                    )
                ],
            },
            [
                "overload_manager.actions[0].typed_config.timer_scale_factors[1].timer: HTTP_DOWNSTREAM_STREAM_IDLE is given twice"
            ],
            id="timer-twice",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [
                    action(
                        REDUCE_TIMEOUTS, typed_config=scale_timers({"timer": "HTTP_DOWNSTREAM_STREAM_IDLE"})
                    )
                ],
            },
            [
                "overload_manager.actions[0].typed_config.timer_scale_factors[0]: a timer needs min_timeout or min_scale"
            ],
            id="timer-without-minimum",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [
                    action(
                        REDUCE_TIMEOUTS,
                        typed_config=scale_timers(
                            {"timer": "HTTP_DOWNSTREAM_STREAM_IDLE", "min_scale": {"value": 150}}
                        ),
                    )
                ],
            },
            [
                "overload_manager.actions[0].typed_config.timer_scale_factors[0].min_scale.value: 150 is out of range; use 0..100"
            ],
            id="timer-scale-out-of-range",
        ),
        pytest.param(
            {
                "resource_monitors": [HEAP],
                "actions": [
                    action(
                        REDUCE_TIMEOUTS,
                        typed_config=scale_timers(
                            {"timer": "HTTP_DOWNSTREAM_STREAM_IDLE", "min_timeout": "-1s"}
                        ),
                    )
                ],
            },
            [
                "overload_manager.actions[0].typed_config.timer_scale_factors[0].min_timeout: must not be negative (got -1s)"
            ],
            id="timer-negative",
        ),
    ],
)
def test_refusals_name_their_field(doc: dict[str, Any], problems: list[str]) -> None:
    assert compiled(doc)[1] == problems


def test_a_bootstrap_carries_its_overload_manager_into_the_config() -> None:
    doc = {
        "overload_manager": {
            "refresh_interval": "0.25s",
            "resource_monitors": [HEAP],
            "actions": [{"name": STOP_ACCEPTING_REQUESTS, "triggers": [threshold(FIXED_HEAP, 0.9)]}],
        }
    }
    config = compile_bootstrap(json_format.ParseDict(doc, bootstrap_pb2.Bootstrap()))
    assert config.overload is not None
    assert [m.name for m in config.overload.monitors] == [FIXED_HEAP]
    assert compile_bootstrap(bootstrap_pb2.Bootstrap()).overload is None
