"""Search-space architectures as real models: a small network description, written to ONNX or TFLite."""
