"""The HTML pages customers see when they open a mailed link in a browser: their ticket (the
conversation and a reply form) and the satisfaction survey (a score form, a thank-you page).

Plain server-rendered HTML: every value is escaped (``html.escape``), no scripts, no external
assets (inline CSS only), forms post ``application/x-www-form-urlencoded`` to relative URLs.
The pages are sent with a strict Content-Security-Policy, ``Referrer-Policy: no-referrer`` (the
URL carries the signed link) and ``Cache-Control: no-store``.

``wants_html`` decides between these pages and the JSON the API clients get; ``read_input``
reads a body that is either JSON or a form into a pydantic model (422 naming the field).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any, TypeVar
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ValidationError

from crm_runtime.errors import CrmError

M = TypeVar("M", bound=BaseModel)

MAX_FORM_BYTES = 256 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self';"
        " base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Vary": "Accept",
}

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:42rem;
margin:2rem auto;padding:0 1rem;color:#1f2328;line-height:1.5}
h1{font-size:1.4rem}.meta{color:#59636e;font-size:.9rem}
.entry{border:1px solid #d1d9e0;border-radius:6px;padding:.6rem .9rem;margin:.8rem 0}
.entry.customer{background:#f6f8fa}.who{font-weight:600}
.text{white-space:pre-wrap;overflow-wrap:anywhere;margin:.3rem 0 0}
.notice{background:#dafbe1;border:1px solid #4ac26b;border-radius:6px;padding:.6rem .9rem}
.error{background:#ffebe9;border:1px solid #ff8182;border-radius:6px;padding:.6rem .9rem}
fieldset{border:0;padding:0;margin:0 0 1rem}label.score{margin-right:1rem}
textarea{width:100%;min-height:7rem;box-sizing:border-box;font:inherit}
button{font:inherit;padding:.4rem 1.2rem}
"""


# --- content negotiation and input ------------------------------------------------------------


def _accepted(request: Request) -> dict[str, float]:
    """The quality of each media range in the Accept header."""
    found: dict[str, float] = {}
    for part in request.headers.get("accept", "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        found[media] = max(q, found.get(media, 0.0))
    return found


def wants_html(request: Request) -> bool:
    """True for a browser: it names text/html (or XHTML) and prefers it to JSON. ``*/*`` alone,
    no Accept header, or ``application/json`` keep the JSON of the API."""
    accepted = _accepted(request)
    html = max(accepted.get("text/html", 0.0), accepted.get("application/xhtml+xml", 0.0))
    as_json = max(
        accepted.get("application/json", 0.0),
        accepted.get("application/problem+json", 0.0),
        accepted.get("application/*", 0.0),
        accepted.get("*/*", 0.0),
    )
    return html > 0 and html > as_json


def is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == FORM_TYPE


class TooLarge(CrmError):
    status = 413
    title = "Content Too Large"


def _invalid(errors: Sequence[Any]) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors])


async def read_input(request: Request, model: type[M]) -> M:
    """The body as ``model``: form-encoded (an empty field is left out, so it takes its
    default) or JSON. Invalid input raises ``RequestValidationError`` (422 naming the field)."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise TooLarge(f"the body may be at most {MAX_FORM_BYTES} bytes")
    if is_form(request):
        try:
            text = raw.decode("utf-8")
            fields = parse_qs(
                text, keep_blank_values=True, max_num_fields=50, encoding="utf-8", errors="strict"
            )
        except (UnicodeDecodeError, ValueError):
            raise _invalid(
                [{"type": "value_error", "loc": (), "msg": "not a valid form", "input": None}]
            ) from None
        data: dict[str, Any] = {
            name: values[0] if len(values) == 1 else values
            for name, values in fields.items()
            if values != [""]
        }
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise _invalid(exc.errors(include_url=False)) from None
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise _invalid(exc.errors(include_url=False)) from None


def field_errors(exc: RequestValidationError) -> dict[str, str]:
    """Field name -> message of a validation error, for showing next to a form."""
    out: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ())][1:]  # after "body"
        out.setdefault(loc[0] if loc else "", str(error.get("msg", "invalid")))
    return out


# --- pages ---------------------------------------------------------------------------------------


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A whole page; ``title`` is text (escaped here), ``body`` is markup built with ``escape``."""
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )
    return HTMLResponse(document, status_code=status, headers=dict(_HEADERS))


def error_page(exc: CrmError) -> HTMLResponse:
    if exc.status == 403:
        title = "This link does not work"
        text = (
            "The link is not valid or has expired. Please use the latest link we sent you,"
            " or write to us by e-mail."
        )
    else:
        title = exc.title
        text = exc.detail
    return page(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>", exc.status)


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    stamp = value.strftime("%Y-%m-%d %H:%M UTC")
    return f' <span class="meta">{escape(stamp)}</span>'


def _entry(who: str, css: str, text: str, at: datetime | None) -> str:
    return (
        f'<div class="entry {css}"><div><span class="who">{escape(who)}</span>{_when(at)}</div>'
        f'<p class="text">{escape(text)}</p></div>'
    )


_STATUS = {
    "new": "Open",
    "assigned": "Open",
    "in_progress": "In progress",
    "waiting_on_customer": "Waiting for your answer",
    "resolved": "Resolved",
    "closed": "Closed",
    "merged": "Merged into another request",
}


def ticket_page(
    *,
    ticket_id: str,
    subject: str,
    status: str,
    description: str,
    opened_at: datetime | None,
    conversation: Sequence[dict[str, Any]],
    reply_action: str,
    notice: str | None = None,
    error: str | None = None,
    draft: str = "",
    http_status: int = 200,
) -> HTMLResponse:
    """The customer's ticket: their first message, the public conversation, a reply form.
    ``conversation`` holds public comments only (``author_kind``, ``body``, ``created_at``)."""
    parts = [
        f"<h1>{escape(subject)}</h1>",
        f'<p class="meta">Request {escape(ticket_id)} &middot; '
        f"{escape(_STATUS.get(status, status.replace('_', ' ')))}</p>",
    ]
    if notice:
        parts.append(f'<p class="notice" role="status">{escape(notice)}</p>')
    if error:
        parts.append(f'<p class="error" role="alert">{escape(error)}</p>')
    parts.append("<h2>Conversation</h2>")
    if description.strip():
        parts.append(_entry("You", "customer", description, opened_at))
    for comment in conversation:
        if not comment.get("public", True):
            continue  # never an internal note (the caller passes public comments only)
        mine = comment["author_kind"] == "customer"
        parts.append(
            _entry(
                "You" if mine else "Support team",
                "customer" if mine else "agent",
                str(comment["body"]),
                comment.get("created_at"),
            )
        )
    if status == "closed":
        parts.append("<p>This request is closed. To follow up, please write to us by e-mail.</p>")
    else:
        hint = " (your request will be reopened)" if status == "resolved" else ""
        parts.append(
            f'<form method="post" action="{escape(reply_action)}"'
            ' enctype="application/x-www-form-urlencoded">'
            f'<h2><label for="body">Reply{escape(hint)}</label></h2>'
            '<textarea id="body" name="body" required maxlength="20000">'
            f"{escape(draft)}</textarea>"
            '<p><button type="submit">Send reply</button></p></form>'
        )
    return page(subject, "".join(parts), http_status)


def survey_page(
    *,
    subject: str,
    error: str | None = None,
    score: int | None = None,
    comment: str = "",
    http_status: int = 200,
) -> HTMLResponse:
    """The survey form: score 1-5 and an optional comment, posted to the page's own URL."""
    radios = "".join(
        f'<label class="score"><input type="radio" name="score" value="{n}" required'
        f"{' checked' if score == n else ''}> {n}</label>"
        for n in range(1, 6)
    )
    parts = [
        "<h1>How did we do?</h1>",
        f"<p>Your request: <strong>{escape(subject)}</strong></p>",
    ]
    if error:
        parts.append(f'<p class="error" role="alert">{escape(error)}</p>')
    parts.append(
        # no action: the form posts to this page's URL (the survey link)
        '<form method="post" enctype="application/x-www-form-urlencoded">'
        "<fieldset><legend>How satisfied are you with our help?"
        " (1 = not at all, 5 = very)</legend>"
        f"{radios}</fieldset>"
        '<p><label for="comment">Anything you want to tell us? (optional)</label><br>'
        '<textarea id="comment" name="comment" maxlength="5000">'
        f"{escape(comment)}</textarea></p>"
        '<p><button type="submit">Send</button></p></form>'
    )
    return page(f"How did we do? {subject}", "".join(parts), http_status)


def survey_thanks_page(subject: str, score: int | None) -> HTMLResponse:
    scored = f" You gave us {score} out of 5." if score is not None else ""
    return page(
        "Thank you",
        f"<h1>Thank you for your feedback</h1><p>Your request: <strong>{escape(subject)}"
        f"</strong>.{escape(scored)}</p>",
        201,
    )


def survey_done_page(subject: str, score: int | None, http_status: int = 200) -> HTMLResponse:
    scored = f" (you gave us {score} out of 5)" if score is not None else ""
    return page(
        "Already rated",
        f"<h1>You have already rated this request</h1><p>Your request: <strong>"
        f"{escape(subject)}</strong>{escape(scored)}. Thank you &mdash; each request is rated"
        " once.</p>",
        http_status,
    )


def form_schema(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAPI request body taking ``model`` as JSON or as a form."""
    schema = json.loads(json.dumps(model.model_json_schema()))
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}, FORM_TYPE: {"schema": schema}},
        }
    }
