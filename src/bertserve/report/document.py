"""A report as a list of blocks, rendered to Markdown or self-contained HTML from one source,
so the two files always say the same thing."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Block",
    "Bullets",
    "Figure",
    "Heading",
    "Paragraph",
    "Table",
    "render_html",
    "render_markdown",
]


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str
    emphasis: bool = False
    """Rendered as a warning box in HTML and in bold in Markdown."""


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...] = ()
    """Per column: right-align (numbers)."""


@dataclass(frozen=True)
class Figure:
    filename: str
    png: bytes
    caption: str


Block = Heading | Paragraph | Bullets | Table | Figure


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            out.append(f"**{block.text}**" if block.emphasis else block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            out.append(_markdown_table(block))
        else:
            out.append(f"![{block.caption}]({block.filename})\n\n*{block.caption}*")
    return "\n\n".join(out) + "\n"


def _markdown_table(table: Table) -> str:
    def cells(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    numeric = table.numeric or (False,) * len(table.headers)
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    return "\n".join([cells(table.headers), rule, *(cells(r) for r in table.rows)])


# Tables sit in a scroller of the page's width: a table wider than a phone scrolls inside
# it instead of pushing the page sideways. Numbers never break; words in text cells stay
# whole, and paths and model names may break after "/" and "_" (<wbr> in _cell).
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; overflow-wrap: break-word; }
.table { overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; }
th { background: #f2f2f2; text-align: left; }
td { overflow-wrap: break-word; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.warn { background: #fff3cd; border-left: 4px solid #e0a800; padding: 0.5em 1em; }
figure { margin: 1.5em 0; } img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
code { background: #f5f5f5; padding: 0 0.2em; }
@media (max-width: 700px) {
  body { margin: 1em auto; padding: 0 0.6em; font-size: 15px; }
  table { font-size: 0.85em; }
  th, td { padding: 0.2em 0.35em; }
}
"""


def render_html(blocks: Sequence[Block], title: str) -> str:
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            body.append(f"<h{level}>{html.escape(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            cls = ' class="warn"' if block.emphasis else ""
            body.append(f"<p{cls}>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{html.escape(i)}</li>" for i in block.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            body.append(_html_table(block))
        else:
            data = base64.b64encode(block.png).decode("ascii")
            caption = html.escape(block.caption)
            body.append(
                f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _breakable(text: str) -> str:
    """Escaped text that may break after "/" and "_": a path or a model name is one long
    word, which would otherwise set its column's width."""
    return html.escape(text).replace("/", "/<wbr>").replace("_", "_<wbr>")


def _html_table(table: Table) -> str:
    numeric = table.numeric or (False,) * len(table.headers)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    rows = []
    for row in table.rows:
        tds = "".join(
            f'<td class="num">{html.escape(c)}</td>' if n else f"<td>{_breakable(c)}</td>"
            for c, n in zip(row, numeric, strict=False)
        )
        rows.append(f"<tr>{tds}</tr>")
    return (
        f'<div class="table"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
