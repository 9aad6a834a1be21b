"""The text of an inbound mail that has only an HTML part: what a reader sees, nothing else."""

from __future__ import annotations

from email.message import EmailMessage

from crm_service_desk.inbound import _text_of


def html_mail(markup: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "ada@example.com"
    msg["Subject"] = "Help"
    msg.set_content(markup, subtype="html")
    return msg


def test_scripts_styles_and_the_head_are_not_text() -> None:
    text = _text_of(
        html_mail(
            "<html><head><title>Mail</title><style>p { color: red }</style></head><body>"
            "<p>Hello<script>alert(1)</script> world</p><template><p>hidden</p></template>"
            "<p>Order <b>42</b> is late</p></body></html>"
        )
    )
    assert text == "Hello world\n\nOrder 42 is late"  # paragraphs: a blank line between


def test_unclosed_or_stray_tags_keep_the_rest() -> None:
    assert _text_of(html_mail("<p>Before</script> after</p>")) == "Before after"
    assert _text_of(html_mail("<p>Seen</p><script>never closed")) == "Seen"


def test_a_block_ends_its_line() -> None:
    markup = "<p>My laptop will not boot.</p><a href='#'>click</a><h2>Model</h2>X1"
    text = _text_of(html_mail(markup))
    assert text == "My laptop will not boot.\nclick\nModel\nX1"


def test_a_head_without_its_end_tag_hides_nothing_but_the_title() -> None:
    # (found by review) </head> is optional in HTML
    text = _text_of(html_mail("<html><head><title>T</title><body><p>Hello there</p>"))
    assert text == "Hello there"
