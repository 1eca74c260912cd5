"""The `inprocess` backend: a cell's trials through specsweep's own engine (llama-cpp-python).

Per group the models load once (the target, and each draft or drafter on first use; a draft
identical to the target shares its weights); per cell the contexts are made once when the session
opens. A trial runs `llama-speculative-simple`'s loop (engine/speculative.py), or a server slot's
(engine/server_loop.py) when the cell has synthetic acceptance (llama.cpp has it only there) or
says `loop = "server"`. `parallel = N` runs N streams as N sequences of one context, their verify
batches in one decode per step (engine/parallel.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
from contextlib import ExitStack

from specsweep import methods
from specsweep.backends import Measured
from specsweep.engine import expert_trace
from specsweep.engine import parallel as parallel_loop
from specsweep.engine import runtime, synthetic
from specsweep.engine.server_loop import Synth, run_trial_server
from specsweep.engine.speculative import run_trial
from specsweep.errors import SpecsweepError
from specsweep.matrix.cells import Cell
from specsweep.models import header, placement
from specsweep.records import expert_union


def context_options(cell: Cell, hybrid_snapshots: bool) -> runtime.ContextOptions:
    # snapshot rollback keeps one recurrent-state snapshot per draftable token, as llama.cpp sizes
    # n_rs_seq to the draft's n_max; checkpoint rollback keeps none
    n_max = methods.get(cell.method).n_max(cell.settings)
    n_rs = n_max if hybrid_snapshots and cell.rollback == "snapshot" else 0
    streams = int(cell.settings.get("parallel", 1))
    # output rows as llama.cpp's tools size them: a verify batch of the draft limit + 1 per stream
    return runtime.ContextOptions(n_ctx=cell.n_ctx * streams, n_batch=cell.n_batch, type_kv=cell.kv,
                                  flash_attn=cell.flash_attn, n_threads=cell.threads, n_rs_seq=n_rs,
                                  backend_sampling=cell.backend_sampling, n_outputs=(n_max + 1) * streams,
                                  ignore_eos=cell.settings.get("ignore_eos", False), n_seq_max=streams)


def make_drafter(cell: Cell, draft_ctx: runtime.Context | None, target_ctx: runtime.Context, matrix_dir,
                 prior_texts: list[list[int]] = (), seq: int = 0):
    """The cell's drafter for one trial (None for the baseline); `prior_texts` are the earlier runs
    an ngram-cache cell's `lookup_prior_runs` folds into its dynamic cache; `seq` the stream."""
    make = methods.get(cell.method).make
    if make is None:
        return None
    return make(cell.settings, methods.DrafterContexts(draft_ctx, target_ctx, matrix_dir, list(prior_texts), seq))


def draft_context(cell: Cell, target: runtime.Model, target_ctx: runtime.Context, draft: runtime.Model | None,
                  opts: runtime.ContextOptions) -> runtime.Context | None:
    """The second context a model-based drafter decodes in: the draft model's (with the target's
    options), a drafter's that reads the target's context (DFlash, DSpark, EAGLE-3), or the MTP
    head's (on the target's own model). llama.cpp gives these last two no recurrent snapshots."""
    m = methods.get(cell.method)
    # one output row per step and stream, except a block drafter's n_max + 1
    # (common_base_params_to_speculative); a drafter's own sampling does not ban end-of-generation
    # tokens (llama.cpp's draft samplers)
    rows = (m.n_max(cell.settings) + 1 if m.capped else 1) * opts.n_seq_max
    opts = dataclasses.replace(opts, ignore_eos=False, type_kv=cell.settings.get("draft_kv") or opts.type_kv)
    if m.context == "draft":
        return runtime.Context(draft, dataclasses.replace(opts, n_outputs=rows))
    if m.context == "drafter":
        return runtime.Context(draft, dataclasses.replace(opts, n_rs_seq=0, n_outputs=rows), other=target_ctx)
    if m.context == "mtp":
        return runtime.Context(target, dataclasses.replace(opts, n_rs_seq=0, ctx_type="mtp", n_outputs=rows),
                               other=target_ctx)
    return None


def synth_of(cell: Cell, drafter, seed: int | None = None) -> Synth | None:
    """A cell's synthetic acceptance, resolved against its drafter's actual draft limit (after the
    drafter's own caps, as llama.cpp resolves it after initialising its implementations), drawing
    from `seed` (the trial's, methods.trial_seed; None: the cell's root seed, for warm-ups)."""
    s = cell.settings
    if drafter is None or (s.get("synth_len") is None and not s.get("synth_rates")):
        return None
    try:
        rates = synthetic.resolve_rates(s.get("synth_len"), s.get("synth_rates"), drafter.n_max)
    except SpecsweepError as e:
        raise SpecsweepError(f"cell {cell.name!r}: {e.message}") from None
    return Synth(synthetic.conditional(rates), methods.base_seed(s) if seed is None else seed)


def target_shape(model: runtime.Model) -> dict:
    """The target's facts the analysis needs (expert count and routing), from its header."""
    arch = model.meta("general.architecture") or ""
    experts = int(model.meta(f"{arch}.expert_count") or 0)
    used = int(model.meta(f"{arch}.expert_used_count") or 0)
    return {"arch": arch, "n_layer": model.n_layer, "n_expert": experts, "n_expert_used": used,
            "hybrid": model.has_recurrent_state}


class InProcessCell:
    """One cell in process: its contexts (made once, at open), its rollback way decided."""

    exclusive = False

    def __init__(self, cell: Cell, prompts: dict[str, list[int]], target: runtime.Model,
                 draft: runtime.Model | None, matrix_dir, reference_for=lambda prompt_id: None):
        self.cell, self.prompts, self.target, self.draft, self.matrix_dir = cell, prompts, target, draft, matrix_dir
        self.reference_for = reference_for  # the runner's reference tokens of a prompt (lookup_prior_runs)
        self.streams = int(cell.settings.get("parallel", 1))
        self.stack = ExitStack()
        self.tctx = self.dctx = None
        self.rollback: str | None = None
        self.prior_runs = cell.settings.get("lookup_prior_runs", 0)
        self.placement: dict = {}  # the record's placement block (the group sets it)
        # trace_experts: a second target context, created with the router-reading eval callback,
        # that replays each trial after it ran (engine/expert_trace.py); the timed one has none
        self.tracer: expert_trace.ExpertTracer | None = None
        self.traced_ctx: runtime.Context | None = None
        self.journal: expert_trace.Journal | None = None
        self.pass_s: list[float] = []  # the last trial's pass times, for `trace`
        self.expert_bytes: dict[int, int] = {}  # layer -> its routed experts' bytes (traced cells)

    def open(self) -> None:
        cell, target = self.cell, self.target
        hybrid = target.has_recurrent_state
        try:
            opts = context_options(cell, hybrid)
            self.tctx = self.stack.enter_context(runtime.Context(target, opts))
            self.dctx = draft_context(cell, target, self.tctx, self.draft, opts)
            if self.dctx is not None:
                self.stack.enter_context(self.dctx)
            if cell.settings.get("trace_experts"):
                self._open_trace(opts)
        except BaseException:
            self.stack.close()
            raise
        if not hybrid:
            self.rollback = "seq_rm"
        else:
            self.rollback = "snapshot" if self.tctx.can_remove_partially() else "checkpoint"

    def _open_trace(self, opts: runtime.ContextOptions) -> None:
        shape = target_shape(self.target)
        if not shape["n_expert"]:
            raise SpecsweepError(f"cell {self.cell.name!r}: trace_experts needs a MoE target; "
                                 f"{self.target.path.name} is dense (no {shape['arch']}.expert_count)")
        self.tracer = expert_trace.ExpertTracer()
        self.traced_ctx = self.stack.enter_context(runtime.Context(self.target, opts, eval_callback=self.tracer.callback))
        self.expert_bytes = header.routed_expert_bytes(self.target.path, self.target.path.name)

    def close(self) -> None:
        self.stack.close()

    def trace(self) -> dict | None:
        """The last trial's expert union (the record's `experts` block), replayed in the traced
        context; None when the cell does not trace."""
        journal, self.journal = self.journal, None
        pass_s, self.pass_s = self.pass_s, []
        if self.traced_ctx is None or journal is None:
            return None
        self.traced_ctx.clear()
        done = expert_trace.replay(journal, self.traced_ctx, self.tracer)
        passes = [p for p in done.passes if p.kind != "prefill"]
        layers = sorted({il for p in passes for il in p.experts})
        shape = target_shape(self.target)
        return expert_union.block(
            [p.kind for p in passes], [p.n_tokens for p in passes], [p.n_distinct for p in passes],
            [p.unions(layers) for p in passes], layers, shape["n_expert"], shape["n_expert_used"],
            [self.expert_bytes.get(il, 0) for il in layers], pass_s, done.outputs_checked, done.mismatches,
            done.seconds)

    def plain(self, prompt_id: str) -> list[int]:
        """Plain greedy decoding of one prompt in stream 0 (the reference tokens)."""
        self.tctx.clear()
        return run_trial(self.tctx, self.prompts[prompt_id], self.cell.n_predict).tokens

    def _drafter(self, prompt_id: str, seq: int = 0):
        cell = self.cell
        reference = self.reference_for(prompt_id) if self.prior_runs else None
        prior = [self.prompts[prompt_id] + reference] * self.prior_runs if reference else []
        return make_drafter(cell, self.dctx, self.tctx, self.matrix_dir, prior, seq)

    def measure(self, streams: list[str], seed: int | None = None) -> Measured:
        cell = self.cell
        use_ckpt = self.rollback == "checkpoint"
        if len(streams) > 1:
            self.tctx.clear()
            if self.dctx is not None:
                self.dctx.clear()
            drafters = [self._drafter(p, seq) for seq, p in enumerate(streams)]
            results, loop_times, window = parallel_loop.run_streams(
                self.tctx, [self.prompts[p] for p in streams], cell.n_predict, drafters,
                [synth_of(cell, d, seed) for d in drafters], use_checkpoints=use_ckpt)
            return Measured(results, window, rollback=self.rollback, loop_times=loop_times)
        prompt_id = streams[0]
        drafter = self._drafter(prompt_id)
        self.tctx.clear()
        if self.dctx is not None:
            self.dctx.clear()
        tokens = self.prompts[prompt_id]
        synth = synth_of(cell, drafter, seed)
        # a traced cell keeps what the timed context does (a list append per call) for `trace`
        self.tctx.journal = self.journal = expert_trace.Journal() if self.traced_ctx is not None else None
        try:
            if synth is not None or cell.settings.get("loop") == "server":  # llama.cpp's synthetic acceptance: server only
                result = run_trial_server(self.tctx, tokens, cell.n_predict, drafter, synth, use_checkpoints=use_ckpt)
            else:
                result = run_trial(self.tctx, tokens, cell.n_predict, drafter,
                                   use_checkpoints=use_ckpt and drafter is not None)
        finally:
            self.tctx.journal = None
        self.pass_s = result.pass_times
        return Measured([result], rollback=self.rollback)


@contextlib.contextmanager
def group(group, files: dict, matrix_dir):
    """Load a group's target where its placement says (and, on first use, each draft) once;
    yields prepare(plan, prompts, reference_for)."""
    with ExitStack() as stack:
        tfile = files[group.target.name]
        target_path, target_kv = tfile["path"], tuple(tfile.get("override_kv", ()))
        spec = placement.target_spec(group.placement)
        place = placement.load_args(spec, group.fitted)
        target = stack.enter_context(runtime.Model(target_path, group.gpus, split_mode=group.split_mode,
                                                   tensor_split=group.tensor_split, load_mtp=group.load_mtp,
                                                   override_kv=target_kv, **place))
        # where the weights went, as llama.cpp reported it, beside the header's estimate
        target_block = placement.record_block(spec, target.loaded, group.fitted, placement.estimate(
            target_path, place, group.gpus, group.tensor_split, group.load_mtp))
        loaded = {(target_path, group.gpus, target_kv, place["tensor_overrides"], place["n_gpu_layers"]): target}

        def load(cell: Cell) -> runtime.Model | None:
            ref = cell.models.get("draft") or cell.models.get("drafter")
            if ref is None:
                return None
            f, gpus = files[ref.name], cell.draft_gpus
            ot = placement.draft_spec(cell.settings).overrides
            key = (f["path"], gpus, tuple(f.get("override_kv", ())), ot, None)
            if key not in loaded:  # a draft identical to the target (same overrides) shares its weights
                loaded[key] = stack.enter_context(runtime.Model(f["path"], gpus, override_kv=key[2],
                                                                tensor_overrides=ot))
            return loaded[key]

        def prepare(plan, prompts: dict[str, list[int]], reference_for) -> InProcessCell:
            draft = load(plan.cell)
            session = InProcessCell(plan.cell, prompts, target, draft, matrix_dir, reference_for)
            session.placement = dict(target_block)
            if draft is not None and draft is not target:
                session.placement["draft"] = placement.record_block(placement.draft_spec(plan.cell.settings),
                                                                    draft.loaded, draft=True)
            return session

        prepare.vocab = target
        yield prepare
