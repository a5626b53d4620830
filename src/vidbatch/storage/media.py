"""What an archived video is: its duration and resolution, and its first frame as a JPEG
thumbnail — read with PyAV (FFmpeg inside its wheels; no system ffmpeg). CPU-bound and
blocking: the archive lane runs it in a thread."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

#: JPEG quality (FFmpeg's qscale: 2 is best, 31 worst).
JPEG_QSCALE = 4


class NotAVideo(Exception):
    """The file has no decodable video stream."""


@dataclass(frozen=True)
class Probe:
    width: int
    height: int
    duration_seconds: float | None
    thumbnail_jpeg: bytes | None


def encode_jpeg(frame: Any) -> bytes:
    """One decoded frame as a baseline JPEG, with FFmpeg's MJPEG encoder."""
    ctx: Any = av.CodecContext.create("mjpeg", "w")
    ctx.width = frame.width
    ctx.height = frame.height
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"qmin": str(JPEG_QSCALE), "qmax": str(JPEG_QSCALE)}
    image = frame.reformat(format="yuvj420p")
    packets = list(ctx.encode(image)) + list(ctx.encode(None))
    return b"".join(bytes(p) for p in packets)


def probe(path: Path) -> Probe:
    """The video's resolution, duration and first frame; NotAVideo when FFmpeg finds no
    decodable video stream in it."""
    try:
        container: Any = av.open(str(path))
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise NotAVideo(f"not a readable video: {exc}") from None
    with container:
        stream = next((s for s in container.streams if s.type == "video"), None)
        if stream is None:
            raise NotAVideo("no video stream")
        width = int(stream.codec_context.width or 0)
        height = int(stream.codec_context.height or 0)
        duration: float | None = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        try:
            frame = next(iter(container.decode(stream)), None)
        except (av.FFmpegError, ValueError) as exc:
            raise NotAVideo(f"video cannot be decoded: {exc}") from None
        thumbnail = encode_jpeg(frame) if frame is not None else None
        if frame is not None and not (width and height):
            width, height = frame.width, frame.height
    if not (width and height):
        raise NotAVideo("video stream without a size")
    return Probe(width, height, duration, thumbnail)
