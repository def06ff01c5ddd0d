"""The run's HTML: each executed notebook as one self-contained page, and a landing page.

`export_html` turns an executed notebook into an HTML file that opens complete offline, from
a USB stick as from a web server: figures are embedded (nbconvert does that), formulas are
typeset by MathJax 3 (SVG output) inlined into the page from the `django-static-mathjax`
wheel (a plain copy of MathJax's files, no Django involved) instead of nbconvert's CDN
script, and nothing else is loaded from the network (require.js, which only widget views
need, is left out: headless runs show static tables). MathJax typesets the notebook's text
(markdown) only, never cell outputs, so a `$` in the data is shown as written. Every image
gets alternative text: figures shown through `sftlib.report.Report.figure` carry their
titles; any other image gets the notebook's name.

`write_index` writes `index.html` into a run folder: the run's status, headline metrics, key
figures and a link to each notebook's page.

Not supported: interactive widget views in the HTML, notebooks whose math needs TeX
packages beyond MathJax's full TeX bundle.
"""

from __future__ import annotations

import html
import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

MATHJAX_FILE = "static/mathjax/es5/tex-svg-full.js"  # inside the `mathjax` package
MATHJAX_CONFIG = """window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']],
        displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']],
        processEscapes: true, processEnvironments: true, tags: 'ams'},
  options: {ignoreHtmlClass: 'tex2jax_ignore|jp-OutputArea-output',
            processHtmlClass: 'tex2jax_process'},
  svg: {fontCache: 'global'}
};"""
_NBCONVERT_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->",
                                re.DOTALL)
_REMOTE_SCRIPT = re.compile(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>')
KEY_FIGURES = ("training", "confusion_matrix", "reliability_diagram", "label_balance",
               "prompt_response_lengths", "token_length_cdf")


def mathjax_script() -> str:
    """MathJax 3 (TeX input, SVG output, every TeX extension) as inline script tags."""
    source = importlib.resources.files("mathjax").joinpath(MATHJAX_FILE).read_text("utf-8")
    # a "</script>" inside the library would end the inline element early
    source = source.replace("</script", "<\\/script")
    return f"<script>{MATHJAX_CONFIG}</script>\n<script>{source}</script>"


def offline_html(page: str, fallback_alt: str) -> str:
    """nbconvert's page with its CDN scripts replaced by inlined MathJax, images given
    alternative text."""
    page = _NBCONVERT_MATHJAX.sub("", page)
    page = _REMOTE_SCRIPT.sub("", page)
    page = page.replace("</head>", mathjax_script() + "\n</head>", 1)
    return re.sub(r'alt="No description has been provided for this image"',
                  f'alt="{html.escape(fallback_alt)}"', page)


def export_html(notebook_path: Path, html_path: Path) -> Path:
    """The executed notebook as one self-contained HTML page (module docstring)."""
    import logging

    import nbformat
    from nbconvert import HTMLExporter

    # mermaid diagrams (none here) would be drawn by a script fetched from a CDN: no URL
    exporter = HTMLExporter(mermaid_js_url="", mermaid_layout_elk_js_url="")
    # its "alternative text is missing" warning is answered by offline_html's fallback
    exporter.log.setLevel(logging.ERROR)
    page, _ = exporter.from_notebook_node(nbformat.read(notebook_path, as_version=4))
    title = f"figure from notebook {notebook_path.stem}"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(offline_html(page, title), encoding="utf-8")
    return html_path


# the landing page -------------------------------------------------------------------------

def _number(value: Any) -> str:
    """Scores to 4 decimals; seconds, counts and rates (10 and up) to one."""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return html.escape(str(value))


def headline_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) of the numbers a reader looks for first, in that order."""
    rows = []
    for split in ("before_training", "validation", "test"):
        for key, value in metrics.get(split, {}).items():
            if isinstance(value, int | float):
                rows.append((f"{split.replace('_', ' ')} {key}", _number(value)))
    training = metrics.get("training", {})
    for key in ("steps", "epochs", "runtime_s", "samples_per_s", "hardware"):
        if key in training:
            rows.append((f"training {key.replace('_', ' ')}", _number(training[key])))
    return rows


def index_page(run_dir: Path, manifest: dict[str, Any]) -> str:
    """The landing page of a run folder as HTML text (every value escaped)."""
    metrics = manifest.get("metrics") or {}
    config = manifest.get("config", {})
    notebooks = manifest.get("notebooks", {})
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>"
                   for k, v in headline_rows(metrics))
    links = "".join(
        f'<li><a href="html/{html.escape(name)}.html">{html.escape(name)}</a> '
        f"({html.escape(str(info.get('status')))}, {_number(info.get('seconds', ''))} s)</li>"
        for name, info in notebooks.items())
    figures = "".join(
        f'<figure><img src="figures/{name}.png" alt="{html.escape(name.replace("_", " "))}" '
        f'style="max-width:100%"><figcaption>{html.escape(name.replace("_", " "))}'
        "</figcaption></figure>"
        for name in KEY_FIGURES if (run_dir / "figures" / f"{name}.png").is_file())
    facts = {"task": config.get("task"), "model": config.get("model"),
             "dataset": config.get("dataset"), "status": manifest.get("status"),
             "started (UTC)": manifest.get("started_utc"),
             "finished (UTC)": manifest.get("finished_utc")}
    fact_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                        for k, v in facts.items() if v is not None)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>run {html.escape(str(manifest.get("run_id", run_dir.name)))}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse}}th,td{{text-align:left;padding:2px 12px 2px 0;
vertical-align:top}}figure{{margin:1em 0}}</style></head>
<body><h1>Run {html.escape(str(manifest.get("run_id", run_dir.name)))}</h1>
<table>{fact_rows}</table>
<h2>Headline metrics</h2><table>{rows or "<tr><td>none recorded</td></tr>"}</table>
<h2>Notebooks</h2><ol>{links or "<li>none ran</li>"}</ol>
<h2>Key figures</h2>{figures or "<p>none written</p>"}
<p>Everything else: <code>metrics.json</code>, <code>manifest.json</code>,
<code>tables/</code>, <code>figures/</code> in this folder.</p>
</body></html>
"""


def write_index(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """index.html in the run folder (rewritten as the run progresses)."""
    target = run_dir / "index.html"
    target.write_text(index_page(run_dir, json.loads(json.dumps(manifest, default=str))),
                      encoding="utf-8")
    return target
