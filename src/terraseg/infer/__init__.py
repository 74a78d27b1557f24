"""The inference engine: a bundle's network run over inputs, whatever the command that asks.

* :mod:`~terraseg.infer.inputs`: opening an input for a bundle (bands, bit depth, validity).
* :mod:`~terraseg.infer.sliding`: the streaming sliding-window predictor (Hann-blended windows, rows
  handed on as they finish).
* :mod:`~terraseg.infer.classify`: scene classification, on the same backends.
* :mod:`~terraseg.infer.backends`: PyTorch, ONNX Runtime / scikit-learn arrays, micro-batching, TTA.
* :mod:`~terraseg.infer.runtime`: the backend and precision for this machine (``auto``).
* :mod:`~terraseg.infer.onnx`: ONNX export and its check.
* :mod:`~terraseg.infer.drift`: does an input look like the training data?

The commands built on it: ``predict`` (:mod:`terraseg.prediction`), ``evaluate``, training's
validation and ``serve``.
"""
