"""``OUT/index.html``: a batch at a glance, one card per scene with its preview, status,
class shares and links to its outputs; opens from the folder (no server, no script
beyond marking which previews loaded, for tests and screen readers).

Written at the end of every batch from each scene's row of the summary and, for scenes
that are complete, their ``manifest.json`` (class pixel counts, read once by the caller),
through a temporary name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from ..atomic import replacing

INDEX = "index.html"

STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; }
.scenes { display: flex; flex-wrap: wrap; gap: 1em; }
.scene { border: 1px solid #ccc; border-radius: 6px; padding: .8em; width: 340px; }
.scene img { max-width: 100%; display: block; margin-bottom: .5em; }
.failed { border-color: #c00; background: #fff4f4; }
.status { font-weight: bold; }
.error { color: #a00; }
table { border-collapse: collapse; }
td { padding: 0 .6em 0 0; }
"""

MARK_LOADED = ("window.addEventListener('load', () => { document.body.dataset.previews = "
               "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length; "
               "});")


@dataclass(frozen=True)
class SceneCard:
    """What the index shows of one scene."""

    scene: str
    status: str
    folder: Path | None = None
    seconds: float = 0.0
    megapixels: float = 0.0
    error: str = ""
    outputs: dict = field(default_factory=dict)
    shares: dict = field(default_factory=dict)
    """Each class's share of the valid pixels (:func:`class_shares`)."""


def class_shares(manifest: dict) -> dict[str, float]:
    """Each class's share of a scene's valid pixels, from its manifest's counts."""
    counts = manifest.get("class_pixels", {})
    total = sum(counts.values())
    return {name: n / total for name, n in counts.items()} if total else {}


def _link(path: str | os.PathLike, root: Path) -> str:
    """``path`` relative to ``root`` (OUT, resolved once by the caller), else as a URI."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(root).as_posix()
    except ValueError:
        return resolved.as_uri()


def render_index(cards: Iterable[SceneCard], out: Path, *, title: str,
                 counts: dict[str, int]) -> Iterator[str]:
    """The page's HTML, a line at a time: a batch of 10,000 scenes never holds its cards
    or its page whole. ``counts``: the scenes by status (``done``, ``skipped``,
    ``failed``, others), for the line above the cards."""
    total = sum(counts.values())
    done = counts.get("done", 0) + counts.get("skipped", 0)
    failed = counts.get("failed", 0)
    others = total - done - failed
    yield from ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                f"<title>{escape(title)}</title>", f"<style>{STYLE}</style>", "</head>",
                "<body>", f"<h1>{escape(title)}</h1>",
                f"<p>{done} of {total} scene(s) complete"
                f"{f', {failed} failed' if failed else ''}"
                f"{f', {others} interrupted' if others else ''}.</p>",
                '<div class="scenes">']
    root = out.resolve()
    for card in cards:
        yield from _card(card, root)
    yield from ["</div>", f"<script>{MARK_LOADED}</script>", "</body>", "</html>"]


def _card(card: SceneCard, root: Path) -> list[str]:
    """One scene's section of the page (links relative to ``root``, OUT resolved)."""
    failed = card.status == "failed"
    parts = [f'<section class="scene{" failed" if failed else ""}">',
             f"<h2>{escape(Path(card.scene).name or card.scene)}</h2>"]
    preview = card.outputs.get("preview")
    if preview and Path(preview).is_file():
        href = escape(_link(preview, root))
        parts.append(f'<a href="{href}"><img src="{href}" alt="preview of '
                     f'{escape(Path(card.scene).name)}"></a>')
    parts.append(f'<p><span class="status">{escape(card.status)}</span>'
                 f" &middot; {card.megapixels:.2f} MPix &middot; {card.seconds:.1f} s</p>")
    if failed:
        parts.append(f'<p class="error">{escape(card.error)}</p>')
    if card.shares:
        parts.append("<table>")
        parts += [f"<tr><td>{escape(name)}</td><td>{100 * share:.1f}%</td></tr>"
                  for name, share in card.shares.items()]
        parts.append("</table>")
    links = [f'<a href="{escape(_link(path, root))}">{escape(Path(path).name)}</a>'
             for kind, path in card.outputs.items() if kind != "preview"]
    if card.folder and (card.folder / "item.json").is_file():
        links.append(f'<a href="{escape(_link(card.folder / "item.json", root))}">'
                     "item.json</a>")
    if links:
        parts.append("<p>" + " &middot; ".join(links) + "</p>")
    parts.append("</section>")
    return parts


def write_index(cards: Iterable[SceneCard], out: Path, *, counts: dict[str, int],
                title: str = "geoseg batch") -> Path:
    """``OUT/index.html`` for ``cards`` (taken one at a time: a generator keeps the batch's
    cards out of memory), ``counts`` as :func:`render_index` takes them."""
    path = out / INDEX
    with replacing(path, suffix=".html") as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line in render_index(cards, out, title=title, counts=counts):
            f.write(line + "\n")
    return path
