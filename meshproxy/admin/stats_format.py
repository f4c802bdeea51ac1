"""The admin's ``/stats`` in Envoy's forms, with Envoy's query parameters.

Owns naming every statistic as Envoy's ``/stats`` does (``<scope>.<instance>.<stat>``, such as
``http.ingress.downstream_rq_total``; the response-code classes as ``downstream_rq_2xx``; a
counter kept per label value as ``<stat>.<value>``, such as
``listener.inbound.ssl_handshakes_by_group.X25519MLKEM768``), and the answers:

- text (the default): ``name: value`` lines, counters and gauges sorted by name, then the
  histograms sorted by name as Envoy's quantile summary ``P0(interval,cumulative) P25(…) …``
  (``No recorded values`` before the first sample);
- ``format=json``: ``{"stats": [{"name", "value"}, …, {"histograms": {"supported_quantiles",
  "computed_quantiles": [{"name", "values": [{"interval", "cumulative"}, …]}]}}]}``;
- ``format=flat``: meshproxy's own flat JSON map (``stats_json``: labelled stats as dicts and
  lists, histograms as ``{count, sum, buckets}``), which the tests, the demo and the worker
  supervisor read; ``format=prometheus`` is the admin's ``/stats/prometheus`` (served there).

Parameters: ``filter=`` (an RE2 pattern, ``meshproxy/config/regex.py``, searched anywhere in the
name, as Envoy's), ``usedonly``, ``type=`` (``All``, ``Counters``, ``Gauges``, ``Histograms``,
``TextReadouts``); anything else is answered 400 naming it. Where Envoy's data differ from ours:
histograms have fixed buckets, so a quantile is interpolated linearly inside its bucket (the last
bucket reports its lower bound), and there are no flush intervals, so every interval value is
``nan`` (JSON ``null``); ``usedonly`` keeps the stats that are not zero (Envoy keeps those ever
written, which zero-valued gauges can be).

Must not be imported on the request path; must not depend on asyncio or the data plane.
"""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass
from typing import Any

from meshproxy.admin.endpoint import Answer, json_answer
from meshproxy.config.regex import Regex, RegexError, compile_regex
from meshproxy.overload.stats import OverloadStats
from meshproxy.stats import CODE_CLASS, SERVER_STATS, Histogram, Store, stats_json

# Envoy's supported quantiles, in percent.
QUANTILES: tuple[float, ...] = (0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100)
FORMATS = ("text", "json", "flat", "prometheus")
# Envoy's type= values and the kinds of stat each keeps (meshproxy has no text readouts).
_KINDS: dict[str, frozenset[str]] = {
    "All": frozenset(("counter", "gauge", "histogram")),
    "Counters": frozenset(("counter",)),
    "Gauges": frozenset(("gauge",)),
    "Histograms": frozenset(("histogram",)),
    "TextReadouts": frozenset(),
}
# RE2 program size allowed for a filter (an operator's pattern, not the request path's).
FILTER_PROGRAM_SIZE = 1000


class QueryError(ValueError):
    """A query parameter of ``/stats`` that cannot be served; the message names it."""


@dataclass(frozen=True, slots=True)
class StatsQuery:
    format: str = "text"
    filter: Regex | None = None
    used_only: bool = False
    type: str = "All"

    @classmethod
    def parse(cls, query: str) -> StatsQuery:
        fmt, pattern, used_only, kind = "text", None, False, "All"
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if key == "format":
                if value not in FORMATS:
                    raise QueryError(f"format={value}: not one of {', '.join(FORMATS)}")
                fmt = value
            elif key == "filter":
                pattern = _search(value) if value else None
            elif key == "usedonly":
                used_only = True
            elif key == "type":
                if value not in _KINDS:
                    raise QueryError(f"type={value}: not one of {', '.join(_KINDS)}")
                kind = value
            else:
                raise QueryError(f"{key}: not a parameter of /stats (format, filter, usedonly, type)")
        return cls(fmt, pattern, used_only, kind)

    def answer(self, store: Store, overload: OverloadStats) -> Answer:
        """The text, ``json`` or ``flat`` answer (``prometheus`` is the caller's)."""
        if self.format == "flat":
            return json_answer({**stats_json(store), **overload.flat(), **_unlabelled(store)})
        scalars, histograms = self._select(*envoy_stats(store, overload))
        if self.format == "json":
            entries: list[dict[str, Any]] = [{"name": n, "value": v} for n, v in scalars]
            if histograms:
                entries.append({"histograms": _json_histograms(histograms)})
            return json_answer({"stats": entries})
        lines = [f"{name}: {_number(value)}" for name, value in scalars]
        lines += [f"{name}: {_summary(h)}" for name, h in histograms]
        return 200, "".join(line + "\n" for line in lines).encode(), b"text/plain; charset=UTF-8"

    def _select(
        self, scalars: dict[str, tuple[bool, float]], histograms: dict[str, Histogram]
    ) -> tuple[list[tuple[str, float]], list[tuple[str, Histogram]]]:
        kinds = _KINDS[self.type]

        def keep(name: str, kind: str, used: bool) -> bool:
            if kind not in kinds or (self.used_only and not used):
                return False
            return self.filter is None or self.filter.fullmatch(name.encode())

        out = [
            (name, value)
            for name, (counter, value) in sorted(scalars.items())
            if keep(name, "counter" if counter else "gauge", bool(value))
        ]
        hist = [(name, h) for name, h in sorted(histograms.items()) if keep(name, "histogram", bool(h.count))]
        return out, hist


def envoy_stats(
    store: Store, overload: OverloadStats
) -> tuple[dict[str, tuple[bool, float]], dict[str, Histogram]]:
    """Every stat by Envoy's name: (is a counter, value) for counters and gauges, and the histograms."""
    scalars: dict[str, tuple[bool, float]] = {}
    histograms: dict[str, Histogram] = {}
    for scope, entries in store.labelled():
        for key, obj in entries.items():
            for name, stat in scope.stats.items():
                value = getattr(obj, name)
                full = f"{scope.name}.{key}.{name}"
                counter = stat.kind == "counter"
                if isinstance(value, Histogram):
                    histograms[full] = value
                elif stat.by == CODE_CLASS:
                    stem = full.removesuffix("xx")
                    for cls in range(1, 6):
                        scalars[f"{stem}{cls}xx"] = counter, value[cls]
                elif stat.by is not None:
                    for label, n in value.items():
                        scalars[f"{full}.{label}"] = counter, n
                else:
                    scalars[full] = counter, value
    for name, counter, n in overload.named():
        scalars[name] = counter, n
    for name, stat in SERVER_STATS.items():
        scalars[f"server.{name}"] = stat.kind == "counter", store.server[name]
    if store.xds is not None:
        for name, stat in store.xds.STATS.items():
            scalars[f"xds.{name}"] = stat.kind == "counter", getattr(store.xds, name)
    return scalars, histograms


def _unlabelled(store: Store) -> dict[str, float]:
    """The process scope (``server.*``) and the xDS client's (``xds.*``, when it runs)."""
    out = {f"server.{name}": value for name, value in store.server.items()}
    if store.xds is not None:
        out.update({f"xds.{name}": getattr(store.xds, name) for name in store.xds.STATS})
    return out


def quantile(h: Histogram, percent: float) -> float:
    """The ``percent`` quantile of ``h``, interpolated linearly inside its bucket; nan when empty."""
    total = h.count
    if not total:
        return math.nan
    rank = percent / 100 * total
    below = 0
    for i, n in enumerate(h.counts):
        if n and below + n >= rank:
            if i == len(h.bounds):  # above the last bound: no upper edge to interpolate to
                return float(h.bounds[-1])
            low = h.bounds[i - 1] if i else 0.0
            return low + (h.bounds[i] - low) * max(rank - below, 0) / n
        below += n
    return float(h.bounds[-1])


def _summary(h: Histogram) -> str:
    if not h.count:
        return "No recorded values"
    return " ".join(f"P{_number(q)}(nan,{_number(quantile(h, q))})" for q in QUANTILES)


def _json_histograms(histograms: list[tuple[str, Histogram]]) -> dict[str, Any]:
    return {
        "supported_quantiles": list(QUANTILES),
        "computed_quantiles": [
            {
                "name": name,
                "values": [
                    {"interval": None, "cumulative": None if math.isnan(v) else v}
                    for v in (quantile(h, q) for q in QUANTILES)
                ],
            }
            for name, h in histograms
        ],
    }


def _number(value: float) -> str:
    """As Envoy prints a number: integers without a decimal point."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _search(pattern: str) -> Regex:
    """``pattern`` compiled to be found anywhere in a name (Envoy's filter is a partial match)."""
    try:
        compile_regex(pattern, FILTER_PROGRAM_SIZE)  # its own errors, unwrapped
        return compile_regex(f".*(?:{pattern}).*", FILTER_PROGRAM_SIZE + 10)
    except RegexError as err:
        raise QueryError(f"filter: {err}") from None
