"""Header mutations (``request_headers_to_add`` / ``..._to_remove`` and their response twins).

Owns the compiled, bytes form of ``model.HeaderMutations`` and the one function that applies
it to a header list in place. Must not import asyncio, sockets or protobuf.

The compiled form: ``compile_mutations(m)`` turns one level's ``HeaderMutations`` into a
``MutationLevel`` (names and values encoded once, actions as small ints), or ``None`` when the
level is empty. ``RouteTable`` does this at construction for every route, virtual host, route
configuration and weighted cluster, and each ``RouteDecision`` carries the levels that apply
to it as a ready tuple, so the data plane writes::

    name, picked = pick_cluster(action, rng)
    apply_mutations(headers, *decision.request_mutations_for(picked))
    ...
    apply_mutations(response_headers, *decision.response_mutations_for(picked))

Level order: most specific first, exactly as Envoy evaluates them by default -- weighted
cluster, route, virtual host, route configuration (docs: "Custom request/response headers";
``RouteEntryImplBase::getHeaderParsers`` with ``most_specific_header_mutations_wins`` false,
which the model does not carry). With ``append_if_exists_or_add`` the order decides the order
of the appended values; with the overwrite actions a later (less specific) level wins, which
is Envoy's documented default and the reason that option exists.

Within one level (``Router::HeaderParser::evaluateHeaders``): removals first; then every add is
decided against the headers as they are after the removals and before any of this level's
adds; then overwrites are applied (every existing value of the name is dropped and one is
appended), then appends. A header whose value is empty is skipped, as Envoy does when
``keep_empty_value`` is false (its default; the model has no such field). Values are
literal: Envoy's ``%VAR%`` formatters are not interpreted here.
"""

from __future__ import annotations

from meshproxy.config.model import HeaderMutations

# Actions, in the order Envoy's HeaderAppendAction numbers them.
APPEND, ADD_IF_ABSENT, OVERWRITE_OR_ADD, OVERWRITE_IF_EXISTS = range(4)
_ACTIONS = {
    "append_if_exists_or_add": APPEND,
    "add_if_absent": ADD_IF_ABSENT,
    "overwrite_if_exists_or_add": OVERWRITE_OR_ADD,
    "overwrite_if_exists": OVERWRITE_IF_EXISTS,
}


class MutationLevel:
    """One level's mutations in bytes: names to remove, and (name, value, action) to add."""

    __slots__ = ("add", "appends", "remove")

    def __init__(self, remove: frozenset[bytes], add: tuple[tuple[bytes, bytes, int], ...]) -> None:
        self.remove = remove
        self.add = add
        # The common level only appends: then the pairs are ready to ``extend`` with.
        only_appends = all(action == APPEND for _, _, action in add)
        self.appends = tuple((name, value) for name, value, _ in add) if only_appends else None

    def __repr__(self) -> str:
        return f"MutationLevel(remove={sorted(self.remove)!r}, add={self.add!r})"


def compile_mutations(mutations: HeaderMutations) -> MutationLevel | None:
    """The bytes form of one level, or None when it does nothing (so callers can drop it)."""
    add = tuple(
        (h.name.lower().encode(), h.value.encode(), _ACTIONS[h.action]) for h in mutations.to_add if h.value
    )
    remove = frozenset(name.lower().encode() for name in mutations.to_remove)
    if not add and not remove:
        return None
    return MutationLevel(remove, add)


def apply_mutations(headers: list[tuple[bytes, bytes]], *levels: MutationLevel) -> None:
    """Apply ``levels`` to ``headers`` in place, in the order given (most specific first)."""
    for level in levels:
        remove = level.remove
        if remove:
            headers[:] = [h for h in headers if h[0] not in remove]
        appends = level.appends
        if appends is not None:
            headers.extend(appends)
        else:
            _apply_adds(headers, level.add)


def _apply_adds(headers: list[tuple[bytes, bytes]], add: tuple[tuple[bytes, bytes, int], ...]) -> None:
    # Decide every add against the same snapshot of names, then overwrite, then append
    # (Envoy's evaluateHeaders collects ``headers_to_overwrite`` and ``headers_to_add`` first).
    present = {h[0] for h in headers}
    overwrites: list[tuple[bytes, bytes]] = []
    appends: list[tuple[bytes, bytes]] = []
    for name, value, action in add:
        if action == APPEND:
            appends.append((name, value))
        elif action == ADD_IF_ABSENT:
            if name not in present:
                appends.append((name, value))
        elif action == OVERWRITE_OR_ADD or name in present:
            overwrites.append((name, value))
    for name, value in overwrites:
        headers[:] = [h for h in headers if h[0] != name]
        headers.append((name, value))
    headers.extend(appends)
