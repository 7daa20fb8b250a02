"""The metadata every file the library encodes carries: its keys, and reading them back.

``export.encode_image`` writes them — PNG text chunks; in JPEG and WebP ``parameters`` as
EXIF ``UserComment`` and every other key as a ``campaign:KEY`` property of the XMP packet —
and ``read_export_metadata`` reads any of the three formats back. Pillow and the standard
library only: finding an image's variant (``campaign show IMAGE``) decodes no pixels.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ElementTree

from PIL import ExifTags, Image, PngImagePlugin

# The metadata every file carries, by key (the PNG text chunk names; README: "Outputs,
# metadata, ledger"). JPEG and WebP keep PARAMETERS_KEY in EXIF and the others in XMP.
PARAMETERS_KEY = "parameters"
VARIANT_KEY = "campaign_variant"
RENDER_KEY = "campaign_render"  # what decides the bytes besides the spec (its batch, …)
XMP_PNG_KEY = "XML:com.adobe.xmp"
# A private namespace: ".invalid" is reserved, so the URI can never clash with a real one.
CAMPAIGN_XMP_NAMESPACE = "http://ns.campaign-renderer.invalid/export/1.0/"
_USER_COMMENT_UNICODE = b"UNICODE\x00"  # EXIF character-code prefix; piexif's "unicode"
_RDF_NAMESPACE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"


def read_export_metadata(data: bytes) -> dict[str, str]:
    """The metadata keys of a file ``encode_image`` wrote, plus ``xmp`` (the packet)."""
    with Image.open(io.BytesIO(data)) as image:
        if isinstance(image, PngImagePlugin.PngImageFile):
            text = dict(image.text)
            xmp = text.pop(XMP_PNG_KEY, None)
            return {**text, **({"xmp": xmp} if xmp else {})}
        result: dict[str, str] = {}
        comment = image.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
        if isinstance(comment, bytes) and comment.startswith(_USER_COMMENT_UNICODE):
            result[PARAMETERS_KEY] = comment[len(_USER_COMMENT_UNICODE) :].decode("utf-16-be")
        xmp = image.info.get("xmp")
    if xmp:
        packet = xmp.decode("utf-8") if isinstance(xmp, bytes) else xmp
        result.update(_xmp_properties(packet))
        result["xmp"] = packet
    return result


def _xmp_properties(packet: str) -> dict[str, str]:
    root = ElementTree.fromstring(packet)
    prefix = "{" + CAMPAIGN_XMP_NAMESPACE + "}"
    return {
        element.tag[len(prefix) :]: element.text or ""
        for description in root.iter(f"{{{_RDF_NAMESPACE}}}Description")
        for element in description
        if element.tag.startswith(prefix)
    }
