"""The demo models' tokenizers: a small CLIP BPE vocabulary cut from the one open_clip ships,
and a T5 Unigram vocabulary trained on a few captions, made independent of the trainer's
hash-map order.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

from open_clip.tokenizer import bytes_to_unicode, default_bpe
from tokenizers import Tokenizer
from tokenizers.models import Unigram
from tokenizers.trainers import UnigramTrainer
from transformers import CLIPTokenizer
from transformers.models.t5.tokenization_t5 import T5Tokenizer

CLIP_MAX_LENGTH = 77
CLIP_MERGES = 486  # 256 byte tokens x2 (plain and word-final) + merges + 2 specials = 1000 tokens
CLIP_VOCAB_SIZE = 2 * 256 + CLIP_MERGES + 2
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
T5_MAX_LENGTH = 512
# Enough words for a T5 Unigram vocabulary of a few hundred pieces.
T5_CORPUS = """\
a photo of a red sneaker on a white studio background with soft light and a long shadow
product shot of a glass bottle of perfume on a marble table next to fresh flowers
summer campaign poster with bold colors, a happy model and a blue sky over the ocean
a cup of morning coffee on a wooden kitchen table, warm sunlight through the window
portrait of a smiling woman in a city street at night with neon signs and rain
a leather bag and a silver watch arranged on a clean minimal surface, top view
a green bottle of organic juice surrounded by oranges, lemons and green leaves
an elegant black dress on a mannequin in a bright boutique with large mirrors
a running shoe splashing through water on a mountain trail at sunrise
a modern living room with a grey sofa, plants, a lamp and a framed poster
the brand logo printed on a cardboard box, a paper label and a canvas tote bag
a luxury car parked in front of a glass building under a dramatic evening sky
a chocolate cake with berries on a white plate, studio lighting, shallow depth of field
a family having a picnic in a park with a basket of bread, cheese and fruit
a pair of headphones on a desk beside a laptop, a notebook and a pencil
winter sale banner with snow, a red scarf, warm gloves and a knitted hat
"""
T5_VOCAB_SIZE = 400
UNIGRAM_READDED_STEP = 1e-4  # tokenizers' UnigramTrainer: score step between re-added chars


@functools.cache
def _clip_merges() -> tuple[tuple[str, str], ...]:
    """The first CLIP_MERGES merges of the BPE list open_clip ships (line 0 is a header)."""
    with gzip.open(default_bpe(), "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")[1 : 1 + CLIP_MERGES]
    pairs = (line.split() for line in lines)
    return tuple((left, right) for left, right in pairs)


def _clip_vocab() -> dict[str, int]:
    # CLIP's token order: bytes, word-final bytes, one token per merge, then the specials.
    byte_tokens = list(bytes_to_unicode().values())
    tokens = [
        *byte_tokens,
        *(token + "</w>" for token in byte_tokens),
        *("".join(merge) for merge in _clip_merges()),
        CLIP_BOS,
        CLIP_EOS,
    ]
    return {token: index for index, token in enumerate(tokens)}


def clip_tokenizer(pad_token: str = CLIP_EOS) -> CLIPTokenizer:
    return CLIPTokenizer(
        vocab=_clip_vocab(),
        # The BPE model takes (left, right) pairs, which transformers annotates as list[str].
        merges=list(_clip_merges()),  # type: ignore[arg-type]
        pad_token=pad_token,
        model_max_length=CLIP_MAX_LENGTH,
    )


def write_clip_bpe_files(folder: Path) -> None:
    """The vocab.json/merges.txt pair real CLIP tokenizer folders carry beside tokenizer.json."""
    (folder / "vocab.json").write_text(
        json.dumps(_clip_vocab(), ensure_ascii=False), encoding="utf-8"
    )
    merges = "".join(f"{left} {right}\n" for left, right in _clip_merges())
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")


def t5_tokenizer() -> T5Tokenizer:
    """A Unigram vocabulary trained on T5_CORPUS with T5's own pre-tokenizer."""
    trainee = Tokenizer(Unigram())
    trainee.pre_tokenizer = T5Tokenizer(extra_ids=0).backend_tokenizer.pre_tokenizer
    specials = ["<pad>", "</s>", "<unk>"]  # T5's fixed ids 0, 1, 2
    trainer = UnigramTrainer(vocab_size=T5_VOCAB_SIZE, special_tokens=specials, unk_token="<unk>")
    trainee.train_from_iterator(T5_CORPUS.splitlines(), trainer)
    pieces = [
        (piece, score)
        for piece, score in json.loads(trainee.to_str())["model"]["vocab"][len(specials) :]
    ]
    vocab = [(piece, 0.0) for piece in specials] + _canonical_unigram_vocab(pieces)
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def _canonical_unigram_vocab(pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Make a trained Unigram vocabulary independent of the trainer's hash-map order.

    UnigramTrainer sums scores in hash-map order (the last bits vary from run to run) and
    re-adds the characters EM dropped at scores floor, floor + 1e-4, ... in hash-set order.
    Put those characters on that ladder alphabetically, round every score, and order equal
    scores by piece.
    """
    floor = min(score for _, score in pieces)

    def on_ladder(piece: str, score: float) -> bool:
        step = (score - floor) / UNIGRAM_READDED_STEP
        return len(piece) == 1 and abs(step - round(step)) < 1e-6 and round(step) < len(pieces)

    readded = sorted(piece for piece, score in pieces if on_ladder(piece, score))
    scores = {piece: score for piece, score in pieces}
    scores |= {piece: floor + step * UNIGRAM_READDED_STEP for step, piece in enumerate(readded)}
    return sorted(
        ((piece, round(score, 6)) for piece, score in scores.items()),
        key=lambda item: (-item[1], item[0]),
    )
