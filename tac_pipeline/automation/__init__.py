"""Automation for new image drops: drop manifests, the drops sensor and the re-clustering schedule."""
