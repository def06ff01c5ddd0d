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


NB01_PARAMETERS = COMMON_PARAMETERS + """
strict_data = False  # True: leakage or conflicting labels stop the run instead of warning"""

NB02_PARAMETERS = COMMON_PARAMETERS + """
batch_size = 32  # the training batch size: padding waste is measured at it
seed = 42  # orders the batches of the padding-waste simulation"""

NB01 = [
    ("md", """
# 01 · Data inspection

Before a single gradient step, look at the data. Most fine-tuning failures are data failures:
a label that is 90% one class, sentences that appear in both train and test (so the test score
flatters the model), the same sentence under two labels, empty or garbled rows, or texts far
longer than the model will ever read.

This notebook loads the dataset named by `dataset` into train / validation / test splits and
checks all of that. Every number comes from `sftlib.data` and `sftlib.data_report`, so the same
facts are available headlessly: `sftlib data inspect --json` prints them as one JSON object, and
this notebook saves that object as `data_report.json` in the run folder.

**How the splits are made.** The default data (Rotten Tomatoes critic snippets) has no official
splits. `sftlib` first removes duplicate texts (after normalizing case, whitespace and
punctuation) so no sentence can sit in two splits, then ranks the rows of each label by a hash of
their text and cuts 80/10/10. Hashes, not a random shuffle: the split is identical on every
machine and every library version, and exactly stratified. Data that comes with its own splits
(a folder of files, a hub dataset) is kept as given, so leakage is possible there.
"""),
    ("params", None),
    ("code", SETUP + "\nfrom sftlib import data, data_report"),
    ("code", """
dd = data.load_from_config(cfg)
rows = data.rows_frame(dd)  # one row per example: split, text, label
pool = data.load_pool(cfg.dataset, cfg.text_column, cfg.label_column)  # None: given splits
pool = pool[0] if pool else None
dd
"""),
    ("md", """
## Split sizes
Rows per split and their share. Look for: a validation or test split too small to measure a
one-point difference (under ~1,000 rows, the standard error of accuracy is above 1 point).
"""),
    ("code", """
sizes = data.split_summary(rows)
report.table(sizes, "split_sizes")
sizes
"""),
    ("md", """
## Label balance
Count and share of each label (rows) per split (columns). Look for: a smallest class far below
the others (then accuracy alone flatters; watch macro-F1; a warning is printed under 10% of
train), and shares that differ between splits (they should not, with stratified splits).
"""),
    ("code", """
balance = data.label_balance(rows)
report.table(balance, "label_balance")
report.figure(data.balance_figure(rows), "label_balance")
smallest = data_report.smallest_label(rows)
print(f"smallest label in train: {smallest['label']!r}, {smallest['share']:.1%}")
if smallest["share"] < data_report.MIN_LABEL_SHARE:
    print("WARNING: a rare class; judge the model by macro-F1 and per-class recall")
balance
"""),
    ("md", """
## Text lengths
Length in characters and in words, per split and per label. The table's rows are
split x label x unit (label `(all)`: the whole split). Look for: very short texts (one or two
words carry little signal), a long tail the tokenizer will truncate (notebook 02 measures it in
tokens), and labels whose lengths differ enough that length alone predicts the label.
"""),
    ("code", """
lengths = data_report.length_summary(rows)
report.table(lengths, "length_summary")
report.figure(data.length_figure(rows, "words"), "length_histogram")
report.figure(data.length_figure(rows, "chars"), "length_histogram_chars")
lengths
"""),
    ("md", """
## Bad rows
Rows that are empty, whitespace-only, a single word, far longer than the rest (above the
far-out fence Q3 + 3·IQR of character lengths), or that hold control characters, invisible
format characters (zero-width space, BOM), undecodable bytes (U+FFFD) or mojibake (UTF-8 read
as Latin-1, e.g. `Ã©`). First table: flagged rows per issue (rows) and split (columns); second:
up to three flagged rows per issue (rows: flagged rows). Look for: damage that a tokenizer
will turn into noise.
"""),
    ("code", """
issues = data_report.row_issues(rows)
report.table(issues, "row_issues", index=False)
display(data_report.issue_counts(issues, rows))
issues.groupby("issue").head(3)
"""),
    ("md", """
## Duplicates within each split
Per split (rows): copies beyond the first of each repeated text, exactly and after
normalizing case, whitespace and punctuation. Duplicates weigh some examples more than others
in training and in the score. For a single-pool source, the printed line says what the loader
removed before splitting, and whether any removed copy carried another label. Last table: the
largest groups of repeated texts (rows: groups).
"""),
    ("code", """
duplicates = data_report.duplicate_counts(rows)
report.table(duplicates, "duplicates")
display(duplicates)
if pool is not None:
    print("before splitting:", data_report.pool_report(pool))
data_report.duplicate_groups(rows)
"""),
    ("md", """
## Leakage between splits
Per split pair (rows: `from` -> `to`): rows of the later split whose text also occurs in the
earlier one, exactly and after normalization, with their share. A leaked test row measures
memory, not generalization, so the test score flatters the model. Second table: leaked rows
with the text they match (rows: leaked rows). Both counts should be zero.
"""),
    ("code", """
leakage = data_report.leakage_counts(rows)
report.table(leakage, "leakage", index=False)
display(leakage)
data_report.leakage_examples(rows)
"""),
    ("md", """
## Conflicting labels
Texts that occur under more than one label, over all splits (rows: texts, with the count of
each label). At least one of the copies is mislabelled, or the task is ambiguous: either way
the model is asked to learn two answers to one input. The table should be empty.
"""),
    ("code", """
conflicts = data_report.conflicting_labels(rows)
report.table(conflicts, "conflicting_labels", index=False)
conflicts
"""),
    ("md", r"""
## The most distinctive words per label
For each label, the words most over-represented in it compared with all other labels: the
weighted log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi & Quinn 2008),
$z = \hat\delta / \sqrt{\hat\sigma^2}$ with
$\hat\delta = \log\frac{y_i + \alpha}{n_i + \alpha_0 - y_i - \alpha}
- \log\frac{y_j + \alpha}{n_j + \alpha_0 - y_j - \alpha}$ and
$\hat\sigma^2 \approx \frac{1}{y_i + \alpha} + \frac{1}{y_j + \alpha}$, where $y$ counts the
word in the label ($i$) and elsewhere ($j$), and the prior $\alpha$ is its count over the train
split. The table's rows are ranks, its columns labels. Look for: words that should not decide
the label (names, a source's boilerplate): shortcuts the model will take.
"""),
    ("code", """
words = data_report.distinctive_words(rows)
report.table(words, "distinctive_words", index=False)
report.figure(data_report.distinctive_words_figure(words), "distinctive_words")
words.pivot(index="rank", columns="label", values="word")
"""),
    ("md", """
## Browse rows per label
Read the data with your own eyes. In JupyterLab, pick a label and page through its training
rows (ordered by text hash: a fixed, unbiased order); below it, and alone in headless runs, a
static table of five rows per label (rows: examples).
"""),
    ("code", """
data_report.show_sample(rows, n=5)
"""),
    ("md", """
## Findings
Leakage and conflicting labels invalidate an evaluation, so they are *findings*: printed here
as warnings, saved in `metrics.json` and `data_report.json`, and with `strict_data = True` they
stop the run (the pipeline checks before any notebook runs, this cell checks again). Other
warnings (a small class, flagged rows) are worth a look but stop nothing.
"""),
    ("code", """
summary = data_report.inspect_data(dd, pool)  # the same object `sftlib data inspect` prints
report.json(summary, "data_report")
report.metrics("data", {"rows": sizes["rows"].to_dict(), "labels": data.label_names(dd),
                        "mean_words": float(data.length_stats(rows).loc["train", "mean"]),
                        "leaked_rows": int(leakage["normalized_rows"].sum()),
                        "conflicting_label_texts": len(conflicts),
                        "findings": summary["findings"], "warnings": summary["warnings"]})
for line in summary["findings"]:
    print("WARNING (finding):", line)
for line in summary["warnings"]:
    print("warning:", line)
data_report.check_findings(summary["findings"], cfg.strict_data)
"""),
]

NB02 = [
    ("md", """
# 02 · Tokenization

A transformer never sees words: it sees token ids from its tokenizer. Three choices made here
decide what the model can learn and what training costs.

**Truncation loses information.** Every example is cut at `max_length` tokens. Whatever lies
beyond is never seen, so a review whose verdict comes in its last sentence may lose its label's
evidence. We measure the share of examples truncated and the share of tokens lost.

**Padding costs compute.** A batch is a rectangle: shorter examples are filled with pad tokens
up to the longest one. The linear layers' cost grows with the padded length, attention's with
its square, and pad tokens are pure waste. The seed tutorial pads *every* example to 512
tokens; the default data averages under 30, so over 90% of its compute would be spent on
padding. `sftlib` pads each batch only to its own longest example (dynamic padding) and groups
similar lengths into the same batch; below we count what each choice costs on this data.

**Unknown tokens lose words.** A word the vocabulary cannot spell becomes the unknown token:
the model sees one id for all such words. And the more pieces a word is split into (fertility),
the longer the sequences. Every number here is also printed by `sftlib tokens inspect --json`
and saved as `token_report.json` in the run folder.
"""),
    ("params", None),
    ("code", SETUP + "\nimport pandas as pd\nfrom sftlib import data, tokens"),
    ("code", """
dd = data.load_from_config(cfg)
tokenizer = tokens.load_tokenizer(cfg.model)
about = tokens.tokenizer_summary(tokenizer)
print(f"tokenizer: {about['class']}, vocabulary {about['vocab_size']:,} tokens, model max length "
      f"{about['model_max_length']}, {about['special_tokens_per_example']} special tokens added")
pd.DataFrame(about["special_tokens"]).T.rename_axis("role")  # rows: special-token roles
"""),
    ("md", """
## Token lengths and truncation
Untruncated token counts (special tokens included) for every example. The table gives, per
split (rows), how many examples exceed `max_length` and the share of all tokens lost.
`max_length = "auto"` uses the suggestion: the smallest multiple of 8 covering 99.5% of train
(multiples of 8 suit GPU tensor cores); training resolves "auto" the same way.
"""),
    ("code", """
frame = tokens.token_frame(dd, tokenizer)  # rows: examples; tokens, words, unknown tokens
train_lengths = frame.loc[frame["split"] == "train", "tokens"]
suggested = tokens.suggest_max_length(train_lengths, model_max=about["model_max_length"])
max_len = suggested if cfg.max_length == "auto" else int(cfg.max_length)
truncation = tokens.truncation_stats(frame, max_len)
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
report.figure(tokens.length_cdf_figure(frame, max_len, suggested), "token_length_cdf");
"""),
    ("md", """
## Unknown tokens and fertility
First table, per split (rows): content tokens (special tokens left out), how many are the
unknown token, their share (the UNK rate) and the share of examples with at least one. Second:
the words most often turned into it (rows: words). Third, per split (rows): tokens per
whitespace word. Look for: an UNK rate above a fraction of a percent (emoji, another script,
accents a cased model lacks), and fertility well above 1.5 (a vocabulary built for other text).
"""),
    ("code", """
unknown = tokens.unk_stats(frame)
report.table(unknown, "unk")
display(unknown)
display(tokens.unk_words(dd, tokenizer, frame))
tokens.fertility(frame)
"""),
    ("md", """
## Padding waste
The same training examples (truncated at `max_length`) batched three ways at `batch_size`
(rows: schemes): padded to `max_length` (the tutorial), random batches each padded to their
longest example (dynamic padding), and length-grouped batches (the order `transformers` builds
for `group_by_length=True`: random megabatches of up to 50 batches, each sorted by length).
`pad_share` is the share of computed positions that are padding; `compute_ratio` the computed
positions relative to padding to `max_length` (the linear layers' cost), `attention_ratio` the
same for attention's length-squared cost. Counted exactly from the token lengths, not timed.
"""),
    ("code", """
waste = tokens.padding_waste(train_lengths, max_len, cfg.batch_size, seed=cfg.seed)
report.table(waste, "padding_waste")
report.figure(tokens.padding_figure(waste, cfg.batch_size), "padding_waste")
waste
"""),
    ("md", """
## What the tokenizer does to a few examples
Pieces side by side with their ids (rows: example x piece / id; columns: positions). `##`
marks a piece that continues a word; rare words split into several pieces.
"""),
    ("code", """
examples = dd["train"]["text"][:3]
for number, text in enumerate(examples):
    print(number, text)
tokens.pieces_view(tokenizer, examples, max_len)
"""),
    ("code", """
summary = tokens.inspect_tokens(dd, tokenizer, cfg.max_length, cfg.batch_size, seed=cfg.seed)
report.json(summary, "token_report")  # the same object `sftlib tokens inspect` prints
train_stats, schemes = truncation.loc["train"], summary["padding_waste"]["schemes"]
report.metrics("tokens", {"max_length": max_len, "suggested_max_length": suggested,
                          "mean_tokens_train": float(train_stats["mean_tokens"]),
                          "truncated_share_train": float(train_stats["truncated_share"]),
                          "unk_rate_train": float(unknown.loc["train", "unk_rate"]),
                          "pad_share": {k: v["pad_share"] for k, v in schemes.items()},
                          "compute_ratio": {k: v["compute_ratio"] for k, v in schemes.items()}});
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
    ("md", r"""
# 04 · Error analysis

A single accuracy number hides *which* examples fail and *whether the model knows when it is
failing*. This notebook runs the fine-tuned model (saved by notebook 03 in the run folder) over
the validation split and keeps one row per example: its text, gold and predicted label, the
probability of every label and the example's cross-entropy loss. Everything below is a function
of that table (`sftlib.analysis`), so each view is tested, and `sftlib analyze` gives the same
numbers on the command line:

1. scores per class and the confusion matrix;
2. ranking metrics (ROC-AUC, PR-AUC): is the model's *score* useful beyond its argmax?
3. calibration: does 90% confidence mean 90% correct? (and how temperature scaling fixes it);
4. the worst mistakes, and examples whose *gold label* looks wrong;
5. slices: accuracy by length, negation, contrast and punctuation, with confidence intervals;
6. the same split scored by the model before fine-tuning and by a majority-class baseline.
"""),
    ("params", None),
    ("code", SETUP + """
import pandas as pd

from sftlib import analysis, data
from sftlib.deploy import Predictor

pd.set_option("display.max_colwidth", 200)  # tables below show whole sentences"""),
    ("md", """
## Predictions
One row per example, for validation (what we analyze) and test (used only to check the
temperature fitted on validation). All validation predictions, with their loss and slice
columns, go into `tables/predictions_validation.csv`.
"""),
    ("code", """
dd = data.load_from_config(cfg)
names = data.label_names(dd)
predictor = Predictor(report.model_dir, batch_size=cfg.eval_batch_size)
frame = analysis.prediction_frame(predictor, dd["validation"])
test_frame = analysis.prediction_frame(predictor, dd["test"])
report.table(analysis.with_slices(frame), "predictions_validation", index=False)
print(f"{len(frame)} validation and {len(test_frame)} test examples; labels {names}")
frame.head()
"""),
    ("md", """
## Scores per class
**Precision** of a label: of the examples predicted as it, the share that truly are.
**Recall**: of the examples that truly are it, the share found. **F1** is their harmonic mean.
The **macro** average weighs every label equally, however rare; the weighted average weighs
them by support (rows: labels, then the averages).
"""),
    ("code", """
metrics = analysis.summary_metrics(frame)
report.metrics("analysis_validation", metrics)
per_class = analysis.per_class_report(frame)
report.table(per_class, "per_class_validation")
print("  ".join(f"{key} {value:.4f}" for key, value in metrics.items() if key != "examples"))
per_class.round(4)
"""),
    ("md", """
Look for: a label with much lower recall than the others (the model avoids predicting it),
and a macro-F1 well below accuracy (a rare label is being sacrificed).

## Confusion matrix
Rows are gold labels, columns predictions; left in examples, right as a share of each gold row
(the diagonal is per-class recall).
"""),
    ("code", """
report.figure(analysis.confusion_figure(frame), "confusion_matrix")
counts = analysis.confusion(frame)
report.table(counts, "confusion_validation")
counts
"""),
    ("md", """
Look for: an asymmetric off-diagonal, the model leaning towards one label. With more than two
labels the cells are easier to read as a ranked list of **most confused pairs** (rows: gold ->
predicted pairs, most frequent first; share of the gold row):
"""),
    ("code", """
confused = analysis.most_confused(frame)
report.table(confused, "most_confused_validation", index=False)
confused.head(10)
"""),
    ("md", r"""
## Ranking: ROC-AUC and PR-AUC
Accuracy only asks whether the top label is right. Ranking metrics ask whether the model's
*probability* orders examples well, which is what matters when you pick a threshold or review
the most likely positives first.

- **ROC curve**: for every threshold on $p(\text{label})$, the true-positive rate (recall)
  against the false-positive rate. **ROC-AUC** is the area under it: the probability that a
  random example of the label is scored above a random example of another label. 0.5 is chance.
- **PR curve**: precision against recall. **PR-AUC** (average precision,
  $\sum_n (R_n - R_{n-1}) P_n$) is what ROC-AUC hides when positives are rare: its chance level
  is the label's prevalence, not 0.5.

With two labels we score the second label (the positive class); with more, each label against
the rest (one-vs-rest), then the macro average. Rows of the table: labels.
"""),
    ("code", """
ranking = analysis.ranking_table(frame)
report.table(ranking, "ranking_validation")
report.figure(analysis.ranking_figure(frame), "ranking_curves")
ranking.round(4)
"""),
    ("md", r"""
Look for: a curve hugging the top-left (ROC) or top-right (PR) corner; a label whose PR-AUC is
close to its prevalence (the model ranks it no better than chance, whatever its ROC-AUC).

## Calibration: can the confidence be trusted?
A model is **calibrated** when, among the examples it predicts with confidence 0.8, 80% are
right. Fine-tuned transformers tend to be *overconfident*: trained to drive the loss to 0, they
push probabilities to the extremes. The **reliability diagram** bins examples by confidence
(the top probability) and plots each bin's accuracy against its mean confidence; a calibrated
model sits on the diagonal. The **expected calibration error** sums the gaps, weighted by how
many examples each of the $B$ bins holds:
$$\mathrm{ECE} = \sum_{b=1}^{B} \frac{n_b}{n}\,
  \bigl|\mathrm{acc}_b - \mathrm{conf}_b\bigr|.$$
Rows of the table: confidence bins.
"""),
    ("code", """
reliability = analysis.reliability_table(frame)
report.table(reliability, "reliability_validation")
reliability[reliability["examples"] > 0].round(3)
"""),
    ("md", r"""
## Temperature scaling
The simplest fix (Guo et al., 2017): divide the logits by one number $T$ before the softmax,
$p_k = \mathrm{softmax}(z / T)_k$. $T > 1$ softens overconfident probabilities, $T < 1$ sharpens;
the argmax, and so accuracy, never changes. $T$ is fitted to minimize the negative
log-likelihood (NLL) on **validation**, and judged on **test**, which played no part in
choosing it (rows: test probabilities before and after).
"""),
    ("code", """
temperature, effect = analysis.temperature_effect(frame, test_frame)
report.table(effect, "temperature_scaling_test")
scaled = analysis.apply_temperature(test_frame, temperature)
figure = analysis.reliability_figure({"test, as trained": test_frame,
                                      f"test, T = {temperature:.2f}": scaled})
report.figure(figure, "reliability_diagram")
report.metrics("calibration", {"temperature": temperature, "fitted_on": "validation",
                               **{f"test_{k}_before": v for k, v in effect.iloc[0].items()},
                               **{f"test_{k}_after": v for k, v in effect.iloc[1].items()}})
effect.round(4)
"""),
    ("md", """
Look for: points below the diagonal (overconfident) moving onto it after scaling, and the
test NLL and ECE falling. A fitted $T$ near 1 means the model was calibrated already; a test
ECE that rises after scaling means validation is too small to fit even one number reliably.

## Top losses
The wrong predictions with the highest loss, most confidently wrong first (rows: examples;
`probability` is the predicted label's, `p_gold` the gold label's). Read them: is the gold
label right? Is it negation, sarcasm, a contrast ("but")?
"""),
    ("code", """
worst = analysis.top_losses(frame, n=15)
report.table(worst, "top_losses_validation", index=False)
worst
"""),
    ("md", """
## Suspected label errors
Some top losses are the *data's* fault. Confident learning (Northcutt et al., 2021) flags an
example when the model gives another label at least the probability it typically gives that
label's own examples (its per-label threshold), ranked by the probability of the gold label.
This works because the model never trained on validation. Rows: suspects, most suspicious first;
with two labels they are the top of the top losses, filtered by the threshold.
"""),
    ("code", """
suspects = analysis.suspected_label_errors(frame)
report.table(suspects, "suspected_label_errors_validation", index=False)
print(f"{len(suspects)} suspects among {int((~frame['correct']).sum())} mistakes")
suspects.head(15)
"""),
    ("md", """
Look for: suspects whose gold label you, reading the text, would also reject. A few per hundred
examples is usual for crowd-labelled data; fixing them raises the ceiling of every model.

## Slices
Accuracy on subsets that are known to be hard: length quartiles (in words), texts with negation
(not, n't, no, never) or contrast (but, though, however), and with '!' or '?'. Each row gives the
count, the accuracy and its 95% **Wilson interval** (an interval for a share that stays sensible
for small counts and accuracies near 1); rows: slices.
"""),
    ("code", """
slices = analysis.slice_table(frame)
report.table(slices, "slices_validation")
report.figure(analysis.slice_figure(slices), "slices")
slices.round(3)
"""),
    ("md", """
Look for: slices whose interval lies entirely left of the overall accuracy (dashed line): a
real weakness, not noise. Overlapping intervals with a small count mean "not enough data to
tell". A slice with 0 or all examples (every TREC question has '?') says nothing.

## Against the model before fine-tuning and a majority-class baseline
The same split scored by the base encoder with the freshly initialized head fine-tuning started
from (same seed), and by always predicting the majority label of train with train's label
shares as probabilities (rows: models).
"""),
    ("code", """
base = analysis.pretrained_predictor(cfg, report.model_dir, names, cfg.eval_batch_size)
frames = {"fine-tuned": frame,
          "before fine-tuning": analysis.prediction_frame(base, dd["validation"]),
          "majority class": analysis.majority_frame(frame, dd["train"]["label"])}
comparison = analysis.compare_models(frames)
report.table(comparison, "baselines_validation")
comparison.round(4)
"""),
    ("md", """
Look for: the fine-tuned model far above both. Before fine-tuning, the head is random, so its
accuracy is near chance and its ROC-AUC near 0.5; the majority baseline's accuracy is the bar
that a useless model clears "for free" on imbalanced data.

## Error explorer
In JupyterLab, filter the predictions by gold label, predicted label and slice, sort by loss,
and read the full texts. Under papermill (`SFTLIB_HEADLESS=1`) widgets cannot keep their
state, so the same view shows as a static table of the top mistakes by loss.
"""),
    ("code", """
analysis.explorer(frame)
"""),
    ("md", """
Everything above, as one JSON file in the report (`analysis_validation.json`), the same shape
that `sftlib analyze --json` prints:
"""),
    ("code", """
summary = analysis.analysis_summary(frame, (frame, test_frame), frames)
report.json(summary, "analysis_validation")
print(analysis.summary_text({"split": "validation", **summary}))
"""),
]

NB05 = [
    ("md", """
# 05 · Deployment

The run's model folder is exported as a self-describing folder: weights, config with label
names, tokenizer, `labels.json` and the `run_config.json` it was trained with. It loads with
plain `transformers.pipeline("text-classification", ...)`, with `sftlib predict` on the command
line, or with `sftlib.deploy.Predictor`, which batches texts by length and returns every label's
probability. Then we make it cheaper to serve with dynamic int8 quantization and measure
what that costs and saves: size on disk, latency, throughput and accuracy, side by side.
"""),
    ("params", None),
    ("code", SETUP + "\nfrom sftlib import data, deploy"),
    ("code", """
export_dir = deploy.export(report.model_dir, report.dir / "export", replace=True)
sorted(p.name for p in export_dir.iterdir())
"""),
    ("md", """
Each artifact carries its own manifest: the label names and the full RunConfig it was trained
with (here the keys that describe the data and the model):
"""),
    ("code", """
import json

labels = json.loads((export_dir / "labels.json").read_text())
trained_with = json.loads((export_dir / "run_config.json").read_text())
print("labels:", labels)
{key: trained_with[key] for key in ("model", "dataset", "max_length", "epochs", "lr", "seed")}
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
    ("md", """
And from the command line: texts as arguments, or `--file` with one text a line; one JSON
object a line comes out (add `--int8` for the quantized model described below).
"""),
    ("code", """
import subprocess
import sys

command = [sys.executable, "-m", "sftlib", "predict", "--model", str(export_dir),
           *new_sentences[1:]]
print(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
"""),
    ("md", r"""
## Dynamic int8 quantization
Almost all of a transformer's compute is in its `Linear` layers: $y = Wx + b$ with $W$ in fp32,
4 bytes a weight. **Dynamic quantization** stores each $W$ as 8-bit integers with one scale
$s = \max|W| / 127$, so $W \approx s\,W_{int8}$, and at run time quantizes each batch's
activations $x$ the same way (that is the *dynamic* part: their scale is measured on the fly,
no calibration data needed). The product then runs on the CPU's integer units, and the result
is rescaled to fp32. Rounding each weight to one of 255 levels adds a small noise to every
logit: accuracy should barely move. What does not change: the embedding table (for MiniLM,
11.7 M of the 22.7 M parameters), LayerNorm and softmax stay fp32, so the file shrinks by far
less than 4x. It runs on the CPU only (PyTorch has no dynamic-int8 GPU kernels).
"""),
    ("code", """
dd = data.load_from_config(cfg)
validation = dd["validation"]
table = deploy.quantization_table(export_dir, validation["text"], validation["label"])
report.table(table, "quantization")
fp32, int8 = table.iloc[0], table.iloc[1]
report.metrics("deployment", {
    "fp32_size_mb": fp32["size_mb"], "int8_size_mb": int8["size_mb"],
    "int8_speedup_batch_1": fp32["ms_per_example_batch_1"] / int8["ms_per_example_batch_1"],
    "int8_speedup_batch_32": fp32["ms_per_example_batch_32"] / int8["ms_per_example_batch_32"],
    "fp32_accuracy": fp32["accuracy"], "int8_accuracy": int8["accuracy"],
    "int8_accuracy_change_points": 100 * (int8["accuracy"] - fp32["accuracy"])})
table.round(3)
"""),
    ("md", """
Rows: the fp32 model and its int8 copy, both on the CPU and measured in this one run (sizes in
MB of the saved state dict; latency in milliseconds per example; throughput in examples per
second). Look for: the int8 accuracy within 1 point of fp32 (on the default data, a model
trained 2 epochs scored 0.8391 in fp32 and 0.8359 in int8 on validation: -0.3 points), the
agreement with fp32 (predictions that changed sit near the decision boundary), and a speed-up
that is larger at batch 32, where matrix products dominate, than at batch 1, where per-call
overhead does. Timings on a shared machine are noisy: compare rows, not runs.

## Serving the quantized model
The quantized model is not saved: the export stays fp32 (portable; it loads anywhere), and int8
is applied when loading, which takes well under a second and gives the same weights every time:
"""),
    ("code", """
quantized = deploy.Predictor(export_dir, quantize=True)
pd.DataFrame([{"text": r["text"], "int8 label": r["label"], "int8 score": r["score"],
               "fp32 score": predictor.predict([r["text"]])[0]["score"]}
              for r in quantized.predict(new_sentences)])
"""),
]

NOTEBOOKS = {
    "01_data_inspection": notebook(NB01, NB01_PARAMETERS),
    "02_tokenization": notebook(NB02, NB02_PARAMETERS),
    "03_fine_tuning": notebook(NB03, TRAIN_PARAMETERS),
    "04_error_analysis": notebook(NB04),
    "05_deployment": notebook(NB05),
}

if __name__ == "__main__":
    for name, nb in NOTEBOOKS.items():
        nbformat.write(nb, ROOT / "notebooks" / f"{name}.ipynb")
        print("wrote", name)
