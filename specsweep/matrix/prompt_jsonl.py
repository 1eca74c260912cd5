"""JSONL prompt files: Spec-Bench's (and MT-bench's) question format, and plain prompt lines.

One JSON object per line (blank lines skipped):

- Spec-Bench `data/spec_bench/question.jsonl`: `question_id`, `category`, `turns` (a list of
  user messages; MT-bench questions have two) and sometimes `reference` (ignored). The prompt is
  the *first* turn: specsweep renders one user turn per prompt, and MT-bench's second turn asks
  about the model's own first answer ("Rewrite your previous response..."), which a single-turn
  prompt cannot contain.
- plain lines: a `prompt` or `text` string, optional `id` and `kind`.

Kind: `category` (or `kind`; neither: "prompt"); unknown categories are kept as they are. Group:
the record's `group`, else "mt-bench" for MT-bench's eight categories in a `turns` record, else
the kind. Name: "<kind>-<question_id>" (or `id`, or the line number), readable in the report
and unique in the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from specsweep.errors import SpecsweepError

# Spec-Bench's 13 labels: MT-bench's 80 questions spread over these eight, and the other groups are
# translation, summarization, qa, math_reasoning and rag (one label each)
MT_BENCH = frozenset({"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"})


def read(path: Path, where: str) -> list[dict]:
    """The file's prompts in file order, each a dict of name, kind, group and text."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecsweepError(f"prompt set {where}: {getattr(e, 'strerror', None) or e}") from None
    prompts: list[dict] = []
    lines: dict[str, int] = {}
    # split on "\n" only: str.splitlines would also split inside a JSON string holding U+2028
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SpecsweepError(f"prompt set {where}: line {n}: not JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(record, dict):
            raise SpecsweepError(f"prompt set {where}: line {n}: not a JSON object")
        p = _prompt(record, n, f"prompt set {where}: line {n}")
        name = p["name"]
        if name in lines:
            raise SpecsweepError(f"prompt set {where}: line {n}: {name!r} again (first on line {lines[name]}): "
                                 f"question ids must be unique")
        lines[name] = n
        prompts.append(p)
    if not prompts:
        raise SpecsweepError(f"prompt set {where}: empty (no JSON lines)")
    return prompts


def _prompt(record: dict, n: int, where: str) -> dict:
    if "turns" in record:
        turns = record["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise SpecsweepError(f"{where}: \"turns\" must be a non-empty list of strings")
        text = turns[0]
    elif isinstance(record.get("prompt", record.get("text")), str):
        text = record.get("prompt", record.get("text"))
    else:
        raise SpecsweepError(f"{where}: no \"turns\" (a list of strings, Spec-Bench) nor \"prompt\"/\"text\" string")
    if not text.strip():
        raise SpecsweepError(f"{where}: the prompt is empty")
    kind = _string(record, ("category", "kind"), "prompt", where)
    qid = record.get("question_id", record.get("id", n))
    if isinstance(qid, bool) or not isinstance(qid, (int, str)) or qid == "":
        raise SpecsweepError(f"{where}: question_id must be a number or a non-empty string")
    group = _string(record, ("group",), "mt-bench" if "turns" in record and kind in MT_BENCH else kind, where)
    return {"name": f"{kind}-{qid}", "kind": kind, "group": group, "text": text}


def _string(record: dict, keys: tuple[str, ...], default: str, where: str) -> str:
    for key in keys:
        if key in record:
            value = record[key]
            if not isinstance(value, str) or not value.strip():
                raise SpecsweepError(f"{where}: \"{key}\" must be a non-empty string")
            return value
    return default
