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
from dataclasses import dataclass

from specsweep import methods
from specsweep.engine import runtime, synthetic
from specsweep.engine.server_loop import Synth, run_trial_server
from specsweep.engine.speculative import TrialResult, run_trial
from specsweep.errors import SpecsweepError
from specsweep.matrix.cells import Cell
from specsweep.matrix.prompts import Prompt
from specsweep.records import outputs
from specsweep.records.store import ResultsDir
from specsweep.records.telemetry import Telemetry
from specsweep.run.plan import CellPlan, Group, draft_gpus


def tokens_sha(tokens: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, tokens)).encode()).hexdigest()[:16]


def prompt_tokens(model: runtime.Model, prompt: Prompt, chat: bool) -> list[int]:
    # add_special: a model that asks for a BOS (Gemma) gets it, as llama.cpp's tools tokenize a
    # prompt (common_tokenize(..., add_special = true, ...)); without it Gemma degenerates
    text = (model.chat_prompt(prompt.text) if chat else None) or prompt.text
    return model.tokenize(text, add_special=True)


def context_options(cell: Cell, hybrid_snapshots: bool) -> runtime.ContextOptions:
    # snapshot rollback keeps one recurrent-state snapshot per draftable token, as llama.cpp sizes
    # n_rs_seq to the draft's n_max; checkpoint rollback keeps none
    n_max = methods.get(cell.method).n_max(cell.settings)
    n_rs = n_max if hybrid_snapshots and cell.rollback == "snapshot" else 0
    # output rows as llama.cpp's tools size them: a verify batch of the draft limit + 1
    return runtime.ContextOptions(n_ctx=cell.n_ctx, n_batch=cell.n_batch, type_kv=cell.kv,
                                  flash_attn=cell.flash_attn, n_threads=cell.threads, n_rs_seq=n_rs,
                                  backend_sampling=cell.backend_sampling, n_outputs=n_max + 1)


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
    m = methods.get(cell.method)
    # one output row per step, except a block drafter's n_max + 1 (common_base_params_to_speculative)
    rows = m.n_max(cell.settings) + 1 if m.capped else 1
    if m.context == "draft":
        return runtime.Context(draft, dataclasses.replace(opts, n_outputs=rows))
    if m.context == "drafter":
        return runtime.Context(draft, dataclasses.replace(opts, n_rs_seq=0, n_outputs=rows), other=target_ctx)
    if m.context == "mtp":
        return runtime.Context(target, dataclasses.replace(opts, n_rs_seq=0, ctx_type="mtp", n_outputs=rows),
                               other=target_ctx)
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


@dataclass
class Slot:
    """Where a trial sits in the run: its index (the block in the blocks design), the block's
    attempt and the cell's position in the block's order."""
    index: int
    attempt: int = 0
    position: int | None = None


class CellRun:
    """One cell made ready to measure: its contexts (made once), its prompts tokenized, its
    rollback way decided; `trial()` runs and records one trial. The blocks design keeps every
    cell of a group ready at once and interleaves their trials."""

    def __init__(self, runner: "Runner", plan: CellPlan, target: runtime.Model, draft: runtime.Model | None):
        self.runner, self.plan, self.cell = runner, plan, plan.cell
        cell = self.cell
        self.prompts = runner.tokenized(plan, target)
        self.stack = ExitStack()
        hybrid = target.has_recurrent_state
        try:
            opts = context_options(cell, hybrid)
            self.tctx = self.stack.enter_context(runtime.Context(target, opts))
            self.dctx = draft_context(cell, target, self.tctx, draft, opts)
            if self.dctx is not None:
                self.stack.enter_context(self.dctx)
        except BaseException:
            self.stack.close()
            raise
        if not hybrid:
            self.rollback = "seq_rm"
        else:
            self.rollback = "snapshot" if self.tctx.can_remove_partially() else "checkpoint"
        self.ref_key = cell.reference_key()
        self.prior_runs = cell.settings.get("lookup_prior_runs", 0)
        self.telemetry = Telemetry(sorted(set(cell.gpus) | ({cell.settings["draft_gpu"]}
                                                             if cell.settings.get("draft_gpu") is not None else set())))

    def close(self) -> None:
        self.stack.close()

    def text(self, tokens: list[int]) -> str:
        """The generated text as the target's tokenizer renders it (special tokens included)."""
        model = self.tctx.model
        return b"".join(model.piece_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    def reference(self, prompt: Prompt) -> list[int] | None:
        reference = self.runner.references.get((self.ref_key, prompt.id))
        if reference is None and self.cell.method != "baseline":  # plain decoding, once per prompt
            self.tctx.clear()
            plain = run_trial(self.tctx, self.prompts[prompt.id], self.cell.n_predict)
            reference = self.runner.keep_reference(self.ref_key, prompt, plain.tokens)
        return reference

    def _run(self, prompt: Prompt, reference: list[int] | None) -> TrialResult:
        cell, tokens = self.cell, self.prompts[prompt.id]
        self.tctx.clear()
        if self.dctx is not None:
            self.dctx.clear()
        prior = [tokens + reference] * self.prior_runs if self.prior_runs and reference else []
        drafter = make_drafter(cell, self.dctx, self.tctx, self.runner.matrix.path.parent, prior)
        synth = synth_of(cell, drafter)
        use_ckpt = self.rollback == "checkpoint"
        if synth is not None:  # llama.cpp has synthetic acceptance in its server's loop only
            return run_trial_server(self.tctx, tokens, cell.n_predict, drafter, synth, use_checkpoints=use_ckpt)
        return run_trial(self.tctx, tokens, cell.n_predict, drafter, use_checkpoints=use_ckpt and drafter is not None)

    def warmup(self) -> None:
        first = self.plan.prompts[0]
        for _ in range(self.cell.warmup):
            self._run(first, self.reference(first) if self.prior_runs else None)

    def trial(self, prompt: Prompt, slot: Slot) -> None:
        reference = self.reference(prompt)
        with self.telemetry.trial() as telemetry:
            result = self._run(prompt, reference)
        if reference is None:  # the first baseline trial is the reference
            reference = self.runner.keep_reference(self.ref_key, prompt, result.tokens)
        self.runner.record(self, prompt, slot, result, reference, telemetry)
        self.runner.progress(self.cell.name, 1)


class Runner:
    def __init__(self, results: ResultsDir, matrix, model_files: dict, manifest_id: str, progress=None,
                 run_index: int = 0, log=None):
        self.results = results
        self.matrix = matrix
        self.model_files = model_files  # ref name -> {"path", "sha256"}
        self.manifest_id = manifest_id
        self.progress = progress or (lambda cell_name, n: None)
        self.log = log or (lambda line: None)  # one-line notes for the user (fallbacks, rounding)
        self.run_index = run_index
        self.references = {(r["reference_key"], r["prompt_id"]): r["tokens"]
                           for r in results.read_references() if "tokens" in r}
        self.n_recorded = 0

    def run_group(self, group: Group) -> None:
        if not group.live:
            return
        with ExitStack() as stack:
            tfile = self.model_files[group.target.name]
            target_path, target_kv = tfile["path"], tuple(tfile.get("override_kv", ()))
            target = stack.enter_context(runtime.Model(target_path, group.gpus, split_mode=group.split_mode,
                                                       tensor_split=group.tensor_split, load_mtp=group.load_mtp,
                                                       override_kv=target_kv))
            loaded = {(target_path, group.gpus, target_kv): target}
            self.shape = target_shape(target)

            def load(plan: CellPlan) -> runtime.Model | None:
                ref = plan.cell.models.get("draft") or plan.cell.models.get("drafter")
                if ref is None:
                    return None
                f, gpus = self.model_files[ref.name], draft_gpus(plan.cell)
                key = (f["path"], gpus, tuple(f.get("override_kv", ())))
                if key not in loaded:  # a draft identical to the target (same overrides) shares its weights
                    loaded[key] = stack.enter_context(runtime.Model(f["path"], gpus, override_kv=key[2]))
                return loaded[key]

            if group.design == "blocks" and self._run_blocks(group, target, load):
                return
            for plan in group.live:  # sequential, or blocks that do not fit at once
                run = CellRun(self, plan, target, load(plan))
                try:
                    run.warmup()
                    for prompt, index in plan.todo:
                        run.trial(prompt, Slot(index))
                finally:
                    run.close()

    def _run_blocks(self, group: Group, target: runtime.Model, load) -> bool:
        """Every cell of the group ready at once, then block after block in the planned orders.
        False (after saying so) when the group's models and contexts do not fit together: it then
        runs cell after cell."""
        if group.block_plan is not None and group.block_plan.note:
            self.log(f"group {group.target.name}: {group.block_plan.note}")
        runs: dict[str, CellRun] = {}
        try:
            for plan in group.cells:
                runs[plan.cell.id] = CellRun(self, plan, target, load(plan))
        except SpecsweepError as e:
            for run in runs.values():
                run.close()
            self.log(f"group {group.target.name}: its models and contexts do not fit at once ({e.message}); "
                     f"running its cells one after another (sequential design) instead")
            group.design = "sequential"
            return False
        try:
            for run in runs.values():
                run.warmup()
            prompts = {p.id: p for p in group.cells[0].prompts}
            for todo in group.blocks:
                for cell_id, prompt_id in todo.trials:
                    position = todo.order.index(next(i for i, c in enumerate(group.cells) if c.cell.id == cell_id))
                    runs[cell_id].trial(prompts[prompt_id], Slot(todo.block, todo.attempt, position))
        finally:
            for run in runs.values():
                run.close()
        return True

    def preflight(self, groups: list[Group]) -> None:
        """Check that every prompt of every cell fits its context, reading only the targets'
        vocabularies, so that a bad cell stops the run before its first trial, not in the middle."""
        for group in groups:
            if group.live:
                tfile = self.model_files[group.target.name]
                with runtime.Model(tfile["path"], (), vocab_only=True, override_kv=tfile.get("override_kv", ())) as vocab:
                    for plan in group.live:
                        self.tokenized(plan, vocab)

    @staticmethod
    def tokenized(plan: CellPlan, model: runtime.Model) -> dict[str, list[int]]:
        cell = plan.cell
        prompts = {p.id: prompt_tokens(model, p, cell.chat) for p in plan.prompts}
        for p in plan.prompts:
            need = len(prompts[p.id]) + cell.n_predict + methods.get(cell.method).n_max(cell.settings) + 2
            if need > cell.n_ctx:
                raise SpecsweepError(f"cell {cell.name!r}: prompt {p.name!r} ({len(prompts[p.id])} tokens) + "
                                     f"n_predict {cell.n_predict} + a draft do not fit n_ctx {cell.n_ctx}")
        return prompts

    def keep_reference(self, ref_key: str, prompt: Prompt, tokens: list[int]) -> list[int]:
        self.references[(ref_key, prompt.id)] = tokens
        self.results.references.append({"kind": "reference", "reference_key": ref_key, "prompt_id": prompt.id,
                                        "tokens": tokens, "manifest": self.manifest_id})
        return tokens

    def record(self, run: CellRun, prompt: Prompt, slot: Slot, r: TrialResult, reference: list[int],
               telemetry: dict) -> None:
        cell, ref_key, n_prompt = run.cell, run.ref_key, len(run.prompts[prompt.id])
        n = min(cell.n_predict, len(r.tokens), len(reference))
        mismatch = next((i for i in range(n) if r.tokens[i] != reference[i]), None)
        if mismatch is None and len(r.tokens) < cell.n_predict and len(reference) != len(r.tokens):
            mismatch = n  # one stopped at end-of-generation and the other did not
        # synthetic acceptance keeps drafted tokens the target did not choose: not text, not lossless
        synthetic_run = cell.settings.get("synth_len") is not None or bool(cell.settings.get("synth_rates"))
        lossless = None if synthetic_run else mismatch is None
        models = {}
        for role, ref in cell.models.items():
            f = self.model_files[ref.name]
            models[role] = {"name": ref.name, "ref": ref.describe(), "file": f["path"].name, "sha256": f["sha256"]}
            if f.get("override_kv"):
                models[role]["override_kv"] = list(f["override_kv"])
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
            "trial": slot.index,
            "run": self.run_index,
            "design": "blocks" if slot.position is not None else "sequential",
            **({"block": slot.index, "attempt": slot.attempt, "position": slot.position}
               if slot.position is not None else {}),
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
            "rollback": run.rollback,
            "ckpt": {"saves": r.ckpt_saves, "restores": r.ckpt_restores, "bytes": r.ckpt_bytes},
            "time_s": {"decode": r.t_decode, "draft": r.t_draft, "verify": r.t_verify,
                       "rollback": r.t_rollback, "host": r.t_host},
            "lossless": lossless,
            "first_mismatch": mismatch,
            "synthetic": synthetic_run,
            "loop": r.loop,
            "target_shape": self.shape,
            "telemetry": telemetry,
            "tokens_sha": tokens_sha(r.tokens[: cell.n_predict]),
            "output": outputs.pack(r.tokens, run.text(r.tokens)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "manifest": self.manifest_id,
        })
        self.n_recorded += 1
