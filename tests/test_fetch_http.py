"""`specsweep fetch`, `lock --update` and `contribute --push` over HTTP, end to end: the CLI in a
subprocess, huggingface_hub as installed, and tests/hub_server.py on 127.0.0.1 selected with
HF_ENDPOINT (huggingface_hub reads it at import, hence the subprocess). Nothing else is reached.

The server answers as the Hub does without Xet (so the plain-HTTP download path runs: hf-xet's is
not tested here), and injects faults: a body cut mid-way, wrong bytes, 401/403/404/500, a stall.
Each failure path asserts its one line and what is left in the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import random
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from specsweep.models import lockfile
from tests.hub_server import Hub

ROOT = Path(__file__).resolve().parent.parent  # the checkout under test: the subprocess imports its specsweep
REV = "0123456789abcdef0123456789abcdef01234567"
REPO_T, REPO_D, REPO_B = "specsweep-test/Tiny-Target-GGUF", "specsweep-test/Tiny-Draft-GGUF", "specsweep-test/Big-GGUF"
FILE_T, FILE_D, FILE_B = "Tiny-Target-Q4_0.gguf", "Tiny-Draft-Q4_0.gguf", "Big-Q8_0.gguf"
CHUNK = hf_constants.DOWNLOAD_CHUNK_SIZE  # huggingface_hub writes (and resumes from) whole chunks of this


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two tiny synthetic GGUFs (1.5 MB, 0.25 MB) and a 12 MiB file: a cut past huggingface_hub's
    first 10 MiB chunk is what it resumes with a Range request."""
    from specsweep.synth.cards import CARDS
    from specsweep.synth.writer import Recipe, write_model

    d = tmp_path_factory.mktemp("served")
    paths = {FILE_T: d / FILE_T, FILE_D: d / FILE_D, FILE_B: d / FILE_B}
    write_model(Recipe(CARDS["qwen3.6-35b-a3b"].at_scale("tiny"), "tiny", "Q4_0"), paths[FILE_T])
    write_model(Recipe(CARDS["qwen3.5-0.8b"].at_scale("tiny"), "tiny", "Q4_0"), paths[FILE_D])
    paths[FILE_B].write_bytes(b"GGUF" + random.Random(0).randbytes(CHUNK + 2 * 2**20 - 4))
    return paths


def lock_for(files, draft_file: str = FILE_D) -> str:
    def entry(name, repo, file, path, role="target"):
        locked = lockfile.LockedFile(file, sha256(path), path.stat().st_size)
        return lockfile.LockEntry(name, role, repo, REV, (locked,), None, ("vocab",))

    return lockfile.dump(lockfile.Lock(Path("models.lock"), (
        entry("tiny-target", REPO_T, FILE_T, files[FILE_T]),
        entry("tiny-draft", REPO_D, draft_file, files[FILE_D], "draft"),
        entry("big", REPO_B, FILE_B, files[FILE_B]))))


@pytest.fixture
def hub(files):
    h = Hub()
    for repo, file in ((REPO_T, FILE_T), (REPO_D, FILE_D), (REPO_B, FILE_B)):
        h.add(repo, file, files[file], REV)
    yield h
    h.close()


@pytest.fixture
def world(tmp_path, files):
    lock = tmp_path / "models.lock"
    lock.write_text(lock_for(files))
    return {"hf_home": tmp_path / "hf", "hub": tmp_path / "hf" / "hub", "lock": lock, "tmp": tmp_path}


def env_for(world, hub: Hub, token: str | None = None, **extra) -> dict:
    """The environment a user on this machine has, pointed at the test server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_", "TQDM_"))}
    env.update(HF_HOME=str(world["hf_home"]), HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0",
               SPECSWEEP_CACHE=str(world["tmp"] / "specsweep-cache"), SPECSWEEP_HUB_RETRY_WAIT="0.05",
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    if token:
        env["HF_TOKEN"] = token
    env.update(extra)
    return env


def cli(world, hub: Hub, *args, token: str | None = None, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "specsweep", *map(str, args)], capture_output=True, text=True,
                          env=env_for(world, hub, token, **extra), timeout=120)


def fetch(world, hub, *names, **kw) -> subprocess.CompletedProcess:
    return cli(world, hub, "fetch", *names, "--lock", world["lock"], **kw)


def one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("specsweep: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def repo_dir(world, repo: str) -> Path:
    return world["hub"] / f"models--{repo.replace('/', '--')}"


def left(world, repo: str) -> list[str]:
    """What a failed fetch left of the repo's files: blobs (complete or partial) and snapshot links."""
    root = repo_dir(world, repo)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if (p.is_file() or p.is_symlink()) and ("blobs" in p.parts or "snapshots" in p.parts))


def gets(hub: Hub, file: str) -> list[dict]:
    """The requests that moved the file's bytes (the CDN's GETs)."""
    return [e for e in hub.requests("GET", file) if e["role"] == "cdn"]


# ----------------------------------------------------------------------------------------------
# downloads that succeed


def run_on_a_terminal(args: list, env: dict) -> tuple[int, str, str]:
    """The CLI with stderr a terminal (a pty, 100 columns) as a user sees it; exit code, stdout, stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # tqdm draws nothing at 0 columns
    p = subprocess.Popen([sys.executable, "-m", "specsweep", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=slave, env=env, text=True)
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(master)
    stdout = p.stdout.read()  # a few lines: read once the terminal is closed
    p.stdout.close()
    return p.wait(timeout=60), stdout, out.decode(errors="replace")


def test_clean_download_lands_in_the_standard_cache_verified_with_a_progress_bar(world, hub, files):
    from tqdm import tqdm

    rc, stdout, stderr = run_on_a_terminal(["fetch", "tiny-target", "tiny-draft", "--lock", world["lock"]],
                                           env_for(world, hub, token=hub.token))
    assert rc == 0, stderr
    printed = dict(line.split("\t") for line in stdout.strip().splitlines())
    for name, repo, file in (("tiny-target", REPO_T, FILE_T), ("tiny-draft", REPO_D, FILE_D)):
        pointer = repo_dir(world, repo) / "snapshots" / REV / file
        assert printed[name] == str(pointer)
        assert pointer.is_symlink() and os.readlink(pointer) == f"../../blobs/{sha256(files[file])}"
        assert pointer.read_bytes() == files[file].read_bytes()
        (get,) = gets(hub, file)  # one GET, whole, from the redirect's target
        assert get["range"] is None and get["sent"] == files[file].stat().st_size
        heads = hub.requests("HEAD", file)
        assert [e["status"] for e in heads] == [302, 302]  # specsweep's, then hf_hub_download's
        assert {e["auth"] for e in heads} == {f"Bearer {hub.token}"} and get["auth"] is None  # not sent off the Hub
        assert not list(repo_dir(world, repo).glob("blobs/*.incomplete"))
        size = tqdm.format_sizeof(files[file].stat().st_size)
        assert re.search(rf"{re.escape(file)}: +100%\|[^|]*\| {re.escape(size)}B?/{re.escape(size)}B?", stderr), stderr


def test_a_cut_body_is_resumed_within_the_call_with_a_range_request(world, hub, files):
    size = files[FILE_B].stat().st_size
    cut = CHUNK + 2**20
    hub.fault(FILE_B, methods=("GET",), cut=cut, times=1)
    r = fetch(world, hub, "big")
    assert r.returncode == 0, r.stderr
    assert "%|" not in r.stderr and "\r" not in r.stderr  # not a terminal (CI): no progress bar
    first, second = gets(hub, FILE_B)
    assert (first["range"], first["sent"]) == (None, cut)
    # huggingface_hub asks for the rest from the last whole chunk it wrote: bytes before it are not sent twice
    assert (second["range"], second["status"], second["sent"]) == (f"bytes={CHUNK}-", 206, size - CHUNK)
    assert sha256(repo_dir(world, REPO_B) / "snapshots" / REV / FILE_B) == sha256(files[FILE_B])
    assert not list(repo_dir(world, REPO_B).glob("blobs/*.incomplete"))


def test_a_killed_fetch_leaves_no_blob_and_the_next_fetch_starts_over(world, hub, files):
    """SIGKILL mid-way: huggingface_hub's process-unique partial file stays (orphaned), nothing is under
    the sha256's name; the next fetch removes the orphan and downloads the file again from byte 0
    (huggingface_hub >= 1.18 does not resume across processes)."""
    digest, size = sha256(files[FILE_B]), files[FILE_B].stat().st_size
    hub.fault(FILE_B, methods=("GET",), stall=CHUNK + 2**20)
    p = subprocess.Popen([sys.executable, "-m", "specsweep", "fetch", "big", "--lock", str(world["lock"])],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env_for(world, hub))
    blobs = repo_dir(world, REPO_B) / "blobs"
    deadline = time.monotonic() + 60
    while not any(f.stat().st_size >= CHUNK for f in blobs.glob("*.incomplete")):  # a whole chunk on disk
        assert p.poll() is None and time.monotonic() < deadline, "the fetch ended or never got to the stall"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    (orphan,) = blobs.glob("*.incomplete")
    assert re.fullmatch(rf"{digest}\.[0-9a-f]{{8}}\.incomplete", orphan.name)
    assert not (blobs / digest).exists() and not (repo_dir(world, REPO_B) / "snapshots" / REV / FILE_B).exists()

    hub.faults.clear()
    hub.release()
    before = len(gets(hub, FILE_B))
    r = fetch(world, hub, "big")
    assert r.returncode == 0, r.stderr
    assert "removed" in r.stderr and "partial downloads" in r.stderr
    assert left(world, REPO_B) == sorted([f"blobs/{digest}", f"snapshots/{REV}/{FILE_B}"])
    (restart,) = gets(hub, FILE_B)[before:]
    assert restart["range"] is None and restart["sent"] == size  # a clean restart


def test_a_partial_download_in_progress_is_not_removed(tmp_path, monkeypatch):
    """remove_orphans takes huggingface_hub's lock for the blob: held (a download writing it), the
    partial file stays; free, it goes. An old-style shared `<etag>.incomplete` is never touched."""
    from filelock import FileLock

    from specsweep.models import hub as hub_module

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    blobs = tmp_path / f"models--{REPO_B.replace('/', '--')}" / "blobs"
    blobs.mkdir(parents=True)
    live, dead, shared = blobs / f"{'a' * 64}.0123abcd.incomplete", blobs / f"{'b' * 64}.4567cdef.incomplete", \
        blobs / f"{'c' * 64}.incomplete"
    for f in (live, dead, shared):
        f.write_bytes(b"x" * 1000)
    locks = tmp_path / ".locks" / blobs.parent.name
    locks.mkdir(parents=True)
    with FileLock(str(locks / f"{'a' * 64}.lock")):
        assert hub_module.remove_orphans(REPO_B) == 1000
    assert live.exists() and not dead.exists() and shared.exists()


def test_transient_faults_are_retried(world, hub, files):
    """One 500 on the HEAD (huggingface_hub's get_hf_file_metadata does not retry it), one 503 on the GET
    (hf_hub_download retries only 408/429), one HEAD that times out: each costs one retry, not the fetch."""
    hub.fault(FILE_T, methods=("HEAD",), status=500, times=1)
    hub.fault(FILE_D, methods=("GET",), status=503, times=1)
    hub.fault(FILE_B, methods=("HEAD",), delay=1.5, times=1)
    r = fetch(world, hub, "tiny-target", "tiny-draft", "big", HF_HUB_ETAG_TIMEOUT="1")
    assert r.returncode == 0, r.stderr
    retried = [ln for ln in r.stderr.splitlines() if "trying again" in ln]
    assert len(retried) == 3, r.stderr
    assert "tiny-target" in retried[0] and "HTTP 500" in retried[0]
    assert "tiny-draft" in retried[1] and "HTTP 503" in retried[1]
    assert "big" in retried[2] and "Timeout" in retried[2]
    assert [e["status"] for e in gets(hub, FILE_D)] == [503, 200]
    for repo, file in ((REPO_T, FILE_T), (REPO_D, FILE_D), (REPO_B, FILE_B)):
        assert sha256(repo_dir(world, repo) / "snapshots" / REV / file) == sha256(files[file])


# ----------------------------------------------------------------------------------------------
# failures: one line, exit 2, nothing under the sha256's name


def test_a_persistent_500_gives_up_with_the_status(world, hub):
    """On the GET (the download); on the HEAD the same retries run (test_transient_faults_are_retried)."""
    hub.fault(FILE_D, methods=("GET",), status=500)
    r = fetch(world, hub, "tiny-draft")
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert f"model tiny-draft: the Hub answered HTTP 500 for {REPO_D}/{FILE_D} (4 tries)" in line
    assert line.endswith("a problem on its side; nothing was kept, run: specsweep fetch tiny-draft later")
    assert len([ln for ln in r.stderr.splitlines() if "trying again" in ln]) == 3
    assert [e["status"] for e in gets(hub, FILE_D)] == [500] * 4
    assert left(world, REPO_D) == []


def test_a_body_that_ends_short_is_not_called_an_unreachable_hub(world, hub, files):
    """A Content-Length short of the file (a truncating proxy): huggingface_hub raises "Consistency check
    failed", an OSError that fetch used to report as an unreachable Hub."""
    size = files[FILE_T].stat().st_size
    hub.fault(FILE_T, methods=("GET",), short=1000)
    r = fetch(world, hub, "tiny-target")
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert f"model tiny-target: the download of {FILE_T} ended at 1000 of {size} bytes (4 tries)" in line
    assert "unreachable" not in line and line.endswith("run: specsweep fetch tiny-target to try again")
    assert [e["sent"] for e in gets(hub, FILE_T)] == [1000] * 4
    assert left(world, REPO_T) == []


def test_wrong_bytes_are_refused_and_removed(world, hub, files):
    hub.fault(FILE_T, methods=("GET",), wrong=True)
    r = fetch(world, hub, "tiny-draft", "tiny-target")
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert "model tiny-target" in line and "as downloaded fails the sha256 check" in line
    assert "removed from the cache; run: specsweep fetch tiny-target" in line
    assert left(world, REPO_T) == []  # neither the blob under the sha256's name nor the snapshot link
    kept = repo_dir(world, REPO_D) / "snapshots" / REV / FILE_D  # the model fetched before it stays
    assert r.stdout == f"tiny-draft\t{kept}\n" and sha256(kept) == sha256(files[FILE_D])


def test_gated_repo_401_then_403(world, hub, files):
    hub.gate(REPO_T)
    r = fetch(world, hub, "tiny-target")
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert f"model tiny-target: {REPO_T} is gated and no valid token was sent" in line
    assert f"accept its terms at {hub.url}/{REPO_T}" in line and "HF_TOKEN" in line
    assert line.endswith("then run: specsweep fetch tiny-target")

    r = fetch(world, hub, "tiny-target", token=hub.token)
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert f"{REPO_T} is gated and the token sent" in line and "has no access" in line
    assert f"accept its terms at {hub.url}/{REPO_T} with the token's account" in line
    heads = hub.requests("HEAD", FILE_T)
    assert [(e["status"], e["auth"]) for e in heads] == [(401, None), (403, f"Bearer {hub.token}")]
    assert not repo_dir(world, REPO_T).exists()


def test_a_file_the_repo_lacks_names_the_lock_entry(world, hub, files):
    world["lock"].write_text(lock_for(files, draft_file="Tiny-Draft-Q4_K_M.gguf"))
    r = fetch(world, hub, "tiny-draft")
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert (f"model tiny-draft: models.lock entry tiny-draft names Tiny-Draft-Q4_K_M.gguf, which is not in "
            f"{REPO_D} at {REV}") in line
    assert [e["status"] for e in hub.requests("HEAD")] == [404]
    assert not repo_dir(world, REPO_D).exists()


# ----------------------------------------------------------------------------------------------
# lock --update and contribute --push


def test_lock_update_takes_commit_sha256_and_size_from_the_head_answers(world, hub, files, tmp_path):
    """The first entry's facts come from HEAD answers (a plain git file is hashed from a download) and
    are saved; the second entry's pinned commit is gone upstream (RevisionNotFound): one line, exit 2,
    and the first entry's update is kept."""
    config = tmp_path / "config.json"
    config.write_text('{"architectures": ["LlamaForCausalLM"]}\n')
    new_commit = "fedcba9876543210fedcba9876543210fedcba98"
    hub.add(REPO_T, FILE_T, files[FILE_T], new_commit)  # main moves on: the lock's "main" resolves to it
    hub.add(REPO_T, "config.json", config, new_commit, lfs=False)
    gone = "f" * 40
    lock = tmp_path / "update.lock"
    lock.write_text('version = 1\n\n[[model]]\nname = "tiny-target"\nrole = "target"\n'
                    f'repo = "{REPO_T}"\nrevision = "main"\n'
                    f'files = [{{ file = "{FILE_T}" }}, {{ file = "config.json" }}]\n'
                    'unverified = ["file", "revision", "sha256", "size", "vocab"]\n\n'
                    '[[model]]\nname = "tiny-draft"\nrole = "draft"\n'
                    f'repo = "{REPO_D}"\nrevision = "{gone}"\nfile = "{FILE_D}"\n'
                    'unverified = ["sha256", "size", "vocab"]\n')
    r = cli(world, hub, "lock", "--update", "--lock", lock)
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    assert f"model tiny-draft: revision {gone} of {REPO_D} does not exist upstream" in line
    assert "specsweep lock --update --latest tiny-draft" in line
    assert [e["status"] for e in hub.requests("HEAD", FILE_D)] == [404]

    saved = lockfile.load(lock)
    e = saved.get("tiny-target")
    assert e.revision == new_commit
    assert [(f.file, f.sha256, f.size) for f in e.files] == [
        (FILE_T, sha256(files[FILE_T]), files[FILE_T].stat().st_size),
        ("config.json", sha256(config), config.stat().st_size)]
    assert e.unverified == ("vocab",)  # vocab needs the fetched file's header
    assert saved.get("tiny-draft").revision == gone and saved.get("tiny-draft").files[0].sha256 is None
    assert gets(hub, FILE_T) == []  # the GGUF's facts came from HEAD answers alone
    assert [e["method"] for e in hub.requests(file="config.json")] == ["HEAD", "HEAD", "GET"]


def test_contribute_push_opens_a_pull_request_through_preupload_and_commit(world, hub, tmp_path):
    import json

    from tests.test_contrib import results

    hub.dataset("specsweep/community", "c" * 40)
    out = tmp_path / "c.json"
    r = cli(world, hub, "contribute", results(tmp_path), "-o", out, "--push", "specsweep/community", token=hub.token)
    assert r.returncode == 0, r.stderr
    pr = f"{hub.url}/datasets/specsweep/community/discussions/1"
    assert r.stdout.strip() == f"opened a pull request on specsweep/community: {pr}"
    pre, commit = [e for e in hub.log if e["method"] == "POST"]
    assert pre["path"] == "/api/datasets/specsweep/community/preupload/main" and pre["query"] == {"create_pr": ["1"]}
    (asked,) = json.loads(pre["body"])["files"]
    assert (asked["path"], asked["size"]) == ("contrib/c.json", out.stat().st_size)
    assert commit["path"] == "/api/datasets/specsweep/community/commit/main" and commit["query"] == {"create_pr": ["1"]}
    assert commit["content_type"] == "application/x-ndjson"
    (c,) = hub.commits
    assert c["keys"] == ["header", "file"] and c["create_pr"]
    assert c["files"] == {"contrib/c.json": out.read_bytes()}
    assert "NVIDIA GeForce RTX 3090" in c["header"]["summary"]


# ----------------------------------------------------------------------------------------------
# a trained model from PyPI, served as the Hub serves it, fetched with this checkout's models.lock


def test_smollm2_from_the_checkouts_lock(world, hub):
    from tests import real_models

    m = real_models.SMOLLM2
    if real_models.missing(m):
        pytest.skip(f"not installed: {', '.join(real_models.missing(m))}")
    (part,) = real_models.part_paths(m)
    hub.add(m.repo, m.file, part, m.revision, sha256=m.sha256)
    r = cli(world, hub, "fetch", m.name, "--lock", ROOT / "models.lock")
    assert r.returncode == 0, r.stderr
    pointer = repo_dir(world, m.repo) / "snapshots" / m.revision / m.file
    assert r.stdout.strip() == f"{m.name}\t{pointer}"
    assert os.readlink(pointer) == f"../../blobs/{m.sha256}" and pointer.stat().st_size == m.size
    (get,) = gets(hub, m.file)
    assert get["sent"] == m.size


# ----------------------------------------------------------------------------------------------
# a matrix's hf:// prompt set, downloaded as a model is: passing errors tried again, the rest one line


def test_an_hf_prompt_set_is_tried_again_on_a_503_and_a_missing_one_is_one_line(world, hub, tmp_path):
    from tests.test_prompt_sets import MATRIX, QUESTIONS

    data = tmp_path / "question.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    hub.add("datasets/specsweep-test/Bench", "data/question.jsonl", data, REV, lfs=False)
    hub.fault("data/question.jsonl", methods=("GET",), status=503, times=1)  # hf_hub_download's GET: not retried
    matrix = tmp_path / "bench.toml"
    matrix.write_text(MATRIX.replace("PROMPTS", "hf://datasets/specsweep-test/Bench/data/question.jsonl"))
    r = cli(world, hub, "run", matrix, "--results", tmp_path / "results", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "prompts=5 trials=1" in r.stdout  # 3 MT-bench + 2 translation: the served file, read
    (retried,) = [ln for ln in r.stderr.splitlines() if "trying again" in ln]
    assert retried.startswith("prompt set hf://datasets/specsweep-test/Bench/data/question.jsonl: HTTP 503")
    matrix.write_text(MATRIX.replace("PROMPTS", "hf://datasets/specsweep-test/Bench/data/other.jsonl"))
    gone = cli(world, hub, "run", matrix, "--results", tmp_path / "results", "--dry-run")
    assert gone.returncode == 2 and "trying again" not in gone.stderr  # a 404 is not passing
    assert one_line_error(gone.stderr).endswith("data/other.jsonl is not in dataset specsweep-test/Bench at main")
