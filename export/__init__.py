"""Per-component export to ONNX and TensorRT (installed as `copgen_rt.export`)."""
