"""One run: validate the config, load the pair and prompts, measure AR and each method, write result.json."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from spec_decode import results
from spec_decode.bench import Protocol, run_methods
from spec_decode.data import load_prompts
from spec_decode.decoders import validate_method
from spec_decode.metrics import summarize
from spec_decode.models import check_attention, load_pair

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class ConfigError(ValueError):
    """The configuration asks for something invalid; the message says what."""


def run(cfg: DictConfig, conf_dir: Path = CONF_DIR) -> Path:
    """Execute the run `cfg` describes (or skip it when its result is complete); return the result path."""
    methods = method_specs(cfg, conf_dir)
    check_attention(cfg.model, [name for name, _ in methods.values()])
    protocol = protocol_from(cfg)
    out = Path(cfg.results_dir).absolute() / results.RESULT_FILE
    if results.is_complete(out):
        log.info("complete result exists, skipping: %s", out)
        return out
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    pair = load_pair(cfg.model)
    prompts = load_prompts(_dataset_cfg(cfg.dataset), pair.tokenizer, cfg.num_prompts)
    runs = run_methods(pair, methods, prompts, protocol)
    baseline = next(iter(runs.values()))
    ar_throughput = summarize(baseline)["throughput"]["mean"]
    summary = [summarize(run, ar_throughput) | {"method": label} for label, run in runs.items()]
    payload = {
        "schema_version": results.SCHEMA_VERSION,
        "complete": True,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": results.environment(pair.target.device, pair.info["dtype"]),
        "model": pair.info,
        "prompts": [{"text": p.text, "ids": p.ids} for p in prompts],
        "methods": runs,
        "summary": summary,
    }
    results.write_atomic(out, payload)
    print(summary_table(summary, pair.info, payload["environment"]))
    log.info("results written to %s", out)
    return out


def method_specs(cfg: DictConfig, conf_dir: Path) -> dict[str, tuple[str, dict]]:
    """Label -> (method name, knobs), AR first; each method's knobs come from its file in conf/method/.

    A comparison with an HF peer (hf_*) also gets hf_greedy, transformers' own greedy baseline, right after AR.
    """
    entries = list(cfg.methods) if cfg.methods is not None else [cfg.method.name]
    names = [e if isinstance(e, str) else e.get("name") for e in entries]
    if "ar" not in names:
        entries.insert(0, "ar")
    added = any(str(n).startswith("hf_") for n in names) and "hf_greedy" not in names
    if added:
        entries.append("hf_greedy")
    specs: dict[str, tuple[str, dict]] = {}
    for entry in entries:
        label, name, params = _method_entry(cfg, entry, conf_dir)
        if label in specs:
            raise ConfigError(f"method {label!r} listed twice; give each entry a distinct `label`")
        try:
            validate_method(name, params)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"method {label!r}: {err}") from err
        specs[label] = (name, params)
    return dict(sorted(specs.items(), key=lambda item: (item[1][0] != "ar", not (added and item[0] == "hf_greedy"))))


def _method_entry(cfg: DictConfig, entry, conf_dir: Path) -> tuple[str, str, dict]:
    overrides = OmegaConf.to_container(entry) if isinstance(entry, DictConfig) else {"name": str(entry)}
    name = overrides.get("name")
    if name == cfg.method.name:
        base = OmegaConf.to_container(cfg.method, resolve=True)
    else:
        file = conf_dir / "method" / f"{name}.yaml"
        if not file.is_file():
            known = sorted(p.stem for p in (conf_dir / "method").glob("*.yaml"))
            raise ConfigError(f"unknown method {name!r}; choose one of {known}")
        holder = cfg.copy()
        OmegaConf.set_struct(holder, False)
        holder._method = OmegaConf.load(file)  # resolves ${k}, ${depth}, ... against this run's config
        base = OmegaConf.to_container(holder._method, resolve=True)
    merged = base | overrides
    label = merged.pop("label", None) or name
    merged.pop("name")
    return label, name, merged


def protocol_from(cfg: DictConfig) -> Protocol:
    """The measurement protocol, checked."""
    checks = {"max_new_tokens": 1, "num_prompts": 1, "repeats": 1, "warmup": 0}
    for key, least in checks.items():
        if cfg[key] < least:
            raise ConfigError(f"{key} must be >= {least}, got {cfg[key]}")
    return Protocol(cfg.max_new_tokens, cfg.warmup, cfg.repeats, cfg.seed, cfg.profile, cfg.trace_rounds,
                    cfg.interleave)


def _dataset_cfg(dataset: DictConfig) -> dict:
    """The dataset config with a relative `path` made absolute and `source` set to local when a path is given."""
    data = OmegaConf.to_container(dataset, resolve=True)
    if data.get("path"):
        data["path"] = str(Path(data["path"]).absolute())
        data["source"] = "local"
    return data


def summary_table(summary: list[dict], model: dict, env: dict) -> str:
    """One screen: tok/s, speedup, acceptance, tokens/round, exactness; then a WARNING per non-tie divergence."""
    rows = [{
        "method": s["method"], "tok/s": s["throughput"]["mean"], "±std": s["throughput"]["std"],
        "speedup": s["speedup"], "accept": s["acceptance_rate"], "accept(depth)": s["acceptance_depth_level"],
        "tok/round": s["tokens_per_round"], "nodes/round": s["mean_tree_nodes"],
        "exact": s["exact_match"]["mean"], **_exactness_columns(s), "compress": s["compressions"]["mean"],
    } for s in summary]
    header = (f"model {model['name']} ({model['dtype']}, {env['device_name']}, {env['torch_threads']} threads), "
              f"{summary[0]['samples']} samples per method")
    table = pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3f}")
    return "\n".join([header, table, *divergence_warnings(summary)])


def _exactness_columns(s: dict) -> dict:
    """diverged = samples that left AR's tokens / samples compared; at tie = of those, at a near-tie; flag = BUG?"""
    first, tie = s.get("first_divergence"), s.get("divergence_at_tie")
    if not first or not first["compared"]:
        return {"diverged": "-", "at tie": "-", "flag": ""}
    flag = "streaming" if s.get("divergence_not_at_tie") is None else "NOT-AT-TIE" if s["divergence_not_at_tie"] else ""
    return {"diverged": f"{first['diverged']}/{first['compared']}", "at tie": tie["count"], "flag": flag}


def divergence_warnings(summary: list[dict]) -> list[str]:
    """One line per sample whose tokens left AR's where AR's top-2 margin was no tie: a bug, not a kernel flip."""
    return [f"WARNING: {s['method']} left AR's tokens at prompt {d['prompt']} (repeat {d['repeat']}), token "
            f"{d['index']}, where AR's top-1 minus top-2 logit margin is "
            f"{'n/a (past AR end)' if d['margin'] is None else format(d['margin'], '.4g')}: not a near-tie"
            for s in summary for d in (s.get("divergence_not_at_tie") or [])]
