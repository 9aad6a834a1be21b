"""Click tracking: rewrite a message's links to signed redirects, remember the originals.

Only ``http(s)`` links are tracked; the list of originals (by link index) is stored with the
message, and the redirect goes to nothing else. The same URL in the HTML and the text part gets
one index.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_TEXT_URL = re.compile(r"""https?://[^\s<>"')\]]+""")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
MAX_LINKS = 200


class LinkTable:
    """The message's tracked links, by index."""

    def __init__(self, keep: Callable[[str], bool] | None = None) -> None:
        self.urls: list[str] = []
        self._index: dict[str, int] = {}
        self._keep = keep or (lambda _url: True)

    def index_of(self, url: str) -> int | None:
        if not url.lower().startswith(("http://", "https://")) or not self._keep(url):
            return None
        found = self._index.get(url)
        if found is None:
            if len(self.urls) >= MAX_LINKS:
                return None
            found = self._index[url] = len(self.urls)
            self.urls.append(url)
        return found


def rewrite_html(html: str, links: LinkTable, click_url: Callable[[int], str]) -> str:
    def swap(m: re.Match[str]) -> str:
        url = htmllib.unescape(m.group(3)).strip()
        index = links.index_of(url)
        if index is None:
            return m.group(0)
        return f"{m.group(1)}{m.group(2)}{htmllib.escape(click_url(index))}{m.group(2)}"

    return _HREF.sub(swap, html)


def rewrite_text(text: str, links: LinkTable, click_url: Callable[[int], str]) -> str:
    def swap(m: re.Match[str]) -> str:
        url = m.group(0).rstrip(".,;:!?")
        tail = m.group(0)[len(url) :]
        index = links.index_of(url)
        return m.group(0) if index is None else click_url(index) + tail

    return _TEXT_URL.sub(swap, text)


def add_pixel(html: str, pixel_url: str) -> str:
    img = (
        f'<img src="{htmllib.escape(pixel_url)}" width="1" height="1" alt="" style="display:none">'
    )
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + img
    at = ends[-1].start()
    return html[:at] + img + html[at:]
