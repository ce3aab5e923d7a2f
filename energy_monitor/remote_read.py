"""Raw readings from Prometheus' remote-read API, decoded from the TSDB's own XOR chunks.

Why: a fleet's hour of 1 s readings is tens of millions of samples. Over the JSON API the
server formats each one as text and we parse it back; remote read with the streamed response
type sends the chunks exactly as the TSDB stores them (about 1-2 bytes per timestamp and a
few bytes per value), so the server does almost no work and the client decodes compact binary.
The decoder works on all chunks of a batch at once, one sample index at a time, each step a
handful of numpy operations across every chunk ("lockstep"), because a Python loop per sample
would be 100 times slower.

The wire format, checked against Prometheus' sources:

- Request (``prompb/remote.proto``): ``ReadRequest{repeated Query queries = 1; repeated
  ResponseType accepted_response_types = 2}``, ``Query{int64 start_timestamp_ms = 1; int64
  end_timestamp_ms = 2; repeated LabelMatcher matchers = 3}``, and from ``prompb/types.proto``
  ``LabelMatcher{Type type = 1; string name = 2; string value = 3}`` with ``EQ = 0, NEQ = 1,
  RE = 2, NRE = 3``. ``STREAMED_XOR_CHUNKS = 1``: "Server will stream a delimited
  ChunkedReadResponse message that contains XOR ... encoded chunks". The body is snappy
  block-compressed; a block made only of literals is valid snappy, so no codec is needed.
- Response: ``storage/remote/chunked.go`` ``ChunkedWriter.Write``: "Each frame includes: 1.
  uvarint for the size of the data frame. 2. big-endian uint32 for the Castagnoli polynomial
  CRC-32 checksum of the data frame. 3. the bytes of the given data." Each frame is a
  ``ChunkedReadResponse{repeated ChunkedSeries chunked_series = 1; int64 query_index = 2}``,
  ``ChunkedSeries{repeated Label labels = 1; repeated Chunk chunks = 2}``, ``Chunk{int64
  min_time_ms = 1; int64 max_time_ms = 2; Encoding type = 3 (XOR = 1); bytes data = 4}``.
  "A single frame can contain partition of the single series, but once a new series is
  started to be streamed it means that no more chunks will be sent for previous one."
- XOR chunk (``tsdb/chunkenc/xor.go``): 2 bytes big-endian sample count, then a bit stream.
  Sample 0: ``binary.PutVarint(t)`` then ``writeBits(math.Float64bits(v), 64)``; sample 1:
  ``binary.PutUvarint(tDelta)`` then ``writeVDelta``; later samples: delta of delta ``dod``
  written as ``0`` (dod 0), ``10`` + 14 bits, ``110`` + 17, ``1110`` + 20, ``1111`` + 64, and
  read back with "if bits > (1 << (sz - 1)) { bits -= 1 << sz }". ``writeVDelta``: ``0`` when
  the value repeats, else ``1`` then ``0`` + the XOR's bits inside the previous
  leading/trailing window, or ``1`` + 5 bits leading + 6 bits significant ("if leading ==
  trailing == 0, then sigbits == 64 ... we write out a 0 and adjust it back to 64") + bits.

The frames' CRC32C is not checked: the standard library has no Castagnoli CRC and a pure
Python one would cost more than the whole read. Instead each chunk is checked where a damaged
or cut stream shows: the frame and message lengths must fit, every chunk must be XOR, and the
decoded bits of each chunk must end in its last byte. A damaged byte inside a chunk's values
that keeps its length would pass; TCP's checksum guards the loopback or network hop.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np

from energy_monitor.series_batch import search_segments

STREAMED_TYPE = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
MATCH_EQ, MATCH_NEQ, MATCH_RE, MATCH_NRE = 0, 1, 2, 3  # prompb LabelMatcher.Type
STREAMED_XOR_CHUNKS = 1  # prompb ReadRequest.ResponseType
XOR_ENCODING = 1  # prompb Chunk.Encoding
GROUP = 4096  # chunks decoded together (see decode_chunks)
_PAD = 16  # zero bytes after the stream so varint reads near its end stay in bounds


class RemoteReadError(ValueError):
    """The stream is damaged or not what Prometheus sends; the message says where."""


class RemoteReadRefused(RuntimeError):
    """The server does not serve remote read (or not the streamed type): use the JSON API."""


# --- protobuf and snappy, the little we need ---------------------------------------------------


def encode_uvarint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer (int64 fields: two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(data):
            raise RemoteReadError("a varint runs past the end of the stream (truncated)")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise RemoteReadError("a varint is longer than 10 bytes (damaged stream)")


def _field(number: int, payload: bytes) -> bytes:
    return encode_uvarint(number << 3 | 2) + encode_uvarint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return encode_uvarint(number << 3) + encode_uvarint(value)


def read_request(start_ms: int, end_ms: int, matchers: list[tuple[int, str, str]]) -> bytes:
    """A serialized ``ReadRequest`` with one query, asking for streamed XOR chunks."""
    query = _int_field(1, start_ms) + _int_field(2, end_ms) + b"".join(
        _field(3, _int_field(1, kind) + _field(2, name.encode()) + _field(3, value.encode()))
        for kind, name, value in matchers
    )
    return _field(1, query) + _field(2, encode_uvarint(STREAMED_XOR_CHUNKS))  # packed enum


def snappy_literal_block(data: bytes) -> bytes:
    """``data`` as a valid snappy block made of literals only (no compression).

    The block format (google/snappy format_description.txt): the uncompressed length as a
    varint, then elements whose tag byte's low bits ``00`` mean a literal: "For literals up to
    and including 60 bytes in length, the upper six bits of the tag byte contain (len-1) ...
    For longer literals, the (len-1) value is stored after the tag byte, little-endian. The
    upper six bits of the tag byte describe how many bytes are used for the length; 60, 61, 62
    or 63 for 1-4 bytes, respectively." Requests are a few kB: compressing them gains nothing.
    """
    out = bytearray(encode_uvarint(len(data)))
    for at in range(0, len(data), 1 << 16):
        piece = data[at:at + (1 << 16)]
        n = len(piece) - 1
        if n < 60:
            out.append(n << 2)
        else:
            size = (n.bit_length() + 7) // 8
            out.append((59 + size) << 2)
            out += n.to_bytes(size, "little")
        out += piece
    return bytes(out)


# --- the HTTP exchange -------------------------------------------------------------------------


def post_read(url: str, body: bytes, timeout_s: float) -> bytes:
    """POST a ``ReadRequest`` to ``url``/api/v1/read and return the streamed answer.

    Raises :class:`RemoteReadRefused` when the server answers anything but the streamed
    chunk type (no such endpoint, remote read disabled behind a proxy, an old server), so the
    caller can fall back to the JSON API; network failures propagate as ``OSError``.
    """
    request = urllib.request.Request(
        url + "/api/v1/read", data=snappy_literal_block(body),
        headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                 "X-Prometheus-Remote-Read-Version": "0.1.0"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            kind = reply.headers.get("Content-Type", "")
            if not kind.startswith("application/x-streamed-protobuf"):
                raise RemoteReadRefused(f"remote read answered {kind!r}, not {STREAMED_TYPE!r}")
            return reply.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace").strip()
        raise RemoteReadRefused(f"remote read refused (HTTP {exc.code}): {detail}") from None


# --- the stream: frames, series, chunks --------------------------------------------------------


@dataclass
class StreamChunks:
    """Where each series' chunks lie in the stream (``starts``/``ends`` are byte offsets of
    each chunk's data, in stream order; a series' chunks are consecutive)."""

    labels: list[dict[str, str]]  # per series
    first_chunk: np.ndarray  # per series: index of its first chunk; plus the total at the end
    starts: np.ndarray
    ends: np.ndarray


def split_stream(body: bytes) -> StreamChunks:
    """Cut a streamed answer into series and chunk data offsets (nothing decoded yet).

    Only the walk from message to message is a Python loop (each length says where the next
    begins); the fields inside the chunk messages are read for all chunks at once.
    """
    labels: list[dict[str, str]] = []
    first: list[int] = []
    messages: list[int] = []  # start and end of each Chunk message, flat
    last_key: tuple[tuple[str, str], ...] | None = None
    pos = 0
    while pos < len(body):
        size, pos = read_uvarint(body, pos)
        frame_end = pos + 4 + size  # 4 bytes of CRC32C (not checked; see the module doc)
        if frame_end > len(body):
            raise RemoteReadError(f"a frame of {size} bytes at byte {pos} runs past the end "
                                  f"of the {len(body)}-byte answer (truncated)")
        pos += 4
        while pos < frame_end:
            tag, pos = read_uvarint(body, pos)
            if tag == 0x10:  # query_index
                _, pos = read_uvarint(body, pos)
                continue
            if tag != 0x0A:
                raise RemoteReadError(f"unexpected field tag {tag} in a frame at byte {pos}")
            length, pos = read_uvarint(body, pos)
            series_end = pos + length
            if series_end > frame_end:
                raise RemoteReadError(f"a series at byte {pos} runs past its frame (damaged)")
            before = len(messages) // 2
            try:
                key = _series(body, pos, series_end, messages)
            except (IndexError, UnicodeDecodeError):
                raise RemoteReadError(f"a series at byte {pos} is damaged") from None
            pos = series_end
            if key != last_key:  # a series split over frames continues; a new one starts
                labels.append(dict(key))
                first.append(before)
                last_key = key
        if pos != frame_end:
            raise RemoteReadError(f"a frame ends at byte {pos}, not {frame_end} (damaged)")
    bounds = np.array(messages, dtype=np.int64).reshape(-1, 2)
    starts, ends = _chunk_data(np.frombuffer(body + bytes(_PAD), dtype=np.uint8),
                               bounds[:, 0], bounds[:, 1])
    return StreamChunks(labels, np.array(first + [len(bounds)], dtype=np.int64), starts, ends)


def _series(body: bytes, pos: int, end: int, messages: list[int]) -> tuple[tuple[str, str], ...]:
    """Read one ``ChunkedSeries``: its labels, and append where its Chunk messages lie."""
    pairs: list[tuple[str, str]] = []
    while pos < end:
        tag = body[pos]
        length = body[pos + 1]
        if length < 0x80:
            pos += 2
        else:
            length, pos = read_uvarint(body, pos + 1)
        stop = pos + length
        if tag == 0x12:  # a Chunk
            messages += (pos, stop)
        elif tag == 0x0A:  # a Label: name = 1, value = 2
            name, value, at = "", "", pos
            while at < stop:
                ftag = body[at]
                size, at = read_uvarint(body, at + 1)
                text = body[at:at + size].decode()
                at += size
                if ftag == 0x0A:
                    name = text
                elif ftag == 0x12:
                    value = text
            pairs.append((name, value))
        else:
            raise RemoteReadError(f"unexpected series field tag {tag} at byte {pos}")
        pos = stop
    if pos != end:
        raise RemoteReadError(f"a field at byte {pos} runs past its series (damaged)")
    return tuple(pairs)


def _varints(buf: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The varints at byte offsets ``at`` of ``buf``: values (uint64) and lengths."""
    raw = buf.take(at[:, None] + np.arange(10), mode="clip")
    more = raw >= 0x80
    used = np.ones(raw.shape, dtype=bool)
    used[:, 1:] = np.logical_and.accumulate(more[:, :-1], axis=1)
    if np.any(used[:, -1] & more[:, -1]):
        raise RemoteReadError("a varint is longer than 10 bytes (damaged stream)")
    parts = (raw & 0x7F).astype(np.uint64) << (7 * np.arange(10, dtype=np.uint64))
    return np.bitwise_or.reduce(np.where(used, parts, 0), axis=1), used.sum(axis=1)


def _chunk_data(buf: np.ndarray, begin: np.ndarray, end: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Where the data of each Chunk message ``buf[begin:end]`` lie, checking that each is a
    whole XOR chunk. Fields come in number order (min_time_ms = 1, max_time_ms = 2, type = 3,
    data = 4); proto3 leaves out a field that holds zero."""
    at = begin.copy()
    kind = np.zeros(len(at), dtype=np.uint64)
    for tag in (0x08, 0x10, 0x18):
        here = buf.take(at, mode="clip") == tag
        value, size = _varints(buf, at + 1)
        at += np.where(here, 1 + size, 0)
        if tag == 0x18:
            kind = np.where(here, value, 0)
    size, length = _varints(buf, at + 1)
    starts = at + 1 + length
    ends = starts + size.astype(np.int64)
    bad = (buf.take(at, mode="clip") != 0x22) | (ends != end) | (kind != XOR_ENCODING) \
        | (size < 2)
    if np.any(bad):
        k = int(np.argmax(bad))
        raise RemoteReadError(
            f"{int(np.count_nonzero(bad))} chunk(s), the first at byte {begin[k]}, are not "
            "whole XOR chunks (another encoding, or a damaged stream): only float samples "
            "can be read")
    return starts, ends


# --- XOR chunks, all at once -------------------------------------------------------------------


def _timestamp_table() -> np.ndarray:
    """Per 4-bit prefix of a delta-of-delta: its length, the shift that brings its value
    down, the sign fold (values above ``2**(sz-1)`` are negative) and the bits used."""
    table = np.zeros(16, dtype=[("plen", "u8"), ("sh", "u8"), ("c", "i8"), ("m", "i8"),
                                ("cons", "i8")])
    for p in range(16):
        plen, sz = ((1, 0) if p < 8 else (2, 14) if p < 12 else (3, 17) if p < 14
                    else (4, 20) if p == 14 else (4, 0))  # 1111 + 64 bits: done apart
        half = (1 << (sz - 1)) - 1 if sz else 0
        table[p] = (plen, 64 - sz, half, (1 << sz) - 1, plen + sz)
    return table


def _value_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per 13-bit head of a value field: bits used, whether it sets a new window and which,
    and whether the value changes; per window (leading * 65 + significant bits): the shift
    and mask that place the significant bits, and their count."""
    head = np.zeros(1 << 13, dtype=[("cons", "i8"), ("set", "?"), ("wi", "i8"),
                                    ("keep", "i8")])
    for c in range(1 << 13):
        if c >> 12 == 0:
            head[c] = (1, False, 0, 0)  # 0: the value repeats
        elif c >> 11 == 0b10:
            head[c] = (2, False, 0, 1)  # 10: reuse the window
        else:
            lead, sig = (c >> 6) & 31, c & 63
            head[c] = (13, True, lead * 65 + (sig or 64), 1)
    window = np.zeros(32 * 65, dtype=[("lead", "u8"), ("win", "u8"), ("mb", "i8")])
    for lead in range(32):
        for mb in range(1, 65):
            trail = 64 - lead - mb
            if trail >= 0:  # else a damaged stream; left empty, caught by the length check
                window[lead * 65 + mb] = (lead, ((1 << mb) - 1) << trail, mb)
    return head, window


_TS = _timestamp_table()
_HEAD, _WINDOW = _value_tables()


@dataclass
class Decoded:
    """Samples of a set of chunks, concatenated in chunk order."""

    time_ms: np.ndarray  # int64
    value: np.ndarray  # float64
    counts: np.ndarray  # samples per chunk


class _Bits:
    """Big-endian reads of 64 bits at any bit position of a byte buffer."""

    def __init__(self, body: bytes | bytearray) -> None:
        self.buf = np.frombuffer(bytes(body) + bytes(_PAD), dtype=np.uint8)
        # The buffer as aligned big-endian words, converted once: a read at bit p is two
        # neighbouring words shifted together, from a contiguous array (a fast gather).
        self.words = self.buf[:len(self.buf) // 8 * 8].view(">u8").astype(np.uint64)
        self.next_words = self.words[1:]  # word q + 1 at index q, without adding 1

    def read64(self, pos: np.ndarray) -> np.ndarray:
        """The 64 bits from bit ``pos`` on (positions past the end read the last words: a
        damaged chunk then fails the length check instead of reading out of bounds)."""
        q = pos >> 6
        s = (pos & 63).view(np.uint64)
        x = self.words.take(q, mode="clip")
        y = self.next_words.take(q, mode="clip")
        x <<= s
        y >>= 64 - s  # numpy shifts by 64 give 0: s == 0 keeps x alone
        x |= y
        return x


def decode_chunks(body: bytes | bytearray, starts: np.ndarray, ends: np.ndarray) -> Decoded:
    """Decode the XOR chunks whose data lie at ``body[starts[i]:ends[i]]``.

    Chunks are decoded in groups of :data:`GROUP` neighbours: a step reads one cache line per
    chunk, and a group's lines stay in the core's cache between steps (all chunks of a large
    answer at once would read from main memory at every step, about twice as slow).
    """
    bits = _Bits(body)
    parts = [_decode_group(bits, starts[at:at + GROUP], ends[at:at + GROUP])
             for at in range(0, len(starts), GROUP)]
    if not parts:
        return Decoded(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))
    return Decoded(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def _decode_group(bits: _Bits, starts: np.ndarray, ends: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times, values (concatenated in chunk order) and sample counts of some chunks.

    Chunks are sorted by sample count so the ones still decoding at step ``k`` are a prefix:
    every step works on array views, never on a mask.
    """
    counts = (bits.buf[starts].astype(np.int64) << 8) | bits.buf[starts + 1]
    n = len(starts)
    order = np.argsort(-counts, kind="stable")
    sorted_counts = counts[order]
    width = int(sorted_counts[0]) if n else 0
    active = n - np.searchsorted(sorted_counts[::-1], np.arange(width), side="right")
    # Sample k of every chunk is a row: each step writes contiguous memory.
    t_out = np.zeros((width, n), dtype=np.int64)
    v_out = np.zeros((width, n), dtype=np.uint64)
    begin = starts[order] + 2
    # Per-chunk state, full length; step k works on views of the first active[k] entries.
    pos = np.zeros(n, dtype=np.int64)
    t = np.zeros(n, dtype=np.int64)
    td = np.zeros(n, dtype=np.int64)
    v = np.zeros(n, dtype=np.uint64)
    wi = np.full(n, 64, dtype=np.int64)  # no leading zeros, 64 significant bits
    if width:
        # Sample 0: a zigzag varint time and the value's 64 bits, byte-aligned.
        raw, size = _varints(bits.buf, begin)
        t[:] = (raw >> np.uint64(1)).astype(np.int64) ^ -(raw & np.uint64(1)).astype(np.int64)
        pos[:] = (begin + size) * 8
        v[:] = bits.read64(pos)
        pos += 64
        t_out[0] = t
        v_out[0] = v
    if width > 1:
        a = int(active[1])
        raw, size = _varints(bits.buf, pos[:a] >> 3)  # still byte-aligned: a uvarint delta
        td[:a] = raw.view(np.int64)
        t[:a] += td[:a]
        pos[:a] += 8 * size
        _value_step(bits, bits.read64(pos[:a]), pos[:a], v[:a], wi[:a])
        t_out[1, :a] = t[:a]
        v_out[1, :a] = v[:a]
    for k in range(2, width):
        a = int(active[k])
        _sample_step(bits, pos[:a], t[:a], td[:a], v[:a], wi[:a])
        t_out[k, :a] = t[:a]
        v_out[k, :a] = v[:a]
    ends_bits = ends[order] * 8
    # The last sample ends in the last byte or, when it filled a byte exactly, the one
    # before: Prometheus' bstream.writeByte always appends the byte after the one it fills.
    damaged = (pos > ends_bits) | (pos <= ends_bits - 16) | (sorted_counts == 0)
    if np.any(damaged):
        raise RemoteReadError(
            f"{int(np.count_nonzero(damaged))} of {n} chunk(s) do not decode to their stated "
            "length: the stream is damaged or truncated")
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    keep = np.arange(width) < counts[:, None]
    return t_out.T[inverse][keep], v_out.T[inverse][keep].view(np.float64), counts


def _sample_step(bits: _Bits, pos: np.ndarray, t: np.ndarray, td: np.ndarray,
                 v: np.ndarray, wi: np.ndarray) -> None:
    """Decode one sample after the second of every chunk, in place: the delta of delta,
    then the value."""
    x = bits.read64(pos)
    p = x >> np.uint64(60)
    ts = _TS.take(p)
    raw = ((x << ts["plen"]) >> ts["sh"]).view(np.int64)
    raw += ts["c"]
    raw &= ts["m"]
    raw -= ts["c"]
    cons = ts["cons"]
    x <<= cons.view(np.uint64)
    if p.max() == 15:  # 1111: a 64-bit delta of delta (a jump of more than ~9 minutes)
        far = np.flatnonzero(p == 15)
        raw[far] = bits.read64(pos[far] + 4).view(np.int64)
        cons[far] = 68
        x[far] = bits.read64(pos[far] + 68)
    td += raw
    t += td
    pos += cons
    _value_step(bits, x, pos, v, wi)


def _value_step(bits: _Bits, head: np.ndarray, pos: np.ndarray, v: np.ndarray,
                wi: np.ndarray) -> None:
    """Apply one value field to ``v`` (in place); ``head`` holds its bits top-aligned (13
    valid at least) and ``pos`` its position, moved past it; ``wi`` is each chunk's window."""
    h = _HEAD.take(head >> np.uint64(51))
    np.copyto(wi, h["wi"], where=h["set"])
    pos += h["cons"]
    w = _WINDOW.take(wi * h["keep"])
    z = bits.read64(pos)
    z >>= w["lead"]
    z &= w["win"]
    v ^= z
    pos += w["mb"]


@dataclass
class SeriesSamples:
    """The samples of many series in shared arrays: series ``i`` is
    ``time_ms[lo[i]:hi[i]]`` (strictly increasing) and the same slice of ``value`` (finite:
    NaN stale markers and other non-finite readings are dropped, as the JSON path drops
    them)."""

    labels: list[dict[str, str]]
    lo: np.ndarray
    hi: np.ndarray
    time_ms: np.ndarray
    value: np.ndarray

    @property
    def time_s(self) -> np.ndarray:
        """The times in seconds: the nearest double to each decimal, as the JSON API gives."""
        return self.time_ms / 1000.0


def decode_stream(body: bytes, start_ms: int, end_ms: int) -> SeriesSamples:
    """Every series of a streamed answer, cut to ``[start_ms, end_ms]`` (the server sends
    whole chunks, which may reach beyond the asked range).

    Usually each series' times already increase and every value is finite: then the cut is
    a binary search at each end of every series (all series together) and no sample is copied.
    """
    stream = split_stream(body)
    decoded = decode_chunks(body, stream.starts, stream.ends)
    chunk_at = np.concatenate(([0], np.cumsum(decoded.counts)))
    series_at = chunk_at[stream.first_chunk]
    t, v = decoded.time_ms, decoded.value
    later = t[1:] > t[:-1]
    later[series_at[1:-1] - 1] = True  # a new series may start anywhere
    if np.all(later) and np.all(np.isfinite(v)):
        lo = search_segments(t, series_at[:-1], series_at[1:], start_ms, right=False)
        hi = search_segments(t, series_at[:-1], series_at[1:], end_ms, right=True)
        return SeriesSamples(stream.labels, lo, hi, t, v)
    # Overlapping blocks can repeat a sample or go back in time at a block boundary.
    series_of = np.repeat(np.arange(len(stream.labels)), np.diff(series_at))
    order = np.lexsort((t, series_of))
    t, v, series_of = t[order], v[order], series_of[order]
    keep = (t >= start_ms) & (t <= end_ms) & np.isfinite(v)
    keep[1:] &= (t[1:] != t[:-1]) | (series_of[1:] != series_of[:-1])
    kept = np.bincount(series_of[keep], minlength=len(stream.labels))
    offsets = np.concatenate(([0], np.cumsum(kept)))
    return SeriesSamples(stream.labels, offsets[:-1], offsets[1:], t[keep], v[keep])


def read_samples(url: str, start_ms: int, end_ms: int, matchers: list[tuple[int, str, str]],
                 timeout_s: float) -> SeriesSamples:
    """The raw samples in ``[start_ms, end_ms]`` of the series ``matchers`` select."""
    body = post_read(url, read_request(start_ms, end_ms, matchers), timeout_s)
    try:
        return decode_stream(body, start_ms, end_ms)
    except RemoteReadError as exc:
        raise RemoteReadError(f"remote read from {url}: {exc}") from None
