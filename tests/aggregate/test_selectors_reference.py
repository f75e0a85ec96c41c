"""choose_selectors against a brute-force reference: add preferred labels until no other
workload of the namespace matches, and say when none suffices."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from recommender.aggregate.selectors import PREFERRED_KEYS, choose_selectors, stable_labels


def _reference(workloads):
    result = {}
    for (namespace, name), raw in workloads.items():
        labels = stable_labels(raw)
        others = [
            stable_labels(other)
            for (ns, other_name), other in workloads.items()
            if ns == namespace and other_name != name
        ]
        if not labels:
            result[(namespace, name)] = ({"app": name}, "fallback", False)
            continue
        order = [k for k in PREFERRED_KEYS if k in labels]
        order += sorted(k for k in labels if k not in PREFERRED_KEYS)
        chosen: dict[str, str] = {}
        for key in order:
            chosen[key] = labels[key]
            if not any(all(o.get(k) == v for k, v in chosen.items()) for o in others):
                break
        ambiguous = any(all(o.get(k) == v for k, v in chosen.items()) for o in others)
        result[(namespace, name)] = (chosen, "labels", ambiguous)
    return result


_labels = st.dictionaries(
    st.sampled_from(["app", "app.kubernetes.io/name", "version", "tier", "team", "x"]),
    st.sampled_from(["a", "b", "c"]),
    max_size=4,
)


@given(
    st.dictionaries(
        st.tuples(st.sampled_from(["ns1", "ns2"]), st.sampled_from(list("abcdefgh"))),
        _labels,
        max_size=12,
    )
)
def test_choose_selectors_matches_the_brute_force_reference(workloads) -> None:
    got = choose_selectors(workloads)
    want = _reference(workloads)
    assert {
        key: (dict(c.selector.match_labels), c.source, c.ambiguous) for key, c in got.items()
    } == want
