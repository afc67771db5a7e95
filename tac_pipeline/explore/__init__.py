"""Seeing and using a clustered drop outside Dagster: exports a person takes elsewhere (:mod:`.export`).

Everything here reads what the store holds, through the paths the latest materializations recorded; nothing
is recomputed and neither the drop nor the store is written.
"""
