"""The `server` backend: a cell's trials through llama.cpp's own `llama-server`.

Per cell, one server process (engine/llama_server.py) started with the cell's flags
(backends/server_flags.py) on a free loopback port, its log kept beside the records
(`results/<matrix>/server-logs/<cell id>.log`, appended to by every start). A trial sends each
stream's prompt as token ids to `/completion` (greedy, `ignore_eos` as the cell says, no prompt
cache); `parallel = N` sends the N prompts in one request to a server with N slots.

What a record gets from the server, and what it means:
- tokens: the server's own (`return_tokens`), checked against the server baseline's.
- decode tok/s: generated tokens / the server's `predicted_ms` (the time from its first generated
  token, which comes from the prompt's logits, to its last): the same span specsweep's in-process
  server loop times. The server's own `predicted_per_second` counts one token less and is kept
  in `server.timings`.
- drafted/accepted: the server's `draft_n`/`draft_n_accepted` (absent when it did not draft);
  accepted per draft position and the verify steps from `/metrics` (counters read before and after
  the trial; with parallel streams they cover the whole trial, not one stream).
- parallel: the N prompts go in one request (`prompt` a list of token-id lists): the server makes
  a task of each and starts them in the same step, one per slot. N separate HTTP requests arrive
  with jitter, which changes which streams' prompts share a batch and so what a near-tie rounds
  to: on the CPU, two runs of the same EAGLE-3 cell at synthetic acceptance gave different tokens
  that way. So the streams of a trial share its one synthetic seed (`seed` of the request, which
  seeds every slot's draws; methods.trial_seed), in process too. The aggregate tok/s is over the window from the first stream's first generated token
  to the last stream's last, from the server's own timings (the slots start their prompts
  together: window = max(prompt_ms + predicted_ms) - min(prompt_ms)). When the N prompts do not
  fit one batch of n_batch, the later slots finish their prompts later and the window holds that
  prefill too (docs/matrix.md, "Backends and concurrency"); `server.prefill_batches` says how many
  batches of n_batch the trial's prompts took together (1: every slot started in one wave).
- id_slot: the slot that served each stream (`server.id_slot`, in stream order, from the answers'
  `id_slot`). llama-server picks a free slot by prompt similarity, then least recently used, so
  stream k need not be slot k; what a slot kept from an earlier trial is never reused
  (`cache_prompt` false), but the record says which slot ran which stream.
- no draft/verify/rollback split: the server does not report one (`time_s` has only `decode`),
  nor its number of target decodes (`n_steps` is null; the verify steps that carried a draft are
  `server.metrics.spec_decode_num_drafts_total`).

Synthetic acceptance is a server-wide setting (`--spec-synth-*`), so it comes with the cell's own
server start; cells never share a server.

A server that does not start, dies, or answers an error raises one SpecsweepError line naming the
cause and the log; the runner marks the cell failed and goes on.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from specsweep import methods
from specsweep.backends import Measured
from specsweep.backends.server_flags import server_flags
from specsweep.engine import runtime
from specsweep.engine.llama_server import LlamaServer, find_binary
from specsweep.engine.speculative import TrialResult
from specsweep.errors import SpecsweepError
from specsweep.matrix.cells import Cell
from specsweep.models import placement

_METRIC = re.compile(r'^llamacpp:(\w+)(?:\{position="(\d+)"\})?\s+(\S+)$')


def parse_metrics(text: str) -> dict:
    """The counters of llama-server's /metrics that a trial needs: totals by name, and accepted
    tokens per draft position as a list."""
    totals: dict[str, float] = {}
    per_pos: dict[int, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line.strip())
        if not m:
            continue
        name, pos, value = m.group(1), m.group(2), float(m.group(3))
        if pos is not None:
            per_pos[int(pos)] = value
        else:
            totals[name] = value
    totals["accepted_per_pos"] = [per_pos[i] for i in range(len(per_pos))] if per_pos else []
    return totals


def metrics_delta(before: dict, after: dict) -> dict:
    out = {k: after[k] - before.get(k, 0.0) for k in ("n_decode_total", "spec_decode_num_drafts_total",
                                                    "spec_decode_num_draft_tokens_total",
                                                    "spec_decode_num_accepted_tokens_total") if k in after}
    a, b = after.get("accepted_per_pos", []), before.get("accepted_per_pos", [])
    out["accepted_per_pos"] = [int(x - (b[i] if i < len(b) else 0)) for i, x in enumerate(a)]
    return out


def result_of(answer: dict) -> TrialResult:
    """One stream's TrialResult from the server's answer."""
    timings = answer.get("timings") or {}
    tokens = [int(t) for t in answer.get("tokens") or []]
    r = TrialResult(tokens=tokens, loop="llama-server")
    r.n_drafted = r.n_drafted_llama = int(timings.get("draft_n", 0))
    r.n_accepted = r.n_accepted_llama = int(timings.get("draft_n_accepted", 0))
    r.t_prefill = float(timings.get("prompt_ms", 0.0)) / 1e3
    r.t_decode = float(timings.get("predicted_ms", 0.0)) / 1e3
    return r


class ServerCell:
    """One cell through its own llama-server process."""

    exclusive = True

    def __init__(self, cell: Cell, prompts: dict[str, list[int]], vocab: runtime.Model, files: dict,
                 binary: Path, log_dir: Path, fitted=None):
        self.cell, self.prompts, self.vocab = cell, prompts, vocab
        self.args = server_flags(cell, files, fitted)
        # where the weights go: the keys and the header's estimate. The server's log does not say
        # (llama.cpp's buffer lines sit below its default verbosity, and raising it adds log work
        # to every step the record times)
        target = files[cell.models["target"].name]
        spec = placement.target_spec(cell.settings)
        args = placement.load_args(spec, fitted)
        self.placement = placement.record_block(spec, None, fitted, placement.estimate(
            target["path"], args, cell.gpus, cell.tensor_split, methods.get(cell.method).context == "mtp"))
        self.binary = binary
        self.log_path = Path(log_dir) / f"{cell.id}.log"
        self.server: LlamaServer | None = None

    # --- lifetime ---
    def open(self) -> None:
        self.server = LlamaServer(self.binary, self.args, self.log_path).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def plain(self, prompt_id: str) -> list[int] | None:
        """A baseline cell's server decodes plainly; a speculative one cannot (no per-request switch)."""
        if self.cell.method != "baseline":
            return None
        return self.measure([prompt_id]).streams[0].tokens

    # --- one trial ---
    def measure(self, streams: list[str], seed: int | None = None) -> Measured:
        assert self.server is not None, "session not open"
        cell = self.cell
        seed = methods.base_seed(cell.settings) if seed is None else seed
        ignore_eos = bool(cell.settings.get("ignore_eos", False))
        before = parse_metrics(self.server.metrics())
        if len(streams) == 1:
            answers = [self.server.complete(self.prompts[streams[0]], cell.n_predict, seed, ignore_eos)]
        else:
            answers = self.server.complete_many([self.prompts[p] for p in streams], cell.n_predict, seed, ignore_eos)
            if len(answers) != len(streams):
                raise SpecsweepError(f"llama-server answered {len(answers)} of {len(streams)} prompts "
                                     f"(log: {self.log_path})")
        after = parse_metrics(self.server.metrics())
        results = [result_of(a) for a in answers]
        delta = metrics_delta(before, after)
        if len(results) == 1:
            results[0].accepted_by_pos = delta.get("accepted_per_pos", [])
        window = None
        extra = {"server": {"timings": [a.get("timings") or {} for a in answers], "metrics": delta,
                            "id_slot": [a.get("id_slot") for a in answers], "log": self.log_path.name}}
        if len(streams) > 1:
            window = max(r.t_prefill + r.t_decode for r in results) - min(r.t_prefill for r in results)
            n_prompt = sum(len(self.prompts[p]) for p in streams)
            extra["server"]["prefill_batches"] = -(-n_prompt // cell.n_batch)
        return Measured(results, window, extra, rollback=None, split_times=False)


@contextlib.contextmanager
def group(group, files: dict, results_dir: Path, binary: str | Path | None = None):
    """What a group's server cells share: the target's vocabulary, loaded in process (no weights)
    to tokenize prompts and render generated tokens, and the server binary."""
    path = find_binary(binary)
    tfile = files[group.target.name]
    with runtime.Model(tfile["path"], (), vocab_only=True, override_kv=tfile.get("override_kv", ())) as vocab:
        def prepare(plan, prompts: dict[str, list[int]], reference_for=None) -> ServerCell:
            return ServerCell(plan.cell, prompts, vocab, files, path, Path(results_dir) / "server-logs",
                              group.fitted)
        prepare.vocab = vocab
        yield prepare
