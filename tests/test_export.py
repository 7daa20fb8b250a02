import os

os.environ["HF_HUB_OFFLINE"] = "1"

import io
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from postprocess.embedded_metadata import read_export_metadata
from postprocess.export import encode_image, export_image, smart_crop
from postprocess.parameters import ExportSpec
from renderer.produce.metadata import TRAINED_ALGORITHMIC_MEDIA, xmp_packet
from tests.synthetic import draw_face, shapes

PROMPT = 'a kestrel bottle on <b>"sand"</b>, ünïcödé'
METADATA = {
    "parameters": f"{PROMPT}\nNegative prompt: blurry\nSteps: 4, Sampler: Euler, Seed: 7",
    "campaign_variant": json.dumps({"prompt": PROMPT, "seed": 7}, ensure_ascii=False),
}
CHANNELS = [
    ExportSpec(name="feed-square", width=108, height=108, format="png"),
    ExportSpec(name="story", width=108, height=192, format="jpeg", quality=85),
    ExportSpec(name="banner", width=192, height=108, format="webp", quality=80),
]


def subject_on_the_right(width=320, height=180):
    """A detailed object right of centre on a flat background."""
    image = np.full((height, width, 3), 200, np.uint8)
    image[40:140, 220:300] = shapes(size=100, seed=3)[:100, :80]
    return image


def inside(inner, outer):
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and inner[2] <= outer[2]
        and inner[3] <= outer[3]
    )


@pytest.mark.parametrize("ratio", [9 / 16, 1.0, 4 / 5])
def test_crop_keeps_the_detailed_subject_and_has_the_target_aspect(ratio):
    image = subject_on_the_right()
    box = smart_crop(image, ratio, faces=[])
    left, top, right, bottom = box
    assert (right - left) / (bottom - top) == pytest.approx(ratio, abs=0.01)
    assert bottom - top == 180  # the largest such crop: full height
    assert left <= 260 <= right  # the subject's centre is in
    assert inside(box, (0, 0, 320, 180))


def test_crop_keeps_the_faces_whole():
    image = draw_face((400, 200), face_height=110, center=(90, 100))
    box = smart_crop(image, 9 / 16)  # faces detected
    face_box = (35, 35, 145, 165)  # the drawn face with some room
    assert inside(face_box, box)


def test_crop_to_the_image_aspect_is_the_whole_image():
    assert smart_crop(subject_on_the_right(), 320 / 180, faces=[]) == (0, 0, 320, 180)


@pytest.mark.parametrize("spec", CHANNELS, ids=lambda spec: spec.format)
def test_every_format_keeps_parameters_variant_json_and_digital_source_type(spec):
    data = export_image(Image.fromarray(subject_on_the_right()), spec, METADATA, xmp_packet(PROMPT))

    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == (
            {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[spec.format],
            (spec.width, spec.height),
        )
    metadata = read_export_metadata(data)
    assert metadata["parameters"] == METADATA["parameters"]
    assert json.loads(metadata["campaign_variant"]) == json.loads(METADATA["campaign_variant"])
    assert f'DigitalSourceType="{TRAINED_ALGORITHMIC_MEDIA}"' in metadata["xmp"]


@pytest.mark.parametrize("spec", CHANNELS, ids=lambda spec: spec.format)
def test_exports_are_deterministic(spec):
    image = Image.fromarray(subject_on_the_right())
    first = export_image(image, spec, METADATA, xmp_packet(PROMPT), faces=[])
    assert export_image(image, spec, METADATA, xmp_packet(PROMPT), faces=[]) == first


def test_jpeg_user_comment_is_written_as_a1111_writes_it():
    data = encode_image(
        Image.new("RGB", (16, 16)),
        ExportSpec(name="x", width=16, height=16, format="jpeg"),
        METADATA,
        xmp_packet("p"),
    )
    exif = Image.open(io.BytesIO(data)).getexif().get_ifd(0x8769)
    # piexif.helper.UserComment.dump(text, encoding="unicode") in a big-endian TIFF block
    assert exif[0x9286] == b"UNICODE\x00" + METADATA["parameters"].encode("utf-16-be")
    assert Image.open(io.BytesIO(data)).getexif().endian == ">"


def test_exiftool_reads_the_metadata_of_every_format(tmp_path):
    paths = []
    for spec in CHANNELS:
        path = tmp_path / f"{spec.name}{spec.extension}"
        path.write_bytes(
            export_image(Image.fromarray(shapes()), spec, METADATA, xmp_packet(PROMPT), faces=[])
        )
        paths.append(path)
    done = subprocess.run(
        ["exiftool", "-json", "-charset", "utf8", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for tags in json.loads(done.stdout):
        comment = tags.get("Parameters") or tags.get("UserComment")
        assert comment == METADATA["parameters"], tags["SourceFile"]
        assert tags["DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
        assert json.loads(tags["Campaign_variant"]) == json.loads(METADATA["campaign_variant"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: ExportSpec(name="feed square", width=10, height=10),
            r"name\n.*should match pattern .*='feed square'",
        ),
        (
            lambda: ExportSpec(name="x", width=0, height=10),
            r"width\n.* greater than or equal to 8 .*=0,",
        ),
        (
            lambda: ExportSpec(name="x", width=10, height=10, format="gif"),
            r"format\n.*'png', 'jpeg' or 'webp' .*='gif'",
        ),
        (
            lambda: ExportSpec(name="x", width=10, height=10, format="jpeg", quality=0),
            r"quality\n.* greater than or equal to 1 .*=0,",
        ),
    ],
)
def test_bad_specs_echo_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_metadata_keys_that_no_format_can_hold_are_refused():
    with pytest.raises(ValueError, match="'my key'"):
        encode_image(Image.new("RGB", (4, 4)), CHANNELS[0], {"my key": "v"}, xmp_packet("p"))
