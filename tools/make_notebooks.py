"""Writes notebooks/*.ipynb from the cell lists below (outputs empty).

The notebooks are the product; this script only keeps their shared parameter block in
one place. Edit here and rerun `python tools/make_notebooks.py`, or edit a notebook in
JupyterLab and keep this file in step (tests/test_notebooks.py checks they agree).
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

COMMON_PARAMETERS = '''# RunConfig fields; papermill overrides them (all keys: sftlib/config.py)
task = "classification"
model = "minilm-l6"  # asset name, hub id or local folder
dataset = "rotten-tomatoes"  # asset name, local CSV/JSONL/Parquet file or folder, hub id
max_length = 128  # or "auto": the smallest multiple of 8 covering 99.5% of train
train_subset = None  # e.g. 500 for a quick look
eval_subset = None
output_dir = "reports/interactive"  # relative to the project root'''

SETUP = '''from sftlib.config import RunConfig
from sftlib.report import Report

cfg = RunConfig.from_namespace(globals())  # validates every key before any work
report = Report.for_config(cfg)
print(f"writing to {report.dir}")'''


def notebook(cells, parameters=COMMON_PARAMETERS):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    built = []
    for index, (kind, source) in enumerate(cells):
        if kind == "params":
            cell = new_code_cell(parameters)
            cell.metadata["tags"] = ["parameters"]
        elif kind == "md":
            cell = new_markdown_cell(source.strip("\n"))
        else:
            cell = new_code_cell(source.strip("\n"))
        cell.id = f"c{index:02d}"
        built.append(cell)
    nb.cells = built
    return nb


NB01 = [
    ("md", """
# 01 · Data inspection

Before a single gradient step, look at the data. Most fine-tuning failures are data failures:
a label that is 90% one class, sentences that appear in both train and test (so the test score
flatters the model), empty rows, or texts far longer than the model will ever read.

This notebook loads the dataset named by `dataset` into train / validation / test splits and
shows their sizes, the label balance and the length of the texts. Everything it computes comes
from `sftlib.data`, so the same numbers are available headlessly.

**How the splits are made.** The default data (Rotten Tomatoes critic snippets) has no official
splits. `sftlib` first removes duplicate texts (after normalizing case, whitespace and
punctuation) so no sentence can sit in two splits, then ranks the rows of each label by a hash of
their text and cuts 80/10/10. Hashes, not a random shuffle: the split is identical on every
machine and every library version, and exactly stratified.
"""),
    ("params", None),
    ("code", SETUP + "\nfrom sftlib import data"),
    ("code", """
dd = data.load_from_config(cfg)
dd
"""),
    ("md", """
## Split sizes
Rows per split and their share. Look for: a validation or test split too small to measure a
one-point difference (under ~1,000 rows, the standard error of accuracy is above 1 point).
"""),
    ("code", """
sizes = data.split_summary(dd)
report.table(sizes, "split_sizes")
sizes
"""),
    ("md", """
## Label balance
Count and share of each label (rows) per split (columns). Look for: a majority class far above
50% (then accuracy alone flatters; watch macro-F1), and shares that differ between splits (they
should not, with stratified splits).
"""),
    ("code", """
balance = data.label_balance(dd)
report.table(balance, "label_balance")
report.figure(data.balance_figure(dd), "label_balance")
balance
"""),
    ("md", """
## Text lengths
Words per example, per split and per label. Look for: very short texts (one or two words carry
little signal), a long tail that the tokenizer will truncate (notebook 02 measures it in tokens),
and labels whose lengths differ enough that length alone predicts the label.
"""),
    ("code", """
stats = data.length_stats(dd)
report.table(stats, "length_stats")
report.figure(data.length_figure(dd), "length_histogram")
stats
"""),
    ("md", """
## A sample of rows
A few training rows per label (rows: examples), to read with your own eyes.
"""),
    ("code", """
names = data.label_names(dd)
sample = dd["train"].to_pandas().groupby("label").head(4)
sample.assign(label=sample["label"].map(dict(enumerate(names)))).sort_values("label")
"""),
    ("code", """
report.metrics("data", {"rows": sizes["rows"].to_dict(), "labels": names,
                        "mean_words": float(stats.loc["train", "mean"])})
"""),
]

NB02 = [
    ("md", """
# 02 · Tokenization

A transformer never sees words: it sees token ids from its tokenizer. Two choices made here
decide what the model can learn and what training costs.

**Truncation loses information.** Every example is cut at `max_length` tokens. Whatever lies
beyond is never seen, so a review whose verdict comes in its last sentence may lose its label's
evidence. We measure the share of examples truncated and the share of tokens lost.

**Padding costs compute.** A batch is a rectangle: shorter examples are filled with pad tokens
up to the longest one. Attention costs grow with the padded length, and pad tokens are pure
waste. The seed tutorial pads *every* example to 512 tokens; the default data averages under 30,
so over 90% of its compute would be spent on padding. `sftlib` pads each batch only to its own
longest example (dynamic padding) and groups similar lengths into the same batch.
"""),
    ("params", None),
    ("code", SETUP + "\nfrom sftlib import data, tokens"),
    ("code", """
dd = data.load_from_config(cfg)
tokenizer = tokens.load_tokenizer(cfg.model)
print(f"tokenizer: {type(tokenizer).__name__}, vocabulary {len(tokenizer):,} tokens, "
      f"model max length {tokens.model_max_length(tokenizer)}")
print("special tokens:", tokenizer.special_tokens_map)
"""),
    ("md", """
## Token lengths and truncation
Untruncated token counts (special tokens included) for every example. The table gives, per
split (rows), how many examples exceed `max_length` and the share of all tokens lost.
"""),
    ("code", """
lengths = tokens.token_lengths(dd, tokenizer)
suggested = tokens.suggest_max_length(lengths.loc[lengths["split"] == "train", "tokens"],
                                      model_max=tokens.model_max_length(tokenizer))
max_len = suggested if cfg.max_length == "auto" else int(cfg.max_length)
truncation = tokens.truncation_stats(lengths, max_len)
report.table(truncation, "truncation")
print(f"max_length in use: {max_len}; suggested (covers 99.5% of train): {suggested}")
truncation
"""),
    ("md", """
The CDF shows, for each length, the share of examples at or below it. Where the red line (the
max length in use) crosses the curve is the share kept whole. Look for: a red line far right of
where the curve reaches 1.0 (wasted capacity if you pad to it) or left of it (truncation).
"""),
    ("code", """
report.figure(tokens.length_cdf_figure(lengths, max_len, suggested), "token_length_cdf")
"""),
    ("md", """
## What the tokenizer does to one example
Pieces side by side with their ids (columns: positions). `##` marks a piece that continues a
word; rare words split into several pieces.
"""),
    ("code", """
example = max(dd["train"]["text"][:200], key=len)
print(example)
tokens.token_pieces(tokenizer, example, max_len).T
"""),
    ("code", """
train_stats = truncation.loc["train"]
report.metrics("tokens", {"max_length": max_len, "suggested_max_length": suggested,
                          "mean_tokens_train": float(train_stats["mean_tokens"]),
                          "truncated_share_train": float(train_stats["truncated_share"])})
"""),
]

TRAIN_PARAMETERS = COMMON_PARAMETERS + '''
epochs = 2.0
max_steps = -1  # > 0 overrides epochs (smoke runs)
batch_size = 32
lr = 1e-4
schedule = "linear"  # linear | cosine | exponential | constant | hf:<name>
warmup_ratio = 0.06
final_lr = 0.0
precision = "auto"  # bf16 on GPUs that support it, fp32 on CPU'''

NB03 = [
    ("md", r"""
# 03 · Fine-tuning

We put a fresh classification head on a pretrained encoder and train the whole network on our
labelled sentences with `transformers.Trainer`. A GPU is used automatically when there is one
(bf16 where it supports it); otherwise the CPU.

## The loss: cross-entropy
For an example with gold label $y$, the model outputs one logit $z_k$ per class; softmax turns
them into probabilities $p_k = e^{z_k} / \sum_j e^{z_j}$. The loss is the negative log
probability of the gold class,
$$\mathcal{L} = -\log p_y = -z_y + \log \sum_j e^{z_j},$$
averaged over the batch. It is 0 when the model puts all probability on the right class and
grows without bound as it becomes confidently wrong. With two balanced classes, a model that
knows nothing scores $\log 2 \approx 0.693$: the first point of the loss curve should sit there.
"""),
    ("params", None),
    ("code", SETUP + "\nfrom sftlib import schedules, train"),
    ("md", r"""
## Learning-rate schedules
The optimizer (AdamW, weight decay not applied to biases and LayerNorm weights) takes steps of
size set by the learning rate $\eta_t$ at step $t$ of $T$, after an optional linear warmup from
0 (it keeps the randomly initialized head from wrecking the pretrained weights in the first steps):

- **linear decay** $\;\eta_t = \eta_0 - \frac{t}{T}(\eta_0 - \eta_f)$
- **cosine** $\;\eta_t = \eta_f + \tfrac12(\eta_0 - \eta_f)\left(1 + \cos\frac{t\pi}{T}\right)$:
  stays high longer, then lands softly
- **exponential** $\;\eta_t = \eta_0\,\gamma^t$: fast early decay; $\gamma$ given, or derived
  so that $\eta_T = \eta_f$

They are plain functions of the step (`sftlib.schedules`), so we can plot them before training.
The bold curve is the one this run uses.
"""),
    ("code", """
run = train.prepare_training(cfg, report.dir)
print(run.hardware.describe(), f"| max_length {run.max_length} | {run.total_steps} optimizer steps")
report.figure(schedules.schedule_figure(cfg, run.total_steps), "lr_schedules")
"""),
    ("md", """
## Train, watching the curves
The figure below redraws in place while training runs (at most every `plot_interval_s`
seconds). Look for: the training loss starting near $\\log 2$ and falling; the learning rate
following the curve above; validation loss rising while training loss keeps falling
(overfitting: the best checkpoint by validation accuracy is kept); a gradient norm that
spikes (clipping at 1.0 protects the run). Every logged point is also in `metrics.jsonl`.
"""),
    ("code", """
output = run.trainer.train()
summary = train.training_summary(run, output)
report.metrics("training", summary)
print(f"{summary['samples_per_s']} samples/s; plotting took "
      f"{summary['plot_share_of_training']:.1%} of training time")
"""),
    ("md", """
## Evaluate the kept model
Loss, accuracy and macro-F1 (rows: split) of the best checkpoint on validation (used to pick
it) and on test (never used for any choice, so the honest estimate).
"""),
    ("code", """
import pandas as pd

scores = train.evaluate_splits(run)
for split, values in scores.items():
    report.metrics(split, values)
train.save_final(run.trainer, cfg, report.model_dir)
pd.DataFrame(scores).T
"""),
]

NB04 = [
    ("md", """
# 04 · Error analysis

A single accuracy number hides *which* examples fail. Here we run the fine-tuned model
(saved by notebook 03 in the run folder) over the validation split, keep one row per example
with its probabilities and its loss, and look at the confusion matrix and at the examples the
model got most confidently wrong: they are where label noise, sarcasm and negation live.
"""),
    ("params", None),
    ("code", SETUP + "\nfrom sftlib import analysis, data\nfrom sftlib.deploy import Predictor"),
    ("code", """
dd = data.load_from_config(cfg)
names = data.label_names(dd)
predictor = Predictor(report.model_dir, batch_size=cfg.eval_batch_size)
frame = analysis.prediction_frame(predictor, dd["validation"])
report.table(frame, "predictions_validation", index=False)
report.metrics("analysis_validation", analysis.summary_metrics(frame))
"""),
    ("md", """
## Confusion matrix
Rows are gold labels, columns predictions; left in examples, right as a share of each gold row
(the diagonal is per-class recall). Look for: an asymmetric off-diagonal, the model leaning
towards one class.
"""),
    ("code", """
report.figure(analysis.confusion_figure(frame, names), "confusion_matrix")
analysis.confusion(frame, names)
"""),
    ("md", """
## Misclassified validation examples
The wrong predictions with the highest loss (rows: examples, most confidently wrong first).
Read them: is the gold label right? Is it negation, sarcasm, a contrast ("but")?
"""),
    ("code", """
wrong = analysis.misclassified(frame, n=15)
report.table(wrong, "misclassified_validation", index=False)
wrong
"""),
]

NB05 = [
    ("md", """
# 05 · Deployment

The run's model folder is exported as a self-describing folder: weights, config with label
names, tokenizer, `labels.json` and the `run_config.json` it was trained with. It loads with
plain `transformers.pipeline("text-classification", ...)`, or with `sftlib.deploy.Predictor`,
which batches texts by length and returns every label's probability.
"""),
    ("params", None),
    ("code", SETUP + "\nfrom sftlib import deploy"),
    ("code", """
export_dir = deploy.export(report.model_dir, report.dir / "export", replace=True)
sorted(p.name for p in export_dir.iterdir())
"""),
    ("md", """
## Predict new sentences
Label and probability of each class for sentences the model has never seen (rows: sentences).
"""),
    ("code", """
import pandas as pd

predictor = deploy.Predictor(export_dir)
new_sentences = ["A gorgeous, heartfelt film with a terrific cast.",
                 "Two hours of my life I will never get back.",
                 "The plot is thin, but the performances make it worth seeing."]
pd.DataFrame([{"text": r["text"], "label": r["label"], **r["probabilities"]}
              for r in predictor.predict(new_sentences)])
"""),
    ("md", """
The same folder works with the plain `transformers` pipeline, with no `sftlib` code involved:
"""),
    ("code", """
from transformers import pipeline

classifier = pipeline("text-classification", model=str(export_dir), top_k=None)
classifier(new_sentences[:1])
"""),
]

NOTEBOOKS = {
    "01_data_inspection": notebook(NB01),
    "02_tokenization": notebook(NB02),
    "03_fine_tuning": notebook(NB03, TRAIN_PARAMETERS),
    "04_error_analysis": notebook(NB04),
    "05_deployment": notebook(NB05),
}

if __name__ == "__main__":
    for name, nb in NOTEBOOKS.items():
        nbformat.write(nb, ROOT / "notebooks" / f"{name}.ipynb")
        print("wrote", name)
