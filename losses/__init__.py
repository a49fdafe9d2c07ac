"""Training losses: masked reconstruction, VGG16 perceptual and style, total variation (pure library)."""
