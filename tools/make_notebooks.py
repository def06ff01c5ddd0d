"""Writes notebooks/*.ipynb from the cell lists below (outputs empty).

The notebooks are the product; this script only keeps their shared parameter block in
one place. Edit here and rerun `python tools/make_notebooks.py`, or edit a notebook in
JupyterLab and keep this file in step (tests/test_notebooks.py checks they agree).
"""

import ast
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

COMMON_PARAMETERS = '''# RunConfig fields; papermill overrides them (all keys: sftlib/config.py)
task = "classification"  # or "instruction" (with the settings of configs/instruction.yaml)
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


def guard(task, source):
    """A code cell that runs only for `task`. The cell's last expression, displayed by
    Jupyter at top level, is passed to display() explicitly inside the `if`."""
    lines = source.strip("\n").splitlines()
    last = ast.parse("\n".join(lines)).body[-1]
    shown = isinstance(last, ast.Expr) and not lines[last.end_lineno - 1].rstrip().endswith(";")
    if shown and not (isinstance(last.value, ast.Call) and getattr(last.value.func, "id", "")
                      in ("print", "display")):
        end, start = last.end_lineno - 1, last.lineno - 1
        lines[end] = lines[end][:last.end_col_offset] + ")" + lines[end][last.end_col_offset:]
        lines[start] = lines[start][:last.col_offset] + "display(" + lines[start][last.col_offset:]
    return f'if cfg.task == "{task}":\n' + "\n".join("    " + line if line.strip() else line
                                                     for line in lines)


def only_for(task, cells):
    """The cells with every code cell guarded by `if cfg.task == task`."""
    return [(kind, guard(task, source) if kind == "code" else source) for kind, source in cells]


def split_after_setup(cells):
    """(title, parameters and setup cells; the rest): the head every task shares."""
    setup = next(i for i, (kind, source) in enumerate(cells)
                 if kind == "code" and source and source.startswith(SETUP))
    return cells[:setup + 1], cells[setup + 1:]


def task_sections(cells, instruction_cells):
    """A notebook whose body differs by task: the shared head, the instruction section,
    then the classification section (each code cell guarded by the task it belongs to)."""
    head, classification = split_after_setup(cells)
    return (head + only_for("instruction", instruction_cells)
            + [("md", CLASSIFICATION_SECTION)] + only_for("classification", classification))


CLASSIFICATION_SECTION = """
# Classification task
The sections below analyze a classifier (`task = "classification"`); for the instruction task
their cells do nothing.
"""

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
    ("code", SETUP + "\nfrom sftlib import data, data_report, instruct"),
    ("code", """
dd = data.load_from_config(cfg)
rows = data.rows_frame(dd)  # one row per example: split, text, label
pool = data.load_pool_from_config(cfg)  # the rows before splitting; None: given splits
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
    *only_for("classification", [("code", """
balance = data.label_balance(rows)
report.table(balance, "label_balance")
report.figure(data.balance_figure(rows), "label_balance")
smallest = data_report.smallest_label(rows)
print(f"smallest label in train: {smallest['label']!r}, {smallest['share']:.1%}")
if smallest["share"] < data_report.MIN_LABEL_SHARE:
    print("WARNING: a rare class; judge the model by macro-F1 and per-class recall")
balance
""")]),
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
## Prompt and response lengths (instruction task)
Instruction data is a prompt and a response, and their lengths matter differently. The prompt
(with the system text and the template's markup) is read but never trained on: it costs compute.
The response is what the model learns to write: whatever of it lies beyond `max_length` is never
learned, and an example whose response is cut off entirely teaches nothing (notebook 02 counts
them in tokens). Left: prompt lengths, right: response lengths, in words, per split; table rows:
split x part. Look for: responses much longer than prompts (the usual case: the tail decides
`max_length`), and one or two splits with a different shape (the hash split should prevent it).
"""),
    *only_for("instruction", [("code", """
lengths_pr = instruct.prompt_response_lengths(dd)
summary_pr = instruct.prompt_response_summary(lengths_pr)
report.table(summary_pr, "prompt_response_lengths")
report.figure(instruct.prompt_response_figure(lengths_pr), "prompt_response_lengths")
summary_pr
""")]),
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
    *only_for("classification", [("code", """
words = data_report.distinctive_words(rows)
report.table(words, "distinctive_words", index=False)
report.figure(data_report.distinctive_words_figure(words), "distinctive_words")
words.pivot(index="rank", columns="label", values="word")
""")]),
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
    ("code", SETUP + "\nimport pandas as pd\nfrom sftlib import data, instruct, tokens"),
    ("code", """
dd = data.load_from_config(cfg)
tokenizer = tokens.load_tokenizer(cfg.model)
about = tokens.tokenizer_summary(tokenizer)
print(f"tokenizer: {about['class']}, vocabulary {about['vocab_size']:,} tokens, model max length "
      f"{about['model_max_length']}, {about['special_tokens_per_example']} special tokens added")
pd.DataFrame(about["special_tokens"]).T.rename_axis("role")  # rows: special-token roles
"""),
    ("md", """
## The chat template (instruction task)
A chat model reads conversations in the exact markup it was trained with: who speaks, where a
turn ends. The tokenizer carries that markup as a Jinja *chat template*. `sftlib` uses the
tokenizer's own template; a tokenizer without one gets sftlib's **fallback template**: ChatML
turns (`<|im_start|>role`, a newline, the content) closed by the tokenizer's own
end-of-sequence token, so no new embeddings are needed (`chat_template = "fallback"` forces
it). From here on, `text` is the rendered conversation: every statistic below counts what the
model reads, markup included.
"""),
    *only_for("instruction", [("code", """
template = instruct.prepare_tokenizer(tokenizer, cfg.chat_template)
print("chat template:", "the tokenizer's own" if template == "tokenizer" else "sftlib fallback")
print(tokenizer.chat_template)
dd = instruct.render_text(dd, tokenizer)
print("--- the first training example, rendered ---")
print(dd["train"][0]["text"])
""")]),
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
    ("md", """
## The loss mask: which tokens are trained (instruction task)
Fine-tuning a chat model should teach it to *answer*, not to write prompts. So every token gets
a label: the next-token target where the loss applies, and -100 (which PyTorch's cross-entropy
skips) everywhere else. Only the assistant's response is trained, together with the
end-of-turn token that closes it (`<|im_end|>` for SmolLM2): that is how the model learns to
stop. The system text, the user's prompt and the template's markup, including the newline
after the end-of-turn token, are read but not trained. Below, two training examples token by
token: **green** tokens are in the loss, grey ones have label -100 (hover for position, id and
label). Look for: the whole answer green, its end-of-turn token green, nothing else green.
"""),
    *only_for("instruction", [("code", """
from IPython.display import HTML

encoded = instruct.encode_splits(dd, tokenizer, max_len)
for example in encoded["train"].select(range(2)):
    display(HTML(instruct.mask_html(example, tokenizer)))
""")]),
    ("md", """
## Truncation of prompt and response, separately (instruction task)
Per split (rows): the share of examples whose prompt loses tokens at `max_length`, the share
whose response does, the examples whose response is lost **entirely**, and the share of prompt
and response tokens lost. Sequences are cut at the end, so the response goes first. An example
without a single response token left has all labels -100: it would cost compute and teach
nothing, so training drops it (`truncated_responses = "drop"`, counted and printed before
training) or refuses to start (`"error"`). Look for: a response truncation share you can
live with; if not, raise `max_length` (the CDF above shows what it covers).
"""),
    *only_for("instruction", [("code", """
pr_truncation = instruct.truncation_table(encoded)
report.table(pr_truncation, "prompt_response_truncation")
report.metrics("instruction_tokens", {"max_length": max_len, "chat_template": template,
               **pr_truncation.loc["train"].to_dict()})
lost = int(pr_truncation["response_lost_entirely"].sum())
print(f"{lost} example(s) lose their whole response at max_length {max_len}; "
      f"truncated_responses={cfg.truncated_responses!r}: training "
      f"{'drops them' if cfg.truncated_responses == 'drop' else 'stops if there are any'}")
pr_truncation
""")]),
    ("md", """
## Packing instead of padding (instruction task)
Padding fills short examples with pad tokens; **packing** fills a row of `max_length` positions
with several whole examples instead. Each example's position ids restart at 0, and transformers
turns those restarts into a block-diagonal causal mask, so no token attends to another example
and none is trained to predict the next example's first token (its label is -100). Below: how
many examples share a row and the share of positions that hold real tokens, against the
length-grouped padding above. `packing = True` trains this way; `benchmarks/bench_packing.py`
measures the speed-up.
"""),
    *only_for("instruction", [("code", """
packed = instruct.pack_dataset(encoded["train"], max_len)
packing = instruct.packing_summary(encoded["train"], packed, max_len)
report.metrics("packing", packing)
print(f"length-grouped padding: {1 - waste.loc['length_grouped', 'pad_share']:.1%} real tokens")
packing
""")]),
]

TRAIN_PARAMETERS = COMMON_PARAMETERS + '''
epochs = 2.0
max_steps = -1  # > 0 overrides epochs (smoke runs)
batch_size = 32
lr = 1e-4
schedule = "linear"  # linear | cosine | exponential | constant | hf:<name>
warmup_ratio = 0.06
final_lr = 0.0
precision = "auto"  # bf16 autocast on GPUs and AMX / AVX512-BF16 CPUs, else fp32'''

NB03 = [
    ("md", r"""
# 03 · Fine-tuning

We put a fresh classification head on a pretrained encoder and train the whole network on our
labelled sentences with `transformers.Trainer`. A GPU is used automatically when there is one,
otherwise the CPU; both compute in bf16 autocast (weights stay fp32) where the hardware has
bf16 units (most GPUs; CPUs with AMX or AVX512-BF16), else in fp32.

## The loss: cross-entropy
For an example with gold label $y$, the model outputs one logit $z_k$ per class; softmax turns
them into probabilities $p_k = e^{z_k} / \sum_j e^{z_j}$. The loss is the negative log
probability of the gold class,
$$\mathcal{L} = -\log p_y = -z_y + \log \sum_j e^{z_j},$$
averaged over the batch. It is 0 when the model puts all probability on the right class and
grows without bound as it becomes confidently wrong. With two balanced classes, a model that
knows nothing scores $\log 2 \approx 0.693$: the first point of the loss curve should sit there.

**Instruction task.** A causal language model predicts every next token. With labels -100 on
the prompt (notebook 02), the loss is the mean over the $N$ response tokens of
$-\log p(x_t \mid x_{<t})$, and its exponential, the **perplexity** $e^{\mathcal{L}}$, is the
number of equally likely tokens the model is effectively choosing among. A pretrained chat
model starts far below $\log(\text{vocabulary size})$: it already answers; fine-tuning adapts
its answers to the data's style. With `lora = True` only low-rank adapters train (peft): the
printed share says how few parameters that is.
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
    ("md", r"""
## Before training: the starting point
The same evaluation as after training, on validation, before the first step: the baseline the
run must beat (classification: a fresh head near $\log 2$ loss and chance accuracy; instruction:
the pretrained chat model's loss and perplexity on the reference answers).
"""),
    ("code", """
before = train.evaluate_splits(run, ("validation",))["validation"]
report.metrics("before_training", before)
before
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
train.save_final(run.trainer, cfg, report.model_dir)  # LoRA: adapters merged into the weights
print(f"validation loss {before['loss']:.4f} before, {scores['validation']['loss']:.4f} after")
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
4 bytes a weight. **Dynamic quantization** stores each $W$ as 8-bit integers with one scale per
output row, $s_i = \max_j|W_{ij}| / 127$, so $W_{ij} \approx s_i\,W^{int8}_{ij}$ (one scale for
the whole matrix cost this model 1.9 accuracy points, per row 0.4), and at run time quantizes
each batch's activations $x$ (that is the *dynamic* part: their scale is measured on the fly, no
calibration data needed). The product then runs on the CPU's integer units, and the result is
rescaled to fp32. Rounding each weight to one of 255 levels adds a small noise to every logit:
accuracy should barely move. What does not change: the embedding table (for MiniLM, 11.7 M of
the 22.7 M parameters), LayerNorm and softmax stay fp32, so the file shrinks by far less than
4x. It runs on the CPU only (PyTorch has no dynamic-int8 GPU kernels).
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
second). Look for: the int8 accuracy within 1 point of fp32 (on the default data, the default
run scored 0.8438 in fp32 and 0.8399 in int8 on validation: -0.4 points), the agreement with
fp32 (predictions that changed sit near the decision boundary), and a speed-up at both batch
sizes (here 1.7x at batch 1 and 1.5x at batch 32). Timings on a shared machine are noisy:
compare rows, not runs.

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

NB04_INSTRUCTION = [
    ("md", """
# Instruction task: generations next to the references
For `task = "instruction"`, error analysis means reading what the model writes. We take the
first `eval_generations` validation prompts (in hash order: a fixed, unbiased sample), let the
model answer greedily before fine-tuning (`model`) and after (the run's `model/` folder), and
set both next to the reference answer.

Two overlap scores against the reference, over lower-cased words: **token F1**, the harmonic
mean of the share of generated words found in the reference (precision) and of reference words
found in the generation (recall); and **ROUGE-L**, the same with the longest common
*subsequence*, so word order counts. Both reward wording, not correctness: a right answer in
other words scores low, a fluent wrong one may score high. Read the table, not only the means.
"""),
    ("code", """
from sftlib import generation

dd = data.load_from_config(cfg)
generators = {"before": generation.ChatGenerator(cfg.model, chat_template=cfg.chat_template),
              "after": generation.ChatGenerator(report.model_dir)}
generations = generation.generation_frame(generators, dd["validation"], cfg.eval_generations,
                                          cfg.max_new_tokens)
report.table(generations, "generations_validation", index=False);
"""),
    ("md", """
Mean overlap per model (rows: before and after fine-tuning) and the mean length of the answers
in words. Look for: the fine-tuned model closer to the references, and answers whose length
matches the references' (the style of the data is what fine-tuning changes first).
"""),
    ("code", """
overlap = generation.overlap_summary(generations)
report.metrics("generation_validation", overlap.to_dict(orient="index"))
overlap.round(4)
"""),
    ("md", """
Side by side (rows: held-out prompts; the `after` answers are cut at `max_new_tokens`).
"""),
    ("code", """
columns = ["prompt", "reference", "before", "after", "rouge_l_before", "rouge_l_after"]
wrapped = {"white-space": "pre-wrap", "text-align": "left"}
generations[columns].style.set_properties(**wrapped).format(precision=3)
"""),
]

NB05_INSTRUCTION = [
    ("md", """
# Instruction task: export and chat
For `task = "instruction"` the run's `model/` folder already holds a plain causal LM: with
`lora = True` the adapters were merged into the weights when notebook 03 saved it (the adapters
alone are kept in `model/adapter/`), so serving needs neither peft nor sftlib. The export adds
`chat_export.json` (what the folder is) next to the weights, tokenizer, chat template and the
`run_config.json` it was trained with.
"""),
    ("code", """
from sftlib import generation

export_dir = deploy.export_chat_model(report.model_dir, report.dir / "export", replace=True)
sorted(p.name for p in export_dir.iterdir())
"""),
    ("md", """
## Chat with the fine-tuned model
New prompts, not in the data, answered greedily (rows: prompts).
"""),
    ("code", """
import pandas as pd

chat = generation.ChatGenerator(export_dir)
new_prompts = ["Give three tips for staying healthy.", "What is the capital of France?",
               "Rewrite this sentence in the passive voice: The cat chased the mouse."]
pd.DataFrame({"prompt": new_prompts, "answer": chat.chat(new_prompts, cfg.max_new_tokens)})
"""),
    ("md", """
The same folder with the plain `transformers` pipeline and no `sftlib` code: it applies the
chat template saved with the tokenizer and returns the conversation with the new turn.
"""),
    ("code", """
from transformers import pipeline

chatbot = pipeline("text-generation", model=str(export_dir))
messages = [{"role": "user", "content": new_prompts[1]}]
chatbot(messages, max_new_tokens=cfg.max_new_tokens, do_sample=False)[0]["generated_text"][-1]
"""),
]

NOTEBOOKS = {
    "01_data_inspection": notebook(NB01, NB01_PARAMETERS),
    "02_tokenization": notebook(NB02, NB02_PARAMETERS),
    "03_fine_tuning": notebook(NB03, TRAIN_PARAMETERS),
    "04_error_analysis": notebook(task_sections(NB04, NB04_INSTRUCTION)),
    "05_deployment": notebook(task_sections(NB05, NB05_INSTRUCTION)),
}

if __name__ == "__main__":
    for name, nb in NOTEBOOKS.items():
        nbformat.write(nb, ROOT / "notebooks" / f"{name}.ipynb")
        print("wrote", name)
