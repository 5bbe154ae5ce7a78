"""The DroughtWatch record format and its IO: TFRecord framing and tf.train.Example payloads without TensorFlow,
the vectorised reader, the block writer with O_DIRECT and writes behind. May import `core`."""
