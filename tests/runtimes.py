"""Run a model's bytes on the real runtimes: ONNX Runtime (NCHW) and LiteRT (NHWC, given NCHW)."""

from __future__ import annotations

import numpy as np


def run_onnx(data: bytes, x_nchw: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x_nchw})[0]


def run_tflite(data: bytes, x_nchw: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    interp.allocate_tensors()
    interp.set_tensor(
        interp.get_input_details()[0]["index"], np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    )
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])
