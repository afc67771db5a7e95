"""Encoders: open_clip images and nouns, the image reader, and the WordNet vocabulary."""
