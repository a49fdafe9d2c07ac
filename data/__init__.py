"""Images and their corruption: folders, splits, fixed and random holes (pure library)."""
