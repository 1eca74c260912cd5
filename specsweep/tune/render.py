"""A tuned config as the llama-server and llama-cli command lines a user starts.

Not backends/server_flags.py's measuring command line (`--fit off`, `--metrics`, `--cache-ram 0`,
no web UI, batch sizes, a port): this is the user's server, with only what the measurement fixed:
- the models: `-m` the target, `-md` the draft model or drafter (MTP needs none: `--spec-type
  draft-mtp` loads the target's own layer), by the paths the tune read;
- the method: `--spec-type` and its own flags, draft limits and `p_min` (methods.native_flags);
  synthetic acceptance, a measuring device, is left out;
- context and slots: `-c` = streams x n_ctx with `-np` streams (llama-server divides -c over its
  slots); llama-cli, one conversation, gets n_ctx;
- KV types `-ctk/-ctv` (a draft context's `-ctkd/-ctvd` come with the method's flags), flash
  attention, `-t` when the tune was given threads;
- devices and placement: `-dev none -ngl 0` on the CPU; else the GPUs, every layer offloaded
  (which also keeps llama.cpp's automatic fit from moving anything) and `--n-cpu-moe` when the
  tune placed experts in host memory; a draft model or drafter on the target's devices.

The tune measured greedy decoding (each request at temperature 0) with `ignore_eos`: a request
that samples accepts fewer drafts. The server's port is its default (8080).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from specsweep import methods
from specsweep.backends.server_flags import devices
from specsweep.models.placement import placement_flags


def _common(settings: dict, models: dict[str, Path], n_ctx: int) -> list[str]:
    s = settings
    gpus = list(s.get("gpus") or [])
    kv = s.get("kv", "q8_0")
    args = ["-m", str(models["target"]), "-c", str(n_ctx), "-fa", "on" if s.get("flash_attn", True) else "off",
            "-ctk", kv, "-ctv", kv]
    placed = placement_flags(s)
    args += ["-dev", devices(gpus), *([] if "-ngl" in placed else ["-ngl", "99" if gpus else "0"]), *placed]
    if s.get("threads"):
        args += ["-t", str(s["threads"])]
    role = "draft" if s.get("draft") else "drafter" if s.get("drafter") else None
    if role:
        args += ["-md", str(models[s[role]]), "-devd", devices(gpus), "-ngld", "99" if gpus else "0"]
    spec = {k: v for k, v in s.items() if k not in methods.SYNTH}  # a measuring device, not a user's flag
    return args + methods.native_flags(methods.with_defaults(spec))


def server_args(settings: dict, models: dict[str, Path]) -> list[str]:
    parallel = int(settings.get("parallel", 1))
    n_ctx = int(settings.get("n_ctx", 4096))
    args = _common(settings, models, n_ctx * parallel)
    return args[:4] + ["-np", str(parallel)] + args[4:]


def cli_args(settings: dict, models: dict[str, Path]) -> list[str]:
    return _common(settings, models, int(settings.get("n_ctx", 4096)))


def line(binary: str, args: list[str]) -> str:
    return shlex.join([binary, *args])
