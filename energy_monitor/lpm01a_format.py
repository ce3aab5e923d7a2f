"""The LPM01A's number formats and rate limits, shared by the driver and its simulator.

ASCII (UM2269 §4.4.1): one sample is ``DDDD±EE`` = DDDD x 10^(±EE), in A (current output) or
J (energy output): ``6409-07`` = 640.9 uA, ``3333-09`` = 3.333 uJ. Four significant digits.

Binary, ``format bin_hexa`` (UM2269 §4.4.2): two bytes per sample, big-endian; the high nibble
is a negative power of 16 (0x0-0xE), the low 12 bits the mantissa: ``52 A0`` = 0x2A0 / 16^5 =
640.9 uA. Metadata travels in frames ``F0 Fx <payload> FF FF`` between samples; a sample's first
byte never has the high nibble 0xF, so a frame is found wherever one would be. Binary carries
current only (our reading of the manual, which documents no binary energy format; UNVERIFIED).
A normalised 12-bit mantissa (256..4095) rounds a constant current by at most 1/512 (0.2%).

Reference: ``shared/reference/instruments.md`` §1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

SAMPLE_RE = re.compile(r"(\d{4})([+-]\d{2})")
# Whole sample lines, one after another from a line's start: what :func:`parse_sample_lines`
# reads in one go.
SAMPLE_LINES_RE = re.compile(rb"(?:^|(?<=\n))(?:\d{4}[+-]\d{2}\r\n)+")
SAMPLE_LINE_BYTES = 9
_EXACT_POWERS_OF_TEN = np.array([float(10**k) for k in range(23)])

FREQUENCIES_HZ = (100_000, 50_000, 20_000, 10_000, 5_000, 2_000, 1_000, 500, 200, 100, 50, 20,
                  10, 5, 2, 1)
# Rate limits at 3.6864 Mbaud (the firmware's help table). The driver always acquires without
# a time limit, so ascii_dec serves it up to 5 kHz and bin_hexa at every rate (to 100 kHz).
ASCII_UNLIMITED_MAX_HZ = 5_000
ASCII_LIMITED_MAX_S = {10_000: 1.0, 20_000: 0.5}  # ascii_dec above 5 kHz: finite runs only
TIMESTAMP_EVERY = 1000  # samples between two timestamps (TimeStamp line, F3 frame)
# UM2243 §10: dynamic mode measures 100 nA-50 mA; its overcurrent protection acts from 59 mA.
RANGE_MAX_A = 0.050
OVERCURRENT_A = 0.059


def format_sample(value: float) -> str:
    """A non-negative value as ``DDDD±EE`` (four significant digits); a value the format
    cannot hold (NaN, infinite, an exponent beyond two digits) is a ValueError."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be sent as an LPM01A sample")
    if value <= 0:
        return "0000+00"
    exponent = math.floor(math.log10(value)) - 3
    mantissa = round(value / 10.0**exponent)
    if mantissa >= 10000:  # rounding carried into a fifth digit
        mantissa //= 10
        exponent += 1
    if not -99 <= exponent <= 99:
        raise ValueError(f"{value!r} is beyond the range of an LPM01A sample (DDDD±EE)")
    return f"{mantissa:04d}{exponent:+03d}"


def parse_sample_lines(lines: bytes) -> np.ndarray:
    """A run of ``DDDD±EE\\r\\n`` lines (as :data:`SAMPLE_LINES_RE` finds them) as float64,
    each value equal to :func:`parse_sample`'s.

    Without per-line Python work: at 1 kHz and above the ASCII stream is thousands of lines a
    second. The mantissa and 10**EE (EE <= 22) are exact in float64, so one IEEE multiply or
    divide rounds the exact value once, as ``float("DDDDe±EE")`` does; larger exponents (which
    no real reading has) go through :func:`parse_sample`."""
    raw = np.frombuffer(lines, np.uint8).reshape(-1, SAMPLE_LINE_BYTES)
    digits = raw.astype(np.int64) - ord("0")
    mantissa = (digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3])
    exponent = digits[:, 5] * 10 + digits[:, 6]
    if exponent.max() >= len(_EXACT_POWERS_OF_TEN):
        return np.array([parse_sample(line.decode("ascii").strip())
                         for line in lines.splitlines()])
    scale = _EXACT_POWERS_OF_TEN[exponent]
    return np.where(raw[:, 4] == ord("-"), mantissa / scale, mantissa * scale)


def parse_sample(text: str) -> float:
    """``DDDD±EE`` -> float; raises ValueError on anything else."""
    m = SAMPLE_RE.fullmatch(text)
    if not m:
        raise ValueError(f"not an LPM01A sample: {text!r}")
    return float(f"{m.group(1)}e{m.group(2)}")


def format_frequency(hz: float) -> str:
    """The ``freq`` argument: ``100k``, ``1k``, ``500``."""
    if hz >= 1000 and hz % 1000 == 0:
        return f"{int(hz // 1000)}k"
    return f"{int(hz)}"


def parse_number(text: str) -> float:
    """A command argument with an SI suffix (``3300m``, ``100u``, ``1k``) or exponent (``2-3``)."""
    suffixes = {"u": 1e-6, "m": 1e-3, "k": 1e3}
    if text and text[-1] in suffixes:
        return float(text[:-1]) * suffixes[text[-1]]
    m = re.fullmatch(r"(\d+)([+-]\d+)", text)
    if m:
        return float(f"{m.group(1)}e{m.group(2)}")
    return float(text)


# -- bin_hexa samples -------------------------------------------------------------------------

MAX_EXPONENT = 0xE
MANTISSA_MAX = 0xFFF
_SCALE = 16.0 ** -np.arange(16, dtype=np.float64)


def encode_currents(amperes: np.ndarray) -> np.ndarray:
    """Currents (A) as ``uint16`` sample words, with the largest exponent that fits the
    mantissa (the most precise encoding); negative values become 0, huge ones saturate."""
    v = np.clip(np.asarray(amperes, dtype=np.float64), 0.0, None)
    with np.errstate(divide="ignore", over="ignore"):  # 0 and subnormals: the top exponent
        e = np.floor(np.log2(MANTISSA_MAX / v) / 4)
    e = np.clip(np.nan_to_num(e, posinf=MAX_EXPONENT), 0, MAX_EXPONENT).astype(np.int64)
    m = np.rint(v / _SCALE[e])
    over = (m > MANTISSA_MAX) & (e > 0)  # the logarithm rounded up across a power of 16
    e[over] -= 1
    m[over] = np.rint(v[over] / _SCALE[e[over]])
    m = np.minimum(m, MANTISSA_MAX).astype(np.int64)
    return ((e << 12) | m).astype(np.uint16)


def decode_words(words: np.ndarray) -> np.ndarray:
    """Sample words (any integer dtype, already in host order) -> amperes."""
    w = np.asarray(words).astype(np.int64)
    return (w & MANTISSA_MAX) * _SCALE[w >> 12]


# -- bin_hexa metadata frames ----------------------------------------------------------------

F_ERROR = 0xF1  # ASCII text + CRLF
F_INFO = 0xF2  # ASCII text + CRLF; D7 edges as "event NN ris", as in ASCII (UNVERIFIED)
F_TIMESTAMP = 0xF3  # t3 t2 t1 t0 (ms, 31 bits, bit 31 = overflow) buffer%
F_END = 0xF4  # end of acquisition
F_OVERCURRENT = 0xF5  # the GUI's code; the UM's text says F4 (UNVERIFIED)
F_POWER_DOWN = 0xF6  # target power-down
F_VOLTAGE = 0xF7  # mV, 16 bits
F_TEMPERATURE = 0xF8  # signed 16 bits
F_POWER = 0xF9  # target power 0|1
FRAME_START = 0xF0
FRAME_END = b"\xff\xff"
TEXT_FRAMES = (F_ERROR, F_INFO)
PAYLOAD_BYTES = {F_TIMESTAMP: 5, F_END: 0, F_OVERCURRENT: 0, F_POWER_DOWN: 0, F_VOLTAGE: 2,
                 F_TEMPERATURE: 2, F_POWER: 1}
MAX_TEXT_BYTES = 256  # a text frame longer than this is taken as corrupt
TIMESTAMP_OVERFLOW = 0x8000_0000


def frame(kind: int, payload: bytes = b"") -> bytes:
    """One metadata frame as the instrument sends it."""
    return bytes((FRAME_START, kind)) + payload + FRAME_END


def text_frame(kind: int, text: str) -> bytes:
    return frame(kind, f"{text}\r\n".encode("ascii"))


def timestamp_frame(ms: int, buffer_pct: int = 0) -> bytes:
    return frame(F_TIMESTAMP, ms.to_bytes(4, "big") + bytes((buffer_pct,)))


@dataclass(frozen=True)
class Frame:
    """A metadata frame from the stream: its type byte and payload."""

    kind: int
    payload: bytes

    @property
    def text(self) -> str:
        return self.payload.decode("ascii", "replace").strip()

    @property
    def timestamp_ms(self) -> int:
        return int.from_bytes(self.payload[:4], "big") & ~TIMESTAMP_OVERFLOW

    def describe(self) -> str:
        """The frame in words, for the session transcript."""
        value = int.from_bytes(self.payload, "big", signed=self.kind == F_TEMPERATURE)
        return {
            F_ERROR: f"error: {self.text}",
            F_INFO: f"info: {self.text}",
            F_TIMESTAMP: f"timestamp {self.timestamp_ms} ms, buffer {self.payload[-1:].hex()}",
            F_END: "end of acquisition",
            F_OVERCURRENT: "overcurrent",
            F_POWER_DOWN: "target power-down",
            F_VOLTAGE: f"voltage {value} mV",
            F_TEMPERATURE: f"temperature {value}",
            F_POWER: f"target power {'on' if value else 'off'}",
        }[self.kind]


@dataclass(frozen=True)
class Garbled:
    """Bytes that are neither a sample nor a valid frame (the first few, for the message)."""

    data: bytes


Item = np.ndarray | Frame | Garbled

# A timestamp frame is the surest place to find the stream again after garbage.
_RESYNC_RE = re.compile(rb"\xf0\xf3[\x00-\xff]{5}\xff\xff")


def _parse_frame(buf: bytes, pos: int) -> tuple[Frame, int] | Garbled | None:
    """The frame at ``buf[pos]`` and the position after it; ``None`` when it is incomplete."""
    if buf[pos] != FRAME_START:
        return Garbled(buf[pos : pos + 16])
    if len(buf) < pos + 2:
        return None
    kind = buf[pos + 1]
    if kind in TEXT_FRAMES:
        end = buf.find(FRAME_END, pos + 2, pos + 4 + MAX_TEXT_BYTES)
        if end < 0:
            return Garbled(buf[pos : pos + 16]) if len(buf) >= pos + 4 + MAX_TEXT_BYTES else None
        return Frame(kind, buf[pos + 2 : end]), end + 2
    if kind not in PAYLOAD_BYTES:
        return Garbled(buf[pos : pos + 16])
    end = pos + 2 + PAYLOAD_BYTES[kind]
    if len(buf) < end + 2:
        return None
    if buf[end : end + 2] != FRAME_END:
        return Garbled(buf[pos : end + 2])
    return Frame(kind, buf[pos + 2 : end]), end + 2


class BinaryDecoder:
    """Turns a ``bin_hexa`` stream, fed in reads of any size, into sample blocks (amperes) and
    frames in stream order. A sample or frame split across reads waits for its rest.

    After garbage (a :class:`Garbled` item) it resumes at the next timestamp frame. After the
    end-of-acquisition frame it stops; :attr:`remainder` holds the bytes that followed (text).
    """

    def __init__(self) -> None:
        self._buf = b""
        self._resyncing = False
        self.ended = False
        self.remainder = b""

    def feed(self, data: bytes) -> list[Item]:
        buf = self._buf + data
        items: list[Item] = []
        pos = self._resync(buf, 0) if self._resyncing else 0
        if pos is None:
            return items
        arr = np.frombuffer(buf, dtype=np.uint8)
        marks = np.flatnonzero(arr >= FRAME_START)  # frame starts, or low bytes of samples
        by_parity = (marks[marks % 2 == 0], marks[marks % 2 == 1])
        while True:
            candidates = by_parity[pos % 2]  # a frame starts where a sample would
            j = int(np.searchsorted(candidates, pos))
            at = int(candidates[j]) if j < len(candidates) else None
            end = at if at is not None else len(buf) - (len(buf) - pos) % 2
            if end > pos:
                items.append(decode_words(np.frombuffer(buf, ">u2", (end - pos) // 2, pos)))
            pos = end
            if at is None:
                break
            parsed = _parse_frame(buf, pos)
            if parsed is None:
                break
            if isinstance(parsed, Garbled):
                items.append(parsed)
                pos = self._resync(buf, pos + 1)
                if pos is None:
                    return items
                continue
            found, pos = parsed
            items.append(found)
            if found.kind == F_END:
                self.ended = True
                self.remainder = buf[pos:]
                self._buf = b""
                return items
        self._buf = buf[pos:]
        return items

    def _resync(self, buf: bytes, start: int) -> int | None:
        m = _RESYNC_RE.search(buf, start)
        self._resyncing = m is None
        if m is None:
            self._buf = buf[-8:]  # may hold the start of the next timestamp frame
            return None
        return m.start()


def expected_samples(timestamp_ms: int, rate_hz: float) -> tuple[int, int]:
    """How many samples the meter had sent at a binary timestamp, and the tolerance.

    Timestamps follow every 1000th sample (as in ASCII; UNVERIFIED for binary), so a time
    within one millisecond of a 1000-sample boundary is that boundary, exactly, and any loss
    shows; otherwise the count is only known to the timestamp's 1 ms resolution.
    """
    exact = timestamp_ms * rate_hz / 1000
    resolution = max(1, round(rate_hz / 1000))
    boundary = TIMESTAMP_EVERY * round(exact / TIMESTAMP_EVERY)
    if abs(exact - boundary) <= resolution:
        return boundary, 1
    return round(exact), resolution
