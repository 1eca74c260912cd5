"""GGUF headers, read with `gguf.GGUFReader` (a memory map: tensor data is never read).

One place turns a truncated or corrupt file into a one-line error that names the model, and finds
the other shards of a split GGUF (`name-00001-of-0000N.gguf`). Scalar reads take the model's
`override_kv` (specsweep.models.overrides), so that a header check sees what llama.cpp loads.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import gguf

from specsweep.errors import SpecsweepError

_SHARD = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def open_gguf(path: Path, name: str) -> gguf.GGUFReader:
    """The header of a GGUF file; SpecsweepError naming the model when it cannot be one.

    GGUFReader parses every key eagerly (a 248k-token vocabulary takes seconds), so the last few
    headers are kept while their files are unchanged: the vocabulary check and the memory estimate
    of one model share one parse."""
    path = Path(path)
    if not path.is_file():
        raise SpecsweepError(f"model {name}: file not found: {path}")
    st = path.stat()
    try:
        return _parse(str(path.resolve()), st.st_size, st.st_mtime_ns)
    except _Unreadable as e:
        raise SpecsweepError(f"model {name}: {path} {e}") from None


class _Unreadable(Exception):
    pass


@functools.lru_cache(maxsize=4)
def _parse(path: str, size: int, mtime_ns: int) -> gguf.GGUFReader:
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError, OSError, EOFError, UnicodeDecodeError) as e:
        raise _Unreadable(f"is not a readable GGUF (truncated or corrupt: {e})") from None
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise _Unreadable(f"is truncated: its tensors need {end} bytes, the file has {size}")
    return reader


def field(reader: gguf.GGUFReader, key: str, default=None, overrides=()):
    """A key's value; an override of the key (KvOverride, checked against the file beforehand) wins."""
    for o in overrides:
        if o.key == key:
            return o.value
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except (ValueError, IndexError, UnicodeDecodeError):
        return default


def mtp_layers(reader: gguf.GGUFReader, overrides=()) -> int:
    """The MTP (NextN) layers the file carries (`<arch>.nextn_predict_layers`, 0 when absent)."""
    arch = field(reader, "general.architecture", "")
    return int(field(reader, f"{arch}.nextn_predict_layers", 0, overrides) or 0)


def trunk_layers(reader: gguf.GGUFReader, overrides=()) -> int:
    """Layers of the main model: block_count less the MTP (NextN) layers llama.cpp counts in it."""
    arch = field(reader, "general.architecture", "")
    return int(field(reader, f"{arch}.block_count", 0, overrides) or 0) - mtp_layers(reader, overrides)


def is_routed_expert_role(short: str) -> bool:
    """A layer tensor (its name after `blk.N.`) that holds a MoE layer's routed experts
    (`ffn_{gate,up,down,gate_up}_exps*`), all E of them: a pass reads only the experts its tokens
    route to. Shared experts (`_shexp`) are read whole."""
    return "_exps" in short


def is_routed_expert(tensor_name: str) -> bool:
    parts = tensor_name.split(".", 2)
    return parts[0] == "blk" and len(parts) == 3 and is_routed_expert_role(parts[2])


def routed_expert_bytes(path: Path, name: str) -> dict[int, int]:
    """Layer -> bytes of its routed-expert tensors, over every shard of the model."""
    out: dict[int, int] = {}
    for shard in shard_paths(Path(path), name):
        for t in open_gguf(shard, name).tensors:
            if is_routed_expert(t.name):
                layer = int(t.name.split(".")[1])
                out[layer] = out.get(layer, 0) + int(t.n_bytes)
    return out


def string_array(reader: gguf.GGUFReader, key: str) -> list[bytes] | None:
    """A string array as raw bytes (token texts are compared byte for byte, as llama.cpp does)."""
    f = reader.fields.get(key)
    if f is None:
        return None
    if len(f.types) < 2 or f.types[0] != gguf.GGUFValueType.ARRAY or f.types[1] != gguf.GGUFValueType.STRING:
        return None
    return [bytes(f.parts[i]) for i in f.data]


def shard_paths(first: Path, name: str) -> list[Path]:
    """Every file of a model: the path itself, or all shards when it is shard 1 of a split GGUF."""
    first = Path(first)
    m = _SHARD.match(first.name)
    if not m or int(m["count"]) <= 1:
        return [first]
    if int(m["no"]) != 1:
        raise SpecsweepError(f"model {name}: {first.name} is shard {int(m['no'])}; give the first shard (-00001-of-)")
    count = int(m["count"])
    paths = [first.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise SpecsweepError(f"model {name}: split GGUF is missing shard(s) {', '.join(missing)} beside {first}")
    return paths
