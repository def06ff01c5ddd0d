"""Text from a dataset, or written by a model, is shown as text and never runs.

Unit level: every sftlib function that writes HTML from data, fed hostile strings. Pipeline
level: a tiny run per task over hostile data (the instruction one is the session's shared
run); every HTML export and every HTML output
of the executed notebooks is parsed (stdlib html.parser) and searched for a payload that
could run: a <script> element holding it, an on* attribute holding it, a javascript: URL.
nbconvert's own pages hold legitimate scripts, so the search is for the payload, not for
scripts. The same runs check that every report file follows the umask (issue 16).
"""

from __future__ import annotations

import json
import stat
from html.parser import HTMLParser

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import TINY
from hostile import HOSTILE, HOSTILE_LABEL, PAYLOAD

from sftlib import analysis, data, data_report, filemodes, instruct
from sftlib.config import RunConfig
from sftlib.pipeline import run_pipeline
from sftlib.tables import readable as text_table

# finding what could run ----------------------------------------------------------------------

class _Page(HTMLParser):
    """A page as a browser parses it: start tags with attributes, the text inside each
    <script>, and the text a reader sees (character references decoded)."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


def active_payloads(page: str) -> list[str]:
    """Every place in `page` where the hostile strings would run; [] when there is none."""
    parsed = _Page(page)
    found = [f"<script> running {script.strip()[:60]!r}" for script in parsed.scripts
             if PAYLOAD in script]
    for tag, attrs in parsed.tags:
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name.startswith("on") and PAYLOAD in value:
                found.append(f"<{tag} {name}={value!r}>")
            if value.startswith("javascript:"):
                found.append(f"<{tag} {name}={value!r}>")
    return found


def shown_text(page: str) -> str:
    """What a reader sees of `page` (outside scripts), entities decoded."""
    return "".join(_Page(page).text)


def test_the_checker_finds_what_runs_and_passes_what_is_escaped():
    raw = pd.DataFrame({"text": list(HOSTILE)}).style.to_html()  # a Styler escapes nothing
    assert len(active_payloads(raw)) >= 4
    escaped = pd.DataFrame({"text": list(HOSTILE)}).to_html()
    assert active_payloads(escaped) == [] and all(h in shown_text(escaped) for h in HOSTILE)
    assert active_payloads("<script>require(['x'])</script><a href='#top'>top</a>") == []


# unit level: every sftlib function that writes HTML from data ----------------------------------

def _hostile_frame() -> pd.DataFrame:
    frame = pd.DataFrame({"prompt": list(HOSTILE), "after": list(reversed(HOSTILE)),
                          HOSTILE_LABEL: np.linspace(0, 1, len(HOSTILE)),
                          "parts": [[h] for h in HOSTILE]},
                         index=pd.Index(HOSTILE, name=HOSTILE_LABEL))
    frame.columns.name = HOSTILE[0]
    return frame


def test_text_table_escapes_cells_labels_and_axis_names():
    page = text_table(_hostile_frame()).to_html()
    assert active_payloads(page) == []
    seen = shown_text(page)
    assert all(h in seen for h in HOSTILE)  # {{7*7}} too: shown, not evaluated
    assert "tex2jax_ignore" in page and "white-space: pre-wrap" in page


def test_text_table_keeps_escaping_when_styled_further():
    styled = text_table(_hostile_frame()).set_properties(**{"color": "black"})
    assert active_payloads(styled.to_html()) == []


class _PieceTokenizer:
    """Decodes token id i to HOSTILE[i]: the pieces of the mask view are data too."""

    def decode(self, ids):
        return HOSTILE[ids[0]]


def test_mask_view_escapes_token_pieces():
    example = {"input_ids": list(range(len(HOSTILE))),
               "labels": [-100, -100, *range(2, len(HOSTILE))]}
    page = instruct.mask_html(example, _PieceTokenizer())
    assert active_payloads(page) == []
    assert all(h in shown_text(page) for h in HOSTILE)


def _prediction_frame() -> pd.DataFrame:
    names = ["fresh", HOSTILE_LABEL]
    probs = np.tile([[0.8, 0.2], [0.3, 0.7]], (len(HOSTILE), 1))[:len(HOSTILE)]
    return analysis.frame_from_probabilities(HOSTILE, [1, 0] * 4, probs, names)


def test_error_explorer_widget_table_is_escaped(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.delenv("SFTLIB_HEADLESS", raising=False)  # the widget path, as in JupyterLab
    monkeypatch.setattr(IPython.display, "display", shown.append)
    analysis.explorer(_prediction_frame(), n=10)
    pages = [item.data for item in shown if isinstance(item, IPython.display.HTML)]
    assert pages and all(active_payloads(page) == [] for page in pages)
    assert any(HOSTILE[0] in shown_text(page) for page in pages)


def _rows() -> pd.DataFrame:
    texts = [f"{h} (row {i})" for i, h in enumerate(HOSTILE * 2)]
    return data.rows_frame(pd.DataFrame({
        "split": ["train"] * 8 + ["validation"] * 8, "text": texts,
        "label": [HOSTILE_LABEL, "fresh"] * 8}))


@pytest.mark.parametrize("table", [
    lambda rows: data_report.show_sample(rows, n=3),  # outside Jupyter: the static table
    lambda rows: data_report.label_sample(rows, HOSTILE_LABEL),
    lambda rows: data_report.row_issues(rows),
    lambda rows: data_report.distinctive_words(rows).pivot(index="rank", columns="label",
                                                           values="word"),
    lambda rows: analysis.top_losses(_prediction_frame(), 5),
    lambda rows: analysis.per_class_report(_prediction_frame()),
], ids=["show_sample", "label_sample", "row_issues", "distinctive_words", "top_losses",
        "per_class"])
def test_tables_of_data_display_escaped(table):
    """DataFrames shown as a cell's value go through pandas' escaping `to_html`."""
    page = table(_rows())._repr_html_()
    assert active_payloads(page) == []


# pipeline level: one tiny run per task over hostile data ---------------------------------------

def _hostile_csv(path):
    """200 labelled texts around the hostile strings; one of the two labels is hostile."""
    rows = [{"text": f"{HOSTILE[i % len(HOSTILE)]} review {i}: a {'fine' if i % 2 else 'dull'} "
                     "film", "label": "fresh" if i % 2 else HOSTILE_LABEL} for i in range(200)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def instruction_report(instruction_run):
    return instruction_run  # the shared run's data holds the hostile rows (tests/conftest.py)


@pytest.fixture(scope="session")  # one build per worker (tests/conftest.py)
def classification_report(tmp_path_factory, tiny_model_folder):
    folder = tmp_path_factory.mktemp("hostile-classification")
    # the tiny random BERT: what is checked is how text is shown, whatever the model
    cfg = RunConfig(**{**TINY, "dataset": str(_hostile_csv(folder / "h.csv")),
                       "model": str(tiny_model_folder)})
    return run_pipeline(cfg, ["01", "03", "04"], reports_root=folder / "reports",
                        log=lambda _m: None)


@pytest.fixture(params=["instruction", "classification"])
def hostile_report(request):
    return request.getfixturevalue(f"{request.param}_report")


def report_pages(run_dir) -> dict[str, str]:
    """Every HTML file of the run, and every HTML output of its executed notebooks."""
    pages = {str(p.relative_to(run_dir)): p.read_text() for p in run_dir.rglob("*.html")}
    for path in sorted((run_dir / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        for number, cell in enumerate(c for c in cells if c.cell_type == "code"):
            for output in cell.get("outputs", []):
                for mime, content in output.get("data", {}).items():
                    if mime != "text/plain" and mime.startswith(("text/", "application/java")):
                        pages[f"{path.name} cell {number + 1} {mime}"] = str(content)
    return pages


@pytest.mark.slow
def test_no_hostile_string_runs_in_any_page_of_the_report(hostile_report):
    manifest = json.loads((hostile_report / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    pages = report_pages(hostile_report)
    assert len([name for name in pages if name.startswith("html/")]) >= 3
    assert {name: found for name, page in pages.items() if (found := active_payloads(page))} \
        == {}


@pytest.mark.slow
def test_hostile_strings_are_shown_as_text(hostile_report):
    pages = report_pages(hostile_report)
    seen = shown_text(pages["html/01_data_inspection.html"])
    assert sum(h in seen for h in HOSTILE) >= 3
    seen = shown_text(pages["html/04_error_analysis.html"])
    generations = hostile_report / "tables" / "generations_validation.csv"
    if not generations.is_file():  # classification: its mistakes are hostile texts
        assert sum(h in seen for h in HOSTILE) >= 3
        return
    # instruction: 04 shows eval_generations prompts of a mixed set; each hostile string
    # among the rows it shows is shown, as text
    shown_data = pd.read_csv(generations, keep_default_na=False).astype(str).to_string()
    expected = {h for h in HOSTILE if h in shown_data}
    assert {h for h in expected if h in seen} == expected


@pytest.mark.slow
def test_generations_table_shows_prompts_and_answers_as_text(instruction_report):
    generations = pd.read_csv(instruction_report / "tables" / "generations_validation.csv",
                              keep_default_na=False)
    seen = shown_text(report_pages(instruction_report)["html/04_error_analysis.html"])
    for column in ("prompt", "reference", "before", "after"):
        for text in generations[column]:
            assert text in seen, (column, text)


@pytest.mark.slow
def test_every_report_file_follows_the_umask(hostile_report):
    """Weights included: safetensors writes 0600 unless sftlib sets the mode (issue 16)."""
    mask = filemodes.current_umask()
    paths = [p for p in hostile_report.rglob("*") if not p.is_symlink()]
    assert any(p.suffix == ".safetensors" for p in paths)
    wrong = {str(p.relative_to(hostile_report)): oct(stat.S_IMODE(p.stat().st_mode))
             for p in paths
             if stat.S_IMODE(p.stat().st_mode) != (0o777 if p.is_dir() else 0o666) & ~mask}
    assert wrong == {}
