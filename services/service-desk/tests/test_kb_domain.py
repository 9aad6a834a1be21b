"""Knowledge-base aggregates without I/O: revisions, publish, archive, feedback, tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_events import registry
from crm_runtime.errors import DomainError, InvalidInput
from crm_service_desk.kb import tokens
from crm_service_desk.kb.domain import (
    Article,
    Category,
    Feedback,
    Voter,
    make_content,
    normalise_language,
    ts_config_for,
)


def article(**over: object) -> Article:
    values = {"title": "Printer jams", "body": "Open the cover.", "language": "en", **over}
    return Article.create("a1", make_content(values))


def replay(a: Article) -> Article:
    """The aggregate rebuilt from what it recorded (as the repository does)."""
    events = [
        (registry.decode(*registry.type_of(e), e.model_dump(mode="json")), i + 1)
        for i, e in enumerate(a.pending)
    ]
    return Article.rehydrate(a.id, events)


def test_a_new_article_is_a_draft_at_revision_1() -> None:
    a = article(tags=[" Printer", "printer", "HW "])
    assert (a.state, a.latest_revision, a.published_revision) == ("draft", 1, None)
    assert a.latest.tags == ("printer", "hw")
    assert a.presented.title == "Printer jams"


def test_each_edit_is_a_new_revision_and_the_published_one_stays_shown() -> None:
    a = article()
    assert a.publish() == 1
    assert a.revise({"body": "Switch it off, then open the cover."}, note="safety") == 2
    assert (a.state, a.published_revision, a.latest_revision) == ("published", 1, 2)
    assert a.has_unpublished_changes
    assert a.presented.body == "Open the cover."  # readers and search still see revision 1
    assert a.revisions[2].note == "safety"
    assert a.revise({"body": "Switch it off, then open the cover."}) is None  # no change
    assert a.publish() == 2
    assert a.presented.number == 2 and not a.has_unpublished_changes
    assert a.publish(1) == 1  # rollback to an older revision
    assert a.presented.body == "Open the cover."
    rebuilt = replay(a)
    assert (rebuilt.published_revision, rebuilt.latest_revision) == (1, 2)
    assert rebuilt.revisions == a.revisions


def test_publish_rules() -> None:
    a = article()
    a.publish()
    with pytest.raises(DomainError, match="already the published"):
        a.publish(1)
    with pytest.raises(InvalidInput) as exc:
        a.publish(7)
    assert exc.value.extra["errors"] == [
        {"field": "revision", "reason": "article has revisions 1 to 1"}
    ]


def test_archive_and_restore() -> None:
    a = article()
    a.publish()
    a.archive("discontinued")
    assert a.state == "archived" and a.archive_reason == "discontinued"
    for command in (lambda: a.revise({"title": "x"}), a.publish, a.archive):
        with pytest.raises(DomainError):
            command()
    a.restore()
    assert a.state == "draft" and a.published_revision is None  # publish again to show it
    with pytest.raises(DomainError):
        a.restore()


def test_content_is_checked() -> None:
    with pytest.raises(InvalidInput, match="title"):
        article(title="   ")
    with pytest.raises(InvalidInput, match="language"):
        article(language="english!")
    with pytest.raises(InvalidInput, match=r"tags\[0\]"):
        article(tags=[" "])
    with pytest.raises(InvalidInput, match="not an article field"):
        article().revise({"author": "x"})


def test_languages_choose_a_text_search_configuration() -> None:
    assert normalise_language("EN-gb") == "en-GB"
    assert normalise_language("zh-hant-tw") == "zh-Hant-TW"
    assert ts_config_for("de-AT") == "german"
    assert ts_config_for("pt-BR") == "portuguese"
    assert ts_config_for("ja") == "simple"  # no configuration: words as they are
    assert ts_config_for(None) == "simple"


def test_category_update_reports_what_changed() -> None:
    c = Category.create("c1", " Printers ", None, None)
    assert c.name == "Printers"
    assert c.update({"name": "Printers", "description": "All about printers"}) == ["description"]
    with pytest.raises(InvalidInput, match="own parent"):
        c.update({"parent_id": "c1"})


def test_feedback_needs_a_published_article_and_carries_the_customer() -> None:
    a = article()
    voter = Voter("customer", "cust-1", "cust-1")
    with pytest.raises(DomainError, match="published"):
        Feedback.give(a, voter, True, channel="api", ticket_id=None, comment=None)
    a.publish()
    fb = Feedback.give(a, voter, True, channel="api", ticket_id="t1", comment=None)
    assert fb.subject == "cust-1"
    assert fb.pending[0].revision == 1  # type: ignore[attr-defined]
    # one stream per (article, voter): the same customer always lands on the same stream
    assert fb.id == Feedback.stream_key("a1", Voter("customer", "cust-1", "cust-1"))
    assert fb.id != Feedback.stream_key("a1", Voter("token", "cust-1"))


def test_feedback_tokens() -> None:
    now = datetime.now(UTC)
    token = tokens.sign(
        "s" * 40, "a1", customer_id="c1", ticket_id="t1", expires_at=now + timedelta(days=1)
    )
    claims = tokens.verify("s" * 40, token, "a1", now)
    assert (claims.customer_id, claims.ticket_id) == ("c1", "t1")
    for secret, article_id, at, reason in [
        ("x" * 40, "a1", now, "not a valid feedback link"),
        ("s" * 40, "a2", now, "another article"),
        ("s" * 40, "a1", now + timedelta(days=2), "expired"),
    ]:
        with pytest.raises(InvalidInput, match=reason):
            tokens.verify(secret, token, article_id, at)
    body, _, mac = token.partition(".")
    with pytest.raises(InvalidInput):
        tokens.verify("s" * 40, body[:-2] + "xx." + mac, "a1", now)


Command = st.one_of(
    st.tuples(st.just("revise"), st.sampled_from(["A", "B", "C"])),
    st.tuples(st.just("publish"), st.integers(min_value=0, max_value=6)),
    st.tuples(st.just("archive"), st.none()),
    st.tuples(st.just("restore"), st.none()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(Command, max_size=30))
def test_any_sequence_keeps_the_article_consistent(commands: list[tuple[str, object]]) -> None:
    a = article()
    for name, arg in commands:
        try:
            if name == "revise":
                a.revise({"body": str(arg)})
            elif name == "publish":
                a.publish(int(arg) or None)  # type: ignore[call-overload]
            elif name == "archive":
                a.archive()
            else:
                a.restore()
        except (DomainError, InvalidInput):
            pass
        # revisions are 1..n without gaps; the published one is one of them
        assert sorted(a.revisions) == list(range(1, a.latest_revision + 1))
        assert a.published_revision is None or a.published_revision in a.revisions
        assert a.state == "archived" or (a.state == "published") == (
            a.published_revision is not None
        )
    rebuilt = replay(a)
    assert (rebuilt.state, rebuilt.published_revision, rebuilt.revisions) == (
        a.state,
        a.published_revision,
        a.revisions,
    )
