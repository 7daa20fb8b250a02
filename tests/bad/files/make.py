"""Makes the damaged files the bad-input corpus points at (run once; the outputs are
committed): a truncated and a garbage .safetensors, a truncated PNG, and a PNG too large
to decode (20000 x 20000 pixels, 1 bit each, so the file stays small), and a 1 x 1 PNG
(smaller than any training bucket)."""

import json
import struct
from pathlib import Path

from PIL import Image

HERE = Path(__file__).parent
BRAND = HERE.parent.parent.parent / "campaigns" / "brands" / "kestrel"


def main() -> None:
    # A LoRA-shaped header declaring 4 KiB of float32 weights, with only 100 bytes of them.
    header = json.dumps(
        {
            "lora_unet_x.lora_down.weight": {
                "dtype": "F32",
                "shape": [4, 256],
                "data_offsets": [0, 4096],
            }
        }
    ).encode()
    (HERE / "truncated.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + bytes(100)
    )
    (HERE / "garbage.safetensors").write_bytes(b"this was never a safetensors file\n" * 8)
    logo = (BRAND / "logo.png").read_bytes()
    (HERE / "truncated-logo.png").write_bytes(logo[: len(logo) // 2])
    Image.new("1", (20000, 20000)).save(HERE / "huge-logo.png", optimize=True)
    Image.new("RGB", (1, 1), "orange").save(HERE / "one-pixel.png")


if __name__ == "__main__":
    main()
