"""What is in the data and what is wrong with it: the statistics behind notebook 01.

Every function takes a `rows_frame` (one row per example: `split`, `text`, optional
`label`; `sftlib.data.rows_frame` builds it from a DatasetDict, per-split DataFrames or
one DataFrame) and returns a DataFrame or a dict, so the notebook, the CLI
(`sftlib data inspect`) and the pipeline's preflight all report the same numbers.
`inspect_data` gathers them into one JSON-ready dict (keys: docs/inspection.md).

Supported: any number of labels, or none (instruction data whose `text` is the rendered
prompt and response: the per-label parts are then empty). "Normalized" always means
`sftlib.sources.normalize_text`: case, whitespace and punctuation ignored.

- lengths in characters and words per split and label (`length_summary`);
- rows that are empty, whitespace-only, one word, far longer than the rest (Tukey's far-out
  fence, Q3 + 3 IQR of characters), or hold control, invisible-format or undecodable
  characters (`row_issues`);
- duplicates within each split, exact and normalized (`duplicate_counts`);
- leakage: rows of a later split whose text is in an earlier one (`leakage_counts`);
- one text under different labels (`conflicting_labels`);
- the most distinctive words per label: log-odds ratio with an informative Dirichlet prior
  (Monroe, Colaresi & Quinn 2008) (`distinctive_words`);
- a sample of rows per label, browsable with ipywidgets in JupyterLab (`show_sample`).

Leakage and conflicting labels are *findings*: `data_findings` lists them, and
`check_findings` raises `DataQualityError` when the config asks for `strict_data`.

Not supported: near-duplicates beyond normalization (MinHash, embeddings), multi-label
targets, language identification.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from sftlib import data, sources

MIN_LABEL_SHARE = 0.10  # a class under 10% of train is worth a warning: accuracy hides it
FAR_OUT_IQR = 3.0  # Tukey's "far out" fence: length above Q3 + 3 IQR is extreme
ALLOWED_CONTROL = frozenset("\t\n\r")  # ordinary layout in instruction data, not damage
PREVIEW_CHARS = 160  # texts in JSON examples are cut to this many characters
_WORD = re.compile(r"\w+(?:'\w+)*")  # words for the log-odds: letters/digits, with "don't"
_MOJIBAKE = re.compile("[\u00c3\u00c2][\u0080-\u00bf]|\u00e2\u20ac")  # UTF-8 read as cp1252


class DataQualityError(ValueError):
    """Leakage or conflicting labels found while the config sets strict_data."""


def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 1] + "\u2026"


def _has_labels(rows: pd.DataFrame) -> bool:
    return "label" in rows


def _main_split(rows: pd.DataFrame, split: str | None) -> str | None:
    """`split` if given, else "train" when present, else the first split (e.g. "all")."""
    if split is not None:
        return split
    present = list(rows["split"].unique())
    return "train" if "train" in present else (present[0] if present else None)


# labels and lengths ----------------------------------------------------------------------

def smallest_label(rows: pd.DataFrame, split: str | None = None) -> dict[str, Any] | None:
    """The rarest label in `split` (default: train) with its count and share; None without
    labels."""
    if not _has_labels(rows):
        return None
    split = _main_split(rows, split)
    counts = rows.loc[rows["split"] == split, "label"].value_counts(sort=False)
    if counts.sum() == 0:
        return None
    label = counts.idxmin()
    return {"split": split, "label": str(label), "count": int(counts[label]),
            "share": round(float(counts[label] / counts.sum()), 4)}


def length_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Length percentiles (rows: split x label x unit, label "(all)" for the whole split)."""
    lengths = data.length_frame(rows)
    labels = ["(all)", *(str(c) for c in rows["label"].cat.categories)] \
        if _has_labels(rows) else ["(all)"]
    groups = [lengths.assign(label="(all)")]
    if _has_labels(rows):
        groups.append(lengths.assign(label=lengths["label"].astype(str)))
    long = pd.concat(groups, ignore_index=True).melt(
        id_vars=["split", "label"], value_vars=["chars", "words"], var_name="unit",
        value_name="length")
    long["split"] = pd.Categorical(long["split"], categories=list(rows["split"].unique()))
    long["label"] = pd.Categorical(long["label"], categories=labels)
    grouped = long.groupby(["split", "label", "unit"], observed=True)["length"]
    table = grouped.describe(percentiles=[0.5, 0.9, 0.99]).drop(columns="std")
    return table.rename(columns={"50%": "p50", "90%": "p90", "99%": "p99", "count": "n"}) \
        .astype({"n": int}).round(1)


# bad rows ----------------------------------------------------------------------------------

def _bad_characters(text: str) -> list[str]:
    """Issue names for damaged characters in one text (see the module docstring)."""
    issues = []
    categories = {unicodedata.category(c) for c in text if c not in ALLOWED_CONTROL}
    if "Cc" in categories:
        issues.append("control_chars")  # e.g. \x85: cp1252 "..." decoded as Latin-1
    if "Cf" in categories:
        issues.append("invisible_chars")  # zero-width space, BOM, soft hyphen
    if "\ufffd" in text or "Cs" in categories:
        issues.append("undecodable")  # replacement char / lone surrogate from a bad decode
    if _MOJIBAKE.search(text):
        issues.append("mojibake")
    return issues


def long_text_fence(rows: pd.DataFrame) -> float | None:
    """Characters above which a text is "very long": Q3 + 3 IQR over all rows (Tukey's
    far-out fence); None when the lengths have no spread to judge by (IQR 0)."""
    if rows.empty:
        return None
    q1, q3 = np.percentile(rows["text"].str.len(), [25, 75])
    return float(q3 + FAR_OUT_IQR * (q3 - q1)) if q3 > q1 else None


def row_issues(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (example, issue): split, row (position in its split), issue, text.

    Issues: empty, whitespace_only, one_word, very_long (characters above the far-out
    fence of all rows), control_chars, invisible_chars, undecodable, mojibake.
    """
    chars = rows["text"].str.len()
    fence = long_text_fence(rows)
    stripped = rows["text"].str.strip()
    found = []
    for index, text in rows["text"].items():
        issues = _bad_characters(text)
        if text == "":
            issues.append("empty")
        elif stripped[index] == "":
            issues.append("whitespace_only")
        elif len(text.split()) == 1:
            issues.append("one_word")
        if fence is not None and chars[index] > fence:
            issues.append("very_long")
        found += [(index, issue) for issue in issues]
    index = [i for i, _ in found]
    position = rows.groupby("split", sort=False).cumcount()
    return pd.DataFrame({"split": rows["split"].loc[index].to_numpy(),
                         "row": position.loc[index].to_numpy(),
                         "issue": [issue for _, issue in found],
                         "text": rows["text"].loc[index].to_numpy()})


def issue_counts(issues: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Examples per issue (rows) and split (columns), zeros included."""
    splits = list(rows["split"].unique())
    if issues.empty:
        return pd.DataFrame(columns=splits, dtype=int).rename_axis("issue")
    return pd.crosstab(issues["issue"], issues["split"]).reindex(columns=splits, fill_value=0)


# duplicates, leakage, conflicts ---------------------------------------------------------------

def _keys(rows: pd.DataFrame, normalized: bool) -> pd.Series:
    return rows["text"].map(sources.normalize_text) if normalized else rows["text"]


def duplicate_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Per split (rows): rows, and duplicate rows (copies beyond the first of each group,
    i.e. the rows `dedupe` would drop), exact and normalized, with their groups."""
    table = {}
    for split, part in rows.groupby("split", sort=False):
        entry = {"rows": len(part)}
        for kind, normalized in (("exact", False), ("normalized", True)):
            sizes = _keys(part, normalized).value_counts()
            entry[f"{kind}_duplicate_rows"] = int((sizes - 1).sum())
            entry[f"{kind}_duplicate_groups"] = int((sizes > 1).sum())
        table[split] = entry
    return pd.DataFrame(table).T.rename_axis("split")


def duplicate_groups(rows: pd.DataFrame, normalized: bool = True, n: int = 10) -> pd.DataFrame:
    """The largest groups of repeated texts within a split (rows: groups, largest first)."""
    keyed = rows.assign(key=_keys(rows, normalized))
    sizes = keyed.groupby(["split", "key"], sort=False)["text"].agg(["size", "first"])
    top = sizes[sizes["size"] > 1].sort_values("size", ascending=False, kind="stable").head(n)
    return top.reset_index().rename(columns={"size": "copies", "first": "example"}) \
        .drop(columns="key")


def _split_pairs(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(earlier, later) split pairs in data order: train before validation before test."""
    present = list(rows["split"].unique())
    order = sorted(present, key=lambda s: (sources.SPLITS.index(s) if s in sources.SPLITS
                                           else len(sources.SPLITS), present.index(s)))
    return list(combinations(order, 2))


def leakage_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Per split pair (rows: `from` -> `to`): rows of `to` whose text also occurs in
    `from`, exactly and after normalization, and their share of `to`."""
    table = []
    for earlier, later in _split_pairs(rows):
        a, b = rows[rows["split"] == earlier], rows[rows["split"] == later]
        entry = {"from": earlier, "to": later, "to_rows": len(b)}
        for kind, normalized in (("exact", False), ("normalized", True)):
            hits = _keys(b, normalized).isin(set(_keys(a, normalized)))
            entry[f"{kind}_rows"] = int(hits.sum())
            entry[f"{kind}_share"] = round(float(hits.mean()) if len(b) else 0.0, 4)
        table.append(entry)
    columns = ["from", "to", "to_rows", "exact_rows", "exact_share", "normalized_rows",
               "normalized_share"]
    return pd.DataFrame(table, columns=columns)


def leakage_examples(rows: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """Leaked rows (rows: a `to` row and the `from` text it matches after normalization)."""
    keyed = rows.assign(key=_keys(rows, True))
    found = []
    for earlier, later in _split_pairs(rows):
        first = keyed[keyed["split"] == earlier].drop_duplicates("key").set_index("key")
        hits = keyed[(keyed["split"] == later) & keyed["key"].isin(first.index)]
        for _, hit in hits.head(max(n - len(found), 0)).iterrows():
            match = first.loc[hit["key"]]
            found.append({"from": earlier, "to": later, "text": hit["text"],
                          "matched_text": match["text"], "exact": hit["text"] == match["text"],
                          **({"label": str(hit["label"]), "matched_label": str(match["label"])}
                             if _has_labels(rows) else {})})
    columns = ["from", "to", "text", "matched_text", "exact"]
    columns += ["label", "matched_label"] if _has_labels(rows) else []
    return pd.DataFrame(found, columns=columns)


def conflicting_labels(rows: pd.DataFrame, normalized: bool = True) -> pd.DataFrame:
    """Texts that occur under more than one label, over all splits (rows: texts, most
    rows first): the label counts, the splits they occur in, an example text."""
    columns = ["example", "rows", "labels", "splits"]
    if not _has_labels(rows) or rows.empty:
        return pd.DataFrame(columns=columns)
    keyed = rows.assign(key=_keys(rows, normalized), label=rows["label"].astype(str))
    n_labels = keyed.groupby("key")["label"].nunique()
    clashing = keyed[keyed["key"].isin(n_labels[n_labels > 1].index)]
    table = clashing.groupby("key", sort=False).agg(
        example=("text", "first"), rows=("text", "size"),
        labels=("label", lambda s: dict(Counter(s))),
        splits=("split", lambda s: sorted(set(s))))
    return table.sort_values("rows", ascending=False, kind="stable").reset_index(drop=True)


# distinctive words ----------------------------------------------------------------------------

def word_counts(texts: pd.Series) -> Counter:
    """Case-folded word counts (words: runs of letters / digits, with inner apostrophes)."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(_WORD.findall(text.casefold()))
    return counts


def distinctive_words(rows: pd.DataFrame, split: str | None = None, top: int = 10,
                      min_count: int = 5) -> pd.DataFrame:
    """The words most typical of each label versus all other labels (rows: label x rank).

    Weighted log-odds ratio with an informative Dirichlet prior (Monroe et al. 2008, eq. 16
    and 22): the prior alpha_w is the word's count over the whole split, so rare words are
    shrunk towards "not distinctive"; `z` is the log-odds difference over its standard
    deviation. Words seen fewer than `min_count` times in the split are skipped.
    """
    columns = ["label", "rank", "word", "z", "count_in_label", "count_elsewhere"]
    part = rows[rows["split"] == _main_split(rows, split)] if _has_labels(rows) \
        else rows.iloc[0:0]
    prior = word_counts(part["text"])
    vocab = [w for w, c in prior.items() if c >= min_count]
    if part.empty or not vocab or part["label"].nunique() < 2:
        return pd.DataFrame(columns=columns)
    alpha = np.array([prior[w] for w in vocab], dtype=float)
    alpha0 = alpha.sum()
    tables = []
    for label, group in part.groupby("label", sort=False, observed=True):
        inside = word_counts(group["text"])
        y_i = np.array([inside[w] for w in vocab], dtype=float)
        y_j = alpha - y_i  # the prior is the split's own counts: elsewhere = total - inside
        n_i, n_j = sum(inside.values()), sum(prior.values()) - sum(inside.values())
        delta = (np.log((y_i + alpha) / (n_i + alpha0 - y_i - alpha))
                 - np.log((y_j + alpha) / (n_j + alpha0 - y_j - alpha)))
        z = delta / np.sqrt(1.0 / (y_i + alpha) + 1.0 / (y_j + alpha))
        best = np.argsort(-z, kind="stable")[:top]
        tables.append(pd.DataFrame({
            "label": str(label), "rank": np.arange(1, len(best) + 1),
            "word": [vocab[i] for i in best], "z": z[best].round(2),
            "count_in_label": y_i[best].astype(int), "count_elsewhere": y_j[best].astype(int)}))
    return pd.concat(tables, ignore_index=True)[columns]


def distinctive_words_figure(words: pd.DataFrame):
    """One bar chart per label of its most distinctive words' z-scores."""
    import matplotlib.pyplot as plt

    labels = list(words["label"].unique())
    fig, axes = plt.subplots(1, max(len(labels), 1), figsize=(4.2 * max(len(labels), 1), 3.8),
                             squeeze=False)
    for ax, label in zip(axes[0], labels):
        group = words[words["label"] == label].iloc[::-1]
        ax.barh(group["word"], group["z"])
        ax.set_title(f"Most distinctive words: {label}")
        ax.set_xlabel("log-odds z-score (label vs rest)")
        ax.set_ylabel("word")
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


# samples ---------------------------------------------------------------------------------------

def label_sample(rows: pd.DataFrame, label: Any = None, split: str | None = None, n: int = 5,
                 page: int = 0) -> pd.DataFrame:
    """Page `page` of `n` rows of one label (all rows if None) from `split` (rows: examples).

    Ordered by the hash of the text, as the splits are: a fixed, unbiased order that is
    the same on every machine.
    """
    part = rows[rows["split"] == _main_split(rows, split)]
    if label is not None:
        part = part[part["label"].astype(str) == str(label)]
    order = part["text"].map(sources.text_hash).sort_values(kind="stable").index
    chosen = part.loc[order[page * n:(page + 1) * n]]
    columns = [c for c in ("label", "text") if c in chosen]
    return chosen[columns].assign(chars=chosen["text"].str.len()).reset_index(drop=True)


def sample_per_label(rows: pd.DataFrame, split: str | None = None, n: int = 3) -> pd.DataFrame:
    """The first `n` rows of each label (rows: examples, grouped by label)."""
    labels = rows["label"].cat.categories if _has_labels(rows) else [None]
    return pd.concat([label_sample(rows, label, split, n) for label in labels],
                     ignore_index=True)


def show_sample(rows: pd.DataFrame, split: str | None = None, n: int = 5):
    """In JupyterLab, a browser (label dropdown, page slider) over `label_sample`; always
    returns the static `sample_per_label` table (whole texts, `sftlib.tables.readable`), so
    saved and headless notebooks (papermill keeps no widget state, see sftlib.live) still
    show rows."""
    from sftlib.metrics_log import headless, in_notebook
    from sftlib.tables import readable

    if in_notebook() and not headless():
        try:
            import ipywidgets as widgets
            from IPython.display import display
        except ImportError:  # ipywidgets is a dependency, but a bare kernel may lack it
            return readable(sample_per_label(rows, split, n))
        labels = [str(c) for c in rows["label"].cat.categories] if _has_labels(rows) else []
        label = widgets.Dropdown(options=labels or ["(all)"], description="label")
        pages = max(1, math.ceil((rows["split"] == _main_split(rows, split)).sum() / n))
        page = widgets.IntSlider(0, 0, pages - 1, description="page")
        output = widgets.Output()

        def redraw(_change: Any = None) -> None:
            output.clear_output(wait=True)
            with output:
                display(readable(label_sample(rows, label.value if labels else None,
                                              split, n, page.value)))

        label.observe(redraw, "value")
        page.observe(redraw, "value")
        redraw()
        display(widgets.VBox([widgets.HBox([label, page]), output]))
    return readable(sample_per_label(rows, split, n))


# findings and the whole report ------------------------------------------------------------------

def data_findings(leakage: pd.DataFrame, conflicts: pd.DataFrame,
                  pool_conflicting_texts: int = 0) -> list[str]:
    """Leakage and conflicting labels as sentences; `strict_data` makes them errors."""
    found = []
    for _, pair in leakage.iterrows():
        if pair["normalized_rows"]:
            found.append(f"leakage: {pair['normalized_rows']} of {pair['to_rows']} "
                         f"{pair['to']} rows ({pair['normalized_share']:.1%}) repeat a "
                         f"{pair['from']} text ({pair['exact_rows']} exactly)")
    if len(conflicts):
        found.append(f"conflicting labels: {len(conflicts)} texts occur under more than one "
                     f"label ({int(conflicts['rows'].sum())} rows)")
    if pool_conflicting_texts:
        found.append(f"conflicting labels before splitting: {pool_conflicting_texts} texts "
                     "occur under more than one label; deduplication kept the first label")
    return found


def data_warnings(rows: pd.DataFrame, issues: pd.DataFrame,
                  min_label_share: float = MIN_LABEL_SHARE) -> list[str]:
    """Problems worth a look that do not invalidate an evaluation (a small class, bad rows)."""
    warnings = []
    smallest = smallest_label(rows)
    if smallest and smallest["share"] < min_label_share:
        warnings.append(f"label {smallest['label']!r} is {smallest['share']:.1%} of train "
                        f"(under {min_label_share:.0%}): watch macro-F1, not only accuracy")
    for issue, count in issues["issue"].value_counts().items() if len(issues) else []:
        warnings.append(f"{count} row{'s' * (count != 1)} flagged {issue}")
    return warnings


def check_findings(findings: list[str], strict: bool) -> None:
    """Raise `DataQualityError` for findings when `strict` (RunConfig.strict_data)."""
    if strict and findings:
        raise DataQualityError("strict_data is set and the data has problems: "
                               + "; ".join(findings)
                               + ". Fix the data, or set strict_data=False to only warn.")


def quick_findings(dd: Any, pool: pd.DataFrame | None = None) -> list[str]:
    """Only the findings (leakage, conflicting labels): cheap enough for preflight."""
    rows = data.rows_frame(dd)
    pool_conflicts = len(conflicting_labels(data.rows_frame(pool))) if pool is not None else 0
    return data_findings(leakage_counts(rows), conflicting_labels(rows), pool_conflicts)


def _records(frame: pd.DataFrame, text_columns: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    out = frame.copy()
    for column in text_columns:
        if column in out:
            out[column] = out[column].map(_preview)
    return out.to_dict(orient="records")


def pool_report(pool: pd.DataFrame) -> dict[str, Any]:
    """Duplicates and conflicting labels in a single-pool source before it was deduplicated
    and split (see `data.load_pool`)."""
    rows = data.rows_frame(pool)
    counts = duplicate_counts(rows).iloc[0]
    conflicts = conflicting_labels(rows)
    return {"rows": int(counts["rows"]),
            "exact_duplicate_rows": int(counts["exact_duplicate_rows"]),
            "normalized_duplicate_rows": int(counts["normalized_duplicate_rows"]),
            "conflicting_label_texts": len(conflicts),
            "conflict_examples": _records(conflicts.head(5), ("example",))}


def inspect_data(source: Any, pool: pd.DataFrame | None = None,
                 min_label_share: float = MIN_LABEL_SHARE, examples: int = 5) -> dict[str, Any]:
    """Every statistic of this module as one JSON-ready dict (keys: docs/inspection.md)."""
    rows = data.rows_frame(source)
    issues = row_issues(rows)
    leakage = leakage_counts(rows)
    conflicts = conflicting_labels(rows)
    pool_summary = pool_report(pool) if pool is not None else None
    balance = data.label_balance(rows)
    splits = list(balance.columns.get_level_values(0).unique())
    words = distinctive_words(rows)
    sample = sample_per_label(rows, n=3)
    sample_keys = sample["label"].astype(str) if "label" in sample else "(all)"
    report = {
        "splits": data.split_summary(rows).to_dict(orient="index"),
        "labels": {
            "names": [str(c) for c in rows["label"].cat.categories] if _has_labels(rows) else [],
            "counts": {s: balance[s]["count"].to_dict() for s in splits},
            "shares": {s: balance[s]["share"].to_dict() for s in splits},
            "smallest": smallest_label(rows), "min_share": min_label_share},
        "lengths": _records(length_summary(rows).reset_index()),
        "row_issues": {"counts": issue_counts(issues, rows).to_dict(orient="index"),
                       "very_long_above_chars": long_text_fence(rows),
                       "examples": _records(issues.groupby("issue", sort=False).head(examples),
                                           ("text",))},
        "duplicates": {"counts": duplicate_counts(rows).to_dict(orient="index"),
                       "examples": _records(duplicate_groups(rows, n=examples), ("example",))},
        "leakage": {"pairs": _records(leakage),
                    "examples": _records(leakage_examples(rows, examples),
                                         ("text", "matched_text"))},
        "conflicting_labels": {"texts": len(conflicts),
                               "rows": int(conflicts["rows"].sum()) if len(conflicts) else 0,
                               "exact_texts": len(conflicting_labels(rows, normalized=False)),
                               "examples": _records(conflicts.head(examples), ("example",))},
        "before_split": pool_summary,
        "distinctive_words": {label: group[["word", "z", "count_in_label"]]
                              .to_dict(orient="records")
                              for label, group in words.groupby("label", sort=False)},
        "sample": {label: group["text"].map(_preview).tolist() for label, group in
                   sample.assign(key=sample_keys).groupby("key", sort=False)},
    }
    report["findings"] = data_findings(
        leakage, conflicts, pool_summary["conflicting_label_texts"] if pool_summary else 0)
    report["warnings"] = data_warnings(rows, issues, min_label_share)
    return report

