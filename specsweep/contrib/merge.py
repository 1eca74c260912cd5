"""Contribution files -> one community JSONL file that `specsweep plot` reads as one source per
contribution.

Layout of the merged file: per contribution one head line (`kind = "contribution"`: its id, file
name, card, date, power limit, clocks, lossless summary), then its manifests, trials and probes,
each tagged with `"contribution": id`. The id is a hash of the records, so a file sent twice (under
another name or card, say) is the same contribution.

Each file is checked against the schema; an invalid file and a duplicate (the same records, or any
trial already merged: same run, cell, prompt and trial number) are rejected with the reason and
the rest are merged. Merging into an existing community file keeps what it holds and rejects
duplicates of it too; the file is rewritten whole and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from specsweep.contrib import problem
from specsweep.errors import SpecsweepError
from specsweep.records.store import read_jsonl

HEAD_FIELDS = ("card", "created", "schema_version", "specsweep", "power_limit_w", "clocks", "notes", "lossless")


def _canon(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def contribution_id(doc: dict) -> str:
    return hashlib.sha256(_canon({k: doc.get(k) for k in ("manifests", "trials", "probes")})).hexdigest()[:16]


def record_keys(trials: list[dict], probes: list[dict]) -> set:
    keys = {("trial", t.get("manifest"), t.get("cell_id"), t.get("prompt_id"), t.get("trial")) for t in trials}
    keys |= {("probe", hashlib.sha256(_canon({k: v for k, v in p.items() if k != "contribution"})).hexdigest())
             for p in probes}
    return keys


@dataclass
class Outcome:
    merged: list[tuple[str, dict]] = field(default_factory=list)  # (file name, document)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    kept: int = 0  # contributions the output already held


def _existing(output: Path) -> tuple[list[dict], dict[str, str], dict]:
    """The output's lines, its contribution ids (-> file name) and record keys (-> file name)."""
    if not output.exists():
        return [], {}, {}
    lines = read_jsonl(output)
    heads = {r["contribution"]: str(r.get("file", r["contribution"])) for r in lines if r.get("kind") == "contribution"}
    if lines and (not heads or any("contribution" not in r for r in lines)):
        raise SpecsweepError(f"{output} exists and is not a merged community file; choose another -o")
    keys = {}
    for cid, name in heads.items():
        mine = [r for r in lines if r.get("contribution") == cid]
        for k in record_keys([r for r in mine if r.get("kind") == "trial"], [r for r in mine if r.get("kind") == "probe"]):
            keys[k] = name
    return lines, heads, keys


def merge(files: list[Path], output: Path) -> Outcome:
    if Path(output).suffix.lower() == ".json":  # one record a line is JSON Lines, not one JSON document
        raise SpecsweepError(f"-o {output}: a merged community file is JSON Lines; name it .jsonl "
                             f"(e.g. {Path(output).with_suffix('.jsonl')})")
    lines, ids, keys = _existing(output)
    out = Outcome(kept=len(ids))
    new_lines: list[dict] = []
    for path in map(Path, files):
        name = path.name
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            out.rejected.append((name, "file not found"))
            continue
        except (OSError, UnicodeDecodeError) as e:
            out.rejected.append((name, f"cannot read it: {getattr(e, 'strerror', None) or e}"))
            continue
        except ValueError as e:
            out.rejected.append((name, f"not JSON: {e}"))
            continue
        reason = problem(doc)
        if reason:
            out.rejected.append((name, f"invalid: {reason}"))
            continue
        cid = contribution_id(doc)
        if cid in ids:
            out.rejected.append((name, f"duplicate of {ids[cid]} (the same records)"))
            continue
        mine = record_keys(doc["trials"], doc["probes"])
        seen = [keys[k] for k in mine if k in keys]
        if seen:
            out.rejected.append((name, f"duplicate: {len(seen)} of its {len(mine)} records are already merged "
                                       f"(from {sorted(set(seen))[0]})"))
            continue
        ids[cid] = name
        for k in mine:
            keys[k] = name
        head = {"kind": "contribution", "contribution": cid, "file": name}
        head.update({k: doc[k] for k in HEAD_FIELDS if k in doc})
        new_lines.append(head)
        for kind in ("manifests", "trials", "probes"):
            new_lines.extend(dict(r, contribution=cid) for r in doc[kind])
        out.merged.append((name, doc))
    if new_lines:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.partial")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                for r in lines + new_lines:
                    f.write(json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, output)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise SpecsweepError(f"cannot write {output}: {e.strerror or e}") from None
    return out
