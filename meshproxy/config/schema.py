"""Checks a JSON-shaped document (read from YAML or JSON) against a protobuf message's schema.

Owns every parse-level problem, reported all at once as "field.path: message" in the user's
terms: unknown fields, a value of the wrong type (a list where a mapping belongs, ``"abc"`` for a
port), numbers out of their type's range, enum names the proto lacks, two members of one oneof,
durations and timestamps that do not parse, and every ``typed_config``'s ``@type`` (resolved by
importing xds-protos' generated module, so a filter meshproxy does not run still parses and the
compiler can name it). protobuf's own ``json_format.ParseDict`` stops at its first error and words
it in Python's terms (``invalid literal for int() with base 10``); a document this module passes
is one ParseDict accepts, so it only ever sees clean input. A field with a problem is removed
from the document (``Checked.pruned`` names it), so the rest can still be parsed and compiled and
its problems reported alongside.

The walk follows ``json_format``'s mapping of JSON onto protobuf (proto3 JSON): a field is named
by its ``json_name`` or its proto name; ``null`` leaves a field unset; integers may be written as
strings; the well-known types have their own JSON forms (Any, Duration, Timestamp, FieldMask,
Struct, Value, ListValue, the wrappers). Paths use proto field names whatever the file's spelling.
Must not depend on file formats, asyncio, or anything on the request path; its recursion is
bounded by ``limits.MAX_DEPTH``, checked before the document was built.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pool, duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

__all__ = ["Checked", "check_message", "find_message"]

_POOL = descriptor_pool.Default()
# Packages whose generated modules may be imported to resolve a typed_config's @type.
_RESOLVABLE_ROOTS = ("envoy.", "xds.", "udpa.")

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: ("uint32", 0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: ("uint32", 0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: ("int64", -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: ("int64", -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: ("int64", -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: ("uint64", 0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: ("uint64", 0, 2**64 - 1),
}
_FLOAT_MAX = 3.4028234663852886e38
_FLOAT_WORDS = ("NaN", "Infinity", "-Infinity")
_WRAPPERS = {
    f"google.protobuf.{name}Value"
    for name in ("Bool", "Int32", "UInt32", "Int64", "UInt64", "Float", "Double", "String", "Bytes")
}


@dataclass(frozen=True, slots=True)
class Checked:
    problems: list[str]
    pruned: list[str]
    """The paths of the fields removed because of a problem in them."""

    def covers(self, problem: str) -> bool:
        """Whether ``problem`` (found later, e.g. by the compiler) is about a removed field, and so
        an echo of a problem already reported."""
        return any(problem.startswith((f"{path}:", f"{path}.", f"{path}[")) for path in self.pruned)


def check_message(
    document: dict[str, Any], descriptor: Descriptor, *, allow_unknown_fields: bool = False
) -> Checked:
    """Every problem ``json_format.ParseDict(document, <descriptor's message>)`` would meet (and
    the unknown fields and enum names it would drop), as "field.path: message". Each field with
    a problem is removed from ``document``; unknown fields are left for ParseDict to ignore."""
    checker = _Checker(allow_unknown_fields)
    checker.message(document, descriptor, "")
    for owner, key, _ in checker.prune:
        owner.pop(key, None)  # an alias may share the owner, pruned once already
    return Checked(checker.problems, [path for _, _, path in checker.prune])


def find_message(type_url: str) -> Descriptor | None:
    """The descriptor a type URL names, importing the generated module of Envoy's, xDS's or
    UDPA's package that defines it when needed; None when there is none."""
    name = type_url.rsplit("/", 1)[-1]
    if found := _lookup(name):
        return found
    if not name.startswith(_RESOLVABLE_ROOTS):
        return None
    package = name.rsplit(".", 1)[0]
    with contextlib.suppress(ImportError, ValueError):
        search_path = getattr(importlib.import_module(package), "__path__", ())  # () for a module
        for module in pkgutil.iter_modules(search_path):
            if module.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{module.name}")
                if found := _lookup(name):
                    return found
    return None


def _lookup(name: str) -> Descriptor | None:
    try:
        return _POOL.FindMessageTypeByName(name)
    except KeyError:
        return None


def _describe(value: Any) -> str:
    """A value as the user wrote it, for "… not <this>"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f'the string "{value}"' if len(value) <= 60 else "a string"
    if isinstance(value, datetime.date):
        return f"the date {value.isoformat()} (quote it to make it a string)"
    if isinstance(value, bytes):
        return "binary data"
    return str(value)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Checker:
    def __init__(self, allow_unknown_fields: bool) -> None:
        self.allow_unknown_fields = allow_unknown_fields
        self.problems: list[str] = []
        # (mapping, key, path) of each field to remove, and of the field being checked now.
        self.prune: list[tuple[dict[Any, Any], Any, str]] = []
        self._current: tuple[dict[Any, Any], Any, str] | None = None
        self._special: dict[str, Callable[[Any, Descriptor, str], None]] = {
            "google.protobuf.Any": self._any,
            "google.protobuf.Duration": self._duration,
            "google.protobuf.Timestamp": self._timestamp,
            "google.protobuf.FieldMask": self._field_mask,
            "google.protobuf.Struct": self._struct,
            "google.protobuf.Value": self._json_value,
            "google.protobuf.ListValue": self._list_value,
        } | dict.fromkeys(_WRAPPERS, self._wrapper)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)
        if self._current is not None and (not self.prune or self.prune[-1] is not self._current):
            self.prune.append(self._current)

    # ------------------------------------------------------------------ messages

    def message(self, value: Any, descriptor: Descriptor, path: str, skip: str = "") -> None:
        special = self._special.get(descriptor.full_name)
        if special is not None:
            special(value, descriptor, path)
            return
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping of {descriptor.name} fields, not {_describe(value)}")
            return
        fields = {f.json_name: f for f in descriptor.fields} | dict(descriptor.fields_by_name)
        spelled: dict[str, str] = {}  # field name -> the key that gave it
        oneofs: dict[str, str] = {}  # oneof name -> the member given
        for key, item in value.items():
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                if key != skip and not self.allow_unknown_fields:
                    self._unknown(str(key), descriptor, _join(path, str(key)))
                continue
            here = _join(path, field.name)
            outer, self._current = self._current, (value, key, here)
            self._field_pair(key, item, field, here, spelled, oneofs)
            self._current = outer

    def _field_pair(
        self,
        key: str,
        item: Any,
        field: FieldDescriptor,
        here: str,
        spelled: dict[str, str],
        oneofs: dict[str, str],
    ) -> None:
        if field.name in spelled:
            self.problem(here, f'is given twice, as "{spelled[field.name]}" and as "{key}"; keep one')
            return
        spelled[field.name] = key
        if item is None:  # null leaves the field unset (protobuf's JSON rule)
            return
        oneof = field.containing_oneof
        if oneof is not None and not _synthetic(oneof):
            if oneof.name in oneofs:
                self.problem(
                    here, f"give only one of {oneofs[oneof.name]} and {field.name} (one of {oneof.name})"
                )
                return
            oneofs[oneof.name] = field.name
        self.field(item, field, here)

    def _unknown(self, key: str, descriptor: Descriptor, path: str) -> None:
        names = [f.name for f in descriptor.fields]
        close = difflib.get_close_matches(key, names, n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        self.problems.append(f'{path}: unknown field: {descriptor.name} has no field "{key}"{hint}')

    def field(self, value: Any, field: FieldDescriptor, path: str) -> None:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if not isinstance(value, dict):
                self.problem(path, f"must be a mapping (key: value), not {_describe(value)}")
                return
            key_field, value_field = field.message_type.fields
            for key, item in value.items():
                here = f'{path}["{key}"]'
                self._map_key(key, key_field, here)
                if item is None:
                    self.problem(here, "has no value (null); give one or remove the entry")
                else:
                    self.single(item, value_field, here)
        elif field.is_repeated:
            if not isinstance(value, list):
                self.problem(path, f"must be a list ([...]), not {_describe(value)}")
                return
            for index, item in enumerate(value):
                if item is None:
                    self.problem(f"{path}[{index}]", "is null; remove it or give a value")
                else:
                    self.single(item, field, f"{path}[{index}]")
        else:
            self.single(value, field, path)

    def _map_key(self, key: Any, field: FieldDescriptor, path: str) -> None:
        if field.type == FieldDescriptor.TYPE_STRING:
            if not isinstance(key, str):
                self.problem(path, f"the key must be a string, not {_describe(key)}; quote it")
        elif field.type == FieldDescriptor.TYPE_BOOL:
            if key not in ("true", "false", True, False):
                self.problem(path, f"the key must be true or false, not {_describe(key)}")
        else:
            self.scalar(key, field, path)

    def single(self, value: Any, field: FieldDescriptor, path: str) -> None:
        if field.message_type is not None:
            self.message(value, field.message_type, path)
        elif field.enum_type is not None:
            self.enum(value, field, path)
        else:
            self.scalar(value, field, path)

    def enum(self, value: Any, field: FieldDescriptor, path: str) -> None:
        enum = field.enum_type
        if isinstance(value, str) and value in enum.values_by_name:
            return
        if isinstance(value, int) and not isinstance(value, bool) and value in enum.values_by_number:
            return
        expected = ", ".join(v.name for v in enum.values)
        shown = f'"{value}"' if isinstance(value, str) else _describe(value)
        self.problem(path, f"unknown value {shown}; expected one of {expected}")

    # ------------------------------------------------------------------ scalars

    def scalar(self, value: Any, field: FieldDescriptor, path: str) -> None:
        if field.type in _INT_RANGES:
            self._integer(value, field, path)
        elif field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            self._float(value, field, path)
        elif field.type == FieldDescriptor.TYPE_BOOL:
            if not isinstance(value, bool):
                self.problem(path, f"must be true or false, not {_describe(value)}")
        elif not isinstance(value, str):  # string and bytes (base64 text)
            kind = "base64 text" if field.type == FieldDescriptor.TYPE_BYTES else "a string"
            quote = f' (quote it: "{value}")' if isinstance(value, int | float) else ""
            self.problem(path, f"must be {kind}, not {_describe(value)}{quote}")

    def _integer(self, value: Any, field: FieldDescriptor, path: str) -> None:
        kind, low, high = _INT_RANGES[field.type]
        number: int | None = None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.problem(path, f"must be a whole number, not {_describe(value)}")
            return
        if isinstance(value, int):
            number = value
        elif isinstance(value, float):
            number = int(value) if value.is_integer() else None
        elif value == value.strip():  # protobuf also takes numbers written as strings
            with contextlib.suppress(ValueError):
                number = int(value)
            if number is None:
                with contextlib.suppress(ValueError, OverflowError):
                    as_float = float(value)
                    number = int(as_float) if as_float.is_integer() else None
        if number is None:
            shown = f'"{value}"' if isinstance(value, str) else str(value)
            self.problem(path, f"{shown} is not a {'whole ' if isinstance(value, float) else ''}number")
        elif not low <= number <= high:
            self.problem(path, f"{number} is out of range ({kind}: {low}..{high})")

    def _float(self, value: Any, field: FieldDescriptor, path: str) -> None:
        if isinstance(value, str):
            if value in _FLOAT_WORDS:
                return
            try:
                value = float(value)
            except ValueError:
                self.problem(path, f'"{value}" is not a number')
                return
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(path, f"must be a number, not {_describe(value)}")
        elif isinstance(value, float) and not math.isfinite(value):
            self.problem(path, f'{value} must be written as a string: "NaN", "Infinity" or "-Infinity"')
        elif field.type == FieldDescriptor.TYPE_FLOAT and abs(value) > _FLOAT_MAX:
            self.problem(path, f"{value} is out of range for a float")

    # ------------------------------------------------------------------ well-known types

    def _any(self, value: Any, descriptor: Descriptor, path: str) -> None:
        if not isinstance(value, dict):
            self.problem(path, f'must be a mapping with an "@type", not {_describe(value)}')
            return
        if not value:  # protobuf's JSON: {} is an empty Any
            return
        url = value.get("@type")
        if "@type" not in value:
            self.problem(path, '"@type" is missing; give the type URL of the message (type.googleapis.com/…)')
            return
        if not isinstance(url, str):
            self.problem(_join(path, "@type"), "must be a type URL string")
            return
        inner = find_message(url)
        if inner is None:
            self.problem(
                _join(path, "@type"),
                f'"{url}" names no message of the Envoy, xDS or UDPA APIs meshproxy knows',
            )
        elif inner.full_name in self._special:  # a well-known type sits under "value"
            for key in value.keys() - {"@type", "value"}:
                self.problem(
                    _join(path, str(key)), f'unknown field: {inner.name} in an Any takes only "value"'
                )
            self.message(value.get("value"), inner, _join(path, "value"))
        else:
            self.message(value, inner, path, skip="@type")

    def _duration(self, value: Any, descriptor: Descriptor, path: str) -> None:
        self._text_form(
            value, duration_pb2.Duration(), path, 'a duration in seconds with an "s": "300s", "0.25s"'
        )

    def _timestamp(self, value: Any, descriptor: Descriptor, path: str) -> None:
        self._text_form(value, timestamp_pb2.Timestamp(), path, 'an RFC 3339 time: "2026-01-31T12:00:00Z"')

    def _text_form(self, value: Any, message: Any, path: str, expected: str) -> None:
        if not isinstance(value, str):
            self.problem(path, f"must be {expected}, not {_describe(value)}")
            return
        try:
            message.FromJsonString(value)
        except (ValueError, OverflowError):
            self.problem(path, f'"{value}" is not {expected}')

    def _field_mask(self, value: Any, descriptor: Descriptor, path: str) -> None:
        if not isinstance(value, str):
            self.problem(path, f"must be a comma-separated string of field paths, not {_describe(value)}")

    def _wrapper(self, value: Any, descriptor: Descriptor, path: str) -> None:
        self.single(value, descriptor.fields_by_name["value"], path)

    def _struct(self, value: Any, descriptor: Descriptor, path: str) -> None:
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping, not {_describe(value)}")
        else:
            self._json_value(value, descriptor, path)

    def _list_value(self, value: Any, descriptor: Descriptor, path: str) -> None:
        if not isinstance(value, list):
            self.problem(path, f"must be a list, not {_describe(value)}")
        else:
            self._json_value(value, descriptor, path)

    def _json_value(self, value: Any, descriptor: Descriptor, path: str) -> None:
        """Anything JSON can hold (a Struct's or Value's content)."""
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    self.problem(f"{path}[{key!r}]", "the key must be a string; quote it")
                self._json_value(item, descriptor, f'{path}["{key}"]')
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._json_value(item, descriptor, f"{path}[{index}]")
        elif isinstance(value, float) and not math.isfinite(value):
            self.problem(path, f"{value} cannot be represented in JSON")
        elif value is not None and not isinstance(value, str | int | float):
            self.problem(path, f"must be a JSON value, not {_describe(value)}")


def _synthetic(oneof: Any) -> bool:
    """A proto3 ``optional`` field's one-member oneof is not a choice the user makes."""
    return len(oneof.fields) == 1 and oneof.name == f"_{oneof.fields[0].name}"
