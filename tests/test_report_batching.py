"""Table 13 and Figure 13 (batch size) from synthetic results at batch 1, 2 and 4."""

from __future__ import annotations

import pytest

from spec_decode.report import fig13_batching, table13_batching
from spec_decode.report.common import MissingData
from spec_decode.results import load_results, write_atomic

BATCHES = (1, 2, 4)
REFUSAL = "assisted generate is only supported for batch_size = 1"


def methods_at(batch: int) -> dict[str, str]:
    """Label -> method of the grid's run at `batch` (the HF peer at batch 1 only, as the experiment runs it)."""
    peers = {"hf_assisted": "hf_assisted"} if batch == 1 else {}
    return {"ar": "ar"} | peers | {"linear_k2": "linear", "tree_d4": "tree"}


def speedup(label: str, batch: int) -> float:
    return 1.0 if label == "ar" else round(1.5 - 0.2 * batch + 0.1 * list(methods_at(batch)).index(label), 4)


def write_run(folder, batch: int) -> None:
    summary = [{"method": label, "speedup": speedup(label, batch), "throughput": {"mean": 10.0 * batch},
                "tokens_per_round": 1.5, "ttft_s": {"mean": 0.1}, "memory": {"peak_rss_mb": 100.0 * batch},
                **({"batch": {"batch_size": batch, "row_latency_s": {"mean": 0.5 * batch}, "rows_compared": 4,
                              "rows_exact": 4 - (label == "tree_d4")}} if batch > 1 else {})}
               for label in methods_at(batch)]
    run = {"complete": True, "started_at": f"2026-12-02T00:00:0{batch}", "config": {
        "experiment_name": "batch_scaling", "model": {"name": "tiny"}, "dataset": {"name": "builtin"},
        "max_new_tokens": 16, "batch_size": batch},
        "environment": {"device_name": "cpu", "dtype": "float32"},
        "methods": {label: {"method": name, "params": {}} for label, name in methods_at(batch).items()},
        "summary": summary}
    if batch > 1:
        run["batching"] = {"batch_size": batch, "not_batched": {"hf_assisted": REFUSAL, "hf_lookup": REFUSAL}}
    write_atomic(folder / f"batch_size={batch}" / "result.json", run)


@pytest.fixture
def df(tmp_path):
    for batch in BATCHES:
        write_run(tmp_path, batch)
    return load_results(tmp_path)


def test_table_has_every_batch_and_method_and_the_refusal(df):
    frame = table13_batching.tables(df)["table13_batching"].frame
    measured = frame[frame["note"] == ""]
    for batch in BATCHES:
        for label in methods_at(batch):
            row = measured[(measured["batch"] == batch) & (measured["method"] == label)].iloc[0]
            assert row["speedup over AR (×)"] == speedup(label, batch)
            assert row["tok/s"] == 10.0 * batch and row["peak RSS (MB)"] == 100.0 * batch
    tree_at_4 = measured[(measured["batch"] == 4) & (measured["method"] == "tree_d4")].iloc[0]
    assert tree_at_4["rows = batch-1 AR"] == "3/4" and tree_at_4["row latency (s)"] == 2.0
    refused = frame[frame["note"] != ""]
    assert list(refused["batch"]) == [2, 4] and set(refused["method"]) == {"hf_assisted"}  # hf_lookup never ran
    assert all(REFUSAL in note for note in refused["note"])
    assert list(frame["batch"]) == sorted(frame["batch"])


def test_figure_has_one_speedup_line_per_speculative_method(df):
    fig = fig13_batching.figures(df)["fig13_batching"]
    speed, rate = fig.axes[:2]
    lines = {line.get_label(): line for line in speed.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"hf_assisted", "linear_k2", "tree_d4"}
    assert list(lines["tree_d4"].get_xdata()) == list(BATCHES)
    assert list(lines["tree_d4"].get_ydata()) == [speedup("tree_d4", b) for b in BATCHES]
    assert list(lines["hf_assisted"].get_xdata()) == [1]
    throughput = {line.get_label(): line for line in rate.get_lines()}
    assert list(throughput["ar"].get_ydata()) == [10.0 * b for b in BATCHES]


def test_missing_experiment_names_its_command(tmp_path):
    write_atomic(tmp_path / "other" / "result.json", {"complete": True, "config": {
        "experiment_name": "main", "model": {"name": "tiny"}, "dataset": {"name": "builtin"}, "max_new_tokens": 4},
        "environment": {"device_name": "cpu", "dtype": "float32"}, "methods": {"ar": {"method": "ar", "params": {}}},
        "summary": [{"method": "ar", "speedup": 1.0}]})
    with pytest.raises(MissingData, match="python run.py -m experiment=batch_scaling"):
        table13_batching.tables(load_results(tmp_path))
