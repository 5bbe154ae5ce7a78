"""The model: the CNN, training and the sweep, ONNX export, evaluation, batch prediction, choosing a champion,
the artifacts a model step writes, and pictures of all of these. TensorFlow loads only in the modules that train
or export. May import `data`, `records`, `core`."""
