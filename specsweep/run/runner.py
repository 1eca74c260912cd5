"""Run planned cells through the engine and append one record per trial.

Per group the models load once; per cell the contexts are made once, the cell is warmed up, the
baseline reference for each prompt is found (or generated once and recorded), then the trials run.
Every speculative trial is compared token by token with the reference: greedy speculative
decoding is lossless, so a difference is recorded and counted, never hidden. (On random-weight
models, batched and one-by-one decoding can round a near-tie differently; a mismatch there is a
numerical fact about the kernels, which is why it is shown rather than treated as a crash.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from contextlib import ExitStack

from specsweep import methods
from specsweep.engine import runtime, synthetic
from specsweep.engine.server_loop import Synth, run_trial_server
from specsweep.engine.speculative import TrialResult, run_trial
from specsweep.errors import SpecsweepError
from specsweep.matrix.cells import Cell
from specsweep.matrix.prompts import Prompt
from specsweep.records.store import ResultsDir
from specsweep.run.plan import CellPlan, Group, draft_gpus


def tokens_sha(tokens: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, tokens)).encode()).hexdigest()[:16]


def prompt_tokens(model: runtime.Model, prompt: Prompt, chat: bool) -> list[int]:
    text = (model.chat_prompt(prompt.text) if chat else None) or prompt.text
    return model.tokenize(text)


def context_options(cell: Cell, hybrid_snapshots: bool) -> runtime.ContextOptions:
    # snapshot rollback keeps one recurrent-state snapshot per draftable token, as llama.cpp sizes
    # n_rs_seq to the draft's n_max; checkpoint rollback keeps none
    snapshots = hybrid_snapshots and cell.rollback == "snapshot"
    n_rs = methods.get(cell.method).n_max(cell.settings) if snapshots else 0
    return runtime.ContextOptions(n_ctx=cell.n_ctx, n_batch=cell.n_batch, type_kv=cell.kv,
                                  flash_attn=cell.flash_attn, n_threads=cell.threads, n_rs_seq=n_rs,
                                  backend_sampling=cell.backend_sampling)


def make_drafter(cell: Cell, draft_ctx: runtime.Context | None, target_ctx: runtime.Context, matrix_dir,
                 prior_texts: list[list[int]] = ()):
    """The cell's drafter for one trial (None for the baseline); `prior_texts` are the earlier runs
    an ngram-cache cell's `lookup_prior_runs` folds into its dynamic cache."""
    make = methods.get(cell.method).make
    if make is None:
        return None
    return make(cell.settings, methods.DrafterContexts(draft_ctx, target_ctx, matrix_dir, list(prior_texts)))


def draft_context(cell: Cell, target: runtime.Model, target_ctx: runtime.Context, draft: runtime.Model | None,
                  opts: runtime.ContextOptions) -> runtime.Context | None:
    """The second context a model-based drafter decodes in: the draft model's (with the target's
    options), a drafter's that reads the target's context (DFlash, DSpark, EAGLE-3), or the MTP
    head's (on the target's own model). llama.cpp gives these last two no recurrent snapshots."""
    kind = methods.get(cell.method).context
    if kind == "draft":
        return runtime.Context(draft, opts)
    if kind == "drafter":
        return runtime.Context(draft, dataclasses.replace(opts, n_rs_seq=0), other=target_ctx)
    if kind == "mtp":
        return runtime.Context(target, dataclasses.replace(opts, n_rs_seq=0, ctx_type="mtp"), other=target_ctx)
    return None


def synth_of(cell: Cell, drafter) -> Synth | None:
    """A cell's synthetic acceptance, resolved against its drafter's actual draft limit (after the
    drafter's own caps, as llama.cpp resolves it after initialising its implementations)."""
    s = cell.settings
    if drafter is None or (s.get("synth_len") is None and not s.get("synth_rates")):
        return None
    try:
        rates = synthetic.resolve_rates(s.get("synth_len"), s.get("synth_rates"), drafter.n_max)
    except SpecsweepError as e:
        raise SpecsweepError(f"cell {cell.name!r}: {e.message}") from None
    seed = s.get("synth_seed")
    return Synth(synthetic.conditional(rates), methods.SYNTH_SEED if seed is None else seed)


def target_shape(model: runtime.Model) -> dict:
    """The target's facts the analysis needs (expert count and routing), from its header."""
    arch = model.meta("general.architecture") or ""
    experts = int(model.meta(f"{arch}.expert_count") or 0)
    used = int(model.meta(f"{arch}.expert_used_count") or 0)
    return {"arch": arch, "n_layer": model.n_layer, "n_expert": experts, "n_expert_used": used,
            "hybrid": model.has_recurrent_state}


class Runner:
    def __init__(self, results: ResultsDir, matrix, model_files: dict, manifest_id: str, progress=None):
        self.results = results
        self.matrix = matrix
        self.model_files = model_files  # ref name -> {"path", "sha256"}
        self.manifest_id = manifest_id
        self.progress = progress or (lambda cell_name, n: None)
        self.references = {(r["reference_key"], r["prompt_id"]): r["tokens"]
                           for r in results.read_references() if "tokens" in r}
        self.n_recorded = 0

    def run_group(self, group: Group) -> None:
        if not group.live:
            return
        with ExitStack() as stack:
            target_path = self.model_files[group.target.name]["path"]
            target = stack.enter_context(runtime.Model(target_path, group.gpus, split_mode=group.split_mode,
                                                       tensor_split=group.tensor_split, load_mtp=group.load_mtp))
            loaded = {(target_path, group.gpus): target}
            self.shape = target_shape(target)

            def load(ref, gpus):
                path = self.model_files[ref.name]["path"]
                if (path, gpus) not in loaded:  # a draft identical to the target shares its weights
                    loaded[(path, gpus)] = stack.enter_context(runtime.Model(path, gpus))
                return loaded[(path, gpus)]

            for plan in group.live:
                draft_ref = plan.cell.models.get("draft") or plan.cell.models.get("drafter")
                self.run_cell(plan, target, load(draft_ref, draft_gpus(plan.cell)) if draft_ref else None)

    def preflight(self, groups: list[Group]) -> None:
        """Check that every prompt of every cell fits its context, reading only the targets'
        vocabularies, so that a bad cell stops the run before its first trial, not in the middle."""
        for group in groups:
            if group.live:
                with runtime.Model(self.model_files[group.target.name]["path"], (), vocab_only=True) as vocab:
                    for plan in group.live:
                        self._prompts(plan, vocab)

    @staticmethod
    def _prompts(plan: CellPlan, model: runtime.Model) -> dict[str, list[int]]:
        cell = plan.cell
        prompts = {p.id: prompt_tokens(model, p, cell.chat) for p in plan.prompts}
        for p in plan.prompts:
            need = len(prompts[p.id]) + cell.n_predict + methods.get(cell.method).n_max(cell.settings) + 2
            if need > cell.n_ctx:
                raise SpecsweepError(f"cell {cell.name!r}: prompt {p.name!r} ({len(prompts[p.id])} tokens) + "
                                     f"n_predict {cell.n_predict} + a draft do not fit n_ctx {cell.n_ctx}")
        return prompts

    def run_cell(self, plan: CellPlan, target: runtime.Model, draft: runtime.Model | None) -> None:
        cell = plan.cell
        prompts = self._prompts(plan, target)
        hybrid = target.has_recurrent_state
        with ExitStack() as stack:
            opts = context_options(cell, hybrid)
            tctx = stack.enter_context(runtime.Context(target, opts))
            dctx = draft_context(cell, target, tctx, draft, opts)
            if dctx is not None:
                stack.enter_context(dctx)
            if not hybrid:
                rollback = "seq_rm"
            else:
                rollback = "snapshot" if tctx.can_remove_partially() else "checkpoint"
            use_ckpt = rollback == "checkpoint"

            ref_key = cell.reference_key()
            prior_runs = cell.settings.get("lookup_prior_runs", 0)

            def reference_for(prompt: Prompt) -> list[int] | None:
                reference = self.references.get((ref_key, prompt.id))
                if reference is None and cell.method != "baseline":  # plain decoding, once per prompt
                    tctx.clear()
                    plain = run_trial(tctx, prompts[prompt.id], cell.n_predict)
                    reference = self._reference(ref_key, prompt, plain.tokens)
                return reference

            def trial(prompt: Prompt, reference: list[int] | None) -> TrialResult:
                tokens = prompts[prompt.id]
                tctx.clear()
                if dctx is not None:
                    dctx.clear()
                prior = [tokens + reference] * prior_runs if prior_runs and reference else []
                drafter = make_drafter(cell, dctx, tctx, self.matrix.path.parent, prior)
                synth = synth_of(cell, drafter)
                if synth is not None:  # llama.cpp has synthetic acceptance in its server's loop only
                    return run_trial_server(tctx, tokens, cell.n_predict, drafter, synth, use_checkpoints=use_ckpt)
                return run_trial(tctx, tokens, cell.n_predict, drafter, use_checkpoints=use_ckpt and drafter is not None)

            for _ in range(cell.warmup):
                first = plan.prompts[0]
                trial(first, reference_for(first) if prior_runs else None)
            for prompt, index in plan.todo:
                tokens = prompts[prompt.id]
                reference = reference_for(prompt)
                result = trial(prompt, reference)
                if reference is None:  # the first baseline trial is the reference
                    reference = self._reference(ref_key, prompt, result.tokens)
                self._record(cell, prompt, index, len(tokens), result, reference, ref_key, rollback)
                self.progress(cell.name, 1)

    def _reference(self, ref_key: str, prompt: Prompt, tokens: list[int]) -> list[int]:
        self.references[(ref_key, prompt.id)] = tokens
        self.results.references.append({"kind": "reference", "reference_key": ref_key, "prompt_id": prompt.id,
                                        "tokens": tokens, "manifest": self.manifest_id})
        return tokens

    def _record(self, cell: Cell, prompt: Prompt, index: int, n_prompt: int, r: TrialResult,
                reference: list[int], ref_key: str, rollback: str) -> None:
        n = min(cell.n_predict, len(r.tokens), len(reference))
        mismatch = next((i for i in range(n) if r.tokens[i] != reference[i]), None)
        if mismatch is None and len(r.tokens) < cell.n_predict and len(reference) != len(r.tokens):
            mismatch = n  # one stopped at end-of-generation and the other did not
        # synthetic acceptance keeps drafted tokens the target did not choose: not text, not lossless
        synthetic_run = cell.settings.get("synth_len") is not None or bool(cell.settings.get("synth_rates"))
        lossless = None if synthetic_run else mismatch is None
        models = {role: {"name": ref.name, "ref": ref.describe(), "file": self.model_files[ref.name]["path"].name,
                         "sha256": self.model_files[ref.name]["sha256"]} for role, ref in cell.models.items()}
        self.results.trials.append({
            "kind": "trial",
            "matrix": self.matrix.name,
            "cell_id": cell.id,
            "cell": cell.name,
            "method": cell.method,
            "settings": cell.settings,
            "models": models,
            "reference_key": ref_key,
            "prompt_id": prompt.id,
            "prompt": prompt.name,
            "prompt_kind": prompt.kind,
            "prompt_tokens": n_prompt,
            "trial": index,
            "prefill_ms": r.t_prefill * 1e3,
            "prefill_tps": (n_prompt - 1) / r.t_prefill if r.t_prefill > 0 else None,
            "decode_tps": r.decode_tps,
            "n_generated": len(r.tokens),
            "n_drafted": r.n_drafted,
            "n_accepted": r.n_accepted,
            "acceptance": r.acceptance,
            "drafted_by_pos": r.drafted_by_pos,
            "accepted_by_pos": r.accepted_by_pos,
            "n_drafted_llama": r.n_drafted_llama,
            "n_accepted_llama": r.n_accepted_llama,
            "n_steps": r.n_steps,
            "n_rollbacks": r.n_rollbacks,
            "rollback": rollback,
            "time_s": {"decode": r.t_decode, "draft": r.t_draft, "verify": r.t_verify,
                       "rollback": r.t_rollback, "host": r.t_host},
            "lossless": lossless,
            "first_mismatch": mismatch,
            "synthetic": synthetic_run,
            "loop": r.loop,
            "target_shape": self.shape,
            "tokens_sha": tokens_sha(r.tokens[: cell.n_predict]),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "manifest": self.manifest_id,
        })
        self.n_recorded += 1
