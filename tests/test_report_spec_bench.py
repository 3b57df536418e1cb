"""Table 11 and Figure 11 (Spec-Bench) from a synthetic spec_bench result with known per-category numbers."""

from __future__ import annotations

import pytest

from spec_decode.report import fig11_spec_bench, table11_spec_bench
from spec_decode.report.common import MissingData, write_table
from spec_decode.report.reported import load_reported
from spec_decode.results import load_results, write_atomic

# Per method: per category (speedup, tokens per round), then overall speedup and tokens per round.
CATEGORY_SPEEDUPS = {
    "ar": {"mt_bench": 1.0, "translation": 1.0, "summarization": 1.0, "qa": 1.0, "math_reasoning": 1.0, "rag": 1.0},
    "linear_k4": {"mt_bench": 1.4, "translation": 1.1, "summarization": 1.9, "qa": 1.2, "math_reasoning": 1.5,
                  "rag": 1.6},
    "tree_lookup": {"mt_bench": 1.8, "translation": 1.05, "summarization": 2.5, "qa": 1.3, "math_reasoning": 1.7,
                    "rag": 2.0},
}
OVERALL = {"ar": (1.0, 1.0), "linear_k4": (1.45, 2.3), "tree_lookup": (1.75, 3.1)}
FAMILIES = {"ar": "ar", "linear_k4": "linear", "tree_lookup": "tree"}
TITLES = ["Method", "Multi-turn Conversation", "Translation", "Summarization", "Question Answering",
          "Mathematical Reasoning", "Retrieval-aug. Generation", "#Mean Accepted Tokens", "Overall"]


def group(speedup: float) -> dict:
    return {"speedup": speedup, "throughput": 20.0 * speedup, "tokens_per_round": 1.0 + speedup,
            "acceptance_rate": 0.5, "exact_match": 1.0, "samples": 10, "prompts": 10}


def write_run(folder, categories=tuple(CATEGORY_SPEEDUPS["ar"]), by_category=True, families=FAMILIES,
              overhead=None):
    """A complete spec_bench result over `categories` (without the by_category block when by_category=False; with
    each method's overhead share when `overhead` gives them)."""
    summary = []
    for label, per_category in CATEGORY_SPEEDUPS.items():
        entry = {"method": label, "speedup": OVERALL[label][0], "tokens_per_round": OVERALL[label][1]}
        if overhead:
            entry["time_share"] = {"target_forward": 0.9 - overhead[label], "draft_forward": 0.1,
                                   "overhead": overhead[label]}
        if by_category:
            entry["by_category"] = {c: group(per_category[c]) for c in categories}
        summary.append(entry)
    run = {"complete": True, "started_at": "2026-12-02T00:00:00",
           "config": {"experiment_name": "spec_bench", "model": {"name": "tiny"}, "dataset": {"name": "spec_bench"},
                      "max_new_tokens": 16},
           "environment": {"device_name": "cpu", "dtype": "float32"},
           "methods": {label: {"method": families[label], "params": {}} for label in CATEGORY_SPEEDUPS},
           "summary": summary}
    write_atomic(folder / "result.json", run)
    return load_results(folder)


def table(df):
    return table11_spec_bench.tables(df)["table11_spec_bench"]


def test_table_has_leaderboard_columns_and_our_numbers(tmp_path):
    made = table(write_run(tmp_path))
    frame = made.frame.set_index("Method")
    assert list(made.frame.columns) == TITLES
    assert list(frame.index[:3]) == ["ar", "linear_k4", "tree_lookup"]
    assert frame.loc["ar"].tolist() == [1.0] * 8
    assert frame.loc["linear_k4", "Summarization"] == 1.9
    assert frame.loc["tree_lookup", "Retrieval-aug. Generation"] == 2.0
    assert frame.loc["tree_lookup", "#Mean Accepted Tokens"] == 3.1
    assert frame.loc["linear_k4", "Overall"] == 1.45
    assert made.digits == dict.fromkeys(TITLES[1:], 2) and made.best == dict.fromkeys(TITLES[1:], "max")


def test_a_profiled_run_adds_each_method_s_overhead_share_never_ranked(tmp_path):
    shares = {"ar": 0.02, "linear_k4": 0.05, "tree_lookup": 0.08}
    made = table(write_run(tmp_path, overhead=shares))
    assert list(made.frame.columns) == [*TITLES, "Overhead share"]
    assert made.frame.set_index("Method")["Overhead share"].iloc[:3].to_dict() == shares
    assert "Overhead share" not in made.best and made.digits["Overhead share"] == 2


def test_reported_rows_are_labelled_from_the_yaml_and_never_bold(tmp_path):
    made = table(write_run(tmp_path))
    published = load_reported(table11_spec_bench.REPORTED)
    reported = made.frame.iloc[3:].reset_index(drop=True)
    assert made.unranked == list(range(3, 3 + len(published["rows"])))
    for line, row in zip(reported.itertuples(index=False), published["rows"], strict=True):
        assert line.Method == f"{row['name']} [reported: {published['models']}, {published['hardware']}]"
        assert line.Overall == row["overall"]
    pld = reported.set_index("Method").filter(like="PLD", axis=0).iloc[0]
    assert pld["Summarization"] == 2.66 and pld[["Translation", "#Mean Accepted Tokens"]].isna().all()
    md = (write_table(made, tmp_path / "out", "table11_spec_bench")[1]).read_text().splitlines()
    ours = {line.split(" | ")[0].removeprefix("| "): line for line in md[2:]}
    assert ours["tree_lookup"] == "| tree_lookup | **1.80** | 1.05 | **2.50** | **1.30** | **1.70** | **2.00** | " \
                                  "**3.10** | **1.75** |"
    assert "**1.10**" in ours["linear_k4"] and ours["ar"].count("**") == 0
    for name, line in ours.items():
        if "[reported: Vicuna-7B, A100]" in name:
            assert "**" not in line and " – |" in line
    assert "| EAGLE-2 [reported: Vicuna-7B, A100] | – | – | – | – | – | – | – | 2.36 |" in md


def test_a_subset_of_categories_keeps_only_its_columns(tmp_path):
    made = table(write_run(tmp_path, categories=("translation", "qa")))
    assert list(made.frame.columns) == ["Method", "Translation", "Question Answering", "#Mean Accepted Tokens",
                                        "Overall"]
    assert made.frame.set_index("Method").loc["tree_lookup", "Question Answering"] == 1.3


def test_figure_has_one_bar_per_method_and_category(tmp_path):
    df = write_run(tmp_path, categories=("mt_bench", "summarization"))
    fig = fig11_spec_bench.figures(df)["fig11_spec_bench"]
    ax = fig.axes[0]
    assert len(ax.patches) == 3 * 3  # three methods × (two categories + Overall)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Multi-turn\nConversation", "Summarization",
                                                                "Overall"]
    assert ax.patches[-1].get_height() == 1.75


def test_methods_sharing_a_colour_differ_by_hatch(tmp_path):
    df = write_run(tmp_path, families={**FAMILIES, "tree_lookup": "linear"})
    ax = fig11_spec_bench.figures(df)["fig11_spec_bench"].axes[0]
    bars = {p.get_label(): p for p in ax.containers}
    assert bars["tree_lookup"].patches[0].get_facecolor() == bars["linear_k4"].patches[0].get_facecolor()
    assert bars["tree_lookup"].patches[0].get_hatch() != bars["linear_k4"].patches[0].get_hatch()


@pytest.mark.parametrize("module", [table11_spec_bench.tables, fig11_spec_bench.figures])
def test_missing_per_category_results_name_the_experiment(tmp_path, module):
    with pytest.raises(MissingData, match=r"by_category\) in experiment 'spec_bench'; run: python run.py "
                                          r"experiment=spec_bench"):
        module(write_run(tmp_path, by_category=False))
    with pytest.raises(MissingData, match="no results of experiment 'spec_bench'"):
        module(load_results(tmp_path / "none"))
