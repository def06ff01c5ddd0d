"""Tables a person can read, in JupyterLab and in the HTML reports.

`readable(frame)` is how sftlib shows a table of examples or numbers: texts whole, wrapped
at their own line breaks and left-aligned (JupyterLab right-aligns every cell by default),
numbers rounded, and every cell, row and column label and axis name HTML-escaped, so a
`<script>` in the data or in a model's output is shown as text, never run. (A Styler escapes
nothing by default, and `format(escape="html")` escapes only `str` cells: a list or dict
cell, or an axis name, would go out as raw HTML.) The table carries MathJax's ignore
classes, so a `$` in the data is shown as written, not typeset. An empty table is one line
saying "none found" instead of a bare header. `readable_html` gives the same as a string.

Not supported: paging and sorting in the page (the interactive explorers use widgets);
per-cell colours (style the returned Styler further: it keeps escaping).
"""

from __future__ import annotations

import html
import math
import numbers
from typing import Any

import pandas as pd
from IPython.display import HTML

TEXT_STYLE = {"text-align": "left", "white-space": "pre-wrap", "max-width": "48em"}
PRECISION = 4  # enough for metrics; the JSON and CSV files keep full precision


def text_columns(frame: pd.DataFrame) -> list:
    """Columns holding strings (at least one `str` value)."""
    return [c for c in frame.columns
            if (pd.api.types.is_object_dtype(frame[c]) or pd.api.types.is_string_dtype(frame[c]))
            and frame[c].map(lambda v: isinstance(v, str)).any()]


def escaped_cell(value: Any, precision: int = PRECISION) -> str:
    """A cell as escaped text: floats rounded, missing values empty."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return "" if math.isnan(value) else f"{value:.{precision}f}"
    if value is None or value is pd.NA:
        return ""
    return html.escape(str(value))


def _escaped_names(axis: pd.Index) -> list[str | None]:
    """An axis's level names escaped (the Styler writes them out as they are)."""
    return [None if name is None else html.escape(str(name)) for name in axis.names]


def readable(frame: pd.DataFrame, empty: str = "none found", precision: int = PRECISION):
    """A Styler of `frame` (module docstring); `HTML` of one line when it has no rows."""
    if frame.empty:
        return HTML(f"<p><i>{html.escape(empty)}</i></p>")
    named = frame.rename_axis(index=_escaped_names(frame.index),
                              columns=_escaped_names(frame.columns))
    styler = (named.style
              .format(lambda value: escaped_cell(value, precision))
              .format_index(lambda value: html.escape(str(value)), axis="index")
              .format_index(lambda value: html.escape(str(value)), axis="columns")
              .set_table_attributes('class="tex2jax_ignore mathjax_ignore"')
              .set_table_styles([{"selector": "th", "props": [("text-align", "left")]}]))
    texts = text_columns(frame)
    return styler.set_properties(subset=texts, **TEXT_STYLE) if texts else styler


def readable_html(frame: pd.DataFrame, empty: str = "none found",
                  precision: int = PRECISION) -> str:
    shown = readable(frame, empty, precision)
    return shown.data if isinstance(shown, HTML) else shown.to_html()
