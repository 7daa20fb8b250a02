"""What a run shows a person: its HTML report and grids, comparisons, thumbnails."""
