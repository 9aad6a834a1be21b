"""Hypothesis strategies for segment rules (shared by the MK-A segment tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from crm_marketing.segments import rules as r

# Any text a value may hold: quotes, backslashes, spaces, keywords, non-ASCII, newlines.
free_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() != "")
tricky = st.sampled_from(
    ["and", "OR", "not", "in", "within", "7d", "3", "a-b.c", 'say "hi"', "back\\slash", "Ä"]
)


def _windows() -> st.SearchStrategy[r.Window | None]:
    return st.one_of(
        st.none(),
        st.builds(r.Window, st.integers(1, 3650), st.just("d")),
        st.builds(r.Window, st.integers(1, 1000), st.just("h")),
    )


def behaviours(
    values: st.SearchStrategy[str],
    windows: st.SearchStrategy[r.Window | None] | None = None,
    min_filters: int = 0,
) -> st.SearchStrategy[r.Behaviour]:
    windows = windows if windows is not None else _windows()

    @st.composite
    def behaviour(draw: st.DrawFn) -> r.Behaviour:
        action = draw(st.sampled_from(list(r.ACTIONS)))
        allowed = r.ACTIONS[action]
        keys = draw(
            st.lists(st.sampled_from(allowed), unique=True, min_size=min(min_filters, len(allowed)))
        )
        where = tuple(sorted((k, draw(values)) for k in keys))
        op = draw(st.sampled_from(r.COUNT_OPS))
        count = draw(st.integers(0, 5))
        return r.Behaviour(action, where, op, count, draw(windows))

    return behaviour()


def leaves(
    values: st.SearchStrategy[str], windows: st.SearchStrategy[r.Window | None] | None = None
) -> st.SearchStrategy[r.Rule]:
    fields = st.sampled_from(r.FIELDS)
    return st.one_of(
        st.builds(r.FieldEquals, fields, st.sampled_from(["=", "!="]), values),
        st.builds(
            r.FieldIn, fields, st.lists(values, min_size=1, max_size=4).map(tuple), st.booleans()
        ),
        behaviours(values, windows),
        st.builds(r.Consent, st.sampled_from(r.CHANNELS)),
    )


def rules(
    values: st.SearchStrategy[str] | None = None,
    max_leaves: int = 12,
    windows: st.SearchStrategy[r.Window | None] | None = None,
) -> st.SearchStrategy[r.Rule]:
    base = leaves(values if values is not None else st.one_of(free_text, tricky), windows)
    return st.recursive(
        base,
        lambda children: st.one_of(
            st.lists(children, min_size=2, max_size=3).map(lambda xs: r.And(tuple(xs))),
            st.lists(children, min_size=2, max_size=3).map(lambda xs: r.Or(tuple(xs))),
            children.map(r.Not),
        ),
        max_leaves=max_leaves,
    )
