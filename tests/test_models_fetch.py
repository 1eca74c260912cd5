"""`specsweep fetch`, `models`, `lock --update` and `resolve_locked` against a Hugging Face cache
built in the standard layout (blobs/<sha256>, snapshots/<rev>/<file> symlinks, refs/main) from tiny
synthetic GGUFs, offline.

Subprocess tests set HF_HOME / HF_HUB_OFFLINE / HF_ENDPOINT in the environment, as a user does
(huggingface_hub reads them at import). In-process tests point huggingface_hub's constants at the
temporary cache; where a Hub answer is needed (changed upstream, no disk space, lock --update) the
one HEAD request, `get_hf_file_metadata`, is replaced by a fake returning `HfFileMetadata`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from huggingface_hub import HfFileMetadata, constants

from specsweep.cli import main
from specsweep.errors import SpecsweepError
from specsweep.models import hub, lockfile
from specsweep.models.resolve import resolve_locked
from specsweep.models.vocab_match import fingerprint, read_vocab
from specsweep.synth.cards import CARDS
from specsweep.synth.writer import Recipe, write_model

ROOT = Path(__file__).resolve().parent.parent  # the checkout under test: the subprocess imports its specsweep
REV = "0123456789abcdef0123456789abcdef01234567"
REPO_T = "specsweep-test/Tiny-Target-GGUF"
REPO_D = "specsweep-test/Tiny-Draft-GGUF"
REPO_S = "specsweep-test/Tiny-Split-GGUF"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def put_in_cache(hub_cache: Path, repo: str, file: str, src: Path, revision: str = REV) -> Path:
    """Place a file as hf_hub_download would: the blob named by its sha256, a relative symlink
    from snapshots/<revision>/<file>, and refs/main pointing at the revision."""
    root = hub_cache / f"models--{repo.replace('/', '--')}"
    blob = root / "blobs" / sha256(src)
    blob.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, blob)
    pointer = root / "snapshots" / revision / file
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    return pointer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    paths = {}
    for key, card in (("target", "qwen3.6-35b-a3b"), ("draft", "qwen3.5-0.8b")):
        paths[key] = d / f"{card}.gguf"
        write_model(Recipe(CARDS[card].at_scale("tiny"), "tiny", "Q4_0"), paths[key])
    paths["shard1"] = d / "shard1.bin"
    paths["shard1"].write_bytes(b"GGUF shard one " * 100)
    paths["shard2"] = d / "shard2.bin"
    paths["shard2"].write_bytes(b"GGUF shard two " * 50)
    return paths


def lock_text(tiny) -> str:
    """A lock whose facts are all verified: written by lockfile.dump, in its fixed layout."""
    def entry(name, role, repo, file, path):
        return lockfile.LockEntry(name, role, repo, REV, (lockfile.LockedFile(file, sha256(path), path.stat().st_size),),
                                  fingerprint(read_vocab(path, name)))

    shards = tuple(lockfile.LockedFile(f"Q4/T-0000{i}-of-00002.gguf", sha256(tiny[f"shard{i}"]),
                                       tiny[f"shard{i}"].stat().st_size) for i in (1, 2))
    entries = (entry("tiny-target", "target", REPO_T, "Tiny-Target-Q4_0.gguf", tiny["target"]),
               entry("tiny-draft", "draft", REPO_D, "Tiny-Draft-Q4_0.gguf", tiny["draft"]),
               lockfile.LockEntry("tiny-split", "target", REPO_S, REV, shards, None, ("vocab",)))
    return lockfile.dump(lockfile.Lock(Path("models.lock"), entries))


@pytest.fixture
def world(tmp_path, tiny, monkeypatch):
    """A lock, an HF_HOME whose hub cache holds the lock's files, and huggingface_hub pointed at it."""
    hf_home = tmp_path / "hf"
    hub_cache = hf_home / "hub"
    put_in_cache(hub_cache, REPO_T, "Tiny-Target-Q4_0.gguf", tiny["target"])
    put_in_cache(hub_cache, REPO_D, "Tiny-Draft-Q4_0.gguf", tiny["draft"])
    put_in_cache(hub_cache, REPO_S, "Q4/T-00001-of-00002.gguf", tiny["shard1"])
    put_in_cache(hub_cache, REPO_S, "Q4/T-00002-of-00002.gguf", tiny["shard2"])
    lock = tmp_path / "models.lock"
    lock.write_text(lock_text(tiny))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "specsweep-cache"))
    monkeypatch.setenv("SPECSWEEP_LOCK", str(lock))
    return {"hf_home": hf_home, "hub": hub_cache, "lock": lock, "tmp": tmp_path}


def blob_of(world, repo: str, file: str) -> Path:
    return (world["hub"] / f"models--{repo.replace('/', '--')}" / "snapshots" / REV / file).resolve()


def cli(world, *args, offline=True, endpoint=None):
    """The real CLI in a subprocess, configured by environment variables as a user would."""
    env = dict(os.environ, HF_HOME=str(world["hf_home"]), SPECSWEEP_CACHE=str(world["tmp"] / "specsweep-cache"),
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    env.pop("HF_HUB_CACHE", None)
    env["HF_HUB_OFFLINE"] = "1" if offline else "0"
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return subprocess.run([sys.executable, "-m", "specsweep", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("specsweep: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def invoke(*args):
    return CliRunner().invoke(main, list(map(str, args)))


# ----------------------------------------------------------------------------------------------


def test_fetch_offline_finds_the_standard_cache_through_hf_home(world):
    r = cli(world, "fetch", "tiny-target", "tiny-draft", "--lock", world["lock"])
    assert r.returncode == 0, r.stderr
    lines = dict(line.split("\t") for line in r.stdout.strip().splitlines())
    snap = world["hub"] / f"models--{REPO_T.replace('/', '--')}" / "snapshots" / REV / "Tiny-Target-Q4_0.gguf"
    assert lines["tiny-target"] == str(snap)
    assert Path(lines["tiny-draft"]).resolve() == blob_of(world, REPO_D, "Tiny-Draft-Q4_0.gguf")
    assert "verified" in r.stderr

    listing = cli(world, "models", "--lock", world["lock"])
    assert listing.returncode == 0, listing.stderr
    rows = {ln.split()[0]: ln for ln in listing.stdout.splitlines() if not ln.startswith(("#", "name"))}
    assert " cached " in rows["tiny-target"] and " cached " in rows["tiny-split"]
    assert str(world["hub"]) in listing.stdout


def test_fetch_refuses_a_corrupt_blob_and_leaves_the_cache_alone(world):
    blob = blob_of(world, REPO_T, "Tiny-Target-Q4_0.gguf")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    blob.write_bytes(bytes(data))
    good = blob_of(world, REPO_D, "Tiny-Draft-Q4_0.gguf").read_bytes()

    r = cli(world, "fetch", "tiny-draft", "tiny-target", "--lock", world["lock"])
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert "model tiny-target" in line and "sha256" in line and "fetch --force tiny-target" in line
    assert blob.read_bytes() == bytes(data)  # not deleted, not rewritten
    assert blob_of(world, REPO_D, "Tiny-Draft-Q4_0.gguf").read_bytes() == good

    with pytest.raises(SpecsweepError, match="tiny-target.*sha256"):
        resolve_locked("tiny-target")


def test_fetch_refuses_a_truncated_blob_by_size(world):
    blob = blob_of(world, REPO_D, "Tiny-Draft-Q4_0.gguf")
    blob.write_bytes(blob.read_bytes()[:1000])
    r = invoke("fetch", "tiny-draft", "--lock", world["lock"])
    assert r.exit_code == 2
    line = one_line_error(r.stderr)
    assert "model tiny-draft" in line and "1000 bytes" in line


def test_missing_file_offline_says_which_fetch_to_run(world):
    shutil.rmtree(world["hub"] / f"models--{REPO_D.replace('/', '--')}")
    r = cli(world, "fetch", "tiny-draft", "--lock", world["lock"])
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert "run: specsweep fetch tiny-draft" in line and "HF_HUB_OFFLINE" in line

    with pytest.raises(SpecsweepError, match="run: specsweep fetch tiny-draft"):
        resolve_locked("tiny-draft")
    would_be = resolve_locked("tiny-draft", fetch=False)
    assert not would_be.exists() and would_be.name == "Tiny-Draft-Q4_0.gguf"


def test_unreachable_hub_is_one_line_and_fast(world):
    shutil.rmtree(world["hub"] / f"models--{REPO_D.replace('/', '--')}")
    r = cli(world, "fetch", "tiny-draft", "--lock", world["lock"], offline=False, endpoint="http://127.0.0.1:9")
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert "tiny-draft" in line and "unreachable" in line and "127.0.0.1:9" in line
    assert not (world["hub"] / f"models--{REPO_D.replace('/', '--')}" / "blobs").exists()


def test_resolve_locked_returns_the_verified_first_shard(world):
    first = resolve_locked("tiny-split")
    assert first.name == "T-00001-of-00002.gguf" and first.parent.name == "Q4"
    assert resolve_locked("tiny-target").resolve() == blob_of(world, REPO_T, "Tiny-Target-Q4_0.gguf")

    (world["hub"] / f"models--{REPO_S.replace('/', '--')}" / "snapshots" / REV / "Q4" / "T-00002-of-00002.gguf").unlink()
    with pytest.raises(SpecsweepError, match="run: specsweep fetch tiny-split"):
        resolve_locked("tiny-split")


def test_unknown_name_and_bad_lock_are_one_line(world, tmp_path):
    r = invoke("fetch", "tiny-target", "no-such-model", "--lock", world["lock"])
    assert r.exit_code == 2
    line = one_line_error(r.stderr)
    assert "no-such-model" in line and "tiny-target" in line  # names the model and lists the known ones
    assert r.stdout == ""  # nothing was fetched before the bad name was found

    bad = tmp_path / "bad.lock"
    text = world["lock"].read_text()
    draft_at = text.index('name = "tiny-draft"')
    bad.write_text(text[:draft_at] + text[draft_at:].replace(f'revision = "{REV}"\n', "", 1))
    r = invoke("fetch", "tiny-target", "--lock", bad)
    assert r.exit_code == 2
    assert "model tiny-draft: no revision" in one_line_error(r.stderr)


def fake_metadata(monkeypatch, answers: dict):
    """Replace the one HEAD request: answers maps a file name to (sha256, size, commit)."""
    calls = []

    def get_hf_file_metadata(url, **kw):
        name = url.split("/resolve/", 1)[1].split("/", 1)[1]
        calls.append(name)
        sha, size, commit = answers[name]
        return HfFileMetadata(commit_hash=commit, etag=sha, location=url, size=size, xet_file_data=None)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "get_hf_file_metadata", get_hf_file_metadata)
    monkeypatch.setattr(hub, "hf_hub_download", lambda *a, **k: pytest.fail("nothing may be downloaded"))
    return calls


def test_changed_upstream_is_reported_before_downloading(world, monkeypatch):
    shutil.rmtree(world["hub"] / f"models--{REPO_D.replace('/', '--')}")
    calls = fake_metadata(monkeypatch, {"Tiny-Draft-Q4_0.gguf": ("ab" * 32, 123, REV)})
    r = invoke("fetch", "tiny-draft", "--lock", world["lock"])
    assert r.exit_code == 2
    line = one_line_error(r.stderr)
    assert "model tiny-draft" in line and "changed upstream" in line and "lock --update tiny-draft" in line
    assert calls == ["Tiny-Draft-Q4_0.gguf"]


def test_an_answer_without_x_repo_commit_is_not_taken_for_the_hub(world, monkeypatch):
    """A proxy or captive portal answers 200 without the Hub's headers: not "changed upstream"."""
    shutil.rmtree(world["hub"] / f"models--{REPO_D.replace('/', '--')}")
    fake_metadata(monkeypatch, {"Tiny-Draft-Q4_0.gguf": (None, 5120, None)})
    r = invoke("fetch", "tiny-draft", "--lock", world["lock"])
    assert r.exit_code == 2
    line = one_line_error(r.stderr)
    assert "model tiny-draft" in line and "without the Hub's X-Repo-Commit header" in line and "HF_ENDPOINT" in line
    assert not (world["hub"] / f"models--{REPO_D.replace('/', '--')}").exists()


def test_no_disk_space_is_refused_before_downloading(world, tiny, monkeypatch):
    shutil.rmtree(world["hub"] / f"models--{REPO_D.replace('/', '--')}")
    fake_metadata(monkeypatch, {"Tiny-Draft-Q4_0.gguf": (sha256(tiny["draft"]), tiny["draft"].stat().st_size, REV)})
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda p: SimpleNamespace(total=10**9, used=10**9 - 100, free=100))
    r = invoke("fetch", "tiny-draft", "--lock", world["lock"])
    assert r.exit_code == 2
    line = one_line_error(r.stderr)
    assert "model tiny-draft" in line and "disk space" in line
    assert not (world["hub"] / f"models--{REPO_D.replace('/', '--')}").exists()


def test_lock_update_fills_unverified_facts_from_the_hub(world, tiny, monkeypatch):
    lock = world["tmp"] / "update.lock"
    lock.write_text(
        'version = 1\n\n[[model]]\nname = "tiny-target"\nrole = "target"\n'
        f'repo = "{REPO_T}"\nrevision = "main"\nfile = "Tiny-Target-Q4_0.gguf"\n'
        'vocab = { tokenizer = "gpt2", pre = "qwen35", n_tokens = 2048 }\n'
        'unverified = ["file", "revision", "sha256", "size", "vocab"]\n')
    fake_metadata(monkeypatch, {"Tiny-Target-Q4_0.gguf": (sha256(tiny["target"]), tiny["target"].stat().st_size, REV)})
    r = invoke("lock", "--update", "--lock", lock)
    assert r.exit_code == 0, r.output
    e = lockfile.load(lock).get("tiny-target")
    assert e.revision == REV and e.unverified == ()
    assert e.files[0].sha256 == sha256(tiny["target"]) and e.files[0].size == tiny["target"].stat().st_size
    assert e.vocab == fingerprint(read_vocab(tiny["target"], "t"))  # read from the cached file's header
    assert lockfile.dump(lockfile.load(lock)) == lock.read_text()  # the fixed layout


def test_lock_update_offline_changes_nothing(world):
    before = world["lock"].read_text()
    r = cli(world, "lock", "--update", "--lock", world["lock"])
    assert r.returncode == 2
    assert "HF_HUB_OFFLINE" in one_line_error(r.stderr)
    assert world["lock"].read_text() == before
    assert [p.name for p in world["lock"].parent.iterdir() if p.name.startswith(".")] == []


def test_dflash_entry_without_a_target_gguf_names_llama_cpps_converter(world, tmp_path):
    """The in-process conversion (tests/test_dflash_convert.py) takes the tokenizer of the target GGUF
    the entry names; an entry that names none is refused with llama.cpp's command instead."""
    repo, target_repo = "specsweep-test/Tiny-DFlash", "specsweep-test/Tiny-Target-HF"
    src = {}
    for name, data in (("config.json", b'{"architectures": ["DFlashDraftModel"]}'),
                       ("model.safetensors", b"\0" * 64)):
        src[name] = tmp_path / name
        src[name].write_bytes(data)
        put_in_cache(world["hub"], repo, name, src[name])
    files = tuple(lockfile.LockedFile(n, sha256(src[n]), src[n].stat().st_size) for n in ("config.json", "model.safetensors"))
    entry = lockfile.LockEntry("tiny-dflash", "dflash", repo, REV, files, None, ("vocab",), "",
                               {"tool": "convert_hf_to_gguf.py", "target_repo": target_repo, "target_revision": REV,
                                "target_files": ["tokenizer.json"], "args": ["--outtype", "bf16"],
                                "output": "Tiny-DFlash-bf16.gguf"})
    lock = tmp_path / "dflash.lock"
    lockfile.save(lockfile.Lock(lock, (entry,)))

    r = cli(world, "fetch", "tiny-dflash", "--lock", lock)
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert "names no target_gguf" in line and "convert_hf_to_gguf.py" in line and "--outtype bf16" in line
    with pytest.raises(SpecsweepError, match="tiny-dflash.*target_gguf.*convert_hf_to_gguf.py"):
        resolve_locked("tiny-dflash", lock_path=lock)

    from specsweep.models.resolve import converted_path

    out = converted_path(lockfile.load(lock).get("tiny-dflash"))
    assert resolve_locked("tiny-dflash", fetch=False, lock_path=lock) == out
    out.parent.mkdir(parents=True)
    out.write_bytes(b"converted")
    assert resolve_locked("tiny-dflash", lock_path=lock) == out
    assert " converted " in invoke("models", "--lock", lock).stdout
