"""Every paper table and figure, built from real tiny runs of every experiment config (no hand-written results)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from spec_decode.report import MODULES
from spec_decode.report.__main__ import build_all, main
from spec_decode.report.common import cell, experiment_rows, memory_mb
from spec_decode.report.reported import load_reported
from spec_decode.results import load_results

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model=tiny", "dataset=builtin", "threads=1", "num_prompts=1", "repeats=1", "warmup=0", "max_new_tokens=16"]
# One process per grid (small grids on the command line replace the experiment's own); the single runs together.
RUNS = {
    "single": ["experiment=main,ablation,progressive,latency,verification,case_study,timeline"],
    "sweep": ["experiment=sweep", "depth=2,3", "branch=2,3", "threshold=0.05,0.2", "max_new_tokens=16"],
    "length_scaling": ["experiment=length_scaling", "max_new_tokens=8,16"],
    "cross_dataset": ["experiment=cross_dataset", "dataset=builtin"],
    "cross_dataset_local": ["experiment=cross_dataset", "dataset=wikitext2_local"],  # + dataset.path (fixture)
    "prompt_length": ["experiment=prompt_length", "dataset.min_tokens=20,40"],
    "memory": ["experiment=memory", "max_new_tokens=8,16"],
    "streaming": ["experiment=streaming", "cache_size=48,64", "depth=3", "branch=2", "max_nodes=8", "k=4"],
    "spec_bench": ["experiment=spec_bench", "dataset=jsonl", "num_prompts=null",  # + dataset.path (fixture)
                   "dataset.per_category=null"],
    "sampling": ["experiment=sampling", "temperature=0,1.0"],  # dataset=builtin (FAST) replaces its prompt sets
    "batch_scaling": ["experiment=batch_scaling", "batch_size=1,2", "num_prompts=2"],
}
EXPERIMENTS = ["main", "sweep", "ablation", "progressive", "length_scaling", "latency", "verification",
               "cross_dataset", "prompt_length", "memory", "streaming", "case_study", "timeline", "spec_bench",
               "sampling", "batch_scaling"]

TABLES = ["table01_setup", "table02_main", "table03_ablation", "table03_progressive", "table04_length",
          "table05_latency", "table06_verification", "table07_cross_dataset", "table08_prompt_length",
          "table09_memory", "table09_streaming", "table10_top10", "table10_best_per_length", "table10_by_branch",
          "table10_by_threshold", "reported_vs_reproduced", "table11_spec_bench", "table12_sampling",
          "table13_batching"]
FIGURES = [m for m in MODULES if m.startswith("fig")]

pytestmark = pytest.mark.slow


WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2"


def local_corpus(folder: Path) -> Path:
    """The shared WikiText-2 copy, or (where it is absent) a small stand-in text file: these tests check plumbing."""
    if (WIKITEXT / "test.txt").is_file():
        return WIKITEXT
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f" Sentence number {i} of a stand-in corpus , written so that every line is long enough . "
             for i in range(40)]
    (folder / "test.txt").write_text("\n".join(lines) + "\n")
    return folder


def chat_questions(path: Path) -> Path:
    """A few Spec-Bench-like questions in three of its groups (two-turn MT-Bench ones among them)."""
    rows = [{"category": "writing", "turns": ["Write a line about rain.", "Make it rhyme."]},
            {"category": "coding", "turns": ["Print hello in Python.", "Now in C."]},
            {"category": "translation", "turns": ["Translate German to English: Guten Morgen"]},
            {"category": "summarization", "turns": ["Summarize: The river rose and the town moved uphill."]}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def results(tmp_path_factory) -> Path:
    """Result files of every paper experiment on the tiny pair (about two minutes on two busy cores)."""
    out = tmp_path_factory.mktemp("results")
    corpus = local_corpus(out.parent / "corpus")
    questions = chat_questions(out.parent / "questions.jsonl")
    for name, args in RUNS.items():
        if "dataset=wikitext2_local" in args:
            args = [*args, f"dataset.path={corpus}"]
        if "dataset=jsonl" in args:
            args = [*args, f"dataset.path={questions}", "dataset.turns_field=turns",
                    "dataset.category_field=category"]
        proc = subprocess.run(
            [sys.executable, "run.py", "-m", *FAST, *args, f"hydra.sweep.dir={out}/hydra/{name}",
             f"results_dir={out}/" + "${experiment_name}/${hydra:job.override_dirname}"],
            cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def df(results):
    return load_results(results)


@pytest.fixture(scope="session")
def report(results, tmp_path_factory):
    """Every artifact built into a fresh folder: (folder of the tiny pair, files written, missing, failed)."""
    out = tmp_path_factory.mktemp("figures")
    written, missing, failed = build_all(results, out)
    return out / "tiny", written, missing, failed


def tables(module: str, df) -> dict:
    return importlib.import_module(f"spec_decode.report.{module}").tables(df)


def rows(df, experiment: str):
    return experiment_rows(df, experiment, grid=True).set_index("method", drop=False)


def test_every_experiment_ran(df):
    assert set(EXPERIMENTS) <= set(df["experiment"])


def test_every_artifact_is_made_and_not_empty(report):
    out, written, missing, failed = report
    assert not missing and not failed, missing + failed
    expected = [out / f"{stem}.{kind}" for stem in TABLES for kind in ("tex", "md")]
    expected += [out / f"{stem}.{kind}" for stem in FIGURES for kind in ("pdf", "png")]
    assert sorted(written) == sorted(expected)
    for path in expected:
        assert path.stat().st_size > 0, path


def test_tables_have_booktabs_and_bold_best(report, df):
    out = report[0]
    tex = (out / "table02_main.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\_" in tex
    best = rows(df, "main")["throughput.mean"].max()
    assert f"**{cell(best, 1)}**" in (out / "table02_main.md").read_text()
    assert f"\\textbf{{{cell(best, 1)}}}" in tex


def test_setup_and_main_tables(df):
    setup = tables("table01_setup", df)["table01_setup"].frame.set_index("experiment")
    assert set(setup.index) == set(df["experiment"])
    assert setup.loc["main", "dtype"] == "float32" and setup.loc["main", "new tokens"] == "16"
    main_rows = rows(df, "main")
    frame = tables("table02_main", df)["table02_main"].frame.set_index("method")
    for label in ("ar", "linear_k6", "tree_d8_b3"):
        assert frame.loc[label, "tok/s"] == pytest.approx(main_rows.loc[label, "throughput.mean"])
        assert frame.loc[label, "speedup (×)"] == pytest.approx(main_rows.loc[label, "speedup"])
    assert frame.loc["tree_d8_b3", "accept depth-level (%)"] == pytest.approx(
        100 * main_rows.loc["tree_d8_b3", "acceptance_depth_level"])


def test_ablation_tables(df):
    ablation = tables("table03_ablation", df)["table03_ablation"].frame.set_index("variant")
    assert list(ablation.index) == ["tree_no_pruning", "tree_static_pruning", "tree_dynamic_pruning"]
    source = rows(df, "ablation")
    assert ablation.loc["tree_static_pruning", "max nodes"] == 30
    assert ablation.loc["tree_dynamic_pruning", "avg nodes"] == pytest.approx(
        source.loc["tree_dynamic_pruning", "mean_tree_nodes"])
    steps = tables("table03_progressive", df)["table03_progressive"].frame
    assert list(steps["method"]) == ["ar", "linear_k6", "tree_d7_b2_unpruned", "tree_d7_b2_pruned"]
    speedups = rows(df, "progressive")["speedup"]
    assert steps["Δ speedup"].iloc[2] == pytest.approx(speedups.iloc[2] - speedups.iloc[1])


def test_length_latency_and_verification_tables(df):
    length = tables("table04_length", df)["table04_length"].frame.set_index("new tokens")
    source = rows(df, "length_scaling")
    trees = source[(source["family"] == "tree") & (source["max_new_tokens"] == 16)]
    assert length.loc[16, "Tree speedup (×)"] == pytest.approx(trees["speedup"].max())
    assert length.loc[16, "Tree best"] == trees.loc[trees["speedup"].idxmax(), "method"]
    latency = tables("table05_latency", df)["table05_latency"].frame.set_index("method")
    assert latency.loc["linear_k6", "TTFT (ms)"] == pytest.approx(1e3 * rows(df, "latency").loc["linear_k6",
                                                                                                  "ttft_s.mean"])
    verification = tables("table06_verification", df)["table06_verification"].frame.set_index("method")
    assert "ar" not in verification.index
    for label in ("linear_k3", "tree_d8_b3"):  # mean accepted / mean drafted per round = accepted / drafted
        assert verification.loc[label, "accepted/verified (%)"] == pytest.approx(
            100 * rows(df, "verification").loc[label, "acceptance_rate"])


def test_dataset_prompt_length_and_memory_tables(df):
    cross = tables("table07_cross_dataset", df)["table07_cross_dataset"].frame.set_index("method")
    source = experiment_rows(df, "cross_dataset", grid=True)
    wiki = source[(source["dataset"] == "wikitext2_local") & (source["method"] == "tree_d8_b3")]
    assert cross.loc["tree_d8_b3", "wikitext2_local speedup (×)"] == pytest.approx(wiki["speedup"].iloc[0])
    prompt = tables("table08_prompt_length", df)["table08_prompt_length"].frame.set_index("method")
    assert list(prompt.columns) == ["20-token prompts (×)", "40-token prompts (×)"] and "ar" not in prompt.index
    source = experiment_rows(df, "prompt_length", grid=True)
    long = source[source["file"].str.contains("min_tokens=40") & (source["method"] == "linear_k6")]
    assert prompt.loc["linear_k6", "40-token prompts (×)"] == pytest.approx(long["speedup"].iloc[0])
    memory = tables("table09_memory", df)["table09_memory"].frame.set_index("method")
    source = experiment_rows(df, "memory", grid=True)
    eight = source[(source["max_new_tokens"] == 8) & (source["method"] == "ar")]
    assert memory.loc["ar", "peak RSS @ 8 tok (MB)"] == pytest.approx(eight["memory.peak_rss_mb"].iloc[0])
    streaming = tables("table09_streaming", df)["table09_streaming"].frame
    assert set(streaming["method"]) == {"streaming_ar", "streaming_linear", "streaming_tree"}
    assert set(streaming["cache size"]) == {48, 64}
    source = experiment_rows(df, "streaming", grid=True)
    compressed = source[source["family"].str.startswith("streaming_")].sort_values(
        ["method", "param.cache_size", "max_new_tokens"], kind="stable")
    assert np.allclose(streaming["compressions"], compressed["compressions.mean"])


def test_sweep_tables(df):
    made = tables("table10_sweep", df)
    source = experiment_rows(df, "sweep", grid=True).query("family == 'tree'")
    assert len(source) == 8
    top = made["table10_top10"].frame
    assert len(top) == 8 and top["speedup (×)"].iloc[0] == pytest.approx(source["speedup"].max())
    by_branch = made["table10_by_branch"].frame.set_index("B")
    assert by_branch.loc[3, "mean speedup (×)"] == pytest.approx(
        source[source["param.branch"] == 3]["speedup"].mean())
    assert by_branch.loc[2, "configs"] == 4
    by_threshold = made["table10_by_threshold"].frame.set_index("τ")
    assert by_threshold.loc[0.2, "max speedup (×)"] == pytest.approx(
        source[source["param.threshold"] == 0.2]["speedup"].max())


def test_reported_vs_reproduced(df):
    frame = tables("reported", df)["reported_vs_reproduced"].frame
    reported = load_reported()
    assert len(frame) == sum(len(e["reported"]) for e in reported["entries"])
    ar = frame[(frame["claim"].str.startswith("500 tokens")) & (frame["method"] == "ar")].iloc[0]
    assert ar.iloc[3] == "119.4"
    assert ar.iloc[4] == cell(rows(df, "main").loc["ar", "throughput.mean"], 1)
    assert "reproduced (tiny)" in frame.columns[4]


def test_missing_results_are_named_with_their_command(tmp_path, capsys):
    assert main(["--results", str(tmp_path / "none"), "--out", str(tmp_path / "figures")]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert "not made: Table 2 (main results): no results of experiment 'main'; run: python run.py experiment=main" \
        in out.out
    assert out.out.count("not made: ") == len(MODULES)


def test_a_missing_experiment_names_its_grid_command(results, tmp_path, capsys):
    main(["--results", str(results / "main"), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "run: python run.py -m experiment=sweep" in out
    assert (tmp_path / "tiny" / "table02_main.md").stat().st_size > 0


def test_spec_bench_run_has_every_group_exact_for_every_method(df):
    spec = experiment_rows(df, "spec_bench")
    for group in ("mt_bench", "translation", "summarization"):
        assert spec[f"by_category.{group}.exact_match"].drop(index=spec.index[spec["method"] == "ar"]).eq(1.0).all()
        assert spec[f"by_category.{group}.samples"].ge(1).all()
    assert "by_category.qa.speedup" not in spec  # a group with no prompt is absent


OFFLINE_PAIR = ("spec_bench", "sampling", "batch_scaling")  # experiments that default to the offline pair


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e not in OFFLINE_PAIR])
def test_experiment_defaults_to_the_study_pair_and_switches_from_the_command_line(experiment):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        study = compose("config", overrides=[f"experiment={experiment}"])
        tiny = compose("config", overrides=[f"experiment={experiment}", "model=tiny"])
    assert study.experiment_name == experiment
    assert study.model.name == "pythia-2.8b_70m"
    assert tiny.model.name == "tiny"


def test_an_interleaved_runs_shared_peak_memory_belongs_to_no_method():
    rows = pd.DataFrame({"memory.peak_rss_mb": [100.0, 200.0], "memory.shared_by_interleaved_methods": [True, None]})
    assert memory_mb(rows).isna().tolist() == [True, False]
    assert memory_mb(rows.drop(columns="memory.shared_by_interleaved_methods")).tolist() == [100.0, 200.0]
