"""U-Net family for inpainting (pure library: torch only)."""
