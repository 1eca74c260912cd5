"""Records say which engine measured them: a hash of the package's files and, from a git checkout,
its commit; never a reason to fail."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from specsweep.records import manifest


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A stand-in package folder (manifest.PACKAGE), with the caches cleared around the test."""
    pkg = tmp_path / "repo" / "specsweep"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "engine" / "loop.py").write_text("def step(): pass\n")
    monkeypatch.setattr(manifest, "PACKAGE", pkg)
    manifest.source_hash.cache_clear()
    manifest.git_commit.cache_clear()
    yield pkg
    manifest.source_hash.cache_clear()
    manifest.git_commit.cache_clear()


def test_the_source_hash_changes_with_any_file_of_the_package(package):
    first = manifest.source_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.pyc").write_bytes(b"\0")
    manifest.source_hash.cache_clear()
    assert manifest.source_hash() == first  # compiled files are not the source
    (package / "engine" / "loop.py").write_text("def step(): return 1\n")
    manifest.source_hash.cache_clear()
    assert manifest.source_hash() != first


def test_no_checkout_or_no_git_is_none_never_an_error(package, monkeypatch):
    assert manifest.git_commit() is None  # no .git beside the package
    (package.parent / ".git").mkdir()  # a broken checkout: git answers an error
    manifest.git_commit.cache_clear()
    if shutil.which("git"):
        assert manifest.git_commit() is None
    monkeypatch.setattr(manifest.shutil, "which", lambda name: None)
    manifest.git_commit.cache_clear()
    assert manifest.git_commit() is None
    engine = manifest.engine()
    assert engine["specsweep_git"] is None and engine["specsweep_source"] == manifest.source_hash()


@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
def test_a_checkout_gives_its_commit_and_dirty_when_the_package_differs(package):
    repo = package.parent
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert manifest.git_commit() == head
    (package / "__init__.py").write_text("x = 2\n")
    manifest.git_commit.cache_clear()
    assert manifest.git_commit() == head + "+dirty"
