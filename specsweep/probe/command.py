"""`specsweep probe MODEL`: the verify-cost curve T(K)/T(1), the expert-union prediction, break-even
acceptance per draft length and the memory-bandwidth bound; one record in results/probe/probe.jsonl."""

from __future__ import annotations

import statistics

import sys
import time
from pathlib import Path

import click

from specsweep.engine import buffer_types, runtime
from specsweep.errors import SpecsweepError
from specsweep.models import fit, placement
from specsweep.models.overrides import parse_overrides
from specsweep.probe import calibrate, theory
from specsweep.probe.measure import (BATCH_TOKENS, DEFAULT_KS, SHORT_PROMPT, WARMUP, Curve, TracedCurve,
                                     context_size, known_bandwidth_gbs, measure_curve, trace_curve)
from specsweep.records import manifest
from specsweep.records.store import JsonlFile


def parse_gpus(text: str) -> tuple[int, ...]:
    text = (text or "").strip()
    if not text or text.lower() == "cpu":
        return ()
    try:
        gpus = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise SpecsweepError(f"--gpus takes GPU indices like 0 or 0,1 (\"\" for the CPU), got {text!r}") from None
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise SpecsweepError(f"--gpus: indices must be distinct and non-negative, got {text!r}")
    return gpus


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise SpecsweepError(f"--k takes token counts like 1,2,4,8, got {text!r}") from None
    if not ks:
        raise SpecsweepError("--k names no token count")
    if min(ks) < 1:
        raise SpecsweepError(f"--k: every K must be at least 1, got {min(ks)}")
    return sorted(set(ks) | {1})  # T(1) is the ordinary decode step everything is compared with


def _check_gguf(path: Path, what: str) -> None:
    if not path.is_file():
        raise SpecsweepError(f"{what} file not found: {path}")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise SpecsweepError(f"{path} is not a GGUF file (no GGUF magic)")


def machine_facts(gpus: tuple[int, ...], threads: int) -> dict:
    facts = manifest.machine()
    used = [g for g in facts["gpus"] if g["index"] in gpus] or (facts["gpus"][:1] if gpus else [])
    return {**facts, "threads": threads or runtime.default_threads(), "gpu_name": used[0]["name"] if used else None}


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 6)


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def _fmt_a(a: float | None) -> str:
    return "never" if a is None else f"{a:.3f}"


@click.command("probe")
@click.argument("model_path", metavar="MODEL", required=False, type=click.Path(path_type=Path))
@click.option("--synth", "synth_name", metavar="NAME", default=None,
              help="Probe the synthetic stand-in of a models.lock target (or a shape card) instead of MODEL: "
                   "written into the specsweep cache once, then probed, before the real file is downloaded.")
@click.option("--synth-draft", "synth_draft", metavar="NAME", default=None,
              help="Time the draft step of a models.lock draft's stand-in (as --draft does for a file).")
@click.option("--synth-scale", type=click.Choice(["full", "tiny"]), default="full", show_default=True,
              help="The stand-ins' scale: full (the real shape, timing-true) or tiny (the same layout, CPU-sized: tests).")
@click.option("--gpus", default="0", show_default=True, help='GPU indices, comma-separated; "" for the CPU.')
@click.option("--depth", type=int, default=0, show_default=True,
              help="Context depth the K tokens are verified at (0: after a short prompt).")
@click.option("--k", "k_text", default=",".join(map(str, DEFAULT_KS)), show_default=True,
              help="Batch sizes K to time (1 is always added).")
@click.option("--reps", type=int, default=5, show_default=True, help=f"Timed passes per K (after {WARMUP} warm-up passes: the first captures the graph).")
@click.option("--outputs", type=click.Choice(["sampled", "logits"]), default="sampled", show_default=True,
              help="sampled: greedy tokens picked on the device (backend sampling, the run default); "
                   "logits: every row of logits comes back and is argmax'ed on the host.")
@click.option("--kv", type=click.Choice(["q8_0", "f16"]), default="q8_0", show_default=True, help="KV cache type.")
@click.option("--n-batch", type=int, default=512, show_default=True, help="Context batch size (K may not exceed it).")
@click.option("--threads", type=int, default=0, help="CPU threads (default: every CPU).")
@click.option("--draft-ms", type=float, default=None, help="Draft cost per drafted token, ms (default 0: a free draft).")
@click.option("--draft", "draft_path", type=click.Path(path_type=Path), default=None,
              help="Measure the draft cost as this model's single-token decode step instead.")
@click.option("--override-kv", "override_kv", metavar="KEY=TYPE:VALUE", multiple=True,
              help="llama.cpp's --override-kv, for the model and the draft alike (repeatable).")
@click.option("--n-cpu-moe", type=int, default=None,
              help="Keep the experts of the model's first N layers in host memory (llama.cpp's --n-cpu-moe).")
@click.option("--override-tensor", "override_tensor", metavar="REGEX=BUFTYPE", multiple=True,
              help="llama.cpp's -ot: matching tensors to CPU or a device such as CUDA0 (repeatable).")
@click.option("--n-gpu-layers", type=int, default=None, help="Layers on the GPU (llama.cpp's -ngl; default: all).")
@click.option("--vram-budget", default=None, metavar="SIZE",
              help='The placement llama.cpp\'s -fit picks with SIZE free on the GPU, e.g. "24GiB".')
@click.option("--bandwidth-gbs", type=float, default=None,
              help="Peak memory bandwidth, GB/s (default: known GPUs by nvidia-smi name).")
@click.option("--batch-tokens", type=click.Choice(BATCH_TOKENS), default="text", show_default=True,
              help="What the K-token batches hold: text (ordinary text, repeating after about 80 tokens, as a "
                   "draft of real text repeats tokens) or distinct (K different tokens: a draft with no repeat, "
                   "the i.i.d. union formula's case; seeded).")
@click.option("--trace-experts", "trace_experts", is_flag=True,
              help="MoE models: after timing, decode each K-token batch again in a context that reads the "
                   "router's choice in every layer, and set T(K) beside the bytes those experts hold (never "
                   "timed: that context runs node by node).")
@click.option("--calibrate", "calibrate_", is_flag=True,
              help="Then measure this card's own loop costs: a short matrix of the model at synthetic acceptance "
                   "(plain decoding; the MTP head when the model has it, --draft, --drafter: draft lengths 2 and 4 at "
                   "two acceptance levels each), recorded in DIR/calibrate-<model>-<card>-<engine>/; predict takes "
                   "a card's calibration before any other record.")
@click.option("--drafter", "drafter_paths", type=click.Path(path_type=Path), multiple=True,
              help="--calibrate: a DFlash, DSpark or EAGLE-3 drafter of the model to calibrate too (repeatable).")
@click.option("--synth-drafter", "synth_drafters", metavar="CARD", multiple=True,
              help="--calibrate: a drafter's shape card (e.g. qwen3.6-35b-a3b-dflash), written as a stand-in "
                   "(repeatable).")
@click.option("--calibrate-blocks", type=int, default=calibrate.BLOCKS, show_default=True,
              help="--calibrate: blocks (each runs every cell once).")
@click.option("--calibrate-tokens", type=int, default=calibrate.N_PREDICT, show_default=True,
              help="--calibrate: tokens generated per trial.")
@click.option("--results", "results_root", metavar="DIR", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True, help="Records go to DIR/probe/probe.jsonl.")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's own log lines.")
def probe(model_path: Path | None, synth_name: str | None, synth_draft: str | None, synth_scale: str, gpus: str,
          depth: int, k_text: str, reps: int, outputs: str, kv: str, n_batch: int, threads: int, batch_tokens: str,
          draft_ms: float | None, draft_path: Path | None, override_kv: tuple[str, ...],
          n_cpu_moe: int | None, override_tensor: tuple[str, ...], n_gpu_layers: int | None, vram_budget: str | None,
          bandwidth_gbs: float | None, trace_experts: bool, calibrate_: bool, drafter_paths: tuple[Path, ...],
          synth_drafters: tuple[str, ...], calibrate_blocks: int, calibrate_tokens: int, results_root: Path,
          verbose: bool) -> None:
    """Time one target decode of K tokens against one ordinary decode step, T(K)/T(1), and set it
    beside the expert-union prediction, the break-even acceptance per draft length and the
    memory-bandwidth bound. With --synth, of a models.lock model's synthetic stand-in; with
    --calibrate, then the card's own loop costs in a short matrix (probe/calibrate.py)."""
    if (model_path is None) == (synth_name is None):
        raise SpecsweepError("give MODEL or --synth NAME (a models.lock target), one of them")
    if synth_draft is not None and (draft_path is not None or draft_ms is not None):
        raise SpecsweepError("give one draft: --synth-draft, --draft or --draft-ms")
    gpu_ids = parse_gpus(gpus)
    ks = parse_ks(k_text)
    overrides = tuple(o.text for o in parse_overrides(list(override_kv), "--override-kv"))
    if depth < 0:
        raise SpecsweepError(f"--depth must be non-negative, got {depth}")
    if reps < 1:
        raise SpecsweepError(f"--reps must be at least 1, got {reps}")
    if n_batch < 1:
        raise SpecsweepError(f"--n-batch must be at least 1, got {n_batch}")
    if max(ks) > n_batch:
        raise SpecsweepError(f"K = {max(ks)} exceeds --n-batch {n_batch}: one verify pass is one batch")
    if threads < 0:
        raise SpecsweepError(f"--threads must be non-negative, got {threads}")
    if draft_ms is not None and draft_path is not None:
        raise SpecsweepError("give --draft-ms or --draft MODEL, not both")
    if draft_ms is not None and draft_ms < 0:
        raise SpecsweepError(f"--draft-ms must be non-negative, got {draft_ms}")
    if bandwidth_gbs is not None and bandwidth_gbs <= 0:
        raise SpecsweepError(f"--bandwidth-gbs must be positive, got {bandwidth_gbs}")
    drafters = _check_calibration(calibrate_, drafter_paths, synth_drafters, synth_scale, calibrate_blocks,
                                  calibrate_tokens)
    if synth_name is not None or synth_draft is not None:
        model_path, draft_path = _stand_ins(synth_name, synth_draft, synth_scale, model_path, draft_path)
    _check_gguf(model_path, "model")
    if draft_path is not None:
        _check_gguf(draft_path, "draft model")
    spec = _placement(n_cpu_moe, override_tensor, n_gpu_layers, vram_budget, gpu_ids, model_path)
    mb = theory.read_model_bytes(model_path)
    has_mtp = int(mb.header.get("nextn_predict_layers") or 0) > 0
    if calibrate_ and not (has_mtp or draft_path is not None or drafters):
        raise SpecsweepError(f"--calibrate needs a drafter: {model_path.name} has no MTP layer; give --draft MODEL, "
                             f"--drafter DRAFTER or their --synth-* stand-ins")
    if trace_experts and not mb.is_moe:
        raise SpecsweepError(f"--trace-experts needs a MoE model; {model_path.name} is dense (no routed experts)")
    ctx_train = mb.header.get("context_length")
    if isinstance(ctx_train, int) and depth + max(ks) > ctx_train:
        raise SpecsweepError(f"--depth {depth} + K {max(ks)} exceeds the model's training context {ctx_train}")

    runtime.init(verbose)
    fitted = None
    if spec.vram_budget is not None:
        req = fit.Request(model_path, model_path.name, spec.vram_budget, gpu_ids[0], kv,
                          context_size(depth or SHORT_PROMPT, max(ks)), n_batch)
        fitted = fit.fit_placement(req, buffer_types.gpu_devices(), fit.native_tool("llama-fit-params"))
    args = placement.load_args(spec, fitted)
    place = f"GPU {','.join(map(str, gpu_ids))}" if gpu_ids else f"CPU ({_threads(threads or runtime.default_threads())})"
    click.echo(f"probing {model_path.name} on {place}: K = {','.join(map(str, ks))}, {reps} reps", err=True)
    with runtime.Model(model_path, gpu_ids, override_kv=overrides, **args) as model:
        placed = placement.record_block(spec, model.loaded, fitted, placement.estimate(model_path, args, gpu_ids))
        curve = measure_curve(model, ks, depth, reps, outputs, kv, n_batch, threads, batch_tokens=batch_tokens)
        traced = None
        if trace_experts:
            click.echo("tracing the experts of each batch (untimed)", err=True)
            traced = trace_curve(model, ks, depth, kv, n_batch, threads, batch_tokens=batch_tokens)

    draft_info: dict = {"source": "none", "ms_per_token": 0.0}
    if draft_ms is not None:
        draft_info = {"source": "given", "ms_per_token": draft_ms}
    elif draft_path is not None:
        click.echo(f"timing the draft step of {draft_path.name}", err=True)
        with runtime.Model(draft_path, gpu_ids, override_kv=overrides) as draft:
            dc = measure_curve(draft, [1], depth, max(reps, 5), outputs, kv, n_batch, threads)
        draft_info = {"source": "measured", "model": draft_path.name, "size_bytes": draft_path.stat().st_size,
                      "ms_per_token": _ms(dc.median(1)), "times_ms": [_ms(t) for t in dc.times[1]]}
    machine = machine_facts(gpu_ids, threads)
    record = build_record(model_path, mb, curve, draft_info, machine, gpu_ids, depth, reps, threads,
                          bandwidth_gbs, placed, traced)
    if synth_name is not None:  # what the stand-in stands in for (predict finds the probe by this name)
        record["stand_in"] = {"name": synth_name, "scale": synth_scale}
    for line in report_lines(record):
        click.echo(line)
    store = JsonlFile(Path(results_root) / "probe" / "probe.jsonl")
    try:
        store.append(record)
    finally:
        store.close()
    click.echo(f"recorded in {store.path}", err=True)
    if calibrate_:
        places = {"n_cpu_moe": n_cpu_moe, "override_tensor": list(override_tensor), "n_gpu_layers": n_gpu_layers,
                  "vram_budget": vram_budget}  # the probe's placement, as matrix keys
        _calibrate(model_path, synth_name, synth_draft, synth_scale, draft_path, drafters, has_mtp, machine, gpu_ids,
                   kv, n_batch, threads, places, calibrate_blocks, calibrate_tokens, results_root, verbose)


def _check_calibration(on: bool, drafter_paths: tuple[Path, ...], synth_drafters: tuple[str, ...], scale: str,
                       blocks: int, tokens: int) -> tuple[tuple[calibrate.Model, str], ...]:
    """--calibrate's own options, checked before anything loads; each drafter and its method."""
    if not on:
        if drafter_paths or synth_drafters:
            raise SpecsweepError("--drafter and --synth-drafter are for --calibrate (the probe times no drafter)")
        return ()
    if blocks < 1:
        raise SpecsweepError(f"--calibrate-blocks must be at least 1, got {blocks}")
    if tokens < 8:
        raise SpecsweepError(f"--calibrate-tokens must be at least 8, got {tokens}")
    out = []
    for path in drafter_paths:
        _check_gguf(path, "drafter")
        out.append((calibrate.Model(path), calibrate.drafter_method(path)))
    from specsweep.synth.cards import CARDS

    for name in synth_drafters:
        card = CARDS.get(name)
        if card is None or card.arch not in ("dflash", "eagle3"):
            known = sorted(n for n, c in CARDS.items() if c.arch in ("dflash", "eagle3"))
            raise SpecsweepError(f"--synth-drafter {name!r}: not a drafter's shape card ({', '.join(known)})")
        method = "eagle3" if card.is_eagle3 else "dspark" if card.is_dspark else "dflash"
        out.append((calibrate.Model(Path(name), {"synth": name, "scale": scale, "branch_scale": 0.05}), method))
    return tuple(out)


def _recipe(name: str, scale: str) -> dict:
    """A stand-in's matrix entry: the recipe stand_ins.write wrote (the same cache file)."""
    from specsweep.synth import stand_ins

    s = stand_ins.resolve(name)
    return {"synth": s.card, "scale": scale, "branch_scale": s.branch_scale, "mtp": s.mtp,
            **({"quant": s.quant} if s.quant else {})}


def _calibrate(model_path: Path, synth_name, synth_draft, scale: str, draft_path: Path | None, drafters,
               has_mtp: bool, machine: dict, gpu_ids, kv: str, n_batch: int, threads: int, places: dict,
               blocks: int, tokens: int, results_root: Path, verbose: bool) -> None:
    from specsweep.run.command import execute

    target = calibrate.Model(model_path, _recipe(synth_name, scale) if synth_name else None)
    draft = None
    if draft_path is not None:
        draft = calibrate.Model(draft_path, _recipe(synth_draft, scale) if synth_draft else None)
    card = machine.get("gpu_name") if gpu_ids else machine.get("cpu")
    name = calibrate.matrix_name(model_path, str(card or "unknown card"), manifest.source_hash())
    text = calibrate.matrix_text(name, target, mtp=has_mtp, draft=draft, drafters=drafters, gpus=gpu_ids, kv=kv,
                                 n_batch=n_batch, threads=threads, placement=places, blocks=blocks, n_predict=tokens)
    path = calibrate.write_matrix(results_root, name, text)
    click.echo(f"calibrating the loop on this card: {path}", err=True)
    execute(path, results_root, verbose=verbose)


def _placement(n_cpu_moe, override_tensor, n_gpu_layers, vram_budget, gpu_ids, model_path: Path) -> placement.Spec:
    """The placement options, as a matrix cell's keys, checked against the model's header."""
    for name, value in (("--n-cpu-moe", n_cpu_moe), ("--n-gpu-layers", n_gpu_layers)):
        if value is not None and value < 0:
            raise SpecsweepError(f"{name} must be non-negative, got {value}")
    settings = {"n_cpu_moe": n_cpu_moe, "override_tensor": list(override_tensor), "n_gpu_layers": n_gpu_layers,
                "vram_budget": vram_budget, "gpus": list(gpu_ids)}
    spec = placement.target_spec(settings, "probe")
    placement.check_against_header(spec, model_path, model_path.name, "model")
    return spec


def _stand_ins(name: str | None, draft_name: str | None, scale: str, model_path: Path | None,
               draft_path: Path | None) -> tuple[Path, Path | None]:
    """The stand-ins' files, written into the specsweep cache when missing."""
    from specsweep.synth import stand_ins

    wanted = [(n, stand_ins.resolve(n)) for n in (name, draft_name) if n is not None]  # every name checked first
    paths = []
    for n, s in wanted:
        click.echo(f"stand-in of {n}: synth {s.card} ({scale}{', +mtp' if s.mtp else ''})", err=True)
        paths.append(stand_ins.write(s, scale))
    if name is not None:
        model_path = paths.pop(0)
    if draft_name is not None:
        draft_path = paths.pop(0)
    return model_path, draft_path


def build_record(model_path: Path, mb: theory.ModelBytes, curve: Curve, draft_info: dict, machine: dict,
                 gpu_ids: tuple[int, ...], depth: int, reps: int, threads: int,
                 bandwidth_gbs: float | None, placed: dict | None = None, traced: TracedCurve | None = None,
                 warmup: int = WARMUP) -> dict:
    t1 = curve.median(1)
    d_tok = draft_info["ms_per_token"] / 1e3
    kv_pos = curve.pos0 + 1  # a step at position p attends over p + 1 positions
    b1 = theory.pass_bytes(mb, 1, kv_pos, curve.kv)
    rows = []
    for k in curve.ks:
        tk = curve.median(k)
        n = k - 1
        row = {"k": k, "times_ms": [_ms(t) for t in curve.times[k]], "median_ms": _ms(tk), "min_ms": _ms(curve.min(k)),
               "ratio": tk / t1, "tok_s": k / tk,
               "pred_bytes": theory.pass_bytes(mb, k, kv_pos, curve.kv), "pred_ratio": theory.bytes_ratio(mb, k, kv_pos, curve.kv),
               "draft_n": n, "draft_ms": _ms(n * d_tok)}
        if n >= 1:
            row["break_even"] = theory.break_even_acceptance(n, tk, t1, n * d_tok)
            row["max_speedup"] = theory.speedup(n, 1.0, tk, t1, n * d_tok)
        if traced is not None:  # the union this very batch read, and the bytes it holds
            unions, traced_1 = traced.unions[k], traced.unions[curve.ks[0]]
            row["traced"] = {"union_by_layer": [unions[il] for il in sorted(unions)],
                             "coverage": sum(unions.values()) / len(unions) / mb.n_expert,
                             "distinct_tokens": traced.distinct_tokens[k],
                             "bytes": theory.pass_bytes(mb, k, kv_pos, curve.kv, measured=unions),
                             "ratio": theory.pass_bytes(mb, k, kv_pos, curve.kv, measured=unions)
                             / theory.pass_bytes(mb, 1, kv_pos, curve.kv, measured=traced_1)}
        rows.append(row)

    union = None
    if mb.is_moe and mb.n_expert_used:
        e, kk = mb.n_expert, mb.n_expert_used
        union = {"n_expert": e, "n_expert_used": kk, "fraction": theory.SATURATION_FRACTION,
                 "k_star": theory.saturation_continuous(e, kk), "k_saturation": theory.saturation_tokens(e, kk),
                 "k_approx": theory.saturation_approx(e, kk),
                 "ratio_all_experts": theory.pass_bytes(mb, 1, kv_pos, curve.kv, union=False) / b1}
        if traced is not None:
            union["traced"] = {"how": "decoded again in a context with llama.cpp's eval callback reading "
                                      "ffn_moe_topk-<layer> (never timed)", "seconds": round(traced.seconds, 3),
                               "layers": sorted(traced.unions[curve.ks[0]]), "load": traced.load}

    if bandwidth_gbs is not None:
        peak, peak_source = bandwidth_gbs, "given"
    elif gpu_ids:
        peak = known_bandwidth_gbs(machine.get("gpu_name"))
        peak_source = "known GPU table" if peak else "unknown GPU"
    else:
        peak, peak_source = None, "CPU: give --bandwidth-gbs"
    achieved = b1 / t1 / 1e9
    bandwidth = {"bytes_per_token": b1, "weight_bytes": theory.pass_bytes(mb, 1), "kv_bytes": theory.kv_bytes(mb, kv_pos, curve.kv),
                 "achieved_gbs": achieved, "peak_gbs": peak, "peak_source": peak_source,
                 "bound_ms": b1 / (peak * 1e9) * 1e3 if peak else None, "share": achieved / peak if peak else None}

    return {
        "kind": "probe",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "model": {"file": model_path.name, "path": str(model_path), "size_bytes": mb.file_bytes, "arch": mb.arch,
                  "header": mb.header, "moe": mb.is_moe, "n_expert": mb.n_expert, "n_expert_used": mb.n_expert_used,
                  "tied_embeddings": mb.tied, "embd_row_bytes": mb.embd_row, "bytes_by_class": mb.classes(),
                  "kv_values_per_position": mb.kv_elements},
        "settings": {"gpus": list(gpu_ids), "depth": depth, "pos0": curve.pos0, "ks": curve.ks, "reps": reps,
                     "warmup": warmup, "outputs": curve.outputs, "kv": curve.kv, "n_ctx": curve.n_ctx,
                     "n_batch": curve.n_batch, "threads": machine["threads"], "flash_attn": True,
                     "rollback": curve.rollback, "batch_tokens": curve.batch_tokens},
        "machine": machine,
        # where the weights were (the placement options, llama.cpp's buffers and overrides)
        "placement": placed,
        "t1_ms": _ms(t1),
        "curve": rows,
        "union": union,
        "draft": draft_info,
        "bandwidth": bandwidth,
        "output_mismatches": curve.mismatches,
        # what a speculative loop pays on top: a single-token step right after a verify batch
        "switch": {"after_k": curve.switch_k, "times_ms": [_ms(t) for t in curve.switch_times],
                   "median_ms": _ms(statistics.median(curve.switch_times)) if curve.switch_times else None},
        # a hybrid model's recurrent-state checkpoint, saved before each verify and restored after a
        # rejection by the loop's checkpoint rollback
        "checkpoint": None if not curve.ckpt_save_times else {
            "bytes": curve.ckpt_bytes, "save_ms": _ms(statistics.median(curve.ckpt_save_times)),
            "restore_ms": _ms(statistics.median(curve.ckpt_restore_times)),
            "save_times_ms": [_ms(t) for t in curve.ckpt_save_times],
            "restore_times_ms": [_ms(t) for t in curve.ckpt_restore_times]},
    }


def report_lines(r: dict) -> list[str]:
    m, s, u, bw, d = r["model"], r["settings"], r["union"], r["bandwidth"], r["draft"]
    moe = f"{m['n_expert']} experts, top-{m['n_expert_used']}" if m["moe"] else "dense"
    where = f"GPU {','.join(map(str, s['gpus']))} ({r['machine']['gpu_name'] or '?'})" if s["gpus"] else \
        f"CPU, {_threads(s['threads'])}"
    lines = [f"{m['file']}: {m['arch']}, {moe}, {m['size_bytes'] / 2**20:.1f} MiB; {where}; "
             f"depth {s['pos0']}, kv {s['kv']}, outputs {s['outputs']}, {s['reps']} reps, rollback {s['rollback']}"]
    head = f"{'K':>4} {'T(K) ms':>10} {'min ms':>10} {'T(K)/T(1)':>10} {'K/T(K) tok/s':>13}"
    traced = bool(r["curve"]) and "traced" in r["curve"][0]
    if m["moe"]:
        head += f" {'B(K)/B(1)':>10}"
    if traced:
        head += f" {'traced U/E':>10} {'traced B':>9}"
    head += f" {'break-even a':>13} {'speedup a=1':>12}"
    lines.append(head)
    for row in r["curve"]:
        line = (f"{row['k']:>4} {row['median_ms']:>10.3f} {row['min_ms']:>10.3f} {row['ratio']:>10.2f} "
                f"{row['tok_s']:>13.1f}")
        if m["moe"]:
            line += f" {row['pred_ratio']:>10.2f}"
        if traced:
            line += f" {row['traced']['coverage']:>10.1%} {row['traced']['ratio']:>9.2f}"
        if "break_even" in row:
            line += f" {_fmt_a(row['break_even']):>13} {row['max_speedup']:>11.2f}x"
        else:
            line += f" {'-':>13} {'-':>12}"
        lines.append(line)
    if r.get("placement"):
        lines.append(placement.describe(r["placement"]))
    lines.append("break-even a: per-token acceptance below which draft length K-1 loses to plain decoding; "
                 "speedup a=1: (K T(1)) / (T(K) + D(K-1))")
    if traced:
        lines.append("traced U/E: the share of a layer's experts the batch's tokens chose, averaged over layers; "
                     "traced B: B(K)/B(1) with those experts instead of the i.i.d. union")
    if u:
        lines.append(f"expert union: {u['n_expert']} experts, top-{u['n_expert_used']}: "
                     f"{u['fraction']:.0%} of them expected at K* = {u['k_star']:.1f} tokens (first whole batch "
                     f"K = {u['k_saturation']}; (E/k) ln 20 = {u['k_approx']:.1f}); "
                     f"B(K)/B(1) -> {u['ratio_all_experts']:.2f} with every expert read")
    else:
        lines.append("dense model: B(K) = B(1) (every pass reads every weight once)")
    if d["source"] == "none":
        lines.append("draft cost: none given (D = 0: break-even for a free draft; --draft-ms or --draft MODEL)")
    elif d["source"] == "given":
        lines.append(f"draft cost: {d['ms_per_token']:.3f} ms per drafted token (given)")
    else:
        lines.append(f"draft cost: {d['ms_per_token']:.3f} ms per drafted token ({d['model']}'s decode step)")
    mb = bw["bytes_per_token"] / 1e6
    line = (f"bandwidth: {mb:.2f} MB read per decode step (weights {bw['weight_bytes'] / 1e6:.2f} MB, KV "
            f"{bw['kv_bytes'] / 1e6:.3f} MB) in T(1) = {r['t1_ms']:.3f} ms: {bw['achieved_gbs']:.1f} GB/s")
    if bw["peak_gbs"]:
        line += (f"; bound {bw['bound_ms']:.3f} ms per token at {bw['peak_gbs']:.0f} GB/s ({bw['peak_source']}): "
                 f"baseline decoding reaches {bw['share']:.0%} of it")
    else:
        line += f"; peak bandwidth unknown ({bw['peak_source']})"
    lines.append(line)
    sw = r.get("switch") or {}
    if sw.get("median_ms"):
        lines.append(f"shape switch: a single-token step right after a K = {sw['after_k']} pass takes "
                     f"{sw['median_ms']:.3f} ms, {sw['median_ms'] / r['t1_ms']:.2f}x an ordinary step "
                     f"(llama.cpp re-captures its CUDA graph when the batch shape changes)")
    ck = r.get("checkpoint")
    if ck:
        lines.append(f"checkpoint: {ck['bytes'] / 2**20:.1f} MiB of recurrent state, saved in {ck['save_ms']:.3f} ms and "
                     f"restored in {ck['restore_ms']:.3f} ms (what the loop's checkpoint rollback pays per draft and "
                     f"per rejection)")
    if r["output_mismatches"]:
        lines.append(f"warning: {r['output_mismatches']} timed passes returned other tokens than the first pass "
                     f"of the same K (the context was not restored exactly?)")
    return lines
