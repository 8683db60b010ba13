"""Render report blocks as Markdown and as one self-contained HTML page.

A report is a list of blocks, ``(kind, *content)``: ``("h", level, text)``, ``("p", text)``,
``("ul", items)``, ``("table", DataFrame)``, ``("img", file name, caption)``,
``("gallery", thumbnails)`` and ``("links", before, names, after)``. :mod:`featclf.report`
builds them; this module owns how they look (the page's CSS included).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd

from featclf.report._gallery import gallery_html

__all__ = ["Block"]

Block = tuple[Any, ...]

# Laid out for any width from a phone (390 px) up: the page never scrolls sideways; a table
# wider than the page scrolls inside its own box (.table-scroll), figures shrink to fit, long
# words (paths, C grids) break instead of pushing the page wider; phones keep the font sizes set
# here (no text inflation); thumbnails are 7rem wide so that three fit across a phone.
_CSS = """
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 72rem;
       margin: 2rem auto; padding: 0 1rem; color: #1f2328; line-height: 1.5;
       overflow-wrap: break-word; }
h1, h2, h3 { line-height: 1.25; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
.table-scroll { max-width: 100%; overflow-x: auto; margin: .5rem 0 1rem; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .5rem; text-align: right; }
td { white-space: nowrap; } th { background: #f6f8fa; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1rem 0; } img { max-width: 100%; height: auto; }
figcaption { color: #59636e; font-size: .9rem; }
.gallery { display: flex; flex-wrap: wrap; gap: .5rem; margin: .5rem 0 1rem; }
.gallery figure.thumb { width: 7rem; margin: 0; }
.gallery figure.thumb img { display: block; width: 96px; height: auto; image-rendering: pixelated;
       border: 1px solid #d0d7de; }
.gallery figure.thumb figcaption { font-size: .75rem; overflow-wrap: anywhere; }
"""


def _markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (first column left-aligned, the others right)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = [
        "| " + " | ".join(cell(c) for c in table.columns) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(table.columns) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def _render_markdown(blocks: list[Block]) -> str:
    """Render the report blocks as Markdown (images linked by relative path)."""
    parts = []
    for kind, *content in blocks:
        if kind == "h":
            parts.append("#" * content[0] + " " + content[1])
        elif kind == "p":
            parts.append(content[0])
        elif kind == "ul":
            parts.append("\n".join(f"- {item}" for item in content[0]))
        elif kind == "table":
            parts.append(_markdown_table(content[0]))
        elif kind == "img":
            parts.append(f"![{content[1]}]({content[0]})\n\n*{content[1]}*")
        elif kind == "gallery":
            parts.append("\n".join(f"- {thumb.caption}" for thumb in content[0]))
        elif kind == "links":
            links = " and ".join(f"[{name}]({name})" for name in content[1])
            parts.append(f"{content[0]}{links}{content[2]}")
    return "\n\n".join(parts) + "\n"


def _render_html(blocks: list[Block], title: str, out: Path) -> str:
    """Render the report blocks as one self-contained HTML page (images inlined as base64)."""
    body = []
    for kind, *content in blocks:
        if kind == "h":
            body.append(f"<h{content[0]}>{html.escape(content[1])}</h{content[0]}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(content[0])}</p>")
        elif kind == "ul":
            items = "".join(f"<li>{html.escape(item)}</li>" for item in content[0])
            body.append(f"<ul>{items}</ul>")
        elif kind == "table":
            table = content[0].to_html(index=False, border=0, escape=True)
            body.append(f'<div class="table-scroll">{table}</div>')
        elif kind == "gallery":
            body.append(gallery_html(content[0]))
        elif kind == "links":
            links = " and ".join(f'<a href="{html.escape(name)}">{html.escape(name)}</a>'
                                 for name in content[1])  # fmt: skip
            body.append(f"<p>{html.escape(content[0])}{links}{html.escape(content[2])}</p>")
        elif kind == "img":
            data = base64.b64encode((out / content[0]).read_bytes()).decode("ascii")
            caption = html.escape(content[1])
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
