"""How busy the GPU was during a training step: utilisation and used memory sampled through NVML
(nvidia-ml-py, through torch's wrappers, which map CUDA_VISIBLE_DEVICES to NVML's indices) by a
background thread, a sample every half second. A CUDA backend offers one (Backend.gpu_monitor);
on a CPU there is none and the step records nothing."""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass

GIB = 1024**3
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuFigures:
    utilisation: float  # mean NVML utilisation over the samples, percent
    memory_gib: float  # the most memory in use on the device at any sample (all processes)

    @classmethod
    def of(cls, samples: list[tuple[float, float]]) -> GpuFigures:
        """From (utilisation percent, used bytes) samples: their mean utilisation, their most memory."""
        return cls(round(sum(u for u, _ in samples) / len(samples), 1), round(max(m for _, m in samples) / GIB, 2))


def nvml_available() -> bool:
    """NVML's Python binding is installed (nvidia-ml-py; checked without importing it)."""
    return importlib.util.find_spec("pynvml") is not None


class GpuMonitor:
    """start() at the start of a step, stop() at its end: the step's figures."""

    def __init__(self, device: int, interval_s: float = 0.5):
        self.device = device
        self.interval_s = interval_s
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> tuple[float, float]:
        """(utilisation percent, used bytes) now."""
        import torch

        return float(torch.cuda.utilization(self.device)), float(torch.cuda.device_memory_used(self.device))

    def start(self) -> None:
        self.halt()
        self._samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> GpuFigures:
        self.halt()
        return GpuFigures.of(self._samples or [self.sample()])

    def halt(self) -> None:
        """Stop sampling (no figures: a step that did not finish)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._samples.append(self.sample())
            except Exception as err:  # noqa: BLE001 - NVML gone (a driver reset): the step goes on unsampled
                log.warning("GPU monitor stopped: %s", err)
                return
            self._stop.wait(self.interval_s)
