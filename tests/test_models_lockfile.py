"""models.lock: the shipped lock, the fixed write-back layout, and one-line errors for bad locks."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from specsweep.cli import main
from specsweep.errors import SpecsweepError
from specsweep.models import lockfile

ROOT = Path(__file__).resolve().parents[1]
SHA = "a" * 64
REV = "b" * 40

GOOD = f"""
version = 1

[[model]]
name = "m"
role = "target"
repo = "owner/M-GGUF"
revision = "{REV}"
file = "M-Q4_K_M.gguf"
sha256 = "{SHA}"
size = 10
vocab = {{ tokenizer = "gpt2", pre = "qwen35", n_tokens = 248320, tokens_sha256 = "{SHA}" }}
"""


def lock_cli(tmp_path, text, *args):
    path = tmp_path / "models.lock"
    path.write_text(text)
    return CliRunner().invoke(main, ["lock", "--lock", str(path), *args])


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("specsweep: error:"), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_shipped_lock_loads_round_trips_and_covers_the_matrices():
    text = (ROOT / "models.lock").read_text()
    lock = lockfile.parse(text, ROOT / "models.lock")
    assert lockfile.dump(lock) == text  # the shipped file is in the writer's layout
    names = set(lock.names())
    for matrix in (ROOT / "matrices").glob("*.toml"):
        models = tomllib.loads(matrix.read_text()).get("models", {})
        for ref in models.values():
            if isinstance(ref, str):
                assert ref in names, f"{matrix.name} names {ref}, which models.lock lacks"
    roles = {e.role for e in lock.entries}
    assert roles == {"target", "draft", "dflash"}
    for e in lock.entries:
        # nothing here was checked against the Hub: every such fact must say so
        assert e.pinned or "revision" in e.unverified
        for f in e.files:
            assert f.sha256 is not None or "sha256" in e.unverified
            assert f.size is not None or "size" in e.unverified
    dflash = next(e for e in lock.entries if e.role == "dflash")
    assert dflash.convert["tool"] == "convert_hf_to_gguf.py" and dflash.convert["target_repo"]
    assert lock.get(dflash.convert["target_gguf"]).role == "target"  # whose tokenizer `fetch` gives it


def test_lock_command_lists_entries(tmp_path):
    r = lock_cli(tmp_path, GOOD)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("m\ttarget\towner/M-GGUF@bbbbbbbbbbbb\tM-Q4_K_M.gguf\tverified")


def test_split_shards_round_trip_and_unverified_shards_expand(tmp_path):
    text = GOOD.replace('file = "M-Q4_K_M.gguf"\nsha256 = "' + SHA + '"\nsize = 10\n',
                        'files = [{ file = "Q4/M-00001-of-00002.gguf", sha256 = "' + SHA + '", size = 1 },\n'
                        '         { file = "Q4/M-00002-of-00002.gguf", sha256 = "' + SHA + '", size = 2 }]\n')
    lock = lockfile.parse(text, tmp_path / "x")
    e = lock.get("m")
    assert e.is_split and e.file == "Q4/M-00001-of-00002.gguf" and e.total_size == 3
    assert lockfile.parse(lockfile.dump(lock), tmp_path / "x") == lock

    unverified = GOOD.replace('file = "M-Q4_K_M.gguf"\nsha256 = "' + SHA + '"\nsize = 10\n',
                              'file = "M-00001-of-00003.gguf"\nunverified = ["sha256", "size"]\n')
    e = lockfile.parse(unverified, tmp_path / "x").get("m")
    assert [f.file for f in e.files] == [f"M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


def test_write_is_atomic_and_refuses_a_lock_that_would_not_load(tmp_path):
    path = tmp_path / "models.lock"
    lock = lockfile.parse(GOOD, path)
    lockfile.save(lock)
    assert lockfile.load(path) == lock
    broken = lock.replace_entry(lockfile.LockEntry("m", "target", "owner/M", "main", lock.get("m").files,
                                                   lock.get("m").vocab))
    with pytest.raises(SpecsweepError, match="revision 'main'"):
        lockfile.save(broken)
    assert lockfile.load(path) == lock
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.lock"]


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.replace('role = "target"', 'role = "target'), "malformed TOML"),
    (lambda t: t.replace(f'revision = "{REV}"\n', ""), "model m: no revision"),
    (lambda t: t.replace(f'revision = "{REV}"', 'revision = "main"'), "model m: revision 'main' is not a 40-hex"),
    (lambda t: t.replace(f'sha256 = "{SHA}"\nsize', 'sha256 = "xyz"\nsize'), "sha256 must be 64"),
    (lambda t: t.replace(f'sha256 = "{SHA}"\nsize', "size"), "model m: M-Q4_K_M.gguf: no sha256"),
    (lambda t: t.replace("size = 10", "size = -1"), "size must be a positive"),
    (lambda t: t.replace('role = "target"', 'role = "oracle"'), "role must be one of"),
    (lambda t: t.replace('repo = "owner/M-GGUF"', 'repo = "nope"'), "repo must be"),
    (lambda t: t + t.split("version = 1", 1)[1], "model m: listed twice"),
    (lambda t: t + 'colour = "red"\n', "unknown key(s) colour"),
    (lambda t: t.replace("n_tokens = 248320", 'n_tokens = "many"'), "vocab n_tokens"),
    (lambda t: t.replace('file = "M-Q4_K_M.gguf"', 'file = "../M.gguf"'), "relative path"),
    (lambda t: t.replace('file = "M-Q4_K_M.gguf"', 'file = "M-00001-of-00002.gguf"'), "list every shard"),
    (lambda t: t.replace('version = 1', 'version = 9'), "lock version 9"),
])
def test_bad_locks_are_one_line_errors(tmp_path, edit, needle):
    assert needle in error_line(lock_cli(tmp_path, edit(GOOD)))


def test_malformed_toml_says_where(tmp_path):
    line = error_line(lock_cli(tmp_path, GOOD.replace("size = 10", "size = = 10")))
    assert "malformed TOML" in line and "line 11" in line


def test_missing_lock_and_latest_without_update(tmp_path):
    r = CliRunner().invoke(main, ["models", "--lock", str(tmp_path / "absent.lock")])
    assert "lock file not found" in error_line(r)
    assert "--latest goes with --update" in error_line(lock_cli(tmp_path, GOOD, "--latest"))
