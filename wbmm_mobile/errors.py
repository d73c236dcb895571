"""Every exception wbmm-mobile raises on purpose, in one place.

Each error also inherits the matching built-in (``FileNotFoundError``,
``ValueError``, ``RuntimeError``, ``ConnectionError`` ...) so callers that only
know the built-ins still catch them. The CLI turns them into one-line messages
through the ordered table in ``wbmm_mobile/cli/_errors.py``.

Packages add their own subclasses here rather than in private modules, so that
``__all__`` below is the complete list a user can catch.
"""

from __future__ import annotations

__all__ = [
    "WbmmError",
    "InvalidWindowError",
    "ModelNotFoundError",
    "CorruptModelError",
    "UnsupportedLayerError",
    "UnsupportedModelError",
    "ConversionError",
    "VerificationError",
    "DelegateError",
    "DelegateNotBuiltError",
    "DeviceError",
    "DeviceNotFoundError",
    "DeviceGoneError",
    "DeviceUnauthorizedError",
    "DeviceCommandError",
    "DeviceNoSpaceError",
    "AdbProtocolError",
    "DeviceTimeoutError",
    "BenchmarkError",
    "BenchmarkOutputError",
    "BenchmarkFailedError",
    "BenchmarkFlagsIgnoredError",
    "ResultsFileError",
    "StrategyTableError",
    "PowerMeasurementError",
    "NpuExtraMissingError",
    "NpuSetupError",
]


class WbmmError(Exception):
    """Base class of every error wbmm-mobile raises on purpose."""


class InvalidWindowError(WbmmError, ValueError):
    """A window, table or kernel shape that does not fit the WBMM operator."""


class ModelNotFoundError(WbmmError, FileNotFoundError):
    """A model file (.keras, .tflite) that does not exist."""


class CorruptModelError(WbmmError, ValueError):
    """A file that exists but cannot be read as the model format it claims to be."""


class UnsupportedLayerError(WbmmError, ValueError):
    """A layer or op the converter cannot handle (named in the message)."""


class UnsupportedModelError(WbmmError, ValueError):
    """A model-level property the tool cannot handle (dynamic shapes, dtype, ...)."""


class IncompatibleOptionsError(WbmmError, ValueError):
    """Options that contradict each other or the target (e.g. float islands for an integer-only NPU)."""


class ConversionError(WbmmError, RuntimeError):
    """The TFLite converter or a rewrite failed."""


class VerificationError(WbmmError, AssertionError):
    """A converted or rewritten model disagrees with the original past the tolerance."""


class DelegateError(WbmmError, RuntimeError):
    """The C++ delegate failed to load or refused to attach."""


class DelegateNotBuiltError(DelegateError, FileNotFoundError):
    """libwbmm_delegate.so was not found (build it with `make delegate`)."""


class DeviceError(WbmmError, ConnectionError):
    """Base class of the errors talking to an Android device."""


class DeviceNotFoundError(DeviceError):
    """No device with that serial, or no device at all."""


class DeviceGoneError(DeviceError):
    """The device disconnected or stopped answering in time."""


class DeviceUnauthorizedError(DeviceError):
    """The device refused our ADB key: accept the prompt on the phone."""


class DeviceCommandError(DeviceError):
    """A command on the device exited non-zero; carries its exit code and stderr."""

    def __init__(self, message: str, exit_code: int | None = None, stderr: str = ""):
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr = stderr


class DeviceNoSpaceError(DeviceError):
    """The device has no space left for a push."""


class AdbProtocolError(DeviceError):
    """A peer broke the ADB wire protocol (bad magic, checksum, length ...)."""


class DeviceTimeoutError(DeviceError, TimeoutError):
    """A device command or transfer did not finish within its timeout (the device still answers)."""


class BenchmarkError(WbmmError, RuntimeError):
    """A benchmark run failed; carries the runner's own words."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output


class BenchmarkOutputError(BenchmarkError):
    """benchmark_model printed something we cannot parse."""


class BenchmarkFailedError(BenchmarkError):
    """benchmark_model said "Benchmarking failed." (or the runner exited non-zero); carries its words."""


class BenchmarkFlagsIgnoredError(BenchmarkError):
    """benchmark_model ignored flags ("Unconsumed cmdline flags"): it measured another configuration."""

    def __init__(self, message: str, output: str = "", flags: str = ""):
        super().__init__(message, output)
        self.flags = flags


class ResultsFileError(WbmmError, ValueError):
    """A results file (JSON lines) that cannot be read: names the file and the line."""


class PowerMeasurementError(WbmmError, RuntimeError):
    """Battery/rail readings that cannot give an energy figure (charging, unreadable, too few samples)."""


class StrategyTableError(WbmmError, ValueError):
    """A strategy table that cannot be used: unreadable, another format or version, or measured on
    another device, target or thread count than asked (the message says which)."""


class NpuExtraMissingError(WbmmError, ImportError):
    """An NPU check needs the optional ``npu`` extra (its compilers), which is not installed."""


class NpuSetupError(WbmmError, RuntimeError):
    """The NPU compilers are installed but cannot be made to run here (no C compiler, a library missing)."""
