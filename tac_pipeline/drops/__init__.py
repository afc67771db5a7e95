"""What a drop is: a folder ``<data root>/drops/<key>/`` of images (or of its own embeddings), with an optional
``dataset.toml``. Every rule about drops lives here, one module each:

- :mod:`~tac_pipeline.drops.keys`: which folder names are dataset keys (validated before they become paths);
- :mod:`~tac_pipeline.drops.listing`: which drops exist, and a drop's images and settings;
- :mod:`~tac_pipeline.drops.settings`: ``dataset.toml`` (K, the seed, TAC's overrides, an outside image root);
- :mod:`~tac_pipeline.drops.manifest`: a drop's manifest (every file's path, size and mtime) and its digest,
  which the sensor, the schedule and ``image_embeddings`` compare;
- :mod:`~tac_pipeline.drops.nouns`: where a dataset's nouns come from (its own ``nouns.parquet`` or the
  shared WordNet noun embeddings);
- :mod:`~tac_pipeline.drops.demo`: the demo drop (scikit-learn's digits).

The Dagster side wraps these: the ``datasets`` partitions (:mod:`tac_pipeline.defs.partitions`), the
``tac_data`` resource (:mod:`tac_pipeline.defs.resources.data`) and the automation
(:mod:`tac_pipeline.defs.automation`). Where a drop's folder is: :func:`tac_pipeline.store.layout.drop_path`.
"""
