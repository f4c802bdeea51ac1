"""Hypothesis over RBAC's and/or/not: compiled trees agree with the boolean algebra they denote.

Trees are built from leaves whose truth is known for the facts at hand (a destination port
range, the TLS group), nested in AllOf / AnyOf / Not to a few levels, and compared with a
plain recursive reading of the model (``truth``), which the compiled closures
(``compile_node``'s specialisations for one child, empty sets, loops instead of generators)
must equal. Then De Morgan, double negation, and the identities of the empty sets.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshproxy.rbac.engine import Facts, compile_node
from meshproxy.rbac.model import AllOf, Always, AnyOf, Node, Not, PortRange, TlsPrincipal
from meshproxy.tls.engine import Negotiated

PORT = 8080
GROUP = "X25519MLKEM768"

leaves = st.one_of(
    st.just(Always()),
    st.builds(lambda a, n: PortRange(a, a + n), st.integers(8070, 8090), st.integers(1, 5)),
    st.builds(lambda g: TlsPrincipal(frozenset({g}), frozenset()), st.sampled_from([GROUP, "X25519"])),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(lambda c: AllOf(tuple(c)), st.lists(children, max_size=4)),
        st.builds(lambda c: AnyOf(tuple(c)), st.lists(children, max_size=4)),
        st.builds(Not, children),
    ),
    max_leaves=12,
)


def facts() -> Facts:
    tls = Negotiated("TLSv1.3", GROUP, "TLS_AES_256_GCM_SHA384", "mldsa65", None, (), (), "", False)
    return Facts(peer="10.0.0.2", local="10.0.0.1", local_port=PORT, tls=tls)


def truth(node: Node) -> bool:
    """The model read directly, for the facts above."""
    if isinstance(node, Always):
        return True
    if isinstance(node, AllOf):
        return all(truth(c) for c in node.children)
    if isinstance(node, AnyOf):
        return any(truth(c) for c in node.children)
    if isinstance(node, Not):
        return not truth(node.child)
    if isinstance(node, PortRange):
        return node.start <= PORT < node.end
    assert isinstance(node, TlsPrincipal)
    return GROUP in node.groups


@given(trees)
def test_compiled_tree_is_its_boolean_reading(tree: Node) -> None:
    assert compile_node(tree)(facts()) == truth(tree)


@given(st.lists(trees, min_size=1, max_size=4))
def test_de_morgan(children: list[Node]) -> None:
    f = facts()
    negated = tuple(Not(c) for c in children)
    assert compile_node(Not(AllOf(tuple(children))))(f) == compile_node(AnyOf(negated))(f)
    assert compile_node(Not(AnyOf(tuple(children))))(f) == compile_node(AllOf(negated))(f)


@given(trees)
def test_double_negation_and_identities(tree: Node) -> None:
    f = facts()
    value = compile_node(tree)(f)
    assert compile_node(Not(Not(tree)))(f) == value
    assert compile_node(AllOf((tree, AllOf(()))))(f) == value  # the empty and is true
    assert compile_node(AnyOf((tree, AnyOf(()))))(f) == value  # the empty or is false
    assert compile_node(AllOf((tree, Not(tree))))(f) is False
    assert compile_node(AnyOf((tree, Not(tree))))(f) is True
