"""Names in a project folder that more than one stage uses."""

from __future__ import annotations

# Under a folder `campaign serve --root` serves: its queue and default token file (README,
# "Render service"); `campaign init`'s .gitignore keeps it out of version control.
SERVICE_STATE = ".campaign-serve"
