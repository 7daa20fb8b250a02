"""The base of every parameter set in the library (retouch steps, logo placement, exports).

Each parameter and its range is declared once, on these models: the library checks its
own arguments with them, and the renderer's file schema uses the same models, so a range
in a campaign file can never disagree with what the library accepts. Frozen, strict
(``"8"`` is not 8) and closed (an unknown name is an error).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Fraction", "Parameters"]

# A share of something (a strength, a part of the frame): 0 to 1.
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
