"""A cell as a `llama-server` command line: the flags that make the server run what the in-process
engine runs for the same cell.

What maps, and how (llama.cpp's flag names, common/arg.cpp):
- models: `-m` the target, `-md` the draft model or the drafter (DFlash, DSpark, EAGLE-3); MTP
  needs no second file (`--spec-type draft-mtp` loads the target's MTP layers).
- the method: `--spec-type` and its own flags, and synthetic acceptance, from the method registry
  (`methods.native_flags`), the same list the parity tests pass.
- context: `-c` = parallel x n_ctx with `-np parallel` (llama.cpp divides -c over its slots, so
  each stream gets the cell's n_ctx; without -np the server would run 4 slots with a unified
  cache), `-b`/`-ub` n_batch, `-fa`, `-ctk`/`-ctv` the KV type, `-t`/`-tb` the threads.
- devices: no GPU -> `-dev none -ngl 0`; GPUs -> `-dev CUDA<i>,...`, every layer offloaded, the
  split mode and tensor split of a multi-GPU target; `draft_gpu` -> `-devd CUDA<i>`; the placement
  keys (`models/placement.py`: `-ngl`, `-ot`, `--n-cpu-moe`, `--spec-draft-n-cpu-moe`, or what a
  `vram_budget`'s fit chose).
- sampling: greedy comes with each request (temperature 0); `backend_sampling` -> `-bs`.
- `override_kv`: `--override-kv`. llama-server copies the target's parameters to its draft model
  (common_base_params_to_speculative), so one list applies to both: specsweep passes the union
  of the two models' overrides and refuses a key the two set differently.
- fixed for measuring: `--fit off` (the cell's placement, not one fitted to free memory),
  `--metrics` (per-position acceptance), `--cache-ram 0` (no prompt cache between requests; each
  request also says `cache_prompt: false`), `--no-webui`.

Not expressible through the server: ngram-cache's `lookup_prior_runs` (the matrix refuses it,
matrix/cells.py), and `rollback` (the server chooses checkpoints or snapshots itself; the record
says `rollback: null`).
"""

from __future__ import annotations


from specsweep import methods
from specsweep.engine.runtime import default_threads
from specsweep.errors import SpecsweepError
from specsweep.matrix.cells import Cell
from specsweep.models.placement import placement_flags

DEVICE_PREFIX = "CUDA"  # llama.cpp's name for CUDA device i is CUDA<i>


def devices(gpus) -> str:
    return ",".join(f"{DEVICE_PREFIX}{g}" for g in gpus) if gpus else "none"


def merged_overrides(target: tuple[str, ...], draft: tuple[str, ...], cell_name: str) -> list[str]:
    """The one --override-kv list llama-server applies to both of its models."""
    by_key: dict[str, str] = {}
    for text in (*target, *draft):
        key = text.split("=", 1)[0]
        if key in by_key and by_key[key] != text:
            raise SpecsweepError(f"cell {cell_name!r}: backend = \"server\" applies one override_kv list to both "
                                 f"models, and they set {key} differently ({by_key[key]} vs {text})")
        by_key[key] = text
    return list(by_key.values())


def server_flags(cell: Cell, files: dict, fitted=None) -> list[str]:
    """The command line (without the binary, host and port) for `cell`; `files` maps a model name
    to {"path", "override_kv"} as the runner resolved it, `fitted` is a vram_budget's fit."""
    s = cell.settings
    parallel = int(s.get("parallel", 1))
    threads = str(s.get("threads") or default_threads())
    target = files[cell.models["target"].name]
    args = ["-m", str(target["path"]), "-c", str(cell.n_ctx * parallel), "-np", str(parallel),
            "-b", str(cell.n_batch), "-ub", str(cell.n_batch), "-t", threads, "-tb", threads,
            "-fa", "on" if cell.flash_attn else "off", "-ctk", cell.kv, "-ctv", cell.kv,
            "--fit", "off", "--metrics", "--cache-ram", "0", "--no-webui"]
    gpus = list(cell.gpus)
    placed = placement_flags(s, fitted)  # -ngl/-ot/--n-cpu-moe of the placement keys (or their fit)
    args += ["-dev", devices(gpus), *([] if "-ngl" in placed else ["-ngl", "999" if gpus else "0"]), *placed]
    if len(gpus) > 1:
        args += ["-sm", cell.split_mode]
        if cell.tensor_split:
            args += ["-ts", ",".join(f"{float(x):g}" for x in cell.tensor_split)]
    if s.get("backend_sampling"):
        args.append("-bs")
    draft_overrides: tuple[str, ...] = ()
    ref = cell.models.get("draft") or cell.models.get("drafter")
    if ref is not None:
        draft = files[ref.name]
        draft_overrides = tuple(draft.get("override_kv", ()))
        dgpus = cell.draft_gpus
        args += ["-md", str(draft["path"]), "-devd", devices(dgpus), "-ngld", "999" if dgpus else "0"]
    overrides = merged_overrides(tuple(target.get("override_kv", ())), draft_overrides, cell.name)
    if overrides:
        args += ["--override-kv", ",".join(overrides)]
    return args + methods.native_flags(s)

