"""From a decoded record to a model input, shared by the cache build, training and prediction.

* :mod:`.decode` -- one raw file -> the cache's stored form (:class:`~.decode.CacheConfig`: rate, length,
  baseline, image size); used by the cache build and by prediction, without the cache build itself.
* :mod:`.preprocess` -- the model-side transforms (ECG windows, X-ray resize / augmentation / normalisation;
  :class:`~.preprocess.PreprocessConfig` travels with the weights).
* :mod:`.criteria` -- ECG voltage criteria (Sokolow-Lyon, Cornell) from R-peak-aligned beats.

The submodules are imported on use (``from cardiofusion.transforms.decode import decode_ecg``), so that a
reader of one does not pay for torch or neurokit2 imports of another.
"""
