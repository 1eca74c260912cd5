"""GPU telemetry against a fake pynvml module: summaries, throttle flags, device mapping, the CPU
frequency readers, and every way NVML can be missing (never an error)."""

from __future__ import annotations

import sys
import threading
import types
from collections import Counter

import pytest

from specsweep.records import telemetry
from specsweep.records.telemetry import Telemetry, cpu_mhz_reader, nvml_targets, reason_names

SLOW = 3600.0  # an interval the thread never reaches in a test: exactly the start and stop samples


class FakeNvml(types.ModuleType):
    """The parts of pynvml telemetry uses; each reading returns the next value of its script."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0
    NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_FUNCTION_NOT_FOUND, NVML_ERROR_LIBRARY_NOT_FOUND = 3, 13, 12
    # the bits as pynvml defines them
    nvmlClocksEventReasonGpuIdle = 0x1
    nvmlClocksEventReasonApplicationsClocksSetting = 0x2
    nvmlClocksEventReasonSwPowerCap = 0x4
    nvmlClocksEventReasonHwSlowdown = 0x8
    nvmlClocksEventReasonSyncBoost = 0x10
    nvmlClocksEventReasonSwThermalSlowdown = 0x20
    nvmlClocksEventReasonHwThermalSlowdown = 0x40
    nvmlClocksEventReasonHwPowerBrakeSlowdown = 0x80
    nvmlClocksEventReasonDisplayClockSetting = 0x100
    nvmlClocksThrottleReasonBoardLimit = 0x200
    nvmlClocksThrottleReasonReliability = 0x400

    class NVMLError(Exception):
        def __init__(self, value):
            super().__init__(f"NVML error {value}")
            self.value = value

    def __init__(self, **scripts):
        super().__init__("pynvml")
        self.calls: Counter = Counter()
        self.handles: list = []
        self.scripts = {"sm": [1980], "mem": [2619], "power_mw": [300000], "temp": [40], "util": [100],
                        "reasons": [0]} | scripts
        self.init_error = None
        self.event_reasons_missing = False
        self.sampled = threading.Event()

    def _next(self, key):
        self.calls[key] += 1
        if self.calls["sm"] >= 5:
            self.sampled.set()
        script = self.scripts[key]
        value = script[(self.calls[key] - 1) % len(script)]
        if isinstance(value, Exception):
            raise value
        return value

    def nvmlInit(self):
        self.calls["init"] += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self):
        self.calls["shutdown"] += 1

    def nvmlDeviceGetHandleByIndex(self, i):
        self.handles.append(("index", i))
        return ("handle", i)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.handles.append(("uuid", uuid))
        return ("handle", uuid)

    def nvmlDeviceGetClockInfo(self, handle, kind):
        return self._next("sm" if kind == self.NVML_CLOCK_SM else "mem")

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._next("power_mw")

    def nvmlDeviceGetTemperatureV(self, handle, sensor):  # a driver older than the binding
        self.calls["temperature_v"] += 1
        raise self.NVMLError(self.NVML_ERROR_FUNCTION_NOT_FOUND)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return self._next("temp")

    def nvmlDeviceGetUtilizationRates(self, handle):
        return types.SimpleNamespace(gpu=self._next("util"), memory=0)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        self.calls["event_reasons"] += 1
        if self.event_reasons_missing:
            raise self.NVMLError(self.NVML_ERROR_FUNCTION_NOT_FOUND)
        return self._next("reasons")

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return self._next("reasons")


@pytest.fixture
def fake(monkeypatch):
    """Install a FakeNvml as `pynvml`, with a fresh per-process NVML state."""
    module = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.setattr(telemetry, "_nvml", None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    registered = []
    monkeypatch.setattr(telemetry.atexit, "register", lambda fn, *a: registered.append((fn, a)))
    module.registered = registered
    return module


def run_trial(tel: Telemetry) -> dict:
    with tel.trial() as summary:
        pass
    return summary


def test_summary_statistics_over_start_and_stop_samples(fake, tmp_path):
    fake.scripts |= {"sm": [1980, 1500], "mem": [2619, 2619], "power_mw": [350500, 120000],
                     "temp": [41, 45], "util": [100, 60]}
    s = run_trial(Telemetry([0], interval_s=SLOW, cpu_root=str(tmp_path)))
    assert s["available"] and s["n_samples"] == 2 and s["interval_s"] == SLOW
    g = s["gpus"]["0"]
    assert g["sm_mhz"] == {"min": 1500, "mean": 1740, "max": 1980}
    assert g["mem_mhz"] == {"min": 2619, "mean": 2619, "max": 2619}
    assert g["power_w"] == {"min": 120.0, "mean": 235.25, "max": 350.5}
    assert g["temp_c"] == {"min": 41, "mean": 43, "max": 45}
    assert g["util_pct"] == {"min": 60, "mean": 80, "max": 100}
    assert g["throttle_reasons"] == [] and g["throttled"] is False and s["throttled"] is False
    assert s["cpu_mhz"] is None  # an empty root: no frequency anywhere
    assert fake.calls["temperature_v"] == 1  # missing in the driver: dropped after the first try


def test_throttle_flagging(fake):
    fake.scripts["reasons"] = [0x1, 0x4]  # idle, then the software power cap
    s = run_trial(Telemetry([0], interval_s=SLOW))
    g = s["gpus"]["0"]
    assert g["throttle_reasons"] == ["gpu_idle", "sw_power_cap"]
    assert g["throttled"] is True and g["throttled_fraction"] == 0.5 and s["throttled"] is True


@pytest.mark.parametrize("mask, throttled", [(0x1 | 0x2 | 0x10 | 0x100, False), (0x8, True), (0x20, True),
                                             (0x40, True), (0x80, True), (0x200, True), (0x400, True),
                                             (0x800, False)])
def test_which_reasons_count_as_throttling(fake, mask, throttled):
    fake.scripts["reasons"] = [mask]
    s = run_trial(Telemetry([0], interval_s=SLOW))
    assert s["gpus"]["0"]["throttled"] is throttled and s["throttled"] is throttled
    assert s["gpus"]["0"]["throttle_reasons"] == reason_names(mask, fake)


def test_reason_names():
    assert reason_names(0x1 | 0x4 | 0x1000, FakeNvml()) == ["gpu_idle", "sw_power_cap", "0x1000"]
    assert reason_names(0, FakeNvml()) == []


def test_falls_back_to_the_throttle_reasons_call(fake):
    fake.event_reasons_missing = True
    fake.scripts["reasons"] = [0x40]
    s = run_trial(Telemetry([0], interval_s=SLOW))
    assert s["gpus"]["0"]["throttle_reasons"] == ["hw_thermal_slowdown"]
    assert fake.calls["event_reasons"] == 1


def test_an_unsupported_metric_is_none_and_not_asked_again(fake):
    fake.scripts["power_mw"] = [FakeNvml.NVMLError(FakeNvml.NVML_ERROR_NOT_SUPPORTED)]
    tel = Telemetry([0], interval_s=SLOW)
    s1, s2 = run_trial(tel), run_trial(tel)
    assert s1["gpus"]["0"]["power_w"] is None and s2["gpus"]["0"]["power_w"] is None
    assert s1["gpus"]["0"]["sm_mhz"] is not None
    assert fake.calls["power_mw"] == 1


def test_a_failing_call_reads_none_for_that_sample_only(fake):
    fake.scripts["sm"] = [RuntimeError("transient"), 1800]
    s = run_trial(Telemetry([0], interval_s=SLOW))
    assert s["gpus"]["0"]["sm_mhz"] == {"min": 1800, "mean": 1800, "max": 1800}


def test_several_gpus_keyed_by_cuda_index(fake):
    s = run_trial(Telemetry([1, 0, 1], interval_s=SLOW))
    assert list(s["gpus"]) == ["1", "0"]
    assert fake.handles == [("index", 1), ("index", 0)]


def test_cuda_visible_devices_maps_to_nvml(fake, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 1")
    s = run_trial(Telemetry([0, 1], interval_s=SLOW))
    assert s["available"] and fake.handles == [("index", 3), ("index", 1)]
    assert nvml_targets([0, 1], {"CUDA_VISIBLE_DEVICES": "GPU-abc,2"}) == [("uuid", "GPU-abc"), ("index", 2)]
    assert nvml_targets([0], {}) == [("index", 0)]
    assert "not among" in nvml_targets([2], {"CUDA_VISIBLE_DEVICES": "0,1"})
    assert "not among" in nvml_targets([0], {"CUDA_VISIBLE_DEVICES": ""})
    assert "MIG-x" in nvml_targets([0], {"CUDA_VISIBLE_DEVICES": "MIG-x"})


def test_an_unmappable_device_is_unavailable(fake, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    s = run_trial(Telemetry([1], interval_s=SLOW))
    assert s == {"available": False, "reason": "GPU 1 is not among CUDA_VISIBLE_DEVICES='0'"}


def test_nvml_initialised_once_and_shut_down_at_exit(fake):
    run_trial(Telemetry([0], interval_s=SLOW))
    run_trial(Telemetry([0], interval_s=SLOW))
    assert fake.calls["init"] == 1
    assert len(fake.registered) == 1
    fn, args = fake.registered[0]
    fn(*args)
    assert fake.calls["shutdown"] == 1


def test_no_gpus_is_unavailable_and_leaves_nvml_alone(fake):
    tel = Telemetry([])
    assert run_trial(tel) == {"available": False, "reason": "no GPUs (a CPU run)"}
    assert tel.stop() == {"available": False, "reason": "no GPUs (a CPU run)"}
    assert fake.calls["init"] == 0


def test_missing_nvidia_ml_py_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    monkeypatch.setattr(telemetry, "_nvml", None)
    assert run_trial(Telemetry([0])) == {"available": False, "reason": "nvidia-ml-py is not installed"}


def test_nvml_init_error_is_unavailable_and_not_retried(fake):
    fake.init_error = FakeNvml.NVMLError(FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    s = run_trial(Telemetry([0]))
    assert s == {"available": False, "reason": "NVML init failed: NVML error 12"}
    assert run_trial(Telemetry([0]))["available"] is False
    assert fake.calls["init"] == 1 and fake.registered == []


def test_no_handle_is_unavailable(fake):
    def no_such_gpu(i):
        raise FakeNvml.NVMLError(2)
    fake.nvmlDeviceGetHandleByIndex = no_such_gpu
    s = run_trial(Telemetry([5]))
    assert s["available"] is False and "no NVML handle for GPUs [5]" in s["reason"]


def test_stop_without_start():
    assert Telemetry([0]).stop() == {"available": False, "reason": "telemetry was not started"}


def test_the_thread_samples_stops_and_never_raises(fake, monkeypatch):
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args))

    def broken_cpu_reader(root):
        def read():
            raise OSError("cpufreq went away")
        return read
    monkeypatch.setattr(telemetry, "cpu_mhz_reader", broken_cpu_reader)
    # every reading but the SM clock fails in some way, including ways NVML never would
    fake.scripts |= {"mem": [ValueError("odd")], "power_mw": [ZeroDivisionError()], "util": [KeyError("x")]}
    tel = Telemetry([0], interval_s=0.001)
    tel.start()
    thread = tel._thread
    assert fake.sampled.wait(timeout=60)  # the background thread has sampled (no timing asserted)
    s = tel.stop()
    assert not thread.is_alive() and tel._thread is None
    assert s["available"] and s["n_samples"] >= 5
    assert s["gpus"]["0"]["sm_mhz"] is not None
    assert s["gpus"]["0"]["mem_mhz"] is None and s["gpus"]["0"]["power_w"] is None
    assert s["cpu_mhz"] is None
    assert errors == []


def test_a_trial_that_raises_still_gets_its_summary(fake):
    tel = Telemetry([0], interval_s=SLOW)
    with pytest.raises(RuntimeError, match="trial failed"):
        with tel.trial() as summary:
            raise RuntimeError("trial failed")
    assert summary["available"] and summary["n_samples"] == 2 and tel._thread is None


# --- host CPU frequency --------------------------------------------------------------------------

def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cpu_mhz_from_sysfs(tmp_path):
    write(tmp_path / "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "2400000\n")
    write(tmp_path / "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq", "3000000\n")
    write(tmp_path / "sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq", "999\n")  # not a core
    write(tmp_path / "proc/cpuinfo", "cpu MHz\t\t: 1.0\n")  # sysfs wins
    assert cpu_mhz_reader(str(tmp_path))() == [2400.0, 3000.0]


def test_cpu_mhz_from_proc_cpuinfo(tmp_path):
    write(tmp_path / "proc/cpuinfo", "processor\t: 0\ncpu MHz\t\t: 1200.500\nflags\t\t: fpu\n\n"
                                     "processor\t: 1\ncpu MHz\t\t: 3500.000\n")
    assert cpu_mhz_reader(str(tmp_path))() == [1200.5, 3500.0]


def test_cpu_mhz_absent(tmp_path):
    write(tmp_path / "proc/cpuinfo", "processor\t: 0\nmodel name\t: some ARM core\n")
    assert cpu_mhz_reader(str(tmp_path)) is None


def test_cpu_mhz_in_the_summary(fake, tmp_path):
    write(tmp_path / "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "2400000\n")
    write(tmp_path / "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq", "3000000\n")
    s = run_trial(Telemetry([0], interval_s=SLOW, cpu_root=str(tmp_path)))
    assert s["cpu_mhz"] == {"min": 2400.0, "mean": 2700.0, "max": 3000.0}
