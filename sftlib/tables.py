"""Tables a person can read, in JupyterLab and in the HTML reports.

`readable(frame)` is how sftlib shows a table of examples or numbers: texts whole, wrapped
and left-aligned (JupyterLab right-aligns every cell by default), numbers rounded, every
cell HTML-escaped (a text from the data is shown, never run: `<script>` stays text), and an
empty table as one line saying "none found" instead of a bare header. It returns a pandas
Styler for a notebook to display; `readable_html` gives the same as an HTML string.

Not supported: paging and sorting in the page (the interactive explorers use widgets).
"""

from __future__ import annotations

import html

import pandas as pd
from IPython.display import HTML

TEXT_STYLE = [("text-align", "left"), ("white-space", "pre-wrap"), ("max-width", "48em"),
              ("min-width", "16em")]
PRECISION = 4  # significant enough for metrics; the JSON files keep full precision


def text_columns(frame: pd.DataFrame) -> list:
    """Columns holding strings (object or string dtype with at least one str value)."""
    return [c for c in frame.columns
            if (frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c]))
            and frame[c].map(lambda v: isinstance(v, str)).any()]


def readable(frame: pd.DataFrame, empty: str = "none found", precision: int = PRECISION):
    """A Styler of `frame` (module docstring); `HTML` of one line when it has no rows."""
    if frame.empty:
        return HTML(f"<p><i>{html.escape(empty)}</i></p>")
    styler = frame.style.format(precision=precision, escape="html", na_rep="")
    styler = styler.format_index(escape="html", axis=0).format_index(escape="html", axis=1)
    texts = text_columns(frame)
    if texts:
        styler = styler.set_properties(subset=texts, **dict(TEXT_STYLE))
    # text headers left too, so a column's name sits over its text
    return styler.set_table_styles([{"selector": "th", "props": [("text-align", "left")]}])


def readable_html(frame: pd.DataFrame, empty: str = "none found",
                  precision: int = PRECISION) -> str:
    shown = readable(frame, empty, precision)
    return shown.data if isinstance(shown, HTML) else shown.to_html()
