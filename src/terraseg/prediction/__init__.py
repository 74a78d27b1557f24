"""The ``predict`` command: inputs to georeferenced outputs (class ids, probabilities, confidence,
overlays, polygons), one machine or a Ray cluster, FP32 or INT8; the engine it runs is :mod:`terraseg.infer`."""
