"""llama.cpp's own `llama-server`, started and stopped by specsweep, spoken to over its HTTP API.

One `LlamaServer` is one server process on a free loopback port with its log in a file: `start()`
waits until `/health` answers (or the process dies, which is one line naming the log),
`complete()` sends a `/completion` request with token ids as the prompt and returns the server's
own answer (tokens, timings, and `draft_n`/`draft_n_accepted` when it drafted), `metrics()` reads
`/metrics` (Prometheus text) when started with `--metrics`. Everything fails as one
`SpecsweepError` line that names the cause and the log.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from specsweep.errors import SpecsweepError

START_TIMEOUT_S = 300.0


def free_port() -> int:
    """A loopback port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_env(binary: Path) -> dict[str, str]:
    old = os.environ.get("LD_LIBRARY_PATH")
    return dict(os.environ, LD_LIBRARY_PATH=f"{Path(binary).parent}" + (f":{old}" if old else ""))


def find_binary(explicit: str | Path | None = None) -> Path:
    """`--llama-server PATH`, else $SPECSWEEP_LLAMA_SERVER, else `llama-server` on PATH."""
    import shutil

    candidate = explicit or os.environ.get("SPECSWEEP_LLAMA_SERVER") or shutil.which("llama-server")
    if not candidate:
        raise SpecsweepError("no llama-server: give --llama-server PATH or set SPECSWEEP_LLAMA_SERVER "
                             "(scripts/build-native.sh builds one)")
    path = Path(candidate)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise SpecsweepError(f"llama-server not found or not executable: {path}")
    return path


class LlamaServer:
    def __init__(self, binary: Path, args: list[str], log_path: Path, port: int | None = None,
                 env: dict | None = None):
        """`env`: the server's environment; by default the user's, with the binary's own folder
        first on LD_LIBRARY_PATH (a server runs on the libraries it was built with; the parity
        tests pass `native_env` to run it on the engine's)."""
        self.binary, self.args, self.log_path = Path(binary), list(args), Path(log_path)
        self.port = port or free_port()
        self.env = env if env is not None else own_env(self.binary)
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(self.binary), *self.args, "--host", "127.0.0.1", "--port", str(self.port)]

    def start(self, timeout: float = START_TIMEOUT_S) -> "LlamaServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._log.write(("$ " + " ".join(self.command()) + "\n").encode())
        self._log.flush()
        try:
            self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        except OSError as e:
            self._log.close()
            raise SpecsweepError(f"llama-server did not start: {e.strerror or e} ({self.binary})") from None
        try:
            if self._healthy_within(timeout):
                return self
        except BaseException:  # an interrupt while it loads: the server runs in its own session, stop it
            self.stop()
            raise
        self.stop()
        raise SpecsweepError(f"llama-server did not answer /health within {timeout:.0f} s (log: {self.log_path})")

    def _healthy_within(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SpecsweepError(f"llama-server exited with code {self.proc.returncode} while starting: "
                                     f"{self.last_log_line()} (log: {self.log_path})")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return False

    def last_log_line(self) -> str:
        """The server's last error line (else its last line), for one-line messages."""
        try:
            lines = [x.strip() for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]
        except OSError:
            return "no log"
        errors = [x for x in lines if " E " in x or "error" in x.lower()]
        return (errors or lines or ["empty log"])[-1][:300]

    def _post(self, path: str, body: dict, timeout: float) -> dict:
        data = json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:300]
            raise SpecsweepError(f"llama-server answered {path} with HTTP {e.code}: {detail} (log: {self.log_path})") from None
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as e:
            state = "died" if self.proc is not None and self.proc.poll() is not None else "failed"
            raise SpecsweepError(f"llama-server {state} during {path}: {getattr(e, 'reason', e)}; "
                                 f"{self.last_log_line()} (log: {self.log_path})") from None

    def complete(self, tokens: list[int], n_predict: int, seed: int, ignore_eos: bool = False,
                 timeout: float = 600.0, **extra) -> dict:
        """A greedy completion of the prompt `tokens`, without the prompt cache."""
        body = {"prompt": tokens, "n_predict": n_predict, "temperature": 0.0, "seed": seed, "cache_prompt": False,
                "return_tokens": True, "ignore_eos": ignore_eos, "stream": False, **extra}
        return self._post("/completion", body, timeout)

    def complete_many(self, prompts: list[list[int]], n_predict: int, seed: int, ignore_eos: bool = False,
                      timeout: float = 600.0) -> list[dict]:
        """Greedy completions of several prompts in one request: the server makes a task of each and
        starts them together, one per slot (its answers come back in prompt order)."""
        answer = self.complete(prompts, n_predict, seed, ignore_eos, timeout)  # type: ignore[arg-type]
        answers = answer if isinstance(answer, list) else [answer]
        return sorted(answers, key=lambda a: a.get("index", 0))

    def metrics(self) -> str:
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
                return r.read().decode()
        except (urllib.error.URLError, OSError) as e:
            raise SpecsweepError(f"llama-server /metrics failed: {getattr(e, 'reason', e)} (log: {self.log_path})") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None and not self._log.closed:
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
