"""Campaign consistency: how alike a run's images look, from their CLIP embeddings alone.

numpy only (no pixels, no model): a run's stored embeddings are enough, so ``campaign
gate`` and ``campaign compare`` decide it again without loading OpenCV or CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OUTLIER_Z = -2.0


@dataclass(frozen=True, eq=False)
class Consistency:
    cosines: np.ndarray  # each image's cosine to the campaign's mean embedding
    z_scores: np.ndarray  # how many standard deviations each cosine lies from their mean
    outliers: np.ndarray  # bool: z-score below the threshold


def consistency(embeddings: np.ndarray, outlier_z: float = OUTLIER_Z) -> Consistency:
    """Each embedding (one row per image) against the re-normalised mean of all of them.

    Outliers need at least 3 images and some spread: with fewer, nothing is flagged.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(
            f"embeddings have shape {embeddings.shape}; pass one row per image, e.g. "
            "ClipScorer.embed_images(images)"
        )
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    centroid = unit.mean(axis=0)
    cosines = np.clip(unit @ (centroid / np.linalg.norm(centroid)), -1, 1)
    spread = cosines.std()
    if len(cosines) < 3 or spread < 1e-9:
        z_scores = np.zeros_like(cosines)
    else:
        z_scores = (cosines - cosines.mean()) / spread
    return Consistency(cosines=cosines, z_scores=z_scores, outliers=z_scores < outlier_z)
