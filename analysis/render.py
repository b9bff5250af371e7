"""Markdown and self-contained HTML from one list of sections.

A section is (title, blocks); a block is a paragraph (str), a list of lines (list[str]), a table
(tuple of header and rows) or a figure (Path of a PNG, embedded in HTML as base64).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

Table = tuple[list[str], list[list[str]]]
Block = str | list[str] | Table | Path
Section = tuple[str, list[Block]]


def markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for heading, blocks in sections:
        out += [f"## {heading}", ""]
        for block in blocks:
            if isinstance(block, Path):
                out.append(f"![{block.stem}]({block.name})")
            elif isinstance(block, tuple):
                header, rows = block
                out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                out += ["| " + " | ".join(row) + " |" for row in rows]
            elif isinstance(block, list):
                out += [f"- {line}" for line in block]
            else:
                out.append(block)
            out.append("")
    return "\n".join(out)


def to_html(title: str, sections: list[Section]) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        f'<html><head><meta charset="utf-8"><title>{e(title)}</title><style>'
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for heading, blocks in sections:
        out.append(f"<h2>{e(heading)}</h2>")
        for block in blocks:
            if isinstance(block, Path):
                data = base64.b64encode(block.read_bytes()).decode()
                out.append(f'<img alt="{e(block.stem)}" src="data:image/png;base64,{data}">')
            elif isinstance(block, tuple):
                header, rows = block
                out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
                out.append("</table>")
            elif isinstance(block, list):
                out.append("<ul>" + "".join(f"<li>{e(line)}</li>" for line in block) + "</ul>")
            else:
                out.append(f"<p>{e(block)}</p>")
    out.append("</body></html>")
    return "\n".join(out)
