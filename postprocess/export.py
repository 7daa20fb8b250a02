"""Export: per-channel sizes with a subject-keeping crop, PNG/JPEG/WebP with metadata.

Every format keeps what the PNG the renderer writes says about itself:

* PNG — one text chunk per metadata key (``parameters``, ``campaign_variant``, …) and the
  XMP packet in an ``XML:com.adobe.xmp`` iTXt chunk, as ``renderer.produce.metadata`` does;
* JPEG and WebP — ``parameters`` in EXIF ``UserComment``, written by piexif exactly as
  A1111 writes it (``UserComment.dump(text, encoding="unicode")``: ``UNICODE`` + UTF-16BE,
  type UNDEFINED, in a big-endian TIFF block), so its PNG-info tab and Civitai read it; the
  block also holds the tags EXIF requires of a JPEG (version, colour space, pixel size,
  resolution), so ``exiftool -validate`` has nothing to warn about. The XMP packet goes
  in APP1 / the ``XMP `` chunk, with every other key added as a ``campaign:KEY`` property.

``postprocess.embedded_metadata`` names the keys and reads any of the three back. Encoding
has no timestamps: equal inputs give equal bytes.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

import cv2
import numpy as np
import piexif.helper
from PIL import Image

from postprocess.embedded_metadata import CAMPAIGN_XMP_NAMESPACE, PARAMETERS_KEY, XMP_PNG_KEY
from postprocess.faces import detect_faces
from postprocess.geometry import Box, crop_size
from postprocess.imaging import require_rgb, shrink_to
from postprocess.parameters import ExportSpec

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_MAX_KEY_LENGTH = 79  # the longest PNG text keyword
_SALIENCY_SIDE = 256  # estimate where the subject is on a copy this many pixels across


def smart_crop(image: np.ndarray, target_ratio: float, faces: Sequence[Box] | None = None) -> Box:
    """The largest box of aspect ``target_ratio`` (width / height) that keeps the subject.

    The subject is the faces (detected when None) when there are any; otherwise the
    centroid of the image's gradient energy, where the detail is. The box is centred on the
    subject as far as the frame allows.
    """
    height, width = require_rgb(image).shape[:2]
    crop_width, crop_height = crop_size((width, height), target_ratio)
    if (crop_width, crop_height) == (width, height):
        return 0, 0, width, height  # the whole frame: no subject to centre on
    faces = detect_faces(image) if faces is None else faces
    if faces:
        lefts, tops, rights, bottoms = zip(*faces, strict=True)
        center_x, center_y = (min(lefts) + max(rights)) / 2, (min(tops) + max(bottoms)) / 2
    else:
        center_x, center_y = _detail_centroid(image)
    # Centred on the faces' union, the crop holds all of it whenever it is big enough, and
    # sliding back inside the frame keeps it so.
    left = _clamp(round(center_x - crop_width / 2), 0, width - crop_width)
    top = _clamp(round(center_y - crop_height / 2), 0, height - crop_height)
    return left, top, left + crop_width, top + crop_height


def fit_to_spec(
    image: Image.Image, spec: ExportSpec, faces: Sequence[Box] | None = None
) -> Image.Image:
    """Crop ``image`` to the spec's aspect around the subject, then resize to its size."""
    rgb = image.convert("RGB")
    if rgb.size == (spec.width, spec.height):
        return rgb  # already the channel's size: no crop, and no resampling to soften it
    box = smart_crop(np.asarray(rgb), spec.width / spec.height, faces)
    return rgb.resize((spec.width, spec.height), Image.Resampling.LANCZOS, box=box)


def export_image(
    image: Image.Image,
    spec: ExportSpec,
    metadata: Mapping[str, str],
    xmp: str,
    faces: Sequence[Box] | None = None,
) -> bytes:
    """The channel's file bytes: cropped, resized and encoded with all the metadata."""
    return encode_image(fit_to_spec(image, spec, faces), spec, metadata, xmp)


def encode_image(
    image: Image.Image, spec: ExportSpec, metadata: Mapping[str, str], xmp: str
) -> bytes:
    """Encode ``image`` as it is (no resizing) in the spec's format with the metadata."""
    for key in metadata:
        if not _XML_NAME.fullmatch(key) or len(key) > _MAX_KEY_LENGTH:
            raise ValueError(
                f"metadata key {key!r} cannot be stored in every format; use up to "
                f"{_MAX_KEY_LENGTH} letters, digits, '_', '-' or '.' (e.g. campaign_variant)"
            )
    buffer = io.BytesIO()
    rgb = image.convert("RGB")
    if spec.format == "png":
        return _png_with_text(np.asarray(rgb), spec.png_compression, {**metadata, XMP_PNG_KEY: xmp})
    extra = {key: value for key, value in metadata.items() if key != PARAMETERS_KEY}
    options = {"quality": spec.quality, "xmp": _xmp_with_properties(xmp, extra).encode("utf-8")}
    if PARAMETERS_KEY in metadata:
        options["exif"] = _user_comment_exif(metadata[PARAMETERS_KEY], rgb.size)
    rgb.save(buffer, format=spec.format.upper(), **options)
    return buffer.getvalue()


def _png_with_text(pixels: np.ndarray, level: int, texts: Mapping[str, str]) -> bytes:
    """PNG bytes with one iTXt chunk (UTF-8, so any prompt survives) per text, after IHDR.

    OpenCV encodes: with zlib's run-length strategy it is 2-3x faster than Pillow at 1080 px
    and the file is smaller. It cannot add text chunks, so they are spliced in here.
    """
    ok, encoded = cv2.imencode(
        ".png",
        cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR),
        [
            cv2.IMWRITE_PNG_COMPRESSION,
            level,
            cv2.IMWRITE_PNG_STRATEGY,
            cv2.IMWRITE_PNG_STRATEGY_RLE,
        ],
    )
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} image as PNG")
    data = encoded.tobytes()
    header_end = len(_PNG_SIGNATURE) + 8 + 13 + 4  # signature, then IHDR: its 13 bytes + CRC
    # iTXt: keyword, NUL, uncompressed (0, 0), no language tag or translation (NUL, NUL).
    chunks = b"".join(
        _png_chunk(b"iTXt", key.encode("latin-1") + b"\0" * 5 + value.encode("utf-8"))
        for key, value in texts.items()
    )
    return data[:header_end] + chunks + data[header_end:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _user_comment_exif(text: str, size: tuple[int, int]) -> bytes:
    """An EXIF block with ``text`` as A1111's UserComment and the tags EXIF 2.32 requires
    of a JPEG (none time-dependent). The value is piexif's, as A1111 makes it; the block is
    laid out here because ``piexif.dump`` places the Exif IFD's values 4 bytes into it
    (exiftool: "Value for ExifIFD tag 0x9286 UserComment overlaps IFD")."""
    user_comment = piexif.helper.UserComment.dump(text, encoding="unicode")
    exif_ifd: list[_IfdEntry] = [
        (0x9000, _UNDEFINED, b"0232"),  # ExifVersion
        (0x9101, _UNDEFINED, b"\x01\x02\x03\x00"),  # ComponentsConfiguration: YCbCr
        (0x9286, _UNDEFINED, user_comment),  # UserComment
        (0xA000, _UNDEFINED, b"0100"),  # FlashpixVersion
        (0xA001, _SHORT, 1),  # ColorSpace: sRGB
        (0xA002, _LONG, size[0]),  # PixelXDimension
        (0xA003, _LONG, size[1]),
    ]  # PixelYDimension
    zeroth: list[_IfdEntry] = [
        (0x011A, _RATIONAL, (72, 1)),  # XResolution
        (0x011B, _RATIONAL, (72, 1)),  # YResolution
        (0x0128, _SHORT, 2),  # ResolutionUnit: inches
        (0x0213, _SHORT, 1),
    ]  # YCbCrPositioning: centred
    first = _TIFF_HEADER_LENGTH
    zeroth_length = len(_ifd([*zeroth, (0x8769, _LONG, 0)], first))
    exif_block = _ifd(exif_ifd, first + zeroth_length)
    zeroth_block = _ifd([*zeroth, (0x8769, _LONG, first + zeroth_length)], first)  # ExifIFD
    return b"Exif\x00\x00MM\x00\x2a" + struct.pack(">I", first) + zeroth_block + exif_block


_TIFF_HEADER_LENGTH = 8
_SHORT, _LONG, _RATIONAL, _UNDEFINED = 3, 4, 5, 7
# (tag, type, value): bytes for _UNDEFINED, (numerator, denominator) for _RATIONAL, else int.
_IfdEntry = tuple[int, int, bytes | tuple[int, int] | int]


def _ifd(entries: Sequence[_IfdEntry], offset: int) -> bytes:
    """A big-endian TIFF IFD at ``offset`` (from the TIFF header): its entries, a zero
    next-IFD link, then the values longer than 4 bytes, each at an even offset."""
    values_at = offset + 2 + 12 * len(entries) + 4
    table, values = [], b""
    for tag, kind, value in sorted(entries, key=lambda entry: entry[0]):
        if isinstance(value, bytes):  # _UNDEFINED
            data, count = value, len(value)
        elif isinstance(value, tuple):  # _RATIONAL
            data, count = struct.pack(">II", *value), 1
        else:
            data, count = struct.pack(">H" if kind == _SHORT else ">I", value), 1
        if len(data) <= 4:
            field = data.ljust(4, b"\0")
        else:
            field = struct.pack(">I", values_at + len(values))
            values += data + b"\0" * (len(data) % 2)
        table.append(struct.pack(">HHI", tag, kind, count) + field)
    return struct.pack(">H", len(entries)) + b"".join(table) + b"\0\0\0\0" + values


def _xmp_with_properties(xmp: str, properties: Mapping[str, str]) -> str:
    """``xmp`` with one more rdf:Description carrying ``properties`` as campaign:KEY."""
    if not properties:
        return xmp
    if "</rdf:RDF>" not in xmp:
        raise ValueError(
            "the XMP packet has no </rdf:RDF> to add the metadata to; pass a packet such as "
            "renderer.produce.metadata.xmp_packet(prompt)"
        )
    elements = "".join(
        f"\n   <campaign:{key}>{escape(value)}</campaign:{key}>"
        for key, value in properties.items()
    )
    description = (
        f' <rdf:Description rdf:about="" xmlns:campaign="{CAMPAIGN_XMP_NAMESPACE}">'
        f"{elements}\n  </rdf:Description>\n "
    )
    head, tail = xmp.rsplit("</rdf:RDF>", 1)
    return f"{head}{description}</rdf:RDF>{tail}"


def _detail_centroid(image: np.ndarray) -> tuple[float, float]:
    """Where the detail is: the gradient-energy-weighted centre, in image pixels."""
    small = shrink_to(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), _SALIENCY_SIDE).astype(np.float32)
    scale = small.shape[1] / image.shape[1]
    energy = np.hypot(cv2.Sobel(small, -1, 1, 0), cv2.Sobel(small, -1, 0, 1))
    # Squared, so a compact subject outweighs a wide, mildly textured background.
    energy = energy**2
    total = float(energy.sum())
    if total == 0:
        return image.shape[1] / 2, image.shape[0] / 2
    ys, xs = np.indices(energy.shape)
    return (
        float((xs * energy).sum() / total + 0.5) / scale,
        float((ys * energy).sum() / total + 0.5) / scale,
    )


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))
