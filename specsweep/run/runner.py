"""Run planned cells through their backend and append one record per trial.

Per group, the backend prepares what the cells share (backends/: in process, the models load
once; through llama-server, the target's vocabulary and the binary); per cell a session is opened
(contexts made, or a server started), warmed up, the baseline reference for each prompt found (or
generated once and recorded), then the trials run in the design's order (run/blocks.py). Every
speculative trial is compared token by token with the reference: greedy speculative decoding is
lossless, so a difference is recorded and counted, never hidden. (On random-weight models,
batched and one-by-one decoding can round a near-tie differently; a mismatch there is a numerical
fact about the kernels, which is why it is shown rather than treated as a crash.)

A cell whose server fails (does not start, dies, answers an error) is marked failed in
`failures.jsonl` with the one-line cause, and the run goes on with the next cell; its trials stay
to do, so the next run retries it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from specsweep import methods
from specsweep.backends import Measured, inprocess, server, stream_prompts
from specsweep.engine import runtime
from specsweep.errors import SpecsweepError
from specsweep.matrix.prompts import Prompt
from specsweep.records import outputs
from specsweep.records.store import ResultsDir
from specsweep.records.telemetry import Telemetry
from specsweep.run.plan import CellPlan, Group


def tokens_sha(tokens: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, tokens)).encode()).hexdigest()[:16]


def prompt_tokens(model: runtime.Model, prompt: Prompt, chat: bool, thinking: bool | None = None) -> list[int]:
    # add_special: a model that asks for a BOS (Gemma) gets it, as llama.cpp's tools tokenize a
    # prompt (common_tokenize(..., add_special = true, ...)); without it Gemma degenerates
    text = (model.chat_prompt(prompt.text, thinking) if chat else None) or prompt.text
    return model.tokenize(text, add_special=True)


def think_block(prompt_text: str, output: str, pieces: list[str]) -> dict | None:
    """Whether the answer ran in a think block: opened (by the template's generation prompt or by
    the model), closed, and how many generated tokens it took (up to its close, else all). None
    when no think block appears at all."""
    opened_by_prompt = prompt_text.rstrip().endswith("<think>")
    if not opened_by_prompt and "<think>" not in output:
        return None
    text, closed_at = "", None
    for i, piece in enumerate(pieces):
        text += piece
        if "</think>" in text:
            closed_at = i + 1
            break
    return {"opened": True, "by_prompt": opened_by_prompt, "closed": closed_at is not None,
            "tokens": closed_at if closed_at is not None else len(pieces)}


def compare(tokens: list[int], reference: list[int] | None, n_predict: int) -> tuple[bool | None, int | None]:
    """(lossless, first mismatch) of generated tokens against the reference (None: no reference)."""
    if reference is None:
        return None, None
    n = min(n_predict, len(tokens), len(reference))
    mismatch = next((i for i in range(n) if tokens[i] != reference[i]), None)
    if mismatch is None and len(tokens) < n_predict and len(reference) != len(tokens):
        mismatch = n  # one stopped at end-of-generation and the other did not
    return mismatch is None, mismatch


@dataclass
class Slot:
    """Where a trial sits in the run: its index (the block in the blocks design), the block's
    attempt and the cell's position in the block's order."""
    index: int
    attempt: int = 0
    position: int | None = None


class CellRun:
    """A cell's session with what the runner keeps beside it: the prompts in order, telemetry."""

    def __init__(self, runner: "Runner", plan: CellPlan, prepare, vocab: runtime.Model):
        self.runner, self.plan, self.cell = runner, plan, plan.cell
        self.prompt_ids = [p.id for p in plan.prompts]
        self.ref_key = self.cell.reference_key()
        self.prompts = runner.tokenized(plan, vocab)
        self.vocab = vocab
        self.session = prepare(plan, self.prompts, lambda pid: runner.references.get((self.ref_key, pid)))
        self.telemetry = Telemetry(sorted(set(self.cell.gpus) | set(self.cell.draft_gpus)))
        self.parallel = int(self.cell.settings.get("parallel", 1))
        self.is_open = False

    def open(self) -> None:
        self.session.open()
        self.is_open = True

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            self.session.close()

    def reference(self, prompt_id: str) -> list[int] | None:
        """The reference tokens of a prompt: recorded, else plain decoding once (when the session
        can; a server running a speculative method cannot, its baseline's server gives them)."""
        reference = self.runner.references.get((self.ref_key, prompt_id))
        if reference is None and self.cell.method != "baseline":
            tokens = self.session.plain(prompt_id)
            if tokens is not None:
                reference = self.runner.keep_reference(self.ref_key, prompt_id, tokens)
        return reference

    def warmup(self) -> None:
        """The cell's warm-up generations (unrecorded): its first prompt in every stream."""
        first = next(iter(self.prompts))
        for _ in range(self.cell.warmup):
            self.session.measure([first] * self.parallel)

    def pieces(self, tokens: list[int]) -> list[str]:
        return [self.vocab.piece_bytes(t).decode("utf-8", errors="replace") for t in tokens]

    def prompt_text(self, prompt_id: str) -> str:
        return b"".join(self.vocab.piece_bytes(t) for t in self.prompts[prompt_id][-8:]).decode("utf-8", errors="replace")

    def seed(self, prompt: Prompt, slot: Slot) -> int | None:
        """The trial's synthetic seed (methods.trial_seed); None for a cell without synthetic
        acceptance. A re-run attempt of a block draws as the attempt it replaces."""
        s = self.cell.settings
        if s.get("synth_len") is None and not s.get("synth_rates"):
            return None
        return methods.trial_seed(s, self.cell.draws_key(), self.runner.run_index, slot.index, prompt.id)

    def trial(self, prompt: Prompt, slot: Slot) -> None:
        streams = stream_prompts(self.prompt_ids, prompt.id, self.parallel)
        references = [self.reference(p) for p in streams]
        seed = self.seed(prompt, slot)
        with self.telemetry.trial() as telemetry:
            measured = self.session.measure(streams, seed)
        if seed is not None:  # every stream of the trial drew from it (one request's seed)
            measured.extra["synth_seed"] = seed
        trace = getattr(self.session, "trace", None)
        experts = trace() if trace else None  # after the trial and its telemetry window: never timed
        if experts is not None:
            measured.extra["experts"] = experts
        for k, p in enumerate(streams):  # the first baseline trial of a prompt is its reference
            if references[k] is None and self.cell.method == "baseline":
                references[k] = self.runner.keep_reference(self.ref_key, p, measured.streams[k].tokens)
        self.runner.record(self, prompt, streams, slot, measured, references, telemetry)
        self.runner.progress(self.cell.name, 1)


class Runner:
    def __init__(self, results: ResultsDir, matrix, model_files: dict, manifest_id: str, progress=None,
                 run_index: int = 0, log=None, llama_server: str | Path | None = None):
        self.results = results
        self.matrix = matrix
        self.model_files = model_files  # ref name -> {"path", "sha256"}
        self.manifest_id = manifest_id
        self.progress = progress or (lambda cell_name, n: None)
        self.log = log or (lambda line: None)  # one-line notes for the user (fallbacks, rounding)
        self.run_index = run_index
        self.llama_server = llama_server
        self.references = {(r["reference_key"], r["prompt_id"]): r["tokens"]
                           for r in results.read_references() if "tokens" in r}
        self.n_recorded = 0
        self.failed: list[str] = []

    def _backend(self, group: Group):
        if group.backend == "server":
            return server.group(group, self.model_files, self.results.dir, self.llama_server)
        return inprocess.group(group, self.model_files, self.matrix.path.parent)

    def run_group(self, group: Group) -> None:
        if not group.live:
            return
        with self._backend(group) as prepare:
            self.shape = inprocess.target_shape(prepare.vocab)
            runs = {}
            try:
                for plan in group.cells:
                    runs[plan.cell.id] = CellRun(self, plan, prepare, prepare.vocab)
            except SpecsweepError as e:
                if group.backend != "server":
                    raise
                self._fail(plan.cell, e)
                return
            if group.backend == "server":
                self._server_references(group, runs)
            if group.design == "blocks" and self._run_blocks(group, runs):
                return
            for plan in group.live:  # sequential, or blocks that do not fit at once
                self._run_cell(runs[plan.cell.id], plan.todo)

    def _run_cell(self, run: CellRun, todo: list[tuple[Prompt, int]], slots=None) -> None:
        """Open a cell, warm it up, run `todo`, close it; a failing server marks the cell failed."""
        try:
            run.open()
            run.warmup()
            for k, (prompt, index) in enumerate(todo):
                run.trial(prompt, slots[k] if slots else Slot(index))
        except SpecsweepError as e:
            if not run.session.exclusive:
                raise
            self._fail(run.cell, e)
        finally:
            run.close()

    def _fail(self, cell, error: SpecsweepError) -> None:
        self.failed.append(cell.id)
        self.log(f"cell {cell.name!r} failed: {error.message}; going on with the next cell")
        self.results.failures.append({"kind": "failure", "cell_id": cell.id, "cell": cell.name, "run": self.run_index,
                                      "error": error.message, "manifest": self.manifest_id,
                                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def _server_references(self, group: Group, runs: dict[str, CellRun]) -> None:
        """A speculative server cannot decode plainly: before the trials, each reference key's
        baseline server decodes the prompts that have no reference yet (unmeasured, once)."""
        for plan in group.cells:
            run = runs[plan.cell.id]
            if plan.cell.method != "baseline" or run.cell.id in self.failed:
                continue
            missing = [p for p in run.prompt_ids if (run.ref_key, p) not in self.references]
            needed = any(c.todo and c.cell.reference_key() == run.ref_key and c.cell.method != "baseline"
                         for c in group.cells)
            if not missing or not needed or self._makes_its_own_references(group, plan, missing):
                continue
            try:
                run.open()
                for p in missing:
                    self.keep_reference(run.ref_key, p, run.session.plain(p))
            except SpecsweepError as e:
                self._fail(run.cell, e)
            finally:
                run.close()

    @staticmethod
    def _makes_its_own_references(group: Group, baseline, missing: list[str]) -> bool:
        """Sequential, one stream: a baseline cell that runs before every speculative cell of its
        reference key, with a trial of each missing prompt, records the references with its first
        trials (as in process), so its server need not start once more for them."""
        if group.design != "sequential" or baseline.cell.settings.get("parallel", 1) != 1:
            return False
        live = group.live
        if baseline not in live or not set(missing) <= {p.id for p, _ in baseline.todo}:
            return False
        key, first = baseline.cell.reference_key(), live.index(baseline)
        return all(i > first for i, c in enumerate(live) if c.cell.method != "baseline" and c.cell.reference_key() == key)

    def _run_blocks(self, group: Group, runs: dict[str, CellRun]) -> bool:
        """Block after block in the planned orders. In process every cell of the group is opened at
        once and the trials interleave as planned; False (after saying so) when they do not fit
        together, and the cells then run one after another. A server holds its devices alone, so
        within a block each cell's server starts once and runs its trials of the block."""
        if group.block_plan is not None and group.block_plan.note:
            self.log(f"group {group.target.name}: {group.block_plan.note}")
        prompts = {p.id: p for p in group.cells[0].prompts}
        index = {c.cell.id: i for i, c in enumerate(group.cells)}
        if group.backend == "server":
            for todo in group.blocks:
                for cell_id, trials in _by_cell(todo.trials):
                    if cell_id in self.failed:
                        continue
                    position = todo.order.index(index[cell_id])
                    slots = [Slot(todo.block, todo.attempt, position)] * len(trials)
                    self._run_cell(runs[cell_id], [(prompts[p], todo.block) for p in trials], slots)
            return True
        opened = []
        try:
            for plan in group.cells:
                runs[plan.cell.id].open()
                opened.append(runs[plan.cell.id])
        except SpecsweepError as e:
            for run in opened:
                run.close()
            self.log(f"group {group.target.name}: its models and contexts do not fit at once ({e.message}); "
                     f"running its cells one after another (sequential design) instead")
            group.design = "sequential"
            return False
        try:
            for run in opened:
                run.warmup()
            for todo in group.blocks:
                for cell_id, prompt_id in todo.trials:
                    position = todo.order.index(index[cell_id])
                    runs[cell_id].trial(prompts[prompt_id], Slot(todo.block, todo.attempt, position))
        finally:
            for run in opened:
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
        prompts = {p.id: prompt_tokens(model, p, cell.chat, cell.settings.get("thinking")) for p in plan.prompts}
        for p in plan.prompts:
            need = len(prompts[p.id]) + cell.n_predict + methods.get(cell.method).n_max(cell.settings) + 2
            if need > cell.n_ctx:
                raise SpecsweepError(f"cell {cell.name!r}: prompt {p.name!r} ({len(prompts[p.id])} tokens) + "
                                     f"n_predict {cell.n_predict} + a draft do not fit n_ctx {cell.n_ctx}")
        return prompts

    def keep_reference(self, ref_key: str, prompt_id: str, tokens: list[int]) -> list[int]:
        self.references[(ref_key, prompt_id)] = tokens
        self.results.references.append({"kind": "reference", "reference_key": ref_key, "prompt_id": prompt_id,
                                        "tokens": tokens, "manifest": self.manifest_id})
        return tokens

    def record(self, run: CellRun, prompt: Prompt, streams: list[str], slot: Slot, measured: Measured,
               references: list[list[int] | None], telemetry: dict) -> None:
        cell = run.cell
        first = measured.streams[0]
        pieces = run.pieces(first.tokens)
        verdicts = [compare(r.tokens, ref, cell.n_predict) for r, ref in zip(measured.streams, references)]
        # synthetic acceptance keeps drafted tokens the target did not choose: not text, not lossless
        synthetic_run = cell.settings.get("synth_len") is not None or bool(cell.settings.get("synth_rates"))
        lossless = None if synthetic_run or verdicts[0][0] is None else all(v[0] for v in verdicts)
        models = {}
        for role, ref in cell.models.items():
            f = self.model_files[ref.name]
            models[role] = {"name": ref.name, "ref": ref.describe(), "file": f["path"].name, "sha256": f["sha256"]}
            if f.get("override_kv"):
                models[role]["override_kv"] = list(f["override_kv"])
        many = len(measured.streams) > 1
        times = measured.loop_times or first
        n_drafted = sum(r.n_drafted for r in measured.streams)
        n_accepted = sum(r.n_accepted for r in measured.streams)
        n_prompt = len(run.prompts[prompt.id])
        record = {
            "kind": "trial",
            "matrix": self.matrix.name,
            "cell_id": cell.id,
            "cell": cell.name,
            "method": cell.method,
            "backend": cell.settings.get("backend", "inprocess"),
            "settings": cell.settings,
            "models": models,
            "reference_key": run.ref_key,
            "prompt_id": prompt.id,
            "prompt": prompt.name,
            "prompt_kind": prompt.kind,
            "prompt_tokens": n_prompt,
            "trial": slot.index,
            "run": self.run_index,
            "design": "blocks" if slot.position is not None else "sequential",
            **({"block": slot.index, "attempt": slot.attempt, "position": slot.position}
               if slot.position is not None else {}),
            "prefill_ms": first.t_prefill * 1e3,
            "prefill_tps": (n_prompt - 1) / first.t_prefill if first.t_prefill > 0 else None,
            # parallel streams: the aggregate over the trial's window (what a server's users get in all)
            "decode_tps": measured.aggregate_tps if many else first.decode_tps,
            "n_generated": sum(len(r.tokens) for r in measured.streams),
            "n_drafted": n_drafted,
            "n_accepted": n_accepted,
            "acceptance": n_accepted / n_drafted if n_drafted else None,
            "drafted_by_pos": _sum_lists(r.drafted_by_pos for r in measured.streams),
            "accepted_by_pos": _sum_lists(r.accepted_by_pos for r in measured.streams),
            "n_drafted_llama": sum(r.n_drafted_llama for r in measured.streams),
            "n_accepted_llama": sum(r.n_accepted_llama for r in measured.streams),
            "n_steps": (None if not measured.split_times else times.n_steps if measured.loop_times
                        else sum(r.n_steps for r in measured.streams)),
            "n_rollbacks": sum(r.n_rollbacks for r in measured.streams),
            "rollback": measured.rollback,
            "ckpt": {"saves": sum(r.ckpt_saves for r in measured.streams),
                     "restores": sum(r.ckpt_restores for r in measured.streams),
                     "bytes": sum(r.ckpt_bytes for r in measured.streams)},
            "time_s": ({"decode": times.t_decode, "draft": times.t_draft, "verify": times.t_verify,
                        "rollback": times.t_rollback, "host": times.t_host} if measured.split_times
                       else {"decode": times.t_decode, "draft": None, "verify": None, "rollback": None, "host": None}),
            "lossless": lossless,
            "first_mismatch": verdicts[0][1],
            "synthetic": synthetic_run,
            "loop": first.loop,
            "target_shape": self.shape,
            "placement": run.session.placement,
            "telemetry": telemetry,
            "tokens_sha": tokens_sha(first.tokens[: cell.n_predict]),
            "output": outputs.pack(first.tokens, "".join(pieces)),
            "think": think_block(run.prompt_text(prompt.id), "".join(pieces), pieces),
            **measured.extra,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "manifest": self.manifest_id,
        }
        if many:
            record["parallel"] = len(measured.streams)
            record["streams"] = [{"prompt_id": p, "n_generated": len(r.tokens), "decode_tps": r.decode_tps,
                                  "prefill_ms": r.t_prefill * 1e3, "n_drafted": r.n_drafted,
                                  "n_accepted": r.n_accepted, "acceptance": r.acceptance,
                                  "lossless": None if synthetic_run else v[0], "first_mismatch": v[1],
                                  "tokens_sha": tokens_sha(r.tokens[: cell.n_predict])}
                                 for p, r, v in zip(streams, measured.streams, verdicts)]
        self.results.trials.append(record)
        self.n_recorded += 1


def _sum_lists(lists) -> list[int]:
    out: list[int] = []
    for xs in lists:
        if len(out) < len(xs):
            out.extend([0] * (len(xs) - len(out)))
        for i, x in enumerate(xs):
            out[i] += x
    return out


def _by_cell(trials: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """A block's trials as (cell id, its prompts), cells in the block's order of first appearance."""
    out: dict[str, list[str]] = {}
    for cell_id, prompt_id in trials:
        out.setdefault(cell_id, []).append(prompt_id)
    return list(out.items())
