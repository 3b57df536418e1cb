"""A per-round cost model for tree speculation, fitted from profiled traces, and a tree budget chosen from it.

Per round: draft time = a * draft forwards + b * nodes fed to the draft; verify time = c + d * tree nodes;
everything else = e + f * tree nodes. Acceptance comes from the traced trees themselves: a smaller budget
(depth D', node cap N') keeps the N' nodes of highest path probability up to depth D' (Sequoia-like), and the
accepted length is the part of the traced accepted path that survives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CostModel:
    draft: np.ndarray  # seconds per draft forward, per fed node
    verify: np.ndarray  # seconds per round, per tree node
    other: np.ndarray  # seconds per round, per tree node

    def round_time(self, draft_forwards: np.ndarray, fed: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """Predicted seconds for rounds with these draft forwards, fed nodes and tree sizes."""
        return (self.draft[0] * draft_forwards + self.draft[1] * fed + self.verify[0] + self.verify[1] * nodes
                + self.other[0] + self.other[1] * nodes)

    def to_dict(self) -> dict:
        return {"draft": self.draft.tolist(), "verify": self.verify.tolist(), "other": self.other.tolist()}


def round_features(trace: dict) -> tuple[int, int, int]:
    """Draft forwards, nodes fed to the draft, and tree nodes (root excluded) of one traced round."""
    depth = np.asarray(trace["depth"])
    deepest = int(depth.max())
    fed = int(((depth >= 1) & (depth < deepest)).sum())
    return 1 + max(deepest - 1, 0), fed, len(depth) - 1


def fit(samples: list[dict]) -> CostModel:
    """Least-squares fit over every profiled, traced round of the samples (every round traced: no AR fallback)."""
    rows, draft_s, verify_s, other_s = [], [], [], []
    for s in samples:
        for trace, total, target, draft in zip(s["trace"], s["round_times_s"], s["target_forward_s_per_round"],
                                               s["draft_forward_s_per_round"], strict=False):
            rows.append(round_features(trace))
            draft_s.append(draft)
            verify_s.append(target)
            other_s.append(total - target - draft)
    x = np.asarray(rows, dtype=float)
    ones = np.ones(len(x))
    solve = lambda a, y: np.linalg.lstsq(a, np.asarray(y), rcond=None)[0]  # noqa: E731
    size = np.column_stack([ones, x[:, 2]])
    return CostModel(solve(x[:, :2], draft_s), solve(size, verify_s), solve(size, other_s))


def truncated_round(trace: dict, depth: int, max_nodes: int) -> tuple[int, int, int, int]:
    """(draft forwards, fed, nodes, accepted) of a traced round had the tree been cut to (depth, max_nodes)."""
    d = np.asarray(trace["depth"])[1:]
    logp = _log_path_prob(trace)[1:]
    order = np.argsort(-logp, kind="stable")
    kept = np.zeros(len(d), dtype=bool)
    kept[order[: max_nodes]] = True
    kept &= d <= depth
    accepted = 0
    for node in trace["accepted"][1:]:
        if not kept[node - 1]:
            break
        accepted += 1
    if not kept.any():
        return 1, 0, 0, 0
    deepest = int(d[kept].max())
    return deepest, int((kept & (d < deepest)).sum()), int(kept.sum()), accepted


def choose_budget(model: CostModel, traces: list[dict], depths, caps) -> dict:
    """The (depth, max_nodes) with the highest predicted tokens per second over the traced rounds."""
    best = None
    for depth in depths:
        for cap in caps:
            cut = np.asarray([truncated_round(t, depth, cap) for t in traces], dtype=float)
            seconds = model.round_time(cut[:, 0], cut[:, 1], cut[:, 2]).sum()
            rate = (cut[:, 3] + 1).sum() / seconds
            if best is None or rate > best["tokens_per_s"]:
                best = {"depth": int(depth), "max_nodes": int(cap), "tokens_per_s": float(rate),
                        "tokens_per_round": float((cut[:, 3] + 1).mean())}
    return best


def rate_with_fallback(model: CostModel, traces_by_prompt: list[list[dict]], depth: int, max_nodes: int) -> float:
    """Predicted tokens/s of the (depth, max_nodes) tree when each prompt runs at the cheaper of its tree rounds and
    AR steps (what the fallback does), an AR step priced at the fit's round time with no draft forward and no node."""
    ar_step = float(model.round_time(np.zeros(1), np.zeros(1), np.zeros(1))[0])
    tokens = seconds = 0.0
    for traces in traces_by_prompt:
        cut = np.asarray([truncated_round(t, depth, max_nodes) for t in traces], dtype=float).reshape(-1, 4)
        emitted = float((cut[:, 3] + 1).sum())
        tokens += emitted
        seconds += min(float(model.round_time(cut[:, 0], cut[:, 1], cut[:, 2]).sum()), emitted * ar_step)
    return tokens / seconds


def _log_path_prob(trace: dict) -> np.ndarray:
    """Log path probability of every node (root 0): nodes are stored parents-first."""
    parents, probs = trace["parent"], np.log(np.maximum(np.asarray(trace["prob"], dtype=float), 1e-30))
    out = np.zeros(len(parents))
    for i in range(1, len(parents)):
        out[i] = out[parents[i]] + probs[i]
    return out


class OnlineCost:
    """The cost model's form fitted as a generation goes: round seconds = base + a cost per unit of each feature (the
    tree's split: draft forwards and verified nodes; adaptive retrieval: verified nodes alone).

    Least squares over the rounds seen (weight `forget` on the past, so it follows drift), from the round times the
    decode loop measures anyway (no extra sync); host-side numpy on a tiny system. No answer until `min_rounds` rounds
    have varied every feature (std >= `min_spread`) and apart (AR steps, probes and rounds without the draft do that).
    """

    def __init__(self, features: int = 2, forget: float = 0.97, min_rounds: int = 8, min_spread: float = 0.5):
        self.features, self.forget, self.min_rounds, self.min_spread = features, forget, min_rounds, min_spread
        self.reset()

    def reset(self) -> None:
        size = self.features + 1
        self.xtx, self.xty, self.rounds = np.zeros((size, size)), np.zeros(size), 0
        self.seconds = self.tokens = 0.0

    def observe(self, *features: float, seconds: float, tokens: float) -> None:
        """Take one round's features (e.g. draft forwards, verified nodes with the root excluded), wall seconds and
        emitted tokens."""
        x = np.array([1.0, *features])
        self.xtx = self.forget * self.xtx + np.outer(x, x)
        self.xty = self.forget * self.xty + x * seconds
        self.seconds, self.tokens = self.forget * self.seconds + seconds, self.forget * self.tokens + tokens
        self.rounds += 1

    def coefficients(self) -> np.ndarray | None:
        """(base, per unit of each feature) seconds, each >= 0; None until the rounds seen tell them apart."""
        if self.rounds < self.min_rounds or not self._identified():
            return None
        ridge = 1e-9 * np.trace(self.xtx) * np.eye(self.features + 1)
        return np.maximum(np.linalg.solve(self.xtx + ridge, self.xty), 0.0)

    def _identified(self, max_correlation: float = 0.95) -> bool:
        """Every feature varied (std >= `min_spread`) and no two in lockstep, so the fit can attribute time."""
        weight = self.xtx[0, 0]
        mean = self.xtx[0, 1:] / weight
        cov = self.xtx[1:, 1:] / weight - np.outer(mean, mean)
        std = np.sqrt(np.maximum(np.diag(cov), 0.0))
        apart = np.abs(cov - np.diag(np.diag(cov))) <= max_correlation * np.outer(std, std)
        return bool((std >= self.min_spread).all() and apart.all())

    def seconds_per_token(self) -> float:
        """Recent seconds per emitted token: what one more accepted token saves."""
        return self.seconds / max(self.tokens, 1e-9)


def verify_fit(samples: list[dict]) -> tuple[float, float]:
    """Round seconds = base + per_node x verified nodes, least squares over a method's rounds (an AR step: 0 nodes)."""
    nodes = np.concatenate([s["tree_nodes_per_round"] for s in samples]).astype(float)
    seconds = np.concatenate([s["round_times_s"] for s in samples])
    (base, per_node), *_ = np.linalg.lstsq(np.stack([np.ones_like(nodes), nodes], 1), seconds, rcond=None)
    return float(base), float(per_node)


def chain_speedup(alpha: float, k: int, per_node: float, draft: float) -> float:
    """Expected speedup over AR of rounds that draft k tokens and verify them, each accepted with probability alpha
    independently (Leviathan et al., 2023); `per_node`, `draft`: a verified node's, a draft forward's AR steps."""
    tokens = k + 1 if alpha >= 1 else (1 - alpha ** (k + 1)) / (1 - alpha)
    return tokens / (1 + k * (per_node + draft))


def best_chain(alpha: float, per_node: float, draft: float, max_k: int = 32) -> tuple[int, float]:
    """The chain length (0 = AR steps) with the highest expected speedup at acceptance alpha, and that speedup."""
    return max(((k, chain_speedup(alpha, k, per_node, draft)) for k in range(max_k + 1)), key=lambda kv: kv[1])


def acceptance_needed(speedup: float, per_node: float, draft: float, max_k: int = 32) -> float | None:
    """The least per-token acceptance (to 1e-4) at which some chain reaches `speedup`; None if none does."""
    if best_chain(1.0, per_node, draft, max_k)[1] < speedup:
        return None
    low, high = 0.0, 1.0
    while high - low > 1e-4:
        mid = (low + high) / 2
        low, high = (mid, high) if best_chain(mid, per_node, draft, max_k)[1] < speedup else (low, mid)
    return high
