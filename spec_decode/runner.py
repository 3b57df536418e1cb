"""One run: validate the config, load the pair and prompts, measure AR and each method, write result.json."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from spec_decode import decoders, machine, results, static
from spec_decode.bench import Protocol, run_methods
from spec_decode.config import CONF_DIR, ConfigError, check_config, check_knob, check_method_knobs
from spec_decode.data import DatasetError, load_prompts, read_records, stop_token_ids, uses_chat
from spec_decode.decoders import NEEDS_DRAFT, validate_method
from spec_decode.decoders.batched import check_batched
from spec_decode.metrics import summarize
from spec_decode.models import FEATURE_METHODS, ModelLoadError, check_attention, load_pair, load_tokenizer
from spec_decode.sampling import Sampling

log = logging.getLogger(__name__)
ERROR_FILE = "error.json"
MAX_CHANGES_SHOWN = 4


class ResultWriteError(RuntimeError):
    """A measured result could not be written where asked; the message says where it went instead."""


# Errors that end a run with one `error:` line (exit 2): the input, the data, the models or the numbers are wrong.
USER_ERRORS = tuple(e for e in (ConfigError, ModelLoadError, DatasetError, results.ResultsDirError,
                                machine.MachineBusyError, getattr(decoders, "NonFiniteLogitsError", None))
                    if e is not None)


def run(cfg: DictConfig, conf_dir: Path = CONF_DIR) -> Path:
    """Execute the run `cfg` describes (or reuse its complete result); return the result path."""
    check_config(cfg)
    methods = method_specs(cfg, conf_dir)
    check_attention(cfg.model, [name for name, _ in methods.values()])
    protocol = protocol_from(cfg, methods)
    requested = OmegaConf.to_container(cfg, resolve=True)
    out = Path(cfg.results_dir).absolute() / results.RESULT_FILE
    if reusable(out, requested, cfg.overwrite):
        previous = results.read(out)
        print(summary_table(previous))
        log.info("complete result of this configuration exists, reused: %s", out)
        _print_lines(busy_warnings(previous))
        return out
    results.prepare_dir(out.parent)
    started_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    code = results.git_state()  # the code the run imports now, whatever is committed while it runs
    threads = set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    probe_start = machine.counters()
    prompts, prompting = load_run_prompts(cfg)
    prompts, batching = batch_prompts(prompts, cfg.batch_size)
    protocol = dataclasses.replace(protocol, chat=prompting["chat"], stop_token_ids=tuple(prompting["stop_token_ids"]))
    start = check_quiet(machine.probe(probe_start, cfg.busy_threshold), threads, cfg)
    pair = load_pair(cfg.model, sorted({params["draft"] for _, params in methods.values() if params.get("draft")}))
    runs = run_methods(pair, methods, prompts, protocol)
    payload = _payload(requested, started_at, pair, prompts, runs, threads | {"start": start}, code) | {
        "prompting": prompting}
    if batching:
        payload["batching"] = batching | {"not_batched": hf_batch_refusal(pair)}
    print(summary_table(payload))
    _print_lines(quick_note(cfg))
    save(out, payload)
    (out.parent / ERROR_FILE).unlink(missing_ok=True)
    log.info("results written to %s", out)
    _print_lines(busy_warnings(payload))
    return out


def batch_prompts(prompts: list, batch_size: int) -> tuple[list, dict | None]:
    """The prompts cut to a multiple of `batch_size` (> 1), and what the result records about the batching."""
    if batch_size == 1:
        return prompts, None
    if batch_size > len(prompts):
        raise ConfigError(f"batch_size {batch_size} is larger than the {len(prompts)} prompts of this run; lower it or "
                          "raise num_prompts")
    turns = max(len(p.turns) for p in prompts)
    if turns > 1:
        raise ConfigError(f"batch_size > 1 decodes single-turn prompts; this prompt set has conversations of {turns} "
                          "turns (use a text set, e.g. dataset=wikitext2_local)")
    used = len(prompts) // batch_size * batch_size
    if used < len(prompts):
        log.warning("batch_size %d: the last %d prompts are left out", batch_size, len(prompts) - used)
    return prompts[:used], {"batch_size": batch_size, "batches": used // batch_size, "prompts_left_out":
                            len(prompts) - used}


def hf_batch_refusal(pair) -> dict:
    """What transformers says when asked for assisted generation (and so prompt lookup) at a batch of 2."""
    ids = torch.ones(2, 2, dtype=torch.long, device=pair.target.device)
    try:
        pair.target.generate(ids, attention_mask=torch.ones_like(ids), assistant_model=pair.draft, max_new_tokens=2,
                             do_sample=False)
    except ValueError as err:
        message = str(err)
    else:
        message = "transformers accepted a batch of 2 (not measured here: the HF peers run at batch_size=1)"
    return {"hf_assisted": message, "hf_lookup": message}


def set_threads(requested: int | None) -> dict:
    """Set torch's intra-op threads to `requested`, or (null) to the cores available to the process; the choice."""
    threads = machine.choose_threads(requested)
    torch.set_num_threads(threads["threads"])
    return threads


def check_quiet(start: dict, threads: dict, cfg: DictConfig) -> dict:
    """The start probe's verdict: a busy machine stops a strict_quiet run, else it is said (with fewer threads)."""
    if start["busy"]:
        message = machine.busy_start_message(start, threads, cfg.busy_threshold)
        if cfg.strict_quiet:
            raise machine.MachineBusyError(f"{message}; strict_quiet=true refuses to measure (strict_quiet=false "
                                           "measures anyway and flags the busy methods)")
        log.warning(message)
    return start


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line)


def _payload(config: dict, started_at: str, pair, prompts: list, runs: dict, host: dict | None = None,
             git: dict | None = None) -> dict:
    """The result file's content: what was asked, where and how it ran, the raw samples and their summary.

    `host`: the thread choice and the start probe; the environment gets them with the cores and the load summary;
    `git`: the checkout's state when the run started.
    """
    baseline = next(iter(runs.values()))
    threshold = config.get("busy_threshold", Protocol.busy_threshold)
    summary = [summarize(run, baseline) | {"method": label, "other_cpu": machine.timed_load(run["samples"], threshold)}
               for label, run in runs.items()]
    return {
        "schema_version": results.SCHEMA_VERSION,
        "complete": True,
        "started_at": started_at,
        "config": config,
        "environment": results.environment(pair.target.device, pair.info["dtype"],
                                           _machine_environment(host, summary, threshold), git),
        "model": pair.info,
        "prompts": [{"text": p.text, "ids": p.ids, "category": p.category, "turns": p.turns} for p in prompts],
        "methods": runs,
        "summary": summary,
    }


def _machine_environment(host: dict | None, summary: list[dict], threshold: float) -> dict:
    """Cores, thread choice, start probe, the state at the end, and the busiest timed region of the run."""
    loads = [s["other_cpu"] for s in summary if s["other_cpu"]]
    return {**machine.cores(), **(host or {}), "end": machine.state(), "busy_threshold": threshold,
            "timed_max_other_cpu_cores": max((t["max_cores"] for t in loads), default=None),
            "busy_methods": [s["method"] for s in summary if s["other_cpu"] and s["other_cpu"]["busy"]]}


def reusable(out: Path, requested: dict, overwrite: bool) -> bool:
    """True when `out` holds a complete result of exactly this configuration (output paths aside).

    A complete result of another configuration is a ConfigError naming what differs, unless `overwrite`.
    """
    previous = results.read(out)
    if overwrite or not (isinstance(previous, dict) and previous.get("complete") is True):
        return False
    changes = results.config_changes(previous.get("config") or {}, requested)
    if not changes:
        return True
    shown = "; ".join(changes[:MAX_CHANGES_SHOWN])
    if len(changes) > MAX_CHANGES_SHOWN:
        shown += f"; and {len(changes) - MAX_CHANGES_SHOWN} more"
    raise ConfigError(f"{out} holds a complete result of another configuration ({shown}); pass overwrite=true to "
                      "re-run and replace it, or choose another results_dir")


def save(out: Path, payload: dict) -> None:
    """Write the result; when that fails, keep it in a fallback file (or on stdout) and raise ResultWriteError."""
    try:
        results.write_atomic(out, payload)
        return
    except OSError as err:
        problem = f"cannot write {out} ({err.strerror or err})"
    try:
        fallback = results.save_fallback(payload)
    except OSError as err:
        print(json.dumps(results.strict(payload), allow_nan=False))
        raise ResultWriteError(f"{problem}, nor a fallback file ({err.strerror or err}); the result is printed on "
                               "stdout above") from None
    raise ResultWriteError(f"{problem}; the result was saved to {fallback}")


def load_run_prompts(cfg: DictConfig) -> tuple[list, dict]:
    """The prompts, read and checked before any model loads (a bad dataset fails in seconds), and how they are fed:
    through the chat template or not (the template recorded), and the tokens that end a turn."""
    dataset = _dataset_cfg(cfg.dataset)
    records = read_records(dataset)
    tokenizer = load_tokenizer(cfg.model)
    chat = uses_chat(dataset, tokenizer)
    stops = stop_token_ids(tokenizer, chat)
    prompting = {"chat": chat, "chat_template": tokenizer.chat_template if chat else None, "stop_token_ids": stops,
                 "stop_tokens": tokenizer.convert_ids_to_tokens(stops)}
    return load_prompts(dataset, tokenizer, cfg.num_prompts, records), prompting


QUICK_NOTE = ("quick run (protocol=quick: {num_prompts} prompts x {repeats} repeat, {warmup} warm-up, {max_new_tokens} "
              "new tokens): a first look, not a measurement to publish; the study's protocol (10 warm-ups, 3 repeats): "
              "add protocol=full, or run an experiment (python run.py experiment=main model=smollm2)")


def quick_note(cfg: DictConfig) -> list[str]:
    """The line that says a run used the quick protocol, and which command runs the full one."""
    if cfg.get("protocol") != "quick":
        return []
    return [QUICK_NOTE.format(**{key: cfg[key] for key in ("num_prompts", "repeats", "warmup", "max_new_tokens")})]


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
        check_method_knobs(label, params)
        check_own_draft(label, name, params.get("draft"))
        try:
            validate_method(name, {key: value for key, value in params.items() if key != "draft"})
        except (ValueError, TypeError) as err:
            raise ConfigError(f"method {label!r}: {err}") from err
        specs[label] = (name, params)
    return dict(sorted(specs.items(), key=lambda item: (item[1][0] != "ar", not (added and item[0] == "hf_greedy"))))


def check_own_draft(label: str, name: str, folder) -> None:
    """A method entry's `draft:` (its own draft folder, beside the pair's) names a folder, for a method with a draft."""
    if folder is None:
        return
    if not isinstance(folder, str) or not folder:
        raise ConfigError(f"method {label!r}: draft must be a folder holding a draft model, got {folder!r}")
    if name not in NEEDS_DRAFT or name in FEATURE_METHODS:
        with_draft = ", ".join(sorted(NEEDS_DRAFT - FEATURE_METHODS))
        raise ConfigError(f"method {label!r}: draft: is for the methods that run a plain draft model ({with_draft}), "
                          f"not {name!r}")


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
    """The measurement protocol, its knobs checked (static_cache / compile against the device and `methods` too)."""
    for key in ("max_new_tokens", "num_prompts", "repeats", "warmup", "seed", "profile", "trace_rounds", "interleave",
                "busy_threshold", "strict_quiet"):
        check_knob(key, cfg[key])
    try:
        static.validate(cfg.static_cache, cfg.compile, cfg.model.get("device", "cpu"), methods)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if cfg.batch_size > 1:
        check_batching(cfg, methods or {})
    return Protocol(cfg.max_new_tokens, cfg.warmup, cfg.repeats, cfg.seed, cfg.profile, cfg.trace_rounds,
                    cfg.interleave, cfg.static_cache, cfg.compile, cfg.busy_threshold, cfg.strict_quiet,
                    adapt_threads=cfg.threads is None and not cfg.strict_quiet,
                    sampling=Sampling(cfg.temperature, cfg.top_p, cfg.top_k), batch_size=cfg.batch_size)


def check_batching(cfg: DictConfig, methods: dict[str, tuple[str, dict]]) -> None:
    """batch_size > 1: greedy, dynamic caches, and methods that batch (ConfigError naming the first that does not)."""
    if cfg.temperature > 0:
        raise ConfigError(f"batch_size {cfg.batch_size} decodes greedily only: set temperature=0 or batch_size=1")
    if cfg.static_cache or cfg.compile:
        raise ConfigError("static_cache / compile run at batch_size=1 only (batched rows use their own cache)")
    for label, (name, params) in sorted(methods.items(), key=lambda item: item[1][0] == "hf_greedy"):  # asked first
        try:
            check_batched(label, name, params)
        except ValueError as err:
            raise ConfigError(f"batch_size {cfg.batch_size}: {err}") from err


def _dataset_cfg(dataset: DictConfig) -> dict:
    """The dataset config with a relative `path` made absolute and `source` set to local when a path is given."""
    data = OmegaConf.to_container(dataset, resolve=True)
    if data.get("path"):
        data["path"] = str(Path(data["path"]).absolute())
        if data.get("source") in ("hub", "builtin"):  # a text set with a path: the local copy
            data["source"] = "local"
    return data


def summary_table(payload: dict) -> str:
    """One screen: method, tok/s, speedup (three ways), acceptance, tokens/round, exact match, machine load."""
    def num(value) -> float:
        return math.nan if value is None else value

    rows = [{
        "method": s["method"], "tok/s": num(s["throughput"]["mean"]), "±std": num(s["throughput"]["std"]),
        "speedup": num(s["speedup"]), "sp.totals": num(s.get("speedup_of_totals")),
        "sp.ratios": num(s.get("speedup_mean_of_ratios")), "accept": num(s["acceptance_rate"]),
        "accept(depth)": num(s["acceptance_depth_level"]), "tok/round": num(s["tokens_per_round"]),
        "nodes/round": num(s["mean_tree_nodes"]), "exact": _exact(s),
        **_exactness_columns(s), **_batch_columns(s), "compress": num(s["compressions"]["mean"]), **_load_columns(s),
    } for s in payload["summary"]]
    model, env, cfg = payload["model"], payload["environment"], payload["config"]
    header = (f"model {model['name']} ({model['dtype']}, {env['device_name']}, {_threads(env)}); "
              f"dataset {cfg['dataset']['name']}: {len(payload['prompts'])} prompts x {cfg['repeats']} repeats, "
              f"{_batching(cfg)}"
              f"up to {cfg['max_new_tokens']} new tokens; speedup = mean tok/s over AR's (Spec-Bench), "
              "sp.totals = ratio of total tok/s, sp.ratios = mean per-prompt ratio")
    table = pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3f}")
    return "\n".join([header, *_machine_header(env, cfg), table, *_category_table(payload["summary"]),
                      *divergence_warnings(payload["summary"])])


def _batch_columns(s: dict) -> dict:
    """Batched runs: rows equal to batch-1 greedy AR / rows compared, and the mean seconds until a row finished."""
    batch = s.get("batch")
    if not batch:
        return {}
    return {"rows=AR@1": f"{batch['rows_exact']}/{batch['rows_compared']}",
            "row s": batch["row_latency_s"]["mean"]}


def _batching(cfg: dict) -> str:
    """The header's words on batching (nothing at batch size 1)."""
    size = cfg.get("batch_size", 1)
    return "" if size == 1 else f"in batches of {size} (speedup over batched AR at that size), "


def _exact(s: dict) -> str:
    """The mean exact match, or n/a for a sampled run (no token-for-token reference)."""
    if s["exact_match"] is None:
        return "n/a"
    mean = s["exact_match"]["mean"]  # null when stored without a comparison (strict JSON has no NaN)
    return f"{math.nan if mean is None else mean:.3f}"


def _category_table(summary: list[dict]) -> list[str]:
    """With categorised prompts: the speedup per reporting group (Spec-Bench's) and overall, one row per method."""
    if not any("by_category" in s for s in summary):
        return []
    rows = [{"method": s["method"], **{group: v["speedup"] for group, v in s.get("by_category", {}).items()},
             "overall": s["speedup"], "tok/round": s["tokens_per_round"]} for s in summary]
    return ["speedup by category (mean tok/s over AR's on the category's prompts; overall: all prompts):",
            pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3f}")]


def _threads(env: dict) -> str:
    """torch's threads: "2 threads", or "2 -> 1 threads" when threads=null gave cores back during the run."""
    first, last = (env.get("machine") or {}).get("threads", env["torch_threads"]), env["torch_threads"]
    return f"{first} threads" if first == last else f"{first} -> {last} threads"


def _load_columns(s: dict) -> dict:
    """others = other processes' mean CPU (cores) during the method's timed regions; busy = BUSY above threshold."""
    load = s.get("other_cpu")
    if not load:
        return {"others": math.nan, "busy": "-"}
    return {"others": load["mean_cores"], "busy": "BUSY" if load["busy"] else ""}


def _machine_header(env: dict, cfg: dict) -> list[str]:
    host = env.get("machine")
    if not host:
        return []
    order = "interleaved" if cfg.get("interleave") else "sequential"
    busiest = host["timed_max_other_cpu_cores"]
    return [f"{order} order; {host['threads']} torch threads ({host['chosen_by']}); other processes during timing: "
            f"{'n/a' if busiest is None else f'at least {busiest:.2f} cores'} at the busiest "
            f"(others = mean cores; BUSY above busy_threshold={host['busy_threshold']:g})"]


def busy_warnings(payload: dict) -> list[str]:
    """The run's last lines when other processes took CPU during timing: which methods, how much, how to re-run."""
    busy = [s for s in payload["summary"] if (s.get("other_cpu") or {}).get("busy")]
    if not busy:
        return []
    reduced = [c | {"prompt": p["prompt"]} for p in _per_prompt(payload) for c in p.get("threads_reduced", [])]
    cfg = payload["config"]
    most = max(s["other_cpu"]["max_cores"] for s in busy)
    lines = [f"WARNING: other processes used the CPU while {', '.join(s['method'] for s in busy)} "
             f"{'was' if len(busy) == 1 else 'were'} timed (at least {most:.2f} cores; busy_threshold="
             f"{busy[0]['other_cpu']['threshold_cores']:g}): tok/s and speedups of this run may be unreliable.",
             f"WARNING: re-run on a quieter machine{_fewer_threads(payload['environment'])}; strict_quiet=true "
             "refuses to measure on a busy machine."]
    lines += [f"WARNING: other processes took {c['other_cpu_cores']:.2f} cores during prompt {c['prompt']} "
              f"(repeat {c['repeat']}): torch threads {c['from_threads']} -> {c['to_threads']} from there on, and "
              "that round was measured again (threads=null adapts; its discarded samples are in the result)"
              for c in reduced]
    if not cfg.get("interleave"):
        lines.append("WARNING: this run measured the methods one after another; interleave=true spreads such load "
                     "over all methods alike.")
    return lines


def _per_prompt(payload: dict) -> list[dict]:
    """The interleaved run's per-prompt machine records (the same in every method's record)."""
    runs = payload.get("methods") or {}
    return next(iter(runs.values()), {}).get("machine", {}).get("per_prompt", [])


def _fewer_threads(env: dict) -> str:
    threads, usable = env["torch_threads"], (env.get("machine") or {}).get("usable_cores", "?")
    if threads == 1:
        return f" (this run used 1 thread of {usable} usable cores)"
    return (f", or with fewer torch threads than the cores other processes leave free (threads=1; this run used "
            f"{threads} threads of {usable} usable cores)")


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
