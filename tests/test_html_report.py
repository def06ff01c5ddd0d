"""What a reader sees: readable tables, self-contained HTML pages, a landing page per run,
minimal papermill parameters, progress lines."""

import json
from pathlib import Path

import nbformat
import pandas as pd
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from sftlib import html_report, pipeline, tables
from sftlib.config import RunConfig

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_readable_tables_are_whole_left_aligned_escaped_and_say_none_found():
    long_text = "a sentence well over forty-five characters long, kept whole " * 2
    frame = pd.DataFrame({"text": [long_text, HOSTILE], "score": [0.123456789, 26.983922]})
    page = tables.readable_html(frame)
    assert long_text.strip() in page and "text-align: left" in page
    assert "<script>" not in page and "&lt;script&gt;" in page and "onerror=alert" not in \
        page.replace("&lt;img src=x onerror=alert(1)&gt;", "")
    assert "26.9839" in page and "26.983922" not in page and "0.1235" in page
    empty = tables.readable_html(frame.iloc[0:0], "none found: no mistakes")
    assert "none found: no mistakes" in empty and "<table" not in empty


def _notebook(tmp_path: Path) -> Path:
    nb = new_notebook(cells=[new_markdown_cell("The loss $\\mathcal{L} = -\\log p_y$ and\n"
                                               "$$\\eta_t = \\eta_0 \\gamma^t$$"),
                             new_code_cell("1 + 1")])
    path = tmp_path / "01_demo.ipynb"
    nbformat.write(nb, path)
    return path


def test_exported_page_is_self_contained(tmp_path):
    page = html_report.export_html(_notebook(tmp_path), tmp_path / "html" / "01.html")
    text = page.read_text()
    assert "cdnjs" not in text and 'src="http' not in text and "MathJax.Hub" not in text
    assert "window.MathJax" in text and len(text) > 1_000_000  # MathJax inlined
    assert text.count("</script>") == text.count("<script")  # no early end inside MathJax
    assert "ignoreHtmlClass: 'tex2jax_ignore|jp-OutputArea-output'" in text


def test_offline_html_gives_images_alt_text():
    page = ('<html><head></head><body><img src="data:," '
            'alt="No description has been provided for this image"></body></html>')
    assert 'alt="figure from notebook 03"' in html_report.offline_html(page, "figure from "
                                                                              "notebook 03")


def test_index_page_has_headline_metrics_links_and_escapes(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "training.png").write_bytes(b"\x89PNG")
    manifest = {"run_id": "r1", "status": "ok", "config": {"task": "classification",
                                                          "model": "minilm-l6",
                                                          "dataset": HOSTILE},
                "notebooks": {"01_data_inspection": {"status": "ok", "seconds": 3.2}},
                "metrics": {"validation": {"accuracy": 0.84375, "f1": 0.8}}}
    page = html_report.write_index(tmp_path, manifest).read_text()
    assert 'href="html/01_data_inspection.html"' in page and "validation accuracy" in page
    assert "0.8438" in page and 'src="figures/training.png"' in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_papermill_gets_only_what_the_run_changed(tmp_path):
    source = tmp_path / "03.ipynb"
    cell = new_code_cell('model = "minilm-l6"\nlr = 1e-4\nepochs = 2.0\noutput_dir = "x"')
    cell.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[cell]), source)
    cfg = RunConfig(lr=3e-5, output_dir=str(tmp_path / "reports" / "run-1"))
    params = pipeline.notebook_parameters(cfg, source, tmp_path)
    assert params == {"lr": 3e-5, "output_dir": "reports/run-1"}
    instruction = RunConfig(task="instruction", model="smollm2-135m-instruct",
                            dataset="alpaca-demo", metric_for_best="loss", output_dir="/elsewhere")
    params = pipeline.notebook_parameters(instruction, source, tmp_path)
    assert "task" not in params and params["metric_for_best"] == "loss"
    assert params["output_dir"] == "/elsewhere" and "lora" not in params


def test_progress_lines_say_step_total_elapsed_and_time_left(tmp_path):
    log = tmp_path / "metrics.jsonl"
    assert pipeline.last_step(log) is None
    log.write_text(json.dumps({"step": 10, "max_steps": 40, "loss": 0.6}) + "\n{\"step\": 1")
    assert pipeline.last_step(log) == (10, 40)  # the half-written last line is skipped
    line = pipeline.progress_line("03_fine_tuning", 65.0, (10, 40))
    assert line == "[run] 03_fine_tuning: step 10/40 (25%), 1:05 elapsed, about 3:15 left"
    assert pipeline.progress_line("04_error_analysis", 5.0, None) == \
        "[run] 04_error_analysis: 0:05 elapsed"
