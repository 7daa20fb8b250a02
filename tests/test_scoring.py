import os

os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from postprocess.scoring import ClipScorer, Scores
from renderer.demo.scoring_clip import build_tiny_clip


def sha256_of_folder_files(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


def noise_images(count, seed, size=(64, 64)):
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def scorer(tiny_clip_dir):
    return ClipScorer.from_folder(tiny_clip_dir)


def test_tiny_clip_build_is_byte_for_byte_deterministic(tiny_clip_dir, tmp_path):
    rebuilt = build_tiny_clip(tmp_path / "again")
    first, second = sha256_of_folder_files(tiny_clip_dir), sha256_of_folder_files(rebuilt)
    assert set(first) == {"open_clip_config.json", "open_clip_model.safetensors"}
    assert first == second
    other_seed = sha256_of_folder_files(build_tiny_clip(tmp_path / "other", seed=1))
    assert other_seed["open_clip_model.safetensors"] != first["open_clip_model.safetensors"]


def test_building_leaves_the_global_torch_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_clip(tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_embeddings_are_unit_length_and_identical_across_scorer_instances(tiny_clip_dir, scorer):
    images, texts = noise_images(3, seed=0), ["a red bottle", "a blue can"]
    other = ClipScorer.from_folder(tiny_clip_dir)

    image_embeddings = scorer.embed_images(images)
    text_embeddings = scorer.embed_texts(texts)

    assert image_embeddings.shape == (3, 32)
    assert image_embeddings.dtype == np.float32
    assert text_embeddings.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(image_embeddings, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_embeddings, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(other.embed_images(images), image_embeddings)
    np.testing.assert_array_equal(other.embed_texts(texts), text_embeddings)


def test_batch_size_does_not_change_embeddings(tiny_clip_dir, scorer):
    images = noise_images(5, seed=1)
    one_at_a_time = ClipScorer.from_folder(tiny_clip_dir, batch_size=1)
    np.testing.assert_allclose(
        one_at_a_time.embed_images(images), scorer.embed_images(images), atol=1e-5
    )


def test_scores_are_cosines_and_an_image_equal_to_the_brand_scores_one(scorer):
    images = noise_images(4, seed=2)
    prompts = ["a bottle on a beach", "a bottle in snow", "<b>html</b>", ""]
    references = noise_images(3, seed=3)

    scores = scorer.score(images, prompts, references)

    assert len(scores) == 4
    assert all(isinstance(score, Scores) for score in scores)
    for score in scores:
        assert set(score.as_dict()) == {"clip_prompt", "clip_brand", "clip_brand_best"}
        assert all(-1.0 <= value <= 1.0 for value in score.as_dict().values())
    same_as_brand = scorer.score(images[:1], prompts[:1], [images[0], images[0]])
    assert same_as_brand[0].clip_brand == pytest.approx(1.0, abs=1e-5)


def test_scores_follow_their_definitions(scorer):
    images, prompts = noise_images(2, seed=4), ["a green tin", "a yellow tube"]
    references = noise_images(3, seed=5)
    image_embeddings = scorer.embed_images(images)
    brand_centroid = scorer.embed_images(references).mean(axis=0)

    scores = scorer.score(images, prompts, references)

    expected_prompt = np.sum(image_embeddings * scorer.embed_texts(prompts), axis=1)
    expected_brand = image_embeddings @ (brand_centroid / np.linalg.norm(brand_centroid))
    np.testing.assert_allclose([s.clip_prompt for s in scores], expected_prompt, atol=1e-6)
    np.testing.assert_allclose([s.clip_brand for s in scores], expected_brand, atol=1e-6)


def test_mismatched_or_missing_inputs_say_what_to_pass(scorer):
    images = noise_images(2, seed=6)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        scorer.score(images, ["only one"], images)
    with pytest.raises(ValueError, match="no brand reference images"):
        scorer.score(images, ["a", "b"], [])
    assert scorer.score([], [], images) == []


def test_folder_without_model_config_is_reported_with_a_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="campaign demo-models") as error:
        ClipScorer.from_folder(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_large_images_are_box_reduced_first_with_the_same_embedding(scorer):
    # 1024 px to a 64 px model: reduced by 5 before bicubic, ~10x cheaper.
    (large,) = noise_images(1, seed=7, size=(64, 64))
    large = large.resize((1024, 1024), Image.Resampling.BICUBIC)
    direct = scorer._model.encode_image(scorer._preprocess(large)[None], normalize=True)
    cosine = float(scorer.embed_images([large])[0] @ direct[0].detach().numpy())
    assert cosine > 0.9999
