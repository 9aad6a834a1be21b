"""Templates over HTTP on real PostgreSQL: save-time checks, revisions, preview, render()."""

from __future__ import annotations

import pytest
from mks_support import Mks, mks  # noqa: F401

from crm_marketing.templates import api
from crm_runtime.errors import Conflict, NotFound

EMAIL = {
    "subject": "{{ first_name | default('Hello') }}, new phones are in",
    "html": "<p>Hi {{ first_name }} in {{ city }}</p>"
    '<p><a href="https://shop.example.com/phones">See them</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
    "text": "Hi {{ first_name }}\nhttps://shop.example.com/phones\nStop: {{ unsubscribe_url }}",
}


async def _create(mks: Mks, channel: str = "email", content: dict[str, str] | None = None) -> str:  # noqa: F811
    r = await mks.marketer.post(
        "/templates", json={"name": f"T {channel}", "channel": channel, "content": content or EMAIL}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_create_revise_preview_and_history(mks: Mks) -> None:  # noqa: F811
    m = mks.marketer
    r = await m.post(
        "/templates",
        json={"name": "Phone offer", "channel": "email", "content": EMAIL},
        headers={"Idempotency-Key": "t-1"},
    )
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    assert r.json()["revision"] == 1 and r.headers["ETag"] == '"1"'
    replay = await m.post(
        "/templates",
        json={"name": "Phone offer", "channel": "email", "content": EMAIL},
        headers={"Idempotency-Key": "t-1"},
    )
    assert replay.json()["id"] == tid

    # preview with sample values, then with a customer's profile, then with overrides
    sample = await m.post(f"/templates/{tid}/preview", json={})
    assert sample.status_code == 200, sample.text
    assert sample.json()["subject"] == "Ada, new phones are in"
    assert "Hi Ada in London" in sample.json()["html"]
    cid = await mks.profile(first_name="<Zoë>", city=None, country="DE", email="zoe@example.com")
    mine = await m.post(f"/templates/{tid}/preview", json={"customer_id": cid})
    assert mine.status_code == 200, mine.text
    assert mine.json()["subject"] == "<Zoë>, new phones are in"
    assert "Hi &lt;Zoë&gt; in </p>" in mine.json()["html"]
    assert mine.json()["text"].startswith("Hi <Zoë>\n")
    assert mine.json()["variables"]["customer_id"] == cid
    over = await m.post(
        f"/templates/{tid}/preview", json={"customer_id": cid, "variables": {"first_name": None}}
    )
    assert over.json()["subject"] == "Hello, new phones are in"  # no value: the default
    assert (
        await m.post(f"/templates/{tid}/preview", json={"customer_id": "nobody"})
    ).status_code == 404
    bad_var = await m.post(f"/templates/{tid}/preview", json={"variables": {"password": "x"}})
    assert (
        bad_var.status_code == 422 and bad_var.json()["errors"][0]["field"] == "variables.password"
    )

    # a new revision; the old one stays renderable
    revised = await m.patch(
        f"/templates/{tid}",
        json={"content": {**EMAIL, "subject": "Phones for {{ full_name }}"}},
        headers={"If-Match": '"1"'},
    )
    assert revised.status_code == 200, revised.text
    assert revised.json()["revision"] == 2 and revised.headers["ETag"] == '"2"'
    same = await m.patch(f"/templates/{tid}", json={"name": "Phone offer"})
    assert same.json()["revision"] == 2  # nothing changed: no revision
    stale = await m.patch(f"/templates/{tid}", json={"name": "X"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    revisions = (await m.get(f"/templates/{tid}/revisions")).json()
    assert [x["revision"] for x in revisions] == [2, 1]
    old = await m.post(f"/templates/{tid}/preview", json={"revision": 1})
    assert old.json()["subject"] == "Ada, new phones are in" and old.json()["revision"] == 1
    new = await m.post(f"/templates/{tid}/preview", json={})
    assert new.json()["subject"] == "Phones for Ada Lovelace"
    history = (await m.get(f"/templates/{tid}/history")).json()
    assert [h["type"] for h in history] == [
        "crm.marketing.template.created",
        "crm.marketing.template.revised",
    ]
    past = await m.get(f"/templates/{tid}", params={"as_of": history[0]["recorded_at"]})
    assert past.json()["revision"] == 1

    listed = (await m.get("/templates", params={"channel": "email"})).json()["items"]
    assert [t["id"] for t in listed] == [tid]
    assert (await m.get("/templates", params={"channel": "sms"})).json()["items"] == []

    archived = await m.post(f"/templates/{tid}/archive")
    assert archived.json()["status"] == "archived"
    assert (await m.patch(f"/templates/{tid}", json={"name": "Y"})).status_code == 409


@pytest.mark.parametrize(
    ("content", "field", "reason"),
    [
        (
            {**EMAIL, "html": "{{ first_name }} {{ loyalty_points }}"},
            "content.html",
            "loyalty_points",
        ),
        ({**EMAIL, "text": "{{ unsubscribe_url.__class__ }}"}, "content.text", "'__class__'"),
        ({**EMAIL, "subject": "{% if %}"}, "content.subject", "line 1"),
        ({"html": "<p>x</p>"}, "content.subject", "needs a subject"),
        ({**EMAIL, "body": "x"}, "content.body", "has only subject, html, text"),
    ],
)
async def test_bad_templates_are_refused_at_save_time(
    mks: Mks,  # noqa: F811
    content: dict[str, str],
    field: str,
    reason: str,
) -> None:
    r = await mks.marketer.post(
        "/templates", json={"name": "Bad", "channel": "email", "content": content}
    )
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert err["field"] == field and reason in err["reason"], err
    assert await mks.ctx.pool.fetchval("SELECT count(*) FROM templates") == 0


async def test_sms_and_push_templates(mks: Mks) -> None:  # noqa: F811
    m = mks.marketer
    too_long = await m.post(
        "/templates", json={"name": "Long", "channel": "sms", "content": {"text": "€" * 300}}
    )
    assert too_long.status_code == 422
    assert "4 SMS segments (GSM-7, 600 units)" in too_long.json()["errors"][0]["reason"]
    sms = await _create(mks, "sms", {"text": "Cześć {{ first_name }}! Stop: {{ unsubscribe_url }}"})
    preview = (await m.post(f"/templates/{sms}/preview", json={})).json()
    assert preview["sms_encoding"] == "UCS-2" and preview["sms_segments"] == 1
    assert preview["warnings"] and preview["html"] is None
    push = await _create(mks, "push", {"title": "Hi {{ first_name }}", "body": "Phones!"})
    out = (await m.post(f"/templates/{push}/preview", json={})).json()
    assert (out["title"], out["body"]) == ("Hi Ada", "Phones!")
    names = [v["name"] for v in (await m.get("/templates/variables")).json()]
    assert "unsubscribe_url" in names and "first_name" in names


async def test_render_for_campaigns(mks: Mks) -> None:  # noqa: F811
    tid = await _create(mks)
    values: dict[str, object] = {
        "first_name": "Bea",
        "city": "Rome",
        "unsubscribe_url": "https://m.example/u/1",
    }
    async with mks.ctx.pool.acquire() as conn:
        out = await api.render(conn, tid, "email", values)
        assert out.subject == "Bea, new phones are in" and out.revision == 1
        assert out.html is not None and "Hi Bea in Rome" in out.html
        assert out.text is not None and out.text.endswith("Stop: https://m.example/u/1")
        with pytest.raises(Conflict, match="is a email template, not sms"):
            await api.render(conn, tid, "sms", values)
        with pytest.raises(NotFound):
            await api.render(conn, "missing", "email", values)
        with pytest.raises(NotFound):
            await api.render(conn, tid, "email", values, revision=7)
        with pytest.raises(api.TemplateRenderError) as caught:
            await api.render(conn, tid, "email", {"first_name": "Bea"})  # no unsubscribe_url
        assert caught.value.extra["errors"] == [
            {"field": "html", "reason": caught.value.extra["errors"][0]["reason"]}
        ]
        assert "'city' is undefined" in caught.value.detail
        assert await api.template_status(conn, tid) == ("email", "active")


async def test_only_marketers_and_admins_touch_templates(mks: Mks) -> None:  # noqa: F811
    tid = await _create(mks)
    for role in ("sales_rep", "sales_manager", "service_agent", "service_manager", "analyst"):
        other = mks.caller(role)
        assert (await other.get("/templates")).status_code == 403
        assert (await other.get(f"/templates/{tid}")).status_code == 403
        assert (await other.post(f"/templates/{tid}/preview", json={})).status_code == 403
        made = await other.post(
            "/templates", json={"name": "x", "channel": "sms", "content": {"text": "hi"}}
        )
        assert made.status_code == 403
    assert (await mks.admin.get(f"/templates/{tid}/revisions")).status_code == 200
    assert (await mks.client.get("/templates")).status_code == 401
