"""One run: validate the config, load the pair and prompts, measure AR and each method, write result.json."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from spec_decode import results, static
from spec_decode.bench import Protocol, run_methods
from spec_decode.data import load_prompts
from spec_decode.decoders import validate_method
from spec_decode.metrics import summarize
from spec_decode.models import load_pair

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class ConfigError(ValueError):
    """The configuration asks for something invalid; the message says what."""


def run(cfg: DictConfig, conf_dir: Path = CONF_DIR) -> Path:
    """Execute the run `cfg` describes (or skip it when its result is complete); return the result path."""
    methods = method_specs(cfg, conf_dir)
    protocol = protocol_from(cfg, methods)
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
    """Label -> (method name, knobs), AR first; each method's knobs come from its file in conf/method/."""
    entries = list(cfg.methods) if cfg.methods is not None else [cfg.method.name]
    if "ar" not in [e if isinstance(e, str) else e.get("name") for e in entries]:
        entries.insert(0, "ar")
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
    return dict(sorted(specs.items(), key=lambda item: item[1][0] != "ar"))


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


def protocol_from(cfg: DictConfig, methods: dict[str, tuple[str, dict]] | None = None) -> Protocol:
    """The measurement protocol, checked (static_cache / compile against the device and `methods` too)."""
    checks = {"max_new_tokens": 1, "num_prompts": 1, "repeats": 1, "warmup": 0}
    for key, least in checks.items():
        if cfg[key] < least:
            raise ConfigError(f"{key} must be >= {least}, got {cfg[key]}")
    try:
        static.validate(cfg.static_cache, cfg.compile, cfg.model.get("device", "cpu"), methods)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return Protocol(cfg.max_new_tokens, cfg.warmup, cfg.repeats, cfg.seed, cfg.profile, cfg.trace_rounds,
                    cfg.interleave, cfg.static_cache, cfg.compile)


def _dataset_cfg(dataset: DictConfig) -> dict:
    """The dataset config with a relative `path` made absolute and `source` set to local when a path is given."""
    data = OmegaConf.to_container(dataset, resolve=True)
    if data.get("path"):
        data["path"] = str(Path(data["path"]).absolute())
        data["source"] = "local"
    return data


def summary_table(summary: list[dict], model: dict, env: dict) -> str:
    """One screen: method, tok/s, speedup, acceptance, tokens/round, exact match."""
    rows = [{
        "method": s["method"], "tok/s": s["throughput"]["mean"], "±std": s["throughput"]["std"],
        "speedup": s["speedup"], "accept": s["acceptance_rate"], "accept(depth)": s["acceptance_depth_level"],
        "tok/round": s["tokens_per_round"], "nodes/round": s["mean_tree_nodes"],
        "exact": s["exact_match"]["mean"], "compress": s["compressions"]["mean"],
    } for s in summary]
    header = (f"model {model['name']} ({model['dtype']}, {env['device_name']}, {env['torch_threads']} threads), "
              f"{summary[0]['samples']} samples per method")
    return header + "\n" + pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3f}")
