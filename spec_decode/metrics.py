"""Aggregate raw samples into the study's metrics (names as in PAPER.md), with spread."""

from __future__ import annotations

import numpy as np


def spread(values) -> dict:
    """Mean, std and percentiles of a list of numbers."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "p10": float("nan"), "p50": float("nan"),
                "p90": float("nan")}
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "p10": float(np.percentile(a, 10)), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90))}


def summarize(run: dict, baseline_throughput: float | None = None) -> dict:
    """One method's metrics from its raw samples; speedup against a same-run AR throughput."""
    samples, params = run["samples"], run["params"]
    tokens = sum(s["new_tokens"] for s in samples)
    rounds = [n for s in samples for n in s["emitted_per_round"]]
    accepted = sum(s["accepted"] for s in samples)
    drafted = sum(s["drafted"] for s in samples)
    nodes = [n for s in samples for n in s["tree_nodes_per_round"]]
    throughput = spread([s["new_tokens"] / s["seconds"] for s in samples])
    summary = {
        "method": run["method"],
        "throughput": throughput,
        "speedup": throughput["mean"] / baseline_throughput if baseline_throughput else float("nan"),
        "tokens_per_round": float(np.mean(rounds)) if rounds else float("nan"),
        "acceptance_rate": accepted / drafted if drafted else float("nan"),
        "acceptance_node_level": accepted / sum(nodes) if nodes and sum(nodes) else float("nan"),
        "acceptance_depth_level": _depth_level(samples, params),
        "mean_tree_nodes": float(np.mean(nodes)) if nodes else float("nan"),
        "target_forwards_per_token": sum(s["target_forwards"] for s in samples) / tokens,
        "draft_forwards_per_token": sum(s["draft_forwards"] for s in samples) / tokens,
        "ttft_s": spread([s["ttft_s"] for s in samples]),
        "tpot_s": spread([(s["seconds"] - s["ttft_s"]) / (s["new_tokens"] - 1) for s in samples
                          if s["new_tokens"] > 1]),
        "compressions": spread([s["compressions"] for s in samples]),
        "cache_max_length": max((max(s["cache_length_per_round"], default=0) for s in samples), default=0),
        "cache_final_length": spread([s["cache_length_per_round"][-1] for s in samples if s["cache_length_per_round"]]),
        **_phases(samples),
        "exact_match": spread([s["exact_match"] for s in samples if s["exact_match"] is not None]),
        "new_tokens": tokens,
        "samples": len(samples),
        "memory": run["memory"],
    }
    if "calibration" in run:  # budget=auto: the cost model's predicted vs measured decode throughput
        summary["budget_prediction_error"] = run["calibration"]["prediction_error"]
    return summary


def _phases(samples: list[dict]) -> dict:
    """With profile on: shares of round time inside target forwards, draft forwards, and everything else."""
    rounds = sum(sum(s["round_times_s"]) for s in samples if s["target_forward_s_per_round"])
    if not rounds:
        return {}
    target = sum(sum(s["target_forward_s_per_round"]) for s in samples)
    draft = sum(sum(s["draft_forward_s_per_round"]) for s in samples)
    return {"time_share": {"target_forward": target / rounds, "draft_forward": draft / rounds,
                           "overhead": 1 - (target + draft) / rounds}}


def _depth_level(samples: list[dict], params: dict) -> float:
    """Tree: mean accepted path length / D (the study's depth-level acceptance)."""
    depth = params.get("depth")
    accepted = [a for s in samples for a in s["accepted_per_round"]]
    return float(np.mean(accepted)) / depth if depth and accepted else float("nan")
