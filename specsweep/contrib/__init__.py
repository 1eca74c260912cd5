"""Contributed results: one JSON file per card (`specsweep contribute`), checked against the JSON
Schema shipped beside this module (`schema.json`, draft 2020-12) and merged (`specsweep merge`)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

SCHEMA_VERSION = 1
KIND = "specsweep-contribution"


@lru_cache(maxsize=1)
def schema() -> dict:
    """schema.json with the method names filled in from specsweep/methods.py, where methods are
    described once."""
    from specsweep import methods

    doc = json.loads(resources.files(__name__).joinpath("schema.json").read_text(encoding="utf-8"))
    doc["$defs"]["method"]["enum"] = list(methods.NAMES)
    return doc


def problem(doc: object) -> str | None:
    """Why `doc` is not a valid contribution (one line, the most relevant schema error first,
    then what the schema cannot say), or None."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    if isinstance(doc, dict) and doc.get("schema_version") not in (None, SCHEMA_VERSION):
        return f"schema_version {doc.get('schema_version')!r} is not {SCHEMA_VERSION}, the version this specsweep reads"
    error = best_match(Draft202012Validator(schema()).iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        message = " ".join(error.message.split())
        if len(message) > 300:
            message = message[:300] + "..."
        return f"{where}: {message}"
    ids = {m["id"] for m in doc["manifests"]}
    orphans = sorted({t["manifest"] for t in doc["trials"]} - ids)
    if orphans:
        return f"trials name manifest {orphans[0]!r}, which the file does not hold"
    return None
