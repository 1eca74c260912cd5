"""A local server that speaks the Hugging Face Hub's file protocol, with switches that inject faults.

Started by the tests on 127.0.0.1 (two ports) and selected with HF_ENDPOINT in a subprocess's
environment, so `specsweep fetch`, `lock --update` and `contribute --push` go through the real
huggingface_hub against it. It answers what huggingface_hub reads (file_download.py,
_commit_api.py and utils/_http.py of 1.20 and 2.5):

- `HEAD|GET /{repo}/resolve/{revision}/{file}` (a dataset's `/datasets/{repo}/...`, served when
  added as `datasets/{repo}`): `X-Repo-Commit` (required by hf_hub_download), for an LFS file a 302 to the second port (the "CDN") carrying `X-Linked-Etag` (the sha256) and
  `X-Linked-Size`: metadata is read from the redirect itself because it leaves the origin; for a
  plain git file a 200 with `ETag` (its git blob sha1) and `Content-Length`. No `X-Xet-Hash` and no
  xet `Link`: huggingface_hub takes the plain-HTTP path; hf-xet's path is not exercised here.
- `GET /cdn/{sha256}` on the second port: the bytes, with `Range: bytes=N-` answered 206.
- errors as the Hub sends them: the status plus `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`,
  `EntryNotFound`, `GatedRepo`) and `X-Error-Message`, which huggingface_hub maps to its classes.
- `POST /api/{type}s/{repo}/preupload/{rev}` (JSON) and `POST /api/{type}s/{repo}/commit/{rev}`
  (NDJSON), `?create_pr=1`: what `HfApi.create_commit` sends for small files (upload mode
  "regular", content base64 in the commit). LFS uploads (files over 10 MB or binary) are not served.

Faults (`Hub.fault(file, ...)`) apply to the requests for one file name: a status in place of the
answer (the first `times` requests, or all), a delay before answering, and on the request that sends
the bytes: cut the connection after N bytes (Content-Length still says the whole file), declare and
send only N bytes, flip one byte, or stall after N bytes until `release()`. Every request is logged
(`Hub.log`) with the bytes of body it sent, so tests can assert what moved. Any other path is a 404
(huggingface_hub 2.x also asks `/api/agent-harnesses`, best effort, for its user agent).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LFS_MIN = 10 * 2**20  # the Hub's preupload answers "lfs" from here (and for binary samples)


@dataclass
class Fault:
    methods: tuple[str, ...] = ("HEAD", "GET")
    status: int | None = None  # answer this status instead
    code: str | None = None  # with this X-Error-Code
    times: int | None = None  # for the first `times` matching requests; None: every one
    delay: float = 0.0  # seconds before answering
    cut: int | None = None  # close the connection after this many body bytes
    short: int | None = None  # declare and send only this many bytes
    wrong: bool = False  # flip a byte in the middle
    stall: int | None = None  # after this many bytes, wait for release() (at most 60 s)
    seen: int = 0


@dataclass
class Served:
    path: Path
    size: int
    sha256: str
    git_sha1: str
    lfs: bool


@dataclass
class Repo:
    refs: dict[str, str]  # branch -> commit
    files: dict[str, dict[str, Served]] = field(default_factory=dict)  # commit -> file -> Served
    gated: bool = False


def _git_sha1(path: Path, size: int) -> str:
    h = hashlib.sha1(b"blob %d\0" % size)
    h.update(path.read_bytes())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


class Hub:
    """Two servers on 127.0.0.1: `url` is the Hub (HF_ENDPOINT), `cdn_url` where LFS files live."""

    def __init__(self, token: str = "hf_test_token") -> None:
        self.repos: dict[str, Repo] = {}
        self.faults: dict[str, Fault] = {}
        self.log: list[dict] = []
        self.commits: list[dict] = []  # what each commit POST carried, parsed
        self.token = token  # the token the server accepts (gated repos: granted; commits: write)
        self.granted = False  # whether the token has accepted the gated repos' terms
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._hub = self._serve("hub")
        self._cdn = self._serve("cdn")
        self.url = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._cdn.server_address[1]}"

    # ------------------------------------------------------------------------------------------
    # set-up

    def add(self, repo: str, file: str, path: Path, commit: str, branch: str | None = "main",
            lfs: bool = True, sha256: str | None = None) -> Served:
        """Serve `path` as `file` of `repo` at `commit` (and at `branch`, which then points there).
        `sha256` may be given for a large file whose digest is already known."""
        path = Path(path)
        size = path.stat().st_size
        r = self.repos.setdefault(repo, Repo({}))
        served = Served(path, size, sha256 or _sha256(path), "" if lfs else _git_sha1(path, size), lfs)
        r.files.setdefault(commit, {})[file] = served
        if branch:
            r.refs[branch] = commit
        return served

    def dataset(self, repo: str, commit: str) -> None:
        """An (empty) dataset repo that accepts commits."""
        self.repos.setdefault(f"datasets/{repo}", Repo({"main": commit}))

    def gate(self, repo: str) -> None:
        self.repos[repo].gated = True

    def fault(self, file: str, **kw) -> Fault:
        self.faults[file] = Fault(**kw)
        return self.faults[file]

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        for s in (self._hub, self._cdn):
            s.shutdown()
            s.server_close()

    def requests(self, method: str | None = None, file: str | None = None) -> list[dict]:
        return [e for e in self.log if (method is None or e["method"] == method)
                and (file is None or e["file"] == file)]

    # ------------------------------------------------------------------------------------------

    def _serve(self, role: str) -> ThreadingHTTPServer:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub, Handler.role = hub, role
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server

    def _take_fault(self, file: str, method: str) -> Fault | None:
        with self._lock:
            f = self.faults.get(file)
            if f is None or method not in f.methods or (f.times is not None and f.seen >= f.times):
                return None
            f.seen += 1
            return f

    def _resolve(self, repo: str, revision: str) -> tuple[Repo | None, str | None]:
        r = self.repos.get(repo)
        if r is None:
            return None, None
        return r, r.refs.get(revision, revision if revision in r.files else None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's client uses it
    hub: Hub
    role: str

    def log_message(self, *args) -> None:  # quiet: the log is Hub.log
        pass

    # ------------------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        try:
            self._route(method)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (killed, or timed out)
            self.close_connection = True

    def _route(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        self.entry = {"method": method, "role": self.role, "path": url.path, "file": None,
                      "range": self.headers.get("Range"), "auth": self.headers.get("Authorization"),
                      "status": None, "sent": 0}
        with self.hub._lock:
            self.hub.log.append(self.entry)
        parts = urllib.parse.unquote(url.path).lstrip("/").split("/")
        if self.role == "cdn" and method == "GET" and len(parts) == 2 and parts[0] == "cdn":
            return self._cdn(parts[1])
        if self.role == "hub" and method == "POST" and len(parts) >= 6 and parts[0] == "api":
            return self._api(parts, urllib.parse.parse_qs(url.query))
        at = 3 if parts[0] == "datasets" else 2  # /datasets/{repo}/resolve/...: a dataset's file
        if self.role == "hub" and method in ("HEAD", "GET") and len(parts) >= at + 3 and parts[at] == "resolve":
            return self._resolve(method, "/".join(parts[:at]), parts[at + 1], "/".join(parts[at + 2:]))
        self._error(404, None, "Not found")

    # ------------------------------------------------------------------------------------------
    # /{repo}/resolve/{revision}/{file}

    def _resolve(self, method: str, repo: str, revision: str, file: str) -> None:
        self.entry["file"] = file
        fault = self.hub._take_fault(file, method)
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.status:
            return self._error(fault.status, fault.code, f"injected {fault.status}")
        r, commit = self.hub._resolve(repo, revision)
        if r is None:
            return self._error(404 if self._authorized() else 401, "RepoNotFound", "Repository not found")
        if r.gated and not (self._authorized() and self.hub.granted):
            return self._error(403 if self._authorized() else 401, "GatedRepo",
                               f"Access to model {repo} is restricted. You must have access to it and be "
                               f"authenticated to access it. Please log in.")
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        served = r.files[commit].get(file)
        if served is None:
            return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
        head = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if served.lfs:
            location = f"{self.hub.cdn_url}/cdn/{served.sha256}?repo={urllib.parse.quote(repo)}&file=" \
                       f"{urllib.parse.quote(file)}&expires={int(time.time()) + 3600}"
            body = f"Found. Redirecting to {location}".encode()
            return self._send(302, dict(head, **{"Location": location, "X-Linked-Etag": f'"{served.sha256}"',
                                                 "X-Linked-Size": str(served.size),
                                                 "ETag": f'"{served.sha256}"'}), body, method)
        self._file(method, served, dict(head, ETag=f'"{served.git_sha1}"'), fault)

    def _cdn(self, sha256: str) -> None:
        for r in self.hub.repos.values():
            for files in r.files.values():
                for name, served in files.items():
                    if served.sha256 == sha256 and served.lfs:
                        self.entry["file"] = name
                        fault = self.hub._take_fault(name, "GET")
                        if fault and fault.delay:
                            time.sleep(fault.delay)
                        if fault and fault.status:
                            return self._send(fault.status, {}, b"<Error>injected</Error>", "GET")
                        # the CDN names the file, which huggingface_hub's progress bar shows
                        base = name.rsplit("/", 1)[-1]
                        return self._file("GET", served, {"ETag": f'"{sha256}"', "Content-Disposition":
                                          f"inline; filename*=UTF-8''{base}; filename=\"{base}\";"}, fault)
        self._send(404, {}, b"<Error>NoSuchKey</Error>", "GET")

    def _file(self, method: str, served: Served, headers: dict, fault: Fault | None) -> None:
        start = 0
        rng = self.headers.get("Range")
        if rng and method == "GET":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{served.size - 1}/{served.size}"
        length = served.size - start
        if fault and fault.short is not None:
            length = min(length, fault.short)
        headers.update({"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                        "Content-Length": str(length)})
        self.send_response(206 if rng and method == "GET" else 200)
        self.entry["status"] = 206 if rng and method == "GET" else 200
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if method == "HEAD":
            return
        stop_at = length
        if fault and fault.cut is not None:
            stop_at = min(stop_at, fault.cut)
        flip = served.size // 2 - start if fault and fault.wrong else -1
        stall = fault.stall if fault else None
        with open(served.path, "rb") as f:
            f.seek(start)
            sent = 0
            while sent < stop_at:
                if stall is not None and sent >= stall:
                    self.wfile.flush()
                    self.hub._released.wait(60)
                    stall = None
                chunk = f.read(min(1 << 16, stop_at - sent, (stall if stall is not None else stop_at) - sent))
                if 0 <= flip - sent < len(chunk):
                    chunk = chunk[:flip - sent] + bytes([chunk[flip - sent] ^ 0xFF]) + chunk[flip - sent + 1:]
                self.wfile.write(chunk)
                sent += len(chunk)
                self.entry["sent"] = sent
        self.wfile.flush()
        if stop_at < length:  # the cut: the client sees the connection end short of Content-Length
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------------------------------
    # /api/{type}s/{repo}/preupload/{rev} and /commit/{rev}

    def _api(self, parts: list[str], query: dict) -> None:
        kind, repo, action, revision = parts[1], "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.entry.update(file=action, body=body, query=query, content_type=self.headers.get("Content-Type"))
        key = repo if kind == "models" else f"{kind}/{repo}"
        r, commit = self.hub._resolve(key, revision)
        if not self._authorized():
            return self._error(401, None, "Invalid credentials in Authorization header")
        if r is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if action == "preupload":
            files = []
            for f in json.loads(body)["files"]:
                sample = base64.b64decode(f["sample"])
                binary = b"\0" in sample
                files.append({"path": f["path"], "uploadMode": "lfs" if f["size"] >= LFS_MIN or binary else "regular",
                              "shouldIgnore": False, "oid": None})
            return self._json(200, {"files": files})
        if action == "commit":
            lines = [json.loads(ln) for ln in body.decode().splitlines() if ln.strip()]
            header = next(ln["value"] for ln in lines if ln["key"] == "header")
            files = {ln["value"]["path"]: base64.b64decode(ln["value"]["content"]) for ln in lines
                     if ln["key"] == "file" and ln["value"].get("encoding") == "base64"}
            pr = "1" in query.get("create_pr", [])
            oid = hashlib.sha1(body).hexdigest()
            self.hub.commits.append({"repo": repo, "kind": kind, "revision": revision, "header": header,
                                     "files": files, "create_pr": pr, "keys": [ln["key"] for ln in lines]})
            num = len(self.hub.commits)
            prefix = f"{self.hub.url}/{'' if kind == 'models' else kind + '/'}{repo}"
            return self._json(200, {"commitUrl": f"{prefix}/commit/{oid}", "commitOid": oid,
                                    "pullRequestUrl": f"{prefix}/discussions/{num}" if pr else None,
                                    "pullRequestRevision": f"refs/pr/{num}" if pr else None, "success": True})
        self._error(404, None, "Not found")

    # ------------------------------------------------------------------------------------------

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    def _error(self, status: int, code: str | None, message: str, extra: dict | None = None) -> None:
        headers = dict(extra or {}, **{"X-Error-Message": message})
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)

    def _json(self, status: int, doc: dict, headers: dict | None = None) -> None:
        self._send(status, dict(headers or {}, **{"Content-Type": "application/json"}),
                   json.dumps(doc).encode(), self.command)

    def _send(self, status: int, headers: dict, body: bytes, method: str) -> None:
        self.send_response(status)
        self.entry["status"] = status
        headers = dict(headers, **{"Content-Length": str(len(body))})
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)
