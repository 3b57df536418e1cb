"""Every paper table and figure from result files: `python -m spec_decode.report --results results --out figures`.

Each module makes one artifact (PAPER.md numbering) from `spec_decode.results.load_results` and, where a figure
needs raw samples, the result files named in its `file` column. A module exposes `ARTIFACT` and `tables(df)`
(name -> Table) or `figures(df)` (name -> matplotlib Figure), and raises MissingData when an experiment is absent.
"""

MODULES = (
    "table01_setup", "table02_main", "table03_ablation", "table03_progressive", "table04_length",
    "table05_latency", "table06_verification", "table07_cross_dataset", "table08_prompt_length",
    "table09_memory", "table09_streaming", "table10_sweep", "table11_spec_bench", "table12_sampling",
    "table13_batching", "reported",
    "fig01_sweep", "fig02_tree_config", "fig03_length", "fig04_cross_dataset", "fig05_prompt_length",
    "fig06_ablation", "fig07_accepted", "fig08_case_study", "fig09_masks", "fig10_timeline", "fig11_spec_bench",
    "fig12_sampling", "fig13_batching",
)
