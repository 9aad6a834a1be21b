"""The per-message compose shortcuts change nothing a recipient or the tracking endpoints see:
tokens are the plain HMAC-SHA256 construction, and a link in both parts gets one signed URL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

from hypothesis import given
from hypothesis import strategies as st

from crm_marketing.delivery.compose import Tracker, compose_rendered
from crm_marketing.templates.rendering import Rendered
from crm_marketing.tracking import tokens


def plain_sign(key: bytes, kind: str, message_id: uuid.UUID, index: int) -> str:
    body = bytes([{"o": 1, "c": 2, "u": 3, "v": 4}[kind]]) + message_id.bytes
    body += index.to_bytes(2, "big")
    tag = hmac.new(key, body, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(body + tag).decode().rstrip("=")


@given(
    keys=st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=12),
    kind=st.sampled_from(["o", "c", "u", "v"]),
    index=st.integers(min_value=0, max_value=65535),
)
def test_tokens_are_the_plain_hmac_under_each_key(keys: list[bytes], kind: str, index: int) -> None:
    mid = uuid.uuid4()
    for key in keys + keys[::-1]:  # keys taken in turn: each token under its own key
        token = tokens.sign(key, kind, mid, index)  # type: ignore[arg-type]
        assert token == plain_sign(key, kind, mid, index)
        assert tokens.verify(key, kind, token) == (mid, index)  # type: ignore[arg-type]


def test_a_link_in_both_parts_gets_one_signed_url_per_message() -> None:
    key = b"s" * 32
    tracker = Tracker("https://crm.example.com", key)
    mid = uuid.uuid4()

    def render(variables: dict[str, object]) -> Rendered:
        return Rendered(
            "email",
            subject="Hi",
            html='<p><a href="https://shop.example/a">A</a> <a href="https://shop.example/b">B'
            '</a> <a href="https://shop.example/a">A again</a></p></body>',
            text="A https://shop.example/a B https://shop.example/b, A https://shop.example/a.",
        )

    out = compose_rendered(tracker, render, {}, message_id=mid, channel="email")
    click = [f"https://crm.example.com/t/c/{plain_sign(key, 'c', mid, i)}" for i in (0, 1)]
    assert out.links == ["https://shop.example/a", "https://shop.example/b"]
    assert out.text == f"A {click[0]} B {click[1]}, A {click[0]}."
    assert out.html is not None
    assert out.html.count(click[0]) == 2 and out.html.count(click[1]) == 1
    assert f"https://crm.example.com/t/o/{plain_sign(key, 'o', mid, 0)}.gif" in out.html
    assert out.unsubscribe_url == f"https://crm.example.com/t/u/{plain_sign(key, 'u', mid, 0)}"
    other = compose_rendered(tracker, render, {}, message_id=uuid.uuid4(), channel="email")
    assert click[0] not in other.text  # per message, not shared between messages
