"""One tune from its inputs to its answer: the stages in order, each skipped when its state
(tune.json) says it is done, each measurement an ordinary matrix run of the tune's folder."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import click

from specsweep.errors import SpecsweepError
from specsweep.matrix.written import write_if_changed
from specsweep.records.store import write_atomically
from specsweep.tune import answer as answer_mod
from specsweep.tune import candidates as cand
from specsweep.tune import matrices, pilot, race, rank
from specsweep.run.blocks import complete_blocks
from specsweep.tune.command import Deadline, Progress, clock
from specsweep.tune.answer import _n
from specsweep.tune.state import open_state

SAFETY = 1.15  # a round is started only when this times its estimated duration fits the time left


class Tune:
    def __init__(self, target: Path, draft: Path | None, drafters: tuple[Path, ...], prompts: str, parallel: int,
                 vram: str | None, budget: float, out: Path | None, wanted: list[str] | None, accept: tuple[str, ...],
                 max_draft: int | None, gpus_text: str | None, kv: str, n_ctx: int, tokens: int, warmup: int,
                 threads: int, verbose: bool):
        from specsweep.analysis.profiles import parse_accept
        from specsweep.probe.calibrate import slug
        from specsweep.probe.command import _check_gguf, parse_gpus

        for path, what in ((target, "target"), (draft, "draft model"), *((d, "drafter") for d in drafters)):
            if path is not None:
                _check_gguf(path, what)
        given = [parse_accept(a) for a in accept]
        self.accept = {p.method: p.rates for p in given}
        if len(self.accept) < len(given):
            raise SpecsweepError("--accept: give one profile per method")
        # absolute as given (the command lines show the user's paths); the matrices and the probe
        # resolve links as the runner does, so that records and probe name the same file
        self.files = cand.inspect(_absolute(target), _absolute(draft) if draft else None,
                                  tuple(_absolute(d) for d in drafters))
        self.families = cand.build(self.files, wanted, self.accept, parallel, max_draft=max_draft)
        self.max_draft = max_draft
        self.gpus = parse_gpus(gpus_text) if gpus_text is not None else None
        self.vram, self.budget, self.parallel, self.verbose = vram, budget, parallel, verbose
        self.out = Path(out) if out is not None else Path("results") / f"tune-{slug(target.stem)}"
        self.prompts, self.kv, self.n_ctx, self.tokens, self.warmup, self.threads = \
            prompts, kv, n_ctx, tokens, warmup, threads
        self.wanted = wanted
        self.notes: list[str] = []

    # --- setup ---
    def _devices(self) -> tuple[int, ...]:
        if self.gpus is not None:
            return self.gpus
        from specsweep.engine import buffer_types, runtime

        runtime.init(self.verbose)
        return (0,) if buffer_types.gpu_devices() else ()

    def _setup(self) -> None:
        gpus = self._devices()
        n_cpu_moe = None
        if self.vram is not None:
            from specsweep.tune.fit import fit

            placed = fit(self.files, self.families, self.vram, gpus, self.kv, self.n_ctx, self.parallel)
            n_cpu_moe, self.notes = placed.n_cpu_moe, self.notes + placed.notes
            self.families = [f for f in self.families if f.name not in placed.dropped]
            if not self.families:
                raise SpecsweepError(f"no drafter fits {self.vram} beside the target")
        self.setup = matrices.Setup(self.files.models(), gpus, self.prompts, self.kv, self.n_ctx, self.tokens,
                                    self.warmup, self.threads, n_cpu_moe)
        self.candidates = {c.name: c for f in self.families for c in f.members}
        inputs = {"target": str(self.files.target), "draft": str(self.files.draft or ""),
                  "drafters": [str(d.path) for d in self.files.drafters], "prompts": self.prompts,
                  "parallel": self.parallel, "vram": self.vram, "gpus": list(gpus), "kv": self.kv, "ctx": self.n_ctx,
                  "tokens": self.tokens, "threads": self.threads, "methods": self.wanted, "max_draft": self.max_draft,
                  "accept": {m: list(r) for m, r in sorted(self.accept.items())}}
        self.state = open_state(self.out, inputs)
        # every candidate's cell id and settings, by name: a cell's id is a hash of its settings, the
        # same in the race matrix whatever else it holds
        from specsweep.matrix import load as matrix_load

        names = list(self.candidates)
        cells = matrix_load.load(self._grid(race.ROUND_BLOCKS)).cells
        self.ids = dict(zip([race.PLAIN, *names], (c.id for c in cells)))
        self.cell_settings = {c.id: c.settings for c in cells}

    def _grid(self, blocks: int) -> Path:
        return self._matrix("grid", list(self.candidates.values()), self.parallel, blocks,
                            "every candidate of the tune and plain decoding (what the tune spares)")

    def _matrix(self, kind: str, cells: list[cand.Candidate], parallel: int, blocks: int, description: str) -> Path:
        from specsweep.probe.calibrate import slug

        name = kind if kind in ("pilot", "race") else f"{slug(self.out.name)}-{kind}"
        body = matrices.text(name, description, self.setup, cells, parallel, blocks)
        return write_if_changed(self.out / f"{kind}.toml", body)

    def _pilot_matrix(self) -> Path:
        return self._matrix("pilot", [f.pilot for f in self.families], 1, 1,
                            "specsweep tune: plain decoding and one pilot per family, one block")

    def _check_headers(self, path: Path) -> list:
        """Drafts and drafters against the target, the prompts against the set: one line, before
        anything loads. The matrix's cells."""
        from specsweep.matrix import load as matrix_load
        from specsweep.matrix.models import model_overrides, resolve
        from specsweep.models.drafter_fit import check_cells
        from specsweep.run.plan import make_plan

        matrix = matrix_load.load(path)
        self.n_prompts = len(make_plan(matrix, None)[0].cells[0].prompts)  # reads the prompt set
        check_cells(matrix.cells, lambda ref: resolve(ref, path), model_overrides)
        return matrix.cells

    def _measure(self, path: Path, bar: Progress) -> float:
        from specsweep.run.command import execute

        def log(line: str) -> None:  # a round's block count is the tune's choice: its balance note is noise here
            if "blocks are not a multiple" not in line:
                bar.log(line)

        t0 = time.monotonic()
        execute(path, self.out, verbose=self.verbose, progress=bar.trial, log=log)
        return time.monotonic() - t0

    # --- the stages ---
    def run(self, t0: float | None = None) -> None:
        self._setup()
        st = self.state
        pilot_path = self._pilot_matrix()
        pilot_cells = self._check_headers(pilot_path)
        for note in self.notes:
            click.echo(note, err=True)
        n_cands = len(self.candidates)
        n_fam = len(self.families)
        click.echo(f"tune {self.files.target.name}: {_n(n_cands, 'candidate config')} in {n_fam} "
                   f"famil{'y' if n_fam == 1 else 'ies'} "
                   f"({', '.join(sorted({f.method for f in self.families}))}); budget {clock(self.budget)}; "
                   f"records in {self.out}", err=True)
        with Progress(self.budget, t0) as bar:
            self.bar = bar
            if not st.probed:
                bar.stage("probing the target's verify cost")
                k_max = max(c.n_max for c in self.candidates.values()) + 1
                pilot.probe(self.out, self.files.target.resolve(), self.setup.gpus, self.kv, self.threads, k_max,
                            self.setup.n_cpu_moe)
                st.probed = True
                st.save(self.out)
            if not st.piloted:
                self._pilot(pilot_path, len(pilot_cells))
            if not st.ranking:
                bar.stage("ranking the candidates (predict)")
                self._rank(pilot_cells)
            self._race()
        self._answer()

    def _pilot(self, path: Path, n_cells: int) -> None:
        st, bar = self.state, self.bar
        need = pilot.pilot_seconds(pilot.read_t1_ms(self.out) or 0.0, n_cells, self.n_prompts, self.tokens,
                                   self.warmup)
        if need > bar.left:
            raise SpecsweepError(f"--time {clock(self.budget)} is too short: the pilot alone ({n_cells} configs x "
                                 f"{self.n_prompts} prompts x {self.tokens} tokens) needs about {clock(need)}; give "
                                 f"more time, fewer --methods, fewer prompts or fewer --tokens (the probe is kept)")
        bar.stage("pilot: each family's acceptance")
        bar.arm()
        try:
            seconds = self._measure(path, bar)
        except Deadline:
            bar.__exit__(None, None, None)
            click.echo(f"\nspecsweep: the budget ended during the pilot; run the same command again (with more --time) "
                       f"to resume it", err=True)
            sys.exit(1)
        st.piloted = True
        st.rounds.append({"stage": "pilot", "blocks": 1, "cells": n_cells, "seconds": round(seconds, 3)})
        st.save(self.out)

    def _rank(self, pilot_cells: list) -> None:
        from specsweep.records.store import ResultsDir

        ids = {f.name: c.id for f, c in zip(self.families, pilot_cells[1:])}  # [0]: plain decoding
        trials = ResultsDir(self.out, "pilot").read_trials()
        by_family = {f.name: [t for t in trials if t.get("cell_id") == ids[f.name]] for f in self.families}
        data = rank.card(rank.sources(self.out, self.out.parent), self.files.target.resolve(), self.kv,
                         len(self.setup.gpus))
        ranked = rank.rank(self.families, by_family, data, self.tokens)
        self.state.ranking = [{"name": r.candidate.name, "family": r.candidate.family, "predicted": r.speedup,
                               "acceptance": r.acceptance, "note": r.note} for r in ranked]
        self.state.save(self.out)

    def _per_cell_block(self) -> float:
        """Seconds one config takes for one block (its prompts, a share of loading and warm-up): the
        median over the race's rounds (a host that stalls once does not set it), else from the pilot
        (at one stream; times the streams, to be safe)."""
        rounds = [r for r in self.state.rounds if r.get("seconds") and r.get("stage") == "race"]
        if not rounds:
            p = next(r for r in self.state.rounds if r.get("stage") == "pilot")
            return p["seconds"] / (p["cells"] * p["blocks"]) * self.parallel
        return statistics.median(r["seconds"] / (r["cells"] * r["blocks"]) for r in rounds)

    def _race(self) -> None:
        st, bar = self.state, self.bar
        if not st.entrants:
            ranked = [r for r in st.ranking if r["predicted"] is not None and not r["note"]]
            if not ranked:
                self.notes.append("no race: no config's pilot had a draft accepted on these prompts")
                return
            st.entrants = race.entrants(ranked, self._per_cell_block(), bar.left / SAFETY)
            st.save(self.out)
            if not st.entrants:
                self.notes.append("no race: the time left after the pilot does not hold two blocks of a config and "
                                  "plain decoding (give more --time)")
                return
        while not st.stopped:
            path = self._race_matrix()
            if st.measured < st.blocks:  # a round asked for and not (wholly) measured: an interrupted call
                bar.stage(f"race blocks {st.measured + 1}-{st.blocks}: {len(st.alive)} configs and plain decoding")
                bar.arm()
                try:
                    seconds = self._measure(path, bar)
                except Deadline:
                    self.notes.append(f"the budget ended inside blocks {st.measured + 1}-{st.blocks}: the answer uses "
                                      f"the blocks measured whole; the same command again resumes the race")
                    break
                st.rounds.append({"stage": "race", "blocks": st.blocks - st.measured, "cells": len(st.alive) + 1,
                                  "seconds": round(seconds, 3)})
                st.measured = st.blocks
                st.save(self.out)
            if st.measured >= race.ROUND_BLOCKS:
                verdict = race.judge(self._race_trials(), st.alive, self.ids, self.ids[race.PLAIN])
                for name, why in verdict.drop.items():
                    st.dropped[name] = {"after_blocks": st.measured, "reason": why}
                if verdict.stop:
                    st.stopped = verdict.stop
                    st.save(self.out)
                    break
                st.save(self.out)
            need = self._per_cell_block() * (len(st.alive) + 1) * race.ROUND_BLOCKS * SAFETY
            if need > bar.left:
                self.notes.append(f"the race stopped at the budget: another round of {_n(len(st.alive), 'config')} "
                                  f"needed about {clock(need)}, {clock(max(bar.left, 0))} were left")
                break
            st.blocks = st.measured + race.ROUND_BLOCKS
            st.save(self.out)

    def _race_trials(self) -> list[dict]:
        """The race's records of whole blocks: a block cut short (by the budget, or an interrupt not
        yet resumed) pairs only some configs with plain decoding, and is left out."""
        from specsweep.records.store import ResultsDir

        trials = ResultsDir(self.out, "race").read_trials()
        done = complete_blocks({(t["block"], t.get("attempt", 0), t["cell_id"], t["prompt_id"]) for t in trials},
                               [self.ids[race.PLAIN]], sorted({t["prompt_id"] for t in trials}))
        whole = {b for b in done if self._whole(trials, b, done[b])}
        return [t for t in trials if t["block"] in whole and t.get("attempt", 0) == done[t["block"]]]

    def _whole(self, trials: list[dict], block: int, attempt: int) -> bool:
        """Every config that raced in the block (its plain decoding's prompts for each) is there."""
        mine = [t for t in trials if t["block"] == block and t.get("attempt", 0) == attempt]
        prompts = {t["prompt_id"] for t in mine if t["cell_id"] == self.ids[race.PLAIN]}
        cells = {t["cell_id"] for t in mine}
        return all({t["prompt_id"] for t in mine if t["cell_id"] == c} == prompts for c in cells) \
            and len(prompts) == self.n_prompts

    def _race_matrix(self) -> Path:
        return self._matrix("race", [self.candidates[n] for n in self.state.alive], self.parallel,
                            max(self.state.blocks, 1), "specsweep tune: the configs still racing and plain decoding")

    # --- the answer ---
    def _answer(self) -> None:
        st = self.state
        report = answer_mod.Report(target=self.files.target, out=self.out, budget=self.budget,
                                   elapsed=self.bar.elapsed, n_candidates=len(self.candidates),
                                   families=[f.name for f in self.families], ranking=st.ranking,
                                   notes=self.notes, stopped=st.stopped, parallel=self.parallel,
                                   synthetic=bool(self.accept), models=self.files.models(), card=self._card(),
                                   n_prompts=self.n_prompts)
        trials = self._race_trials() if st.entrants else []
        if trials:
            report.standings = race.standings(trials, {n: self.ids[n] for n in st.entrants})
            report.dropped, report.blocks = st.dropped, len({t["block"] for t in trials})
            verdict = race.judge(trials, st.alive, self.ids, self.ids[race.PLAIN])
            report.leader, report.runner_up, report.against_runner_up = \
                verdict.leader, verdict.runner_up, verdict.against_runner_up
        else:  # nothing raced: plain decoding's command, and the ranking as what it is, a prediction
            report.leader = race.PLAIN
        report.settings = self.cell_settings[self.ids[report.leader]]
        finalists = list(dict.fromkeys(n for n in [report.leader, *st.alive] if n != race.PLAIN))
        report.finalists = self._matrix("finalists", [self.candidates[n] for n in finalists], self.parallel,
                                        max(2 * race.ROUND_BLOCKS, st.measured),
                                        "specsweep tune's finalists and plain decoding, for a fresh run")
        grid_blocks = max(st.measured, race.ROUND_BLOCKS)
        report.grid = self._grid(grid_blocks)
        if st.rounds:
            report.grid_estimate = self._per_cell_block() * (len(self.candidates) + 1) * grid_blocks
        text = answer_mod.text(report)
        click.echo(text)
        write_atomically(self.out / "answer.txt", text + "\n")
        write_atomically(self.out / "answer.json", json.dumps(answer_mod.to_json(report), indent=1) + "\n")

    def _card(self) -> str:
        from specsweep.records.sources import probe_card

        p = pilot.last_probe(self.out)
        return (probe_card(p) or "") if p else ""


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))
