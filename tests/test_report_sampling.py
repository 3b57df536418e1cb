"""Table 12 and Figure 12 (sampling) from synthetic results at 3 temperatures on 2 prompt sets."""

from __future__ import annotations

import pytest
import yaml
from hydra import compose, initialize_config_dir

from spec_decode.config import CONF_DIR
from spec_decode.report import fig12_sampling, table12_sampling
from spec_decode.report.common import MissingData
from spec_decode.report.palette import color
from spec_decode.results import load_results, write_atomic

TEMPERATURES = (0.0, 0.7, 1.0)
DATASETS = ("spec_bench", "wikitext2_local")  # written in this order; the table puts WikiText-2 first
FAMILIES = {"ar": "ar", "linear_k2": "linear", "tree_lookup": "tree", "tree_multi": "tree", "recycling": "recycling"}


def speedup(label: str, dataset: str, temperature: float) -> float:
    """A distinct known value per cell (AR is 1)."""
    if label == "ar":
        return 1.0
    return round(1 + 0.1 * list(FAMILIES).index(label) + (0.5 if dataset == "spec_bench" else 0) - temperature / 4, 4)


def write_run(folder, dataset: str, temperature: float | None, experiment: str = "sampling"):
    """A complete result of the sampling grid (temperature None: a file written before sampling existed)."""
    sampled = temperature is not None and temperature > 0
    summary = [{"method": label, "speedup": speedup(label, dataset, temperature or 0.0),
                "tokens_per_round": 1.0 if label == "ar" else 2.0 - (temperature or 0.0),
                "exact_match": None if sampled else 1.0, "exact_match_applicable": not sampled}
               for label in FAMILIES]
    config = {"experiment_name": experiment, "model": {"name": "tiny"}, "dataset": {"name": dataset},
              "max_new_tokens": 16}
    methods = {label: {"method": family, "params": {}} for label, family in FAMILIES.items()}
    if temperature is not None:
        config |= {"temperature": temperature, "top_p": 1.0, "top_k": 0}
        for record in methods.values():
            record["sampling"] = {"temperature": temperature, "top_p": 1.0, "top_k": 0}
    run = {"complete": True, "started_at": "2026-12-02T00:00:00", "config": config,
           "environment": {"device_name": "cpu", "dtype": "float32"}, "methods": methods, "summary": summary}
    write_atomic(folder / f"dataset={dataset},temperature={temperature}" / "result.json", run)


@pytest.fixture
def df(tmp_path):
    for dataset in DATASETS:
        for temperature in TEMPERATURES:
            write_run(tmp_path, dataset, temperature)
    return load_results(tmp_path)


def test_table_has_each_speedup_in_its_cell(df):
    made = table12_sampling.tables(df)["table12_sampling"]
    frame = made.frame.set_index("method")
    assert list(frame.index) == list(FAMILIES)
    assert list(frame.columns) == [f"{title} T={t:g} {metric}" for title in ("WikiText-2", "Spec-Bench")
                                   for t in TEMPERATURES for metric in ("speedup (×)", "tok/round")]
    for label in FAMILIES:
        for dataset, title in (("wikitext2_local", "WikiText-2"), ("spec_bench", "Spec-Bench")):
            for t in TEMPERATURES:
                assert frame.loc[label, f"{title} T={t:g} speedup (×)"] == speedup(label, dataset, t)
    assert frame.loc["tree_multi", "Spec-Bench T=0.7 speedup (×)"] == 1.625  # 1 + 0.3 + 0.5 - 0.7 / 4
    assert frame.loc["linear_k2", "WikiText-2 T=1 tok/round"] == 1.0
    assert frame.loc["ar", "Spec-Bench T=0.7 tok/round"] == 1.0
    assert set(made.best.values()) == {"max"} and len(made.best) == 12


def test_figure_has_a_line_per_method_and_panel_per_dataset(df):
    fig = fig12_sampling.figures(df)["fig12_sampling"]
    wikitext, spec_bench = fig.axes
    assert [wikitext.get_title(), spec_bench.get_title()] == ["WikiText-2", "Spec-Bench"]
    lines = {line.get_label(): line for line in spec_bench.get_lines() if not line.get_label().startswith("_")}
    assert list(lines) == [label for label in FAMILIES if label != "ar"]
    assert list(lines["recycling"].get_xdata()) == list(TEMPERATURES)
    assert list(lines["recycling"].get_ydata()) == [speedup("recycling", "spec_bench", t) for t in TEMPERATURES]
    assert lines["linear_k2"].get_color() == color("linear")
    assert lines["tree_lookup"].get_color() == lines["tree_multi"].get_color() == color("tree")
    assert lines["tree_lookup"].get_marker() != lines["tree_multi"].get_marker()
    assert any(line.get_linestyle() == "--" and list(line.get_ydata()) == [1.0, 1.0] for line in wikitext.get_lines())


def test_results_written_before_sampling_load_as_greedy(tmp_path):
    write_run(tmp_path, "wikitext2_local", None)
    rows = load_results(tmp_path)
    assert rows["temperature"].eq(0.0).all() and rows["top_p"].eq(1.0).all() and rows["top_k"].eq(0).all()
    frame = table12_sampling.tables(rows)["table12_sampling"].frame
    assert frame.columns[1] == "WikiText-2 T=0 speedup (×)"


@pytest.mark.parametrize("module", [table12_sampling.tables, fig12_sampling.figures])
def test_missing_experiment_names_its_grid_command(tmp_path, module):
    write_run(tmp_path, "wikitext2_local", 0.7, experiment="main")
    with pytest.raises(MissingData, match=r"no results of experiment 'sampling'; run: python run.py -m "
                                          r"experiment=sampling"):
        module(load_results(tmp_path))


@pytest.mark.parametrize(("dataset", "prompts", "tokens", "per_category"),
                         [("wikitext2_local", 4, 64, None), ("spec_bench", None, 48, 1), ("builtin", 4, 64, None)])
def test_the_grid_scales_each_prompt_set_and_keeps_the_default_pair(dataset, prompts, tokens, per_category):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=sampling", f"dataset={dataset}", "temperature=0.7"])
    assert (cfg.num_prompts, cfg.max_new_tokens, cfg.dataset.get("per_category")) == (prompts, tokens, per_category)
    assert cfg.model.name == "smollm2-135m_distilled" and cfg.temperature == 0.7 and cfg.experiment_name == "sampling"
    assert [m if isinstance(m, str) else m.label for m in cfg.methods] == [
        "ar", "hf_assisted", "hf_lookup", "linear_k2", "tree_lookup", "recycling", "retrieval", "tree_multi"]
    sweep = yaml.safe_load((CONF_DIR / "experiment" / "sampling.yaml").read_text())["hydra"]["sweeper"]["params"]
    assert sweep == {"temperature": "0,0.7,1.0", "dataset": "wikitext2_local,spec_bench"}
