"""What a failed Hub request means to the user: one line naming the model, and whether to retry.

huggingface_hub raises its own classes for what the Hub says (from the `X-Error-Code` header:
gated, repository, revision or file not found), `HfHubHTTPError` for any other status, an OSError
"Consistency check failed" for a body that ended short, and its HTTP client's errors (requests
before 1.0, httpx in 1.x, httpx2 in 2.x) for the network; a failed HEAD inside `hf_hub_download`
arrives wrapped in `LocalEntryNotFoundError`. Transport errors are told apart by class name so
that every supported huggingface_hub version is read alike.
"""

from __future__ import annotations

import errno
import re

from huggingface_hub import constants
from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                    OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

from specsweep.errors import SpecsweepError

# statuses a server gives for a passing trouble; huggingface_hub retries only 408/429 on a GET, and
# neither on its HEAD before a download
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# the connection broke or stalled once it was open (httpx/httpx2 and requests/urllib3 names); a refused
# connection or a failed name lookup is not retried: that is an unreachable Hub, reported at once
_BROKEN = frozenset({"ReadTimeout", "WriteTimeout", "PoolTimeout", "RemoteProtocolError", "ReadError",
                     "WriteError", "ChunkedEncodingError", "ProtocolError", "IncompleteRead"})
_SHORT = re.compile(r"Consistency check failed: file should be of size (\d+) but has size (\d+)")


class HubUnreachable(SpecsweepError):
    """The Hub could not be asked (offline mode, no network, Hub down): try again where it can."""


def cause(e: BaseException) -> BaseException:
    """The error itself: hf_hub_download wraps a failed HEAD (no cached copy to fall back on)."""
    while isinstance(e, LocalEntryNotFoundError) and e.__cause__ is not None:
        e = e.__cause__
    return e


def status(e: BaseException) -> int | None:
    response = getattr(cause(e), "response", None)
    return getattr(response, "status_code", None) if isinstance(cause(e), HfHubHTTPError) else None


def transient(e: BaseException) -> bool:
    """Whether the same request may well succeed a few seconds later."""
    e = cause(e)
    if status(e) in TRANSIENT_STATUS:
        return True
    return bool(isinstance(e, OSError) and _SHORT.search(str(e))) or _broke(e)


def _broke(e: BaseException) -> bool:
    """The connection broke or stalled once open (told by class name, see the module's note)."""
    return any(c.__name__ in _BROKEN for c in type(e).__mro__)


def describe(name: str, repo: str, file: str, revision: str, e: BaseException, tries: int = 1) -> SpecsweepError:
    """The one line for a failed request about `file` of model `name`."""
    e = cause(e)
    code = status(e)
    again = f"run: specsweep fetch {name}"
    page = f"{constants.ENDPOINT}/{repo}"
    times = f" ({tries} tries)" if tries > 1 else ""
    if isinstance(e, OfflineModeIsEnabled):
        return HubUnreachable(f"model {name}: {file} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
                              f"and HF_HUB_OFFLINE is set; {again} where the Hub is reachable (same HF_HOME)")
    if isinstance(e, RevisionNotFoundError):
        return SpecsweepError(f"model {name}: revision {revision} of {repo} does not exist upstream (changed "
                              f"upstream: history rewritten or the branch removed); pin another revision with "
                              f"`specsweep lock --update --latest {name}`")
    if isinstance(e, GatedRepoError) or (code in (401, 403) and not isinstance(e, RepositoryNotFoundError)):
        gated = "is gated" if isinstance(e, GatedRepoError) else f"was refused (HTTP {code})"
        if code == 401:
            return SpecsweepError(f"model {name}: {repo} {gated} and no valid token was sent: accept its terms at "
                                  f"{page}, set HF_TOKEN to a token of that account, then {again}")
        return SpecsweepError(f"model {name}: {repo} {gated} and the token sent (HF_TOKEN or the saved login) has "
                              f"no access: accept its terms at {page} with the token's account, then {again}")
    if isinstance(e, RepositoryNotFoundError):
        token = ("or private and no valid token was sent (set HF_TOKEN)" if code == 401
                 else "or the token sent has no access")
        return SpecsweepError(f"model {name}: repository {repo} (models.lock entry {name}) not found on the Hub, "
                              f"{token}")
    if isinstance(e, EntryNotFoundError):
        return SpecsweepError(f"model {name}: models.lock entry {name} names {file}, which is not in {repo} at "
                              f"{revision}: the lock names it wrongly or it was removed upstream")
    if code is not None and code in TRANSIENT_STATUS:
        return HubUnreachable(f"model {name}: the Hub answered HTTP {code} for {repo}/{file}{times}, a problem on "
                              f"its side; nothing was kept, {again} later")
    if code is not None:
        return SpecsweepError(f"model {name}: the Hub answered HTTP {code} for {repo}/{file}")
    short = _SHORT.search(str(e))
    if short:
        return HubUnreachable(f"model {name}: the download of {file} ended at {int(short[2])} of {int(short[1])} "
                              f"bytes{times} (the connection was cut); nothing was kept, {again} to try again")
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return SpecsweepError(f"model {name}: no space left on the device holding {constants.HF_HUB_CACHE} while "
                              f"downloading {file}; nothing was kept, free some space and {again}")
    if isinstance(e, OSError) and e.errno is not None and e.filename:  # the cache, not the network
        return SpecsweepError(f"model {name}: cannot write {e.filename} in the Hugging Face cache: "
                              f"{e.strerror or type(e).__name__}")
    detail = " ".join(str(e).split())[:160] or type(e).__name__
    if _broke(e):
        return HubUnreachable(f"model {name}: the connection to {constants.ENDPOINT} broke off for {file}{times} "
                              f"({type(e).__name__}: {detail}); nothing was kept, {again} to try again")
    return HubUnreachable(f"model {name}: the Hugging Face Hub is unreachable ({constants.ENDPOINT}: "
                          f"{type(e).__name__}: {detail}); check the network, or {again} where the Hub is "
                          f"reachable (same HF_HOME)")
