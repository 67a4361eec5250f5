"""Photo checks before anything decodes a photo: JPEG or PNG only, complete (its end
marker present), and a size from the header that is safe to decode (a decompression bomb
is refused unread). For a stick's photos and for `edge enrol --photo` alike."""

from __future__ import annotations

from edge.enrolment.manifest import PhotoRejected

MAX_PHOTO_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_SIDE = 12_000

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_OTHER_FORMATS = ((b"GIF8", "a GIF"), (b"BM", "a BMP"), (b"%PDF", "a PDF"), (b"PK\x03\x04", "a ZIP"),
                  (b"RIFF", "a RIFF (WebP?)"), (b"\x7fELF", "a program"), (b"#!", "a script"))


def image_info(data: bytes, name: str = "photo") -> tuple[str, int, int]:
    """("jpeg" | "png", width, height) from the header, without decoding; PhotoRejected for
    anything else, a size that would be dangerous to decode (checked first), or a file
    whose image data is cut off. Data after the image's end (camera trailers, a phone's
    second picture or motion clip) is ignored, as decoders do."""
    if data.startswith(_PNG_MAGIC):
        kind, (w, h, problem) = "png", _png_walk(data, name)
    elif data.startswith(b"\xff\xd8\xff"):
        kind, (w, h, problem) = "jpeg", _jpeg_walk(data, name)
    else:
        what = next((label for magic, label in _OTHER_FORMATS if data.startswith(magic)), None)
        if what is None and data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
            what = "a HEIC/AVIF photo (export it as JPEG)"
        raise PhotoRejected(f"{name}: not a JPEG or PNG image" + (f" ({what})" if what else ""))
    if w <= 0 or h <= 0:
        raise PhotoRejected(f"{name}: corrupt {kind.upper()} (size {w}x{h})")
    if w * h > MAX_PIXELS or max(w, h) > MAX_SIDE:
        raise PhotoRejected(f"{name}: image too large to decode safely ({w}x{h} = "
                            f"{w * h / 1e6:.0f} megapixels; limit {MAX_PIXELS / 1e6:.0f} "
                            f"megapixels, {MAX_SIDE} px a side): a decompression bomb, or a "
                            "photo to scale down")
    if problem:
        raise PhotoRejected(f"{name}: {problem}")
    return kind, w, h


def _png_walk(data: bytes, name: str) -> tuple[int, int, str | None]:
    """Size from IHDR, and whether the chunks run complete up to IEND."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise PhotoRejected(f"{name}: truncated or corrupt PNG (no header)")
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    i, n = 8, len(data)
    while i + 8 <= n:
        length, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8]
        i += 12 + length
        if i > n:
            break
        if kind == b"IEND":
            return w, h, None
    return w, h, "truncated PNG (cut off before its end chunk)"


def _jpeg_walk(data: bytes, name: str) -> tuple[int, int, str | None]:
    """Size from the frame header (SOFn), and whether the image data runs complete up to
    the end-of-image marker: segment by segment, then through each scan's entropy-coded
    data (where 0xFF is followed by 0x00, a restart marker or fill bytes) to the next marker."""
    i, n = 2, len(data)
    size = None
    cut = "truncated JPEG (image data cut off)"
    while True:
        if i >= n:
            break
        if data[i] != 0xFF:
            raise PhotoRejected(f"{name}: corrupt JPEG (bad marker at byte {i})")
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD9:
            if size is None:
                raise PhotoRejected(f"{name}: corrupt JPEG (no frame header)")
            return size[0], size[1], None
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue  # standalone markers carry no length
        if marker == 0xD8:
            raise PhotoRejected(f"{name}: corrupt JPEG (a second start-of-image marker)")
        if i + 2 > n:
            break
        length = int.from_bytes(data[i:i + 2], "big")
        if length < 2:
            raise PhotoRejected(f"{name}: corrupt JPEG (bad segment length)")
        if marker in _SOF and size is None:
            if length < 7 or i + 7 > n:
                break
            size = (int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 3:i + 5], "big"))
        if i + length > n:
            break
        i += length
        if marker == 0xDA:  # a scan: entropy-coded data up to the next real marker
            if size is None:
                raise PhotoRejected(f"{name}: corrupt JPEG (no frame header before the image data)")
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return size[0], size[1], cut
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    i = j + 2
                elif nxt == 0xFF:
                    i = j + 1
                else:
                    i = j
                    break
    if size is None:
        raise PhotoRejected(f"{name}: truncated JPEG (ends in its header)")
    return size[0], size[1], cut


def decode_photo(data: bytes, name: str = "photo"):
    """RGB array of a checked JPEG/PNG (EXIF orientation applied); PhotoRejected if not."""
    import cv2
    import numpy as np

    kind, w, h = image_info(data, name)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        img = None
    if img is None or img.ndim != 3 or sorted(img.shape[:2]) != sorted((h, w)):
        raise PhotoRejected(f"{name}: corrupt {kind.upper()} (cannot be decoded)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
