"""A report as a list of simple blocks (headings, paragraphs, tables, figures), rendered to
Markdown and to a self-contained HTML page. Formatting of numbers happens in ``content.py``."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str
    emphasis: bool = False  # shown as a highlighted note (estimates, missing parts)


@dataclass
class Bullets:
    items: list[str]


@dataclass
class TableBlock:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    name: str  # file stem of the PNG beside report.md
    title: str
    png: bytes | None = None
    absent: str = ""  # why there is no picture
    notes: list[str] = field(default_factory=list)


Block = Heading | Paragraph | Bullets | TableBlock | Figure


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], image_dir: str) -> str:
    """Markdown; figures link ``<image_dir>/<name>.png`` (written beside report.md by the caller)."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            out.append(f"> **{block.text}**" if block.emphasis else block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, TableBlock):
            lines = [f"*{block.caption}*", ""] if block.caption else []
            lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            lines.append("|" + "|".join("---" for _ in block.headers) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Figure):
            if block.png is None:
                out.append(f"*{block.title}: not drawn ({block.absent}).*")
            else:
                out.append(f"![{block.title}]({image_dir}/{block.name}.png)")
            out += block.notes
    return "\n\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f0f0f0}
caption{caption-side:top;text-align:left;font-style:italic;padding-bottom:.3em}
.note{background:#fff6d6;border-left:4px solid #e0b000;padding:.4em .8em}
img{max-width:100%}
figure{margin:1em 0}
"""


def to_html(blocks: list[Block], title: str) -> str:
    """One HTML page with everything inline: CSS in a style element, figures as base64 PNG
    data URIs; no external ``src`` or ``href``."""
    esc = html.escape
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f'<p class="note">{esc(block.text)}</p>' if block.emphasis else f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, TableBlock):
            rows = ["<table>"]
            if block.caption:
                rows.append(f"<caption>{esc(block.caption)}</caption>")
            rows.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in block.headers) + "</tr>")
            rows += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in block.rows]
            rows.append("</table>")
            body.append("\n".join(rows))
        elif isinstance(block, Figure):
            if block.png is None:
                body.append(f"<p><em>{esc(block.title)}: not drawn ({esc(block.absent)}).</em></p>")
            else:
                data = base64.b64encode(block.png).decode("ascii")
                body.append(f'<figure><img alt="{esc(block.title)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{esc(block.title)}</figcaption></figure>")
            body += [f"<p>{esc(note)}</p>" for note in block.notes]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
