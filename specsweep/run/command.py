"""`specsweep run MATRIX`: measure every cell of a matrix, resumably, and print the summary."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import click

from specsweep.engine import interrupts, runtime
from specsweep.engine.llama_server import find_binary
from specsweep.errors import SpecsweepError
from specsweep.matrix import load as matrix_load
from specsweep.matrix.models import ModelRef, model_overrides, resolve
from specsweep.models.hashing import file_sha256
from specsweep.models.drafter_fit import check_cells
from specsweep.records import manifest
from specsweep.records.attempts import kept
from specsweep.records.store import ResultsDir
from specsweep.analysis.paired import paired_rows
from specsweep.report.summary import cell_stats, table, uneven_stops, with_paired
from specsweep.run.plan import describe, make_plan, model_refs, parse_shard, select_targets
from specsweep.run.placing import check_placements
from specsweep.run.runner import Runner


def _resolve_quietly(ref: ModelRef, matrix_path: Path) -> str:
    try:
        path = resolve(ref, matrix_path, create=False)
    except SpecsweepError as e:
        return f"(not available: {e.message})"
    return str(path) if path.is_file() else f"{path} (missing: will be {'written' if ref.kind == 'synth' else 'fetched'})"


def _prepare_models(refs: dict[str, ModelRef], matrix_path: Path) -> dict[str, dict]:
    files = {}
    for name, ref in refs.items():
        if ref.kind == "synth" and not resolve(ref, matrix_path, create=False).is_file():
            click.echo(f"writing synthetic model {name}: {ref.describe()}", err=True)
        path = resolve(ref, matrix_path, create=True)
        # sha256 remembered while the file is unchanged; overrides: the lock entry's and the matrix's
        files[name] = {"path": path, "sha256": file_sha256(path), "override_kv": model_overrides(ref)}
    return files


def _check_pairings(groups, files) -> None:
    """Refuse a draft or DFlash drafter that cannot serve its target, or an `mtp` cell whose target
    has no MTP layers, from the GGUF headers, before anything loads."""
    check_cells((plan.cell for g in groups for plan in g.live), lambda ref: files[ref.name]["path"], model_overrides)


@click.command("run")
@click.argument("matrix_file", metavar="MATRIX", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="List the cells and the models each group loads; load nothing.")
@click.option("--shard", metavar="I/N", help="Run only shard I of N (cells k with k mod N = I-1; groups in "
                                              "the blocks design).")
@click.option("--results", "results_root", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True, help="Folder for the records (a subfolder per matrix).")
@click.option("--target", "targets", metavar="NAME", multiple=True,
              help="Run only the cells whose target is NAME (repeatable); the rest stay for a later run.")
@click.option("--runs", type=int, default=1, show_default=True,
              help="Repeat the matrix N times, each in a fresh process (run-to-run spread).")
@click.option("--run-index", type=int, default=None, hidden=True, help="The run this process is (--runs).")
@click.option("--llama-server", "llama_server", metavar="PATH", default=None,
              help="The llama-server binary for backend = \"server\" cells (default: $SPECSWEEP_LLAMA_SERVER, "
                   "else llama-server on PATH).")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's own log lines.")
def run(matrix_file: Path, dry_run: bool, shard: str | None, results_root: Path, targets: tuple[str, ...],
        runs: int, run_index: int | None, llama_server: str | None, verbose: bool) -> None:
    """Measure every cell of MATRIX and append one record per trial under results/."""
    execute(matrix_file, results_root, dry_run=dry_run, shard=shard, targets=targets, runs=runs, run_index=run_index,
            llama_server=llama_server, verbose=verbose)


def execute(matrix_file: Path, results_root: Path = Path("results"), *, dry_run: bool = False, shard: str | None = None,
            targets: tuple[str, ...] = (), runs: int = 1, run_index: int | None = None,
            llama_server: str | None = None, verbose: bool = False, progress=None, log=None) -> None:
    """`specsweep run`'s work, for its command and for other commands that measure a matrix
    (`probe --calibrate`, `tune`): exits 130 when interrupted and 1 when a cell failed, as the
    command does. A caller that draws its own progress passes `progress(cell_name, n)` (called per
    trial) and `log(line)`: then no bar and no summary table are printed here."""
    say = log or (lambda line: click.echo(line, err=True))
    if runs < 1:
        raise SpecsweepError(f"--runs {runs}: give at least 1")
    matrix = matrix_load.load(matrix_file)
    if targets:
        matrix.cells = select_targets(matrix.cells, targets, matrix_file)
    shard_t = parse_shard(shard)
    results = ResultsDir(results_root, matrix.name, shard_t)
    if runs > 1 and run_index is None and not dry_run:
        child = [str(matrix_file), "--results", str(results_root), *(["--shard", shard] if shard else []),
                 *[a for t in targets for a in ("--target", t)], *(["--verbose"] if verbose else []),
                 *(["--llama-server", llama_server] if llama_server else [])]
        _run_fresh_processes(runs, child, matrix, results)
        return
    index = run_index or 0
    trials = results.read_trials()
    groups = make_plan(matrix, shard_t, trials, index)
    n_todo = sum(g.n_todo for g in groups)
    recorded = sum(1 for t in trials if t.get("run", 0) == index)

    if dry_run:
        click.echo(f"matrix {matrix.name}: {len(matrix.cells)} cells, design {matrix.design}"
                   + (f", shard {shard_t[0]}/{shard_t[1]}: {sum(len(g.cells) for g in groups)}" if shard_t else "")
                   + f"; {n_todo} trials to run" + (f" in each of {runs} runs" if runs > 1 else "")
                   + f", results in {results.dir}")
        for line in describe(groups, matrix.path, lambda ref: _resolve_quietly(ref, matrix.path)):
            click.echo(line)
        return

    runtime.init(verbose)
    refs = model_refs(groups)
    files = _prepare_models(refs, matrix.path)
    _check_pairings(groups, files)
    if any(g.backend == "server" for g in groups if g.live):
        find_binary(llama_server)  # before any trial: a missing binary is one line, not a failed cell each
    check_placements(groups, files, log=say)
    runner = Runner(results, matrix, files, "", progress=None, run_index=index,
                    log=log or (lambda line: click.echo(f"\n{line}", err=True)), llama_server=llama_server)
    runner.preflight(groups)
    info = manifest.collect(matrix.path, matrix.text, {n: {"path": str(f["path"]), "sha256": f["sha256"]}
                                                       for n, f in files.items()}, sys.argv)
    manifest_id = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:12]
    info["id"] = manifest_id
    label = f"{matrix.name}" + (f" run {index}" if run_index is not None else "")
    if n_todo:
        results.manifests.append(info)
        say(f"{label}: {n_todo} trials to run ({recorded} already recorded) -> {results.dir}")
    else:
        say(f"{label}: nothing to run, every trial is recorded in {results.dir}")

    # `timeout`, `kill` and schedulers stop a run with SIGTERM: handle it as Ctrl-C, so the records are
    # closed and a llama-server the run started (in its own session) is stopped, not orphaned on the GPU
    # (the handler waits out llama.cpp's log callback, where a raised interrupt would be dropped)
    signal.signal(signal.SIGTERM, interrupts.handler)
    runner.manifest_id = manifest_id
    try:
        with (contextlib.nullcontext() if progress else
              click.progressbar(length=n_todo, label="measuring", file=sys.stderr, show_eta=True, show_pos=True,
                                item_show_func=lambda name: name)) as bar:
            runner.progress = progress or (lambda name, n: bar.update(n, name))
            for group in groups:
                runner.run_group(group)
            interrupts.check()  # one that came while the last model was freed
    except KeyboardInterrupt:
        results.close()
        click.echo(f"\nspecsweep: interrupted; {runner.n_recorded} trials recorded this run, "
                   f"run the same command again to resume", err=True)
        sys.exit(130)
    finally:
        results.close()
    if run_index is None and progress is None:
        _summary(matrix, results)
    if runner.failed:
        click.echo(f"specsweep: {len(runner.failed)} cell(s) failed (causes in {results.dir / 'failures.jsonl'}); "
                   f"their trials stay to do: run the same command again to retry them", err=True)
        sys.exit(1)


def _run_fresh_processes(runs: int, child: list[str], matrix, results: ResultsDir) -> None:
    """`--runs N`: the same run once per run index, each in a new process (its own allocations,
    graph captures and clock history), then one summary over all runs."""
    for index in range(runs):
        click.echo(f"{matrix.name}: run {index + 1} of {runs} (fresh process)", err=True)
        proc = subprocess.run([sys.executable, "-m", "specsweep", "run", *child, "--run-index", str(index)])
        if proc.returncode != 0:
            click.echo(f"specsweep: run {index} ended with exit code {proc.returncode}; the runs before it are "
                       f"recorded, run the same command again to resume", err=True)
            sys.exit(proc.returncode)
    _summary(matrix, results)


def _summary(matrix, results: ResultsDir) -> None:
    trials = kept(results.read_trials())
    order = [c.id for c in matrix.cells]
    stats = cell_stats(trials, order)
    if not stats:
        return
    rows, _ = paired_rows(trials)
    click.echo(table(with_paired(stats, rows)))
    spread = [r for r in rows if r.run_spread]
    if spread:
        click.echo("\nrun-to-run spread of each change (one estimate per run, fresh processes):")
        for r in spread:
            sp = r.run_spread
            click.echo(f"  {r.cell}: {sp['n_runs']} runs, {sp['min']:+.1%} to {sp['max']:+.1%} "
                       f"(stdev {sp['stdev']:.1%}); within-run interval above")
    bad = sum(s.n_trials - s.n_synthetic - s.n_lossless for s in stats)
    if bad:
        click.echo(f"warning: {bad} trials generated tokens that differ from the baseline (lossless column)", err=True)
    uneven = uneven_stops(trials)
    if uneven:
        click.echo(f"warning: with ignore_eos off, arms stopped at different lengths on {len(uneven)} prompt(s) "
                   f"(e.g. {uneven[0]}): their tok/s cover different texts; set ignore_eos = true to compare "
                   f"them on the same n_predict tokens", err=True)
    throttled = sum(s.n_throttled for s in stats)
    if throttled:
        click.echo(f"warning: {throttled} trials ran while the GPU throttled (marked in the table)", err=True)
