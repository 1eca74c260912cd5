"""The plotly.js the page inlines: the vendored scatter+bar partial bundle (vendor/, made by
scripts/vendor-plotly.sh from npm), gzip'd, as base64 for the page to unpack in the browser.

The page draws only scatter and bar traces (with annotations, shapes and error bars, which are
plotly.js core), so the basic bundle (scatter, bar, pie) does; inlined gzip'd it is about 0.5 MB of
the page instead of the full build's 4.8 MB of text.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from specsweep.errors import SpecsweepError

VENDOR = Path(__file__).with_name("vendor")


@dataclass(frozen=True)
class Bundle:
    package: str  # the npm package, e.g. plotly.js-basic-dist-min
    version: str
    license: str
    file: str  # the bundle's file name, e.g. plotly-basic.min.js
    gz_base64: str  # the gzip'd file, base64

    @property
    def name(self) -> str:
        return f"{self.package} {self.version}"


@functools.lru_cache(maxsize=1)
def plotly_bundle() -> Bundle:
    """The vendored bundle, checked against the sha256 its vendoring recorded."""
    fix = "re-create it with scripts/vendor-plotly.sh"
    try:
        meta = json.loads((VENDOR / "plotly.json").read_text(encoding="utf-8"))
        gz = (VENDOR / f"{meta['file']}.gz").read_bytes()
    except (OSError, ValueError, KeyError) as e:
        raise SpecsweepError(f"the vendored plotly.js bundle in {VENDOR} is missing or unreadable "
                             f"({getattr(e, 'strerror', None) or e}): {fix}") from None
    if hashlib.sha256(gz).hexdigest() != meta.get("gz_sha256"):
        raise SpecsweepError(f"the vendored plotly.js bundle in {VENDOR} does not match its recorded sha256: {fix}")
    return Bundle(meta["package"], meta["version"], meta.get("license", "?"), meta["file"], base64.b64encode(gz).decode("ascii"))
