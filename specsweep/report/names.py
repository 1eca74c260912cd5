"""What the page calls a model file: its own name, never the content-addressed blob that a path into
the Hugging Face cache resolves to.

A matrix may name a model by a path into the cache (`{ path = ".../snapshots/REV/gemma.gguf" }`),
a link to `blobs/<sha256>`; the runner records the file it opened, so the record's `file` is the
sha256. The page then names it, in that order, by the path as the matrix gave it (`ref`), the
models.lock name, the GGUF's `general.name` (probe records keep the header), or the matrix's name
for the model. Records are not changed: the page works on copies.
"""

from __future__ import annotations

import re
from dataclasses import replace

from specsweep.records.sources import Source

# a Hugging Face blob: the sha256 of an LFS file, or the git sha1 of a small one
BLOB = re.compile(r"^(?:[0-9a-f]{64}|[0-9a-f]{40})$")


def is_blob(name: str) -> bool:
    return bool(BLOB.match(name or ""))


def base_name(path: str) -> str:
    return str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def model_name(m: dict) -> str:
    """A model entry of a record (a trial's models[role], a probe's model, a manifest's models[name])
    -> what to call it."""
    file = str(m.get("file") or "") or base_name(str(m.get("path") or ""))
    if file and not is_blob(file):
        return file
    ref = str(m.get("ref") or "")
    if ref.startswith("models.lock:"):
        return ref.split(":", 1)[1]
    if ref and not ref.startswith("synth ") and not is_blob(base_name(ref)):
        return base_name(ref)
    path = base_name(str(m.get("path") or ""))
    if path and not is_blob(path):
        return path
    general = (m.get("header") or {}).get("name") if isinstance(m.get("header"), dict) else None
    return str(general or m.get("name") or file or "?")


def _renamed(m: dict, names: dict[str, str]) -> dict:
    file = str(m.get("file") or "") or base_name(str(m.get("path") or ""))
    if not is_blob(file):
        return m
    better = names.get(str(m.get("sha256") or "")) or names.get(file) or model_name(m)
    return dict(m, file=better) if better != file else m


def readable(sources: list[Source]) -> list[Source]:
    """Copies of the sources whose model files named by a blob carry a readable name; the same
    model (sha256) gets the same name in trials, probes and manifests."""
    entries = [m for s in sources for m in [*(m for r in s.trials for m in (r.get("models") or {}).values()),
                                             *(p.get("model") for p in s.probes),
                                             *(f for m in s.manifests for f in (m.get("models") or {}).values())]
               if isinstance(m, dict)]
    if not any(is_blob(str(m.get("file") or "") or base_name(str(m.get("path") or ""))) for m in entries):
        return sources
    names: dict[str, str] = {}
    for s in sources:
        for r in s.trials:
            for m in (r.get("models") or {}).values():
                if isinstance(m, dict) and is_blob(str(m.get("file") or "")):
                    good = model_name(m)
                    if not is_blob(good):
                        names.setdefault(str(m.get("sha256") or m.get("file")), good)
                        names.setdefault(str(m.get("file")), good)
    out = []
    for s in sources:
        trials = [dict(r, models={k: _renamed(m, names) if isinstance(m, dict) else m
                                  for k, m in (r.get("models") or {}).items()}) if r.get("models") else r
                  for r in s.trials]
        probes = [dict(p, model=_renamed(p["model"], names)) if isinstance(p.get("model"), dict) else p
                  for p in s.probes]
        manifests = [dict(m, models={k: _renamed(f, names) if isinstance(f, dict) else f
                                     for k, f in (m.get("models") or {}).items()}) if m.get("models") else m
                     for m in s.manifests]
        out.append(replace(s, trials=trials, probes=probes, manifests=manifests))
    return out
