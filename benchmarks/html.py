"""report.html: report.md's content as HTML (one source for both), with a plot after each device's heading.

The converter knows only what `benchmarks.report.render_markdown` writes: headings, pipe tables, `- ` lists,
paragraphs, `<details>`/`<summary>` lines passed through, and inline `code`, **bold** and *italic*.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"), (re.compile(r"\*\*([^*]+)\*\*"), r"<b>\1</b>"),
           (re.compile(r"(?<![*\w])\*([^*]+)\*(?![*\w])"), r"<i>\1</i>")]
_RAW = ("<details", "</details", "<summary")


def inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(md: str, after_heading: Callable[[str], str] = lambda _: "") -> str:
    """The body HTML of `md`; `after_heading(text)` may return HTML to put after a heading (a plot)."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.lstrip().startswith(_RAW):
            out.append(line.strip())
            i += 1
        elif m := re.match(r"(#{1,6}) (.*)", line):
            level, text = len(m.group(1)), m.group(2)
            out.append(f"<h{level}>{inline(text)}</h{level}>")
            out.append(after_heading(text))
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            head, body = _cells(block[0]), [b for b in block[1:] if not re.fullmatch(r"\|(-+\|)+", b.strip())]
            cls = lambda c: " class='warn'" if "⚠" in c else ""  # noqa: E731
            rows = "".join("<tr>" + "".join(f"<td{cls(c)}>{inline(c)}</td>" for c in _cells(r)) + "</tr>"
                           for r in body)
            out.append("<table><tr>" + "".join(f"<th>{inline(h)}</th>" for h in head) + "</tr>" + rows + "</table>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("|", "#", "- ", *_RAW)):
                para.append(lines[i])
                i += 1
            out.append(f"<p>{inline(' '.join(para))}</p>")
    return "\n".join(o for o in out if o)
