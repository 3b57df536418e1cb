"""Aggregate raw samples into the study's metrics (names as in PAPER.md), with spread."""

from __future__ import annotations

import numpy as np

# Divergence at a tie. Where a method's tokens first leave AR's, the margin is the target's top-1 minus top-2 logit
# there under AR. A logit of magnitude |z| is stored to within eps*|z| (eps = the dtype's relative spacing below);
# two kernel orderings of the same forward (a one-token AR step vs a verification block: other GEMM tilings,
# attention blocks, reduction orders) round differently in every layer, and the residual stream carries those
# roundings to the head. Kernel-to-kernel differences of a few ulps are typical; TIE_ULPS = 16 allows ~8 ulps of
# drift in each of the two logits compared. The floor of 1 keeps the bound sane for logits near zero (random weights).
# So a margin below 16*eps*max(|z|,1) is a near-tie any kernel may flip: float16 at |z|=10 -> 0.16, bfloat16 -> 1.25,
# float32 -> 1.9e-5, float64 -> 3.6e-14 (float64 divergences are bugs). The raw margins are kept in the samples.
DTYPE_EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
TIE_ULPS = 16


# Spec-Bench's reporting groups (evaluation/speed.py's tasks): the eight MT-Bench categories together as mt_bench,
# every other category on its own. Categories of other prompt sets are groups of their own.
SPEC_BENCH_GROUPS = dict.fromkeys(("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem",
                                   "humanities"), "mt_bench")


def tie_epsilon(dtype: str, top_logit: float) -> float:
    """The largest top-1 minus top-2 logit margin that still counts as a tie for logits computed in `dtype`."""
    return TIE_ULPS * DTYPE_EPS[dtype] * max(abs(top_logit), 1.0)


def spread(values) -> dict:
    """Mean, std and percentiles of a list of numbers."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "p10": float("nan"), "p50": float("nan"),
                "p90": float("nan")}
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "p10": float(np.percentile(a, 10)), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90))}


def summarize(run: dict, baseline: dict | None = None) -> dict:
    """One method's metrics from its raw samples; speedups against `baseline`, the same run's AR record."""
    samples, params = run["samples"], run["params"]
    tokens = sum(s["new_tokens"] for s in samples)
    rounds = [n for s in samples for n in s["emitted_per_round"]]
    rows = sum(_rows(s) for s in samples)  # row-rounds: a batched round counts once per row it decoded
    accepted = sum(s["accepted"] for s in samples)
    drafted = sum(s["drafted"] for s in samples)
    nodes = [n for s in samples for n in s["tree_nodes_per_round"]]
    throughput = spread([s["new_tokens"] / s["seconds"] for s in samples])
    sampled = (run.get("sampling") or {}).get("temperature", 0) > 0
    summary = {
        "method": run["method"],
        "throughput": throughput,
        **speedups(samples, baseline["samples"] if baseline else []),
        "tokens_per_round": sum(rounds) / rows if rounds else float("nan"),
        "acceptance_rate": accepted / drafted if drafted else float("nan"),
        "acceptance_node_level": accepted / sum(nodes) if nodes and sum(nodes) else float("nan"),
        "acceptance_depth_level": _depth_level(samples, params),
        "mean_tree_nodes": sum(nodes) / rows if nodes else float("nan"),
        "fallback_share": sum(s.get("fallback_rounds", 0) for s in samples) / len(rounds) if rounds else 0.0,
        "target_forwards_per_token": sum(s["target_forwards"] for s in samples) / tokens,
        "draft_forwards_per_token": sum(s["draft_forwards"] for s in samples) / tokens,
        "ttft_s": spread([s["ttft_s"] for s in samples]),
        "tpot_s": spread([(s["seconds"] - s["ttft_s"]) / (s["new_tokens"] - _turns(s)) for s in samples
                          if s["new_tokens"] > _turns(s)]),
        "compressions": spread([s["compressions"] for s in samples]),
        "cache_max_length": max((max(s["cache_length_per_round"], default=0) for s in samples), default=0),
        "cache_final_length": spread([s["cache_length_per_round"][-1] for s in samples if s["cache_length_per_round"]]),
        **_phases(samples),
        "exact_match": None if sampled else spread([s["exact_match"] for s in samples if s["exact_match"] is not None]),
        "exact_match_applicable": not sampled,  # sampled runs: no token-for-token reference (n/a, not 0)
        **exactness(samples, streaming=params.get("cache_size") is not None),
        "new_tokens": tokens,
        "samples": len(samples),
        "memory": run["memory"],
    }
    if any("rows" in s for s in samples):
        summary["batch"] = batch_summary(samples)
    if any(s.get("category") is not None for s in samples):
        summary["by_category"] = by_category(samples, baseline["samples"] if baseline else [])
    if "calibration" in run:  # budget=auto: the cost model's predicted vs measured decode throughput
        summary["budget_prediction_error"] = run["calibration"]["prediction_error"]
    return summary


def _rows(sample: dict) -> int:
    """Row-rounds of a sample: its rounds, each counted once per batch row it decoded (batch 1: its rounds)."""
    return sum(sample.get("rows_per_round") or []) or len(sample["emitted_per_round"])


def batch_summary(samples: list[dict]) -> dict:
    """Batched runs: the batch size, per-row latency (seconds until the row finished), and how many rows equal
    batch-1 greedy AR's tokens (the rest: whether each left at a near-tie)."""
    rows = [r for s in samples for r in s["rows"]]
    compared = [r for r in rows if r.get("exact_match") is not None]
    diverged = [r for r in compared if r["first_divergence"] is not None]
    return {"batch_size": max(s["batch_size"] for s in samples), "batches": len(samples),
            "row_latency_s": spread([r["seconds"] for r in rows]),
            "rows_compared": len(compared), "rows_exact": len(compared) - len(diverged),
            "rows_diverged_at_tie": sum(bool(r["divergence_at_tie"]) for r in diverged)}


def _turns(sample: dict) -> int:
    """How many turns (generations, each with its own first token) a sample holds."""
    return len(sample.get("turns") or [1])


def group_of(category: str | None) -> str | None:
    """The reporting group of a prompt category (Spec-Bench's task name for its categories)."""
    return SPEC_BENCH_GROUPS.get(category, category)


def by_category(samples: list[dict], baseline: list[dict]) -> dict:
    """Per reporting group: speedup (as the headline), throughput, tokens per round, acceptance, exact match, counts."""
    groups = {}
    for group in dict.fromkeys(group_of(s.get("category")) for s in samples):
        mine = [s for s in samples if group_of(s.get("category")) == group]
        base = [s for s in baseline if group_of(s.get("category")) == group]
        rounds = [n for s in mine for n in s["emitted_per_round"]]
        drafted = sum(s["drafted"] for s in mine)
        matches = [s["exact_match"] for s in mine if s["exact_match"] is not None]
        groups[str(group)] = {
            "speedup": speedups(mine, base)["speedup"],
            "throughput": float(np.mean([s["new_tokens"] / s["seconds"] for s in mine])),
            "tokens_per_round": float(np.mean(rounds)) if rounds else float("nan"),
            "acceptance_rate": sum(s["accepted"] for s in mine) / drafted if drafted else float("nan"),
            "exact_match": float(np.mean(matches)) if matches else float("nan"),
            "samples": len(mine), "prompts": len({s["prompt"] for s in mine})}
    return groups


def speedups(samples: list[dict], baseline: list[dict]) -> dict:
    """Speedup over the baseline's samples, three ways; `speedup` (the headline) is Spec-Bench's.

    speedup: mean per-sample throughput / the baseline's (Spec-Bench, evaluation/speed.py);
    speedup_of_totals: (all tokens / all seconds) / the baseline's;
    speedup_mean_of_ratios: mean over (prompt, repeat) pairs of throughput / the baseline's on that pair.
    """
    if not baseline:
        return {"speedup": float("nan"), "speedup_of_totals": float("nan"), "speedup_mean_of_ratios": float("nan")}

    def rate(s: dict) -> float:
        return s["new_tokens"] / s["seconds"]

    def totals(group: list[dict]) -> float:
        return sum(s["new_tokens"] for s in group) / sum(s["seconds"] for s in group)

    ratios = paired_ratios(samples, baseline)
    return {"speedup": float(np.mean([rate(s) for s in samples]) / np.mean([rate(s) for s in baseline])),
            "speedup_of_totals": totals(samples) / totals(baseline),
            "speedup_mean_of_ratios": float(np.mean(ratios)) if ratios.size else float("nan")}


def paired_ratios(samples: list[dict], baseline: list[dict]) -> np.ndarray:
    """Throughput over the baseline's on the same (prompt, repeat), for every pair both ran."""
    base = {(s["prompt"], s["repeat"]): s["new_tokens"] / s["seconds"] for s in baseline}
    return np.array([s["new_tokens"] / s["seconds"] / base[s["prompt"], s["repeat"]] for s in samples
                     if (s["prompt"], s["repeat"]) in base])


def bootstrap_interval(values, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (by hand: scipy.stats.bootstrap would add scipy for six lines)."""
    a = np.asarray(values, dtype=float)
    means = np.random.default_rng(seed).choice(a, size=(resamples, a.size)).mean(axis=1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def exactness(samples: list[dict], streaming: bool = False) -> dict:
    """How many samples left AR's tokens, where first, how many of those at a near-tie, and the others (bugs).

    Streaming methods use a bounded cache, so full-cache AR is not their exact reference: not judged.
    """
    compared = [s for s in samples if s.get("exact_match") is not None]
    diverged = [s for s in compared if s.get("first_divergence") is not None]
    indices = [s["first_divergence"] for s in diverged]
    at_tie = sum(bool(s["divergence_at_tie"]) for s in diverged)
    not_at_tie = None if streaming else [
        {"prompt": s["prompt"], "repeat": s["repeat"], "index": s["first_divergence"],
         "margin": s["divergence_margin"]} for s in diverged if not s["divergence_at_tie"]]
    return {
        "first_divergence": {"diverged": len(diverged), "compared": len(compared),
                             "min_index": min(indices, default=None),
                             "median_index": float(np.median(indices)) if indices else None},
        "divergence_at_tie": {"count": at_tie, "fraction": at_tie / len(diverged) if diverged else None},
        "divergence_not_at_tie": not_at_tie,
    }


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
    return sum(accepted) / sum(_rows(s) for s in samples) / depth if depth and accepted else float("nan")
