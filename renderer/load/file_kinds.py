"""The four file kinds a user writes, by the name ``campaign schema`` and ``validate`` give
them, each with the pydantic model of its format."""

from __future__ import annotations

from pydantic import BaseModel

from renderer.load.campaign_schema import BrandKitFile, CampaignFile
from renderer.load.schema import RecipeFile
from renderer.load.training_schema import TrainingFile

FILE_MODELS: dict[str, type[BaseModel]] = {
    "recipe": RecipeFile,
    "campaign": CampaignFile,
    "brand": BrandKitFile,
    "training": TrainingFile,
}
