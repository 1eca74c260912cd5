"""Records -> one contribution file, and the pull request that offers it.

What is stripped: the manifest's and the probe's host name; every path in argv, the matrix path,
model paths (the file name and sha256 stay), prompt-set and n-gram-cache paths (their file names
stay), results paths. Manifests keep only the fields the schema knows, so a field added later
cannot carry a path out by accident.

What is checked:
- the lossless flags: every trial has one, and it agrees with `first_mismatch`; baseline trials,
  being the reference, must all be lossless. Speculative trials whose tokens differ from the
  baseline's are *kept and marked* (the file's `lossless` block, the page's lossless column and
  crosses): on GPUs, batched verification and one-token decoding round near-ties differently, a
  measured fact that a contribution must show rather than hide.
- comparability: a speculative config is compared with the baseline that shares its reference
  key, and that baseline must have been measured with the same settings that change speed apart
  from the method's own (KV type, flash attention, context and batch size, GPUs and split,
  threads, backend sampling, prompts, chat template, n_predict, the weights' placement, the same
  target file) and on the same software and hardware (GPUs, driver, CUDA, CPU, llama.cpp,
  llama-cpp-python, specsweep). A speculative config without such a baseline is refused: a
  baseline measured with other flags is the confound that made a published comparison wrong.
  `--drop-unmatched` leaves such configs out of the file instead (each one named), rather than
  letting them in.
"""

from __future__ import annotations

import copy
import re
import time
from collections import defaultdict
from pathlib import Path

from specsweep import __version__
from specsweep.contrib import KIND, SCHEMA_VERSION, problem, schema
from specsweep.matrix.cells import NEUTRAL
from specsweep.errors import SpecsweepError
from specsweep.records.sources import Source, probe_card, trial_card

# settings that change speed but are not the method's own: a spec config and its baseline must agree
def _setting(settings: dict, key: str):
    """A recorded setting; records made before its key existed lack it, meaning its neutral value."""
    return settings.get(key, NEUTRAL.get(key))


COMPARABLE = ("kv", "flash_attn", "n_ctx", "n_batch", "gpus", "split_mode", "tensor_split", "threads",
              "backend_sampling", "prompts", "prompt_kinds", "chat", "n_predict",
              "n_cpu_moe", "override_tensor", "n_gpu_layers", "vram_budget")  # where the target's weights live
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def base_name(text: str) -> str:
    """A path's last part; anything without a separator is returned as it is."""
    if "/" not in text and "\\" not in text:
        return text
    return text.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def strip_arg(arg: str) -> str:
    if arg.startswith("-") and "=" in arg:
        key, value = arg.split("=", 1)
        return f"{key}={base_name(value)}"
    return base_name(arg)


def strip_argv(argv) -> list[str]:
    argv = [str(a) for a in argv or []]
    return (["specsweep"] + [strip_arg(a) for a in argv[1:]]) if argv else []


def strip_manifest(m: dict) -> dict:
    known = schema()["$defs"]["manifest"]["properties"]
    out = {k: copy.deepcopy(v) for k, v in m.items() if k in known}
    if "argv" in out:
        out["argv"] = strip_argv(out["argv"])
    if "matrix" in out:
        out["matrix"] = base_name(str(out["matrix"]))
    out["models"] = {name: {"file": base_name(str(f.get("file") or f.get("path") or "?")), "sha256": f.get("sha256")}
                     for name, f in (m.get("models") or {}).items()}
    return out


def strip_trial(t: dict) -> dict:
    out = {k: copy.deepcopy(v) for k, v in t.items() if k not in ("host", "path", "argv")}
    settings = out.get("settings") or {}
    for k in ("prompts", "lookup_static", "lookup_dynamic"):
        if isinstance(settings.get(k), str):
            settings[k] = base_name(settings[k])
    out["models"] = {role: {k: base_name(str(v)) if k in ("file", "ref") else v for k, v in m.items()
                            if k in ("name", "ref", "file", "sha256")}
                     for role, m in (t.get("models") or {}).items()}
    return out


def strip_probe(p: dict) -> dict:
    out = {k: copy.deepcopy(v) for k, v in p.items() if k not in ("host", "path")}
    if "argv" in out:
        out["argv"] = strip_argv(out["argv"])
    model = out.get("model")
    if isinstance(model, dict):
        path = model.pop("path", None)
        model["file"] = base_name(str(model.get("file") or path or "?"))
    (out.get("machine") or {}).pop("host", None)
    draft = out.get("draft") or {}
    if isinstance(draft.get("model"), str):
        draft["model"] = base_name(draft["model"])
    return out


def _machine(m: dict) -> dict:
    return {"GPUs": sorted((str(g.get("name")), str(g.get("driver"))) for g in m.get("gpus") or []),
            "CUDA": m.get("cuda"), "CPU": m.get("cpu"), "llama.cpp": m.get("llama_cpp_commit"),
            "llama-cpp-python": m.get("llama_cpp_python"), "specsweep": m.get("specsweep")}


def check_lossless_flags(trials: list[dict]) -> None:
    for t in trials:
        flag, first = t.get("lossless"), t.get("first_mismatch", None)
        if t.get("synthetic") is True:  # synthetic acceptance: its tokens are not the target's text
            if flag is not None or t.get("method") == "baseline":
                raise SpecsweepError(f"trial {t.get('cell')!r} / {t.get('prompt')!r} #{t.get('trial')} is synthetic "
                                     f"but has lossless={flag!r}; refusing damaged records")
            continue
        if not isinstance(flag, bool):
            raise SpecsweepError(f"trial {t.get('cell')!r} / {t.get('prompt')!r} #{t.get('trial')} has no lossless "
                                 f"flag: these records were not written by `specsweep run`")
        if flag != (first is None):
            raise SpecsweepError(f"trial {t.get('cell')!r} / {t.get('prompt')!r} #{t.get('trial')}: lossless={flag} "
                                 f"contradicts first_mismatch={first!r}; refusing damaged records")
        if t.get("method") == "baseline" and not flag:
            raise SpecsweepError(f"baseline trial {t.get('cell')!r} / {t.get('prompt')!r} #{t.get('trial')} differs "
                                 f"from the baseline reference: the baseline itself is not deterministic here")


def unmatched(trials: list[dict], manifests: list[dict]) -> dict[str, str]:
    """Speculative cells that have no baseline measured the same way: cell id -> why."""
    machines = {m.get("id"): _machine(m) for m in manifests}
    cells: dict[str, dict] = {}
    for t in trials:
        c = cells.setdefault(t["cell_id"], {"first": t, "prompts": set(), "manifests": set()})
        c["prompts"].add(t.get("prompt_id"))
        c["manifests"].add(t.get("manifest"))
    baselines = defaultdict(list)
    for c in cells.values():
        if c["first"].get("method") == "baseline":
            baselines[c["first"].get("reference_key")].append(c)
    out = {}
    for cid, c in cells.items():
        t = c["first"]
        if t.get("method") == "baseline":
            continue
        name = t.get("cell")
        bases = baselines.get(t.get("reference_key"))
        if not bases:
            out[cid] = (f"{name!r} has no baseline cell with the same target, KV type, devices, n_predict and "
                        f"prompts")
            continue
        for b in bases:
            bt = b["first"]
            s, bs = t.get("settings") or {}, bt.get("settings") or {}
            diff = [f"{k} {_setting(s, k)!r} vs {_setting(bs, k)!r}" for k in COMPARABLE
                    if _setting(s, k) != _setting(bs, k)]
            sha, bsha = ((x.get("models") or {}).get("target", {}).get("sha256") for x in (t, bt))
            if sha != bsha:
                diff.append("target sha256 differs")
            missing = c["prompts"] - b["prompts"]
            if missing:
                diff.append(f"baseline has no trial of prompt {sorted(missing)[0]!r}")
            runs = [machines.get(m) for m in c["manifests"] | b["manifests"]]
            if any(r is None for r in runs):
                diff.append("a trial's run manifest is missing")
            elif runs:
                for key in runs[0]:
                    values = {repr(r[key]) for r in runs}
                    if len(values) > 1:
                        diff.append(f"{key} differs between the runs ({', '.join(sorted(values))})")
            if diff:
                out[cid] = f"{name!r} vs baseline {bt.get('cell')!r}: {'; '.join(diff)}"
                break
    return out


def lossless_summary(trials: list[dict]) -> dict:
    """Lossless trials per cell; synthetic-acceptance trials have no lossless verdict and are left out."""
    trials = [t for t in trials if not t.get("synthetic")]
    per: dict[str, list[int]] = {}
    for t in trials:
        n = per.setdefault(t["cell"], [0, 0])
        n[0] += 1
        n[1] += bool(t["lossless"])
    return {"trials": len(trials), "lossless": sum(bool(t["lossless"]) for t in trials),
            "cells": [{"cell": c, "trials": n, "lossless": k} for c, (n, k) in per.items() if k < n]}


def paired_summary(trials: list[dict]) -> list[dict]:
    """Each speculative config's change against the baseline of its own block (or trial index, in
    the sequential design) with its 95% t- and block-bootstrap intervals: specsweep analyze's
    paired rows, so that a reader of the file has them without recomputing."""
    from specsweep.analysis.paired import paired_rows

    rows, _ = paired_rows(trials)  # it keeps the last attempt of each block itself
    interval = lambda ci: None if ci is None else [round(ci[0], 6), round(ci[1], 6)]  # noqa: E731
    return [{"cell": r.cell, "cell_id": r.cell_id, "design": r.design, "n_blocks": r.n_blocks,
             "change": None if r.change is None else round(r.change, 6), "t_interval": interval(r.t_interval),
             "bootstrap_interval": interval(r.bootstrap_interval), "synthetic": r.synthetic}
            for r in rows]


def build(sources: list[Source], card: str | None = None, power_limit_w: float | None = None,
          graphics_mhz: float | None = None, memory_mhz: float | None = None, notes: str | None = None,
          drop_unmatched: bool = False, today: str | None = None) -> tuple[dict, list[str]]:
    """The contribution document and the warnings to print (lossless failures, dropped configs)."""
    if card is not None and not card.strip():
        raise SpecsweepError("--card must not be empty")
    card = card.strip() if card else None
    for s in sources:
        if s.origin == "contribution":
            raise SpecsweepError(f"{s.name} is already a contribution; give the results folder it came from")
    # per record, not per source: one results folder or probe file can hold several cards' records
    cards = sorted({s.card for s in sources} | {c for s in sources for c in
                   [trial_card(t, s.manifests) for t in s.trials] + [probe_card(p) for p in s.probes] if c})
    if len(cards) > 1:
        raise SpecsweepError(f"one card per contribution: these results come from {' and '.join(cards)}")
    manifests: dict[str, dict] = {}
    for s in sources:
        for m in s.manifests:
            manifests.setdefault(m.get("id"), m)
    trials = [t for s in sources for t in s.trials]
    probes = [p for s in sources for p in s.probes]
    if trials:
        missing = sorted({t.get("manifest") for t in trials} - set(manifests))
        if missing:
            raise SpecsweepError(f"trials of run {missing[0]!r} have no manifest (manifests.jsonl): a contribution "
                                 f"needs the machine and versions each number came from")
    check_lossless_flags(trials)
    warnings = []
    bad = unmatched(trials, list(manifests.values()))
    if bad:
        if not drop_unmatched:
            first = next(iter(bad.values()))
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise SpecsweepError(f"refusing: a speculative config is not comparable with its baseline: {first}{more}; "
                                 f"measure them alike, or pass --drop-unmatched to leave such configs out")
        for reason in bad.values():
            warnings.append(f"left out {reason}")
        trials = [t for t in trials if t["cell_id"] not in bad]
        if not trials and not probes:
            raise SpecsweepError("nothing left to contribute once the unmatched configs are dropped")
    used = {t.get("manifest") for t in trials}
    lossless = lossless_summary(trials)
    for c in lossless["cells"]:
        warnings.append(f"{c['cell']!r}: {c['trials'] - c['lossless']} of {c['trials']} trials generated other "
                        f"tokens than the baseline (kept and marked in the file's lossless block)")
    clocks = None if graphics_mhz is None and memory_mhz is None else {"graphics_mhz": graphics_mhz,
                                                                         "memory_mhz": memory_mhz}
    doc = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "card": card or (cards[0] if cards else "unknown card"),
        "created": today or time.strftime("%Y-%m-%d"),
        "specsweep": __version__,
        "power_limit_w": power_limit_w,
        "clocks": clocks,
        "manifests": [strip_manifest(m) for mid, m in manifests.items() if mid in used],
        "trials": [strip_trial(t) for t in trials],
        "probes": [strip_probe(p) for p in probes],
        "lossless": lossless,
        "paired": paired_summary(trials),
    }
    if notes:
        doc["notes"] = notes
    reason = problem(doc)
    if reason:
        raise SpecsweepError(f"the contribution would not pass its own schema: {reason}")
    return doc, warnings


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "card"


def default_output(doc: dict) -> Path:
    return Path("contrib") / f"{slug(doc['card'])}-{doc['created']}.json"


def push(path: Path, repo: str, doc: dict) -> str:
    """Open a pull request adding `path` to the Hugging Face dataset `repo`; returns its address.
    The one network call; whatever goes wrong in it is one line."""
    if not REPO_ID.match(repo):
        raise SpecsweepError(f"--push takes a dataset repo id like owner/name, got {repo!r}")
    from huggingface_hub import CommitOperationAdd, HfApi

    op = CommitOperationAdd(path_in_repo=f"contrib/{path.name}", path_or_fileobj=path.read_bytes())
    trials, probes = len(doc["trials"]), len(doc["probes"])
    try:
        info = HfApi().create_commit(
            repo_id=repo, repo_type="dataset", operations=[op], create_pr=True,
            commit_message=f"specsweep results: {doc['card']} ({doc['created']})",
            commit_description=f"{trials} trials, {probes} probes, schema version {doc['schema_version']}, "
                               f"written by specsweep {doc['specsweep']}.")
    except Exception as e:  # network, auth, offline mode, Hub errors: huggingface_hub raises many kinds
        code = getattr(getattr(e, "response", None), "status_code", None)
        if code in (401, 403):  # huggingface_hub calls a 401 "repository not found" or a plain HTTP error
            raise SpecsweepError(f"cannot open a pull request on dataset {repo}: the Hub refused (HTTP {code}): set "
                                 f"HF_TOKEN to a token that may open pull requests there ({path} is kept)") from None
        detail = " ".join(str(e).split())[:300]
        raise SpecsweepError(f"cannot open a pull request on dataset {repo}: {type(e).__name__}: {detail}") from None
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or info)
