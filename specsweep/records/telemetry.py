"""GPU (and host CPU) telemetry sampled in a background thread while a trial runs.

A trial's speed means little without the state of the GPU it ran on: a card that throttles for
heat or power mid-run is slower for reasons no decoding method controls. Through NVML (the
`pynvml` module of the `nvidia-ml-py` package) each sample reads, per GPU, the SM and memory
clocks (MHz), power (W), temperature (C), utilisation (%) and the clock event ("throttle")
reasons bitmask; plus the host CPU's current frequency where Linux shows it. A trial's record
gets min/mean/max of each and the throttle reasons seen.

    tel = Telemetry([0])
    with tel.trial() as summary:     # a dict, filled in when the block exits
        run_the_trial()
    record["telemetry"] = summary

Never an error: no GPUs (`gpus == []`), no `nvidia-ml-py`, no driver library, or an NVML call
failing at init gives {"available": False, "reason": ...}; a metric a GPU does not support is
None; nothing the sampler does can raise into the trial. NVML is initialised once per process,
on first use, and shut down at exit.

Cost: the thread wakes every `interval_s` (50 ms by default) and makes six NVML calls per GPU,
about 14 us in all on an H200 (driver 580); ctypes releases the GIL during each, so the decoding
thread barely notices. The CPU frequency (one small file per core) is read at most twice a
second. One sample is taken at start and one at stop, so even a short trial gets two.

Which reasons count as throttling (the `throttled` flags): those that hold the clocks below what
the load asks for because of a limit of the board - SW power cap, HW slowdown, SW thermal
slowdown, HW thermal slowdown, HW power brake, board limit, reliability. An H200 under a dense
bf16 matmul sits at its ~700 W cap, SM clocks 1455-1530 MHz, SW power cap set throughout: a real
limit on its speed, so it counts. Not counted, though listed when seen: GPU idle (no load: normal
between kernels), applications clocks setting (a clock the user chose), sync boost (clocks
matched across GPUs on purpose) and display clock setting.

GPU indices: specsweep's are CUDA indices. NVML numbers devices in PCI bus order; CUDA does too
when CUDA_DEVICE_ORDER=PCI_BUS_ID, and by default orders the fastest first, which matches PCI
order on a machine of identical GPUs (the usual case) - that is the assumption when
CUDA_VISIBLE_DEVICES is unset. When it is set, CUDA index i is its i-th entry: an integer is an
NVML index (the same ordering assumption), a "GPU-..." UUID is looked up by UUID; anything else
(MIG devices) is reported unavailable rather than guessed.
"""

from __future__ import annotations

import atexit
import glob
import math
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

# (name, suffix of pynvml's nvmlClocksEventReason* / nvmlClocksThrottleReason* constant, throttling)
REASONS = (
    ("gpu_idle", "GpuIdle", False),
    ("applications_clocks_setting", "ApplicationsClocksSetting", False),
    ("sw_power_cap", "SwPowerCap", True),
    ("hw_slowdown", "HwSlowdown", True),
    ("sync_boost", "SyncBoost", False),
    ("sw_thermal_slowdown", "SwThermalSlowdown", True),
    ("hw_thermal_slowdown", "HwThermalSlowdown", True),
    ("hw_power_brake_slowdown", "HwPowerBrakeSlowdown", True),
    ("display_clock_setting", "DisplayClockSetting", False),
    ("board_limit", "BoardLimit", True),
    ("reliability", "Reliability", True),
)
THROTTLING = frozenset(name for name, _, counts in REASONS if counts)
METRICS = ("sm_mhz", "mem_mhz", "power_w", "temp_c", "util_pct")
CPU_EVERY_S = 0.5

_lock = threading.Lock()
_nvml: tuple[Any, str | None] | None = None   # (pynvml module or None, reason it is unavailable)


def _shutdown(nvml) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass


def nvml() -> tuple[Any, str | None]:
    """(the initialised pynvml module, None) or (None, why not); NVML is initialised on the first
    call only, and the answer (either way) kept for the process."""
    global _nvml
    with _lock:
        if _nvml is None:
            try:
                import pynvml
            except ImportError:
                _nvml = (None, "nvidia-ml-py is not installed")
            else:
                try:
                    pynvml.nvmlInit()
                except Exception as e:  # NVMLError (library not found, driver not loaded), OSError
                    _nvml = (None, f"NVML init failed: {e}")
                else:
                    atexit.register(_shutdown, pynvml)
                    _nvml = (pynvml, None)
        return _nvml


def nvml_targets(gpus: list[int], env: dict[str, str] | None = None) -> list[tuple[str, int | str]] | str:
    """For each CUDA index, ("index", NVML index) or ("uuid", UUID); or a reason they cannot be
    mapped (see the module docstring)."""
    visible = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [("index", g) for g in gpus]
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    targets = []
    for g in gpus:
        if not 0 <= g < len(entries):
            return f"GPU {g} is not among CUDA_VISIBLE_DEVICES={visible!r}"
        e = entries[g]
        if e.isdigit():
            targets.append(("index", int(e)))
        elif e.startswith("GPU-"):
            targets.append(("uuid", e))
        else:
            return f"CUDA_VISIBLE_DEVICES entry {e!r} is not an NVML index or GPU UUID"
    return targets


def cpu_mhz_reader(root: str = "/") -> Callable[[], list[float]] | None:
    """A function returning every core's current frequency in MHz, or None where Linux shows none:
    cpufreq's scaling_cur_freq (kHz) per core, else the "cpu MHz" lines of /proc/cpuinfo."""
    files = sorted(glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")))

    def from_sysfs() -> list[float]:
        values = []
        for f in files:
            try:
                with open(f) as fh:
                    values.append(int(fh.read().strip()) / 1000.0)
            except (OSError, ValueError):
                pass
        return values

    cpuinfo = os.path.join(root, "proc/cpuinfo")

    def from_cpuinfo() -> list[float]:
        values = []
        try:
            with open(cpuinfo) as fh:
                for line in fh:
                    key, _, value = line.partition(":")
                    if key.strip() == "cpu MHz":
                        try:
                            values.append(float(value))
                        except ValueError:
                            pass
        except OSError:
            pass
        return values

    for reader in (from_sysfs, from_cpuinfo):
        if reader():
            return reader
    return None


def reason_names(mask: int, nvml_module) -> list[str]:
    """The names of the bits set in a clock event reasons mask (unknown bits as "0x..." strings)."""
    names, known = [], 0
    for name, suffix, _ in REASONS:
        bit = getattr(nvml_module, "nvmlClocksEventReason" + suffix, None)
        if bit is None:
            bit = getattr(nvml_module, "nvmlClocksThrottleReason" + suffix, None)
        if bit and mask & bit:
            names.append(name)
        known |= bit or 0
    if mask & ~known:
        names.append(hex(mask & ~known))
    return names


def _stats(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    return {"min": round(min(values), 2), "mean": round(sum(values) / len(values), 2),
            "max": round(max(values), 2)}


class _Gpu:
    """One device's handle and the readers that work on it; read() never raises."""

    def __init__(self, nvml_module, handle):
        self.nvml, self.handle = nvml_module, handle
        n = nvml_module
        clock = getattr(n, "nvmlDeviceGetClockInfo", None)
        sensor = getattr(n, "NVML_TEMPERATURE_GPU", 0)
        # each metric: candidate calls, newest first; one that can never work (_missing) is dropped
        # for good, any other failure reads as None for that sample
        self.calls: dict[str, list[Callable[[], float]]] = {
            "sm_mhz": [lambda: clock(handle, n.NVML_CLOCK_SM)],
            "mem_mhz": [lambda: clock(handle, n.NVML_CLOCK_MEM)],
            "power_w": [lambda: n.nvmlDeviceGetPowerUsage(handle) / 1000.0],  # milliwatts
            "temp_c": [lambda: n.nvmlDeviceGetTemperatureV(handle, sensor),
                       lambda: n.nvmlDeviceGetTemperature(handle, sensor)],
            "util_pct": [lambda: n.nvmlDeviceGetUtilizationRates(handle).gpu],
            "reasons": [lambda: n.nvmlDeviceGetCurrentClocksEventReasons(handle),
                        lambda: n.nvmlDeviceGetCurrentClocksThrottleReasons(handle)],
        }
        self.samples: dict[str, list] = {k: [] for k in self.calls}

    def _missing(self, e: Exception) -> bool:
        """Whether a call can never work here: absent from pynvml or the driver, or a metric the
        device does not support (asking again every 50 ms would only cost time)."""
        if isinstance(e, (AttributeError, TypeError)):
            return True
        never = (getattr(self.nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", 13),
                 getattr(self.nvml, "NVML_ERROR_NOT_SUPPORTED", 3),
                 getattr(self.nvml, "NVML_ERROR_ARGUMENT_VERSION_MISMATCH", 25))  # a *V call the driver predates
        return getattr(e, "value", None) in never

    def read(self) -> None:
        for key, calls in self.calls.items():
            value = None
            while calls:
                try:
                    value = calls[0]()
                    break
                except Exception as e:
                    if self._missing(e):
                        calls.pop(0)
                        continue
                    break
            self.samples[key].append(value)

    def summary(self) -> dict:
        out: dict[str, Any] = {k: _stats(self.samples[k]) for k in METRICS}
        masks = [m for m in self.samples["reasons"] if m is not None]
        seen: list[str] = []
        throttled_samples = 0
        for mask in masks:
            names = reason_names(int(mask), self.nvml)
            seen += [x for x in names if x not in seen]
            throttled_samples += any(x in THROTTLING for x in names)
        out["throttle_reasons"] = seen
        out["throttled"] = throttled_samples > 0
        out["throttled_fraction"] = round(throttled_samples / len(masks), 3) if masks else None
        return out


class Telemetry:
    """Samples `gpus` (CUDA indices) every `interval_s` between start() and stop()."""

    def __init__(self, gpus: list[int], interval_s: float = 0.05, *, cpu_root: str = "/"):
        self.gpus = list(dict.fromkeys(gpus))
        self.interval_s = interval_s
        self._cpu_root = cpu_root
        self._ready = False
        self._unavailable: str | None = None if self.gpus else "no GPUs (a CPU run)"
        self._devices: list[_Gpu] = []
        self._cpu: Callable[[], list[float]] | None = None
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self._cpu_samples: list[float] = []
        self._n_samples = 0
        self._next_cpu = 0.0

    def _prepare(self) -> None:
        """Resolve NVML and the device handles once, on the first start()."""
        self._ready = True
        module, reason = nvml()
        if module is None:
            self._unavailable = reason
            return
        targets = nvml_targets(self.gpus)
        if isinstance(targets, str):
            self._unavailable = targets
            return
        try:
            for kind, key in targets:
                handle = (module.nvmlDeviceGetHandleByIndex(key) if kind == "index"
                          else module.nvmlDeviceGetHandleByUUID(key))
                self._devices.append(_Gpu(module, handle))
        except Exception as e:
            self._devices = []
            self._unavailable = f"no NVML handle for GPUs {self.gpus}: {e}"
            return
        try:
            self._cpu = cpu_mhz_reader(self._cpu_root)
        except Exception:
            self._cpu = None

    def _sample(self, force_cpu: bool = False) -> None:
        try:
            for d in self._devices:
                d.read()
            self._n_samples += 1
            now = time.monotonic()
            if self._cpu is not None and (force_cpu or now >= self._next_cpu):
                self._cpu_samples += self._cpu()
                self._next_cpu = now + CPU_EVERY_S
        except Exception:
            pass  # a sampler fault must never reach the trial

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        """Start sampling (one sample now, then one every interval_s in a daemon thread)."""
        try:
            if self._thread is not None:
                self.stop()
            if not self._ready and not self._unavailable:
                self._prepare()
            if self._unavailable:
                return
            for d in self._devices:
                d.samples = {k: [] for k in d.calls}
            self._cpu_samples, self._n_samples = [], 0
            self._sample(force_cpu=True)
            # an Event per trial: a thread stuck in a driver call past stop()'s join timeout
            # keeps its own (set) event and ends when the call returns
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, args=(self._stop,),
                                            name="specsweep-telemetry", daemon=True)
            self._thread.start()
        except Exception as e:
            self._unavailable = self._unavailable or f"telemetry failed to start: {e}"

    def stop(self) -> dict:
        """Stop sampling (one last sample) and return the trial's summary: see the module
        docstring and README for its shape."""
        if self._unavailable:
            return {"available": False, "reason": self._unavailable}
        if self._thread is None:
            return {"available": False, "reason": "telemetry was not started"}
        try:
            self._stop.set()
            self._thread.join(timeout=max(2.0, 10 * self.interval_s))
            self._thread = None
            self._sample(force_cpu=True)
            gpus = {str(g): d.summary() for g, d in zip(self.gpus, self._devices)}
            return {"available": True, "interval_s": self.interval_s, "n_samples": self._n_samples,
                    "gpus": gpus, "cpu_mhz": _stats(self._cpu_samples),
                    "throttled": any(s["throttled"] for s in gpus.values())}
        except Exception as e:
            self._thread = None
            return {"available": False, "reason": f"telemetry failed: {e}"}

    @contextmanager
    def trial(self) -> Iterator[dict]:
        """Sample while the block runs; the yielded dict is filled with stop()'s summary on exit
        (also when the block raises, whose exception then propagates unchanged)."""
        summary: dict = {}
        self.start()
        try:
            yield summary
        finally:
            summary.update(self.stop())
