"""Text a person reads, shown as text: data never becomes markup in the chat.

The chat renders markdown with directives (``word:word`` starts one, which is how
``tune:lightgbm`` once showed as "tune"), tables (``|``), emphasis and HTML. Anything that
comes from data rather than from our own templates — outcomes, actions, actors, rationales,
comments, reasons, batch ids — goes through ``text`` (inline), ``cell`` (a table cell) or
``code`` (a code span) before it is put into a reply. CommonMark's backslash escape works for
every ASCII punctuation mark; we escape each one that can start markup (emphasis, code, links,
HTML, entities, lists, headings, tables, directives, math) and leave the rest readable.
"""

from __future__ import annotations

import re
from typing import Any

_PUNCTUATION = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|:~&$])")


def text(value: Any, limit: int = 2000) -> str:
    """``value`` as inline text: whitespace folded, every mark that could start markup
    escaped."""
    folded = " ".join(str(value).split())[:limit]
    return _PUNCTUATION.sub(r"\\\1", folded)


def cell(value: Any, limit: int = 600) -> str:
    """``value`` in a table cell (one line; ``|`` cannot end the cell)."""
    return text(value, limit)


def code(value: Any, limit: int = 300) -> str:
    """``value`` as a code span (shown verbatim); a backtick inside widens the fence."""
    folded = " ".join(str(value).split())[:limit]
    fence = "``" if "`" in folded else "`"
    pad = " " if folded.startswith("`") or folded.endswith("`") else ""
    return f"{fence}{pad}{folded}{pad}{fence}"


def plain(markdown: str) -> str:
    """What a reader sees of ``markdown`` (CommonMark, no directives): for tests and logs."""
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable("table").render(markdown)
    without_tags = re.sub(r"<[^>]+>", "", html)
    import html as html_lib

    return " ".join(html_lib.unescape(without_tags).split())
