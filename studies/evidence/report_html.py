"""A tiny HTML page builder for the report: sections, paragraphs, tables and embedded PNGs.

No template engine: the page is a list of strings, every image is embedded as a data URI (the file
opens from disk anywhere, no server, no network), and the small script at the end counts the images
that decoded, so a headless browser test can tell a page with broken plots from a good one.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from studies.evidence.tables import Rows

STYLE = """
body { font-family: sans-serif; max-width: 1400px; margin: 1em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 1.6em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; } th { background: #eee; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; display: block; }
nav a { margin-right: 1em; }
"""

SCRIPT = """
window.addEventListener("load", () => {
  const ok = [...document.images].filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesLoaded = String(ok);
  document.body.dataset.imagesTotal = String(document.images.length);
});
"""


class Page:
    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []
        self.sections: list[tuple[str, str]] = []

    def section(self, anchor: str, title: str) -> None:
        self.sections.append((anchor, title))
        self.parts.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')

    def para(self, text: str) -> None:
        """`text` is trusted HTML written by the report (numbers and fixed words), not user input."""
        self.parts.append(f"<p>{text}</p>")

    def raw(self, fragment: str) -> None:
        self.parts.append(fragment)

    def image(self, path: Path, alt: str) -> None:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.parts.append(
            f'<img class="plot" alt="{html.escape(alt)}" data-file="{html.escape(path.name)}" '
            f'src="data:image/png;base64,{data}">'
        )

    def render(self) -> str:
        nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in self.sections)
        body = "\n".join(self.parts)
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(self.title)}</h1><nav>{nav}</nav>\n{body}\n"
            f"<script>{SCRIPT}</script></body></html>\n"
        )


def html_table(t: Rows, *, table_id: str) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in t.head)
    trs = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in t.rows
    )
    return f'<table id="{table_id}"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>'
