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


def _log_path_prob(trace: dict) -> np.ndarray:
    """Log path probability of every node (root 0): nodes are stored parents-first."""
    parents, probs = trace["parent"], np.log(np.maximum(np.asarray(trace["prob"], dtype=float), 1e-30))
    out = np.zeros(len(parents))
    for i in range(1, len(parents)):
        out[i] = out[parents[i]] + probs[i]
    return out
