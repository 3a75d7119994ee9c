#!/usr/bin/env python3
"""Writes a tiny ONNX model for the `onnx` model kind's tests, with the
`onnx` package from PyPI:
  scores = x @ W + B          x: float32 [N, 3] -> scores: float32 [N, 2]
  doubled = n * 2             n: int64 [N, 1]   -> doubled: int64 [N, 1]
W = [[1, 0], [0, 1], [1, 1]], B = [0.5, -0.5].
usage: make_tiny_onnx.py OUT.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

W = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
B = np.array([0.5, -0.5], dtype=np.float32)

graph = helper.make_graph(
    [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["scores"]),
        helper.make_node("Mul", ["n", "two"], ["doubled"]),
    ],
    "tiny",
    [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
        helper.make_tensor_value_info("n", TensorProto.INT64, ["N", 1]),
    ],
    [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2]),
        helper.make_tensor_value_info("doubled", TensorProto.INT64, ["N", 1]),
    ],
    initializer=[
        numpy_helper.from_array(W, "W"),
        numpy_helper.from_array(B, "B"),
        numpy_helper.from_array(np.array(2, dtype=np.int64), "two"),
    ],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
