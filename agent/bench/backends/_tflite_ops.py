"""Cut a TFLite model into one-operator models and time each one.

LiteRT's Python API exposes no per-operator profiler, so ``--profile`` on a
``.tflite`` model measures every operator of the main subgraph in isolation: its
constant inputs (weights) are kept, its other inputs become model inputs fed with
seeded random data.  Fusion across operators and cache effects between them are
lost, so the per-operator sum is close to, not equal to, the whole-model latency.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np

import bench_kernels
from agent.bench.backends.base import aggregate_op_times
from agent.bench.inputs import TensorSpec, make_inputs
from agent.bench.results import OpProfile
from agent.common.errors import BackendUnavailableError, BenchmarkError

logger = logging.getLogger(__name__)


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise BackendUnavailableError(
            "--profile on a TFLite model needs the ai-edge-litert package, whose model schema "
            "tflite_runtime does not ship: pip install 'fleetbench[litert]'"
        ) from None
    return schema_py_generated


def builtin_names(schema: Any) -> dict[int, str]:
    ops = schema.BuiltinOperator
    return {v: k for k, v in vars(ops).items() if k.isupper() and isinstance(v, int)}


def op_type_name(schema: Any, code: Any, names: dict[int, str]) -> str:
    # Opcodes >= 127 live in builtinCode; older files only fill deprecatedBuiltinCode.
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == schema.BuiltinOperator.CUSTOM:
        custom = code.customCode
        return custom.decode() if isinstance(custom, bytes) else str(custom)
    return names.get(builtin, f"OP_{builtin}")


def _is_constant(model: Any, tensor: Any) -> bool:
    if tensor.buffer <= 0 or tensor.buffer >= len(model.buffers):
        return False
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _one_op_model(schema: Any, model: Any, op: Any) -> bytes:
    """A model holding only ``op``: constant inputs keep their weights, others become inputs."""
    import flatbuffers

    graph = model.subgraphs[0]
    remap: dict[int, int] = {}
    tensors: list[Any] = []
    buffers: list[Any] = [schema.BufferT()]  # buffer 0 is the empty sentinel
    graph_inputs: list[int] = []
    for idx, is_input in [(int(i), True) for i in _indices(op.inputs)] + [
        (int(i), False) for i in _indices(op.outputs)
    ]:
        if idx < 0 or idx in remap:
            continue  # an optional input left out, or a tensor used twice
        src = graph.tensors[idx]
        t = copy.copy(src)
        if is_input and _is_constant(model, src):
            buf = schema.BufferT()
            buf.data = model.buffers[src.buffer].data
            buffers.append(buf)
            t.buffer = len(buffers) - 1
        else:
            t.buffer = 0
            if is_input:
                graph_inputs.append(len(tensors))
        tensors.append(t)
        remap[idx] = len(tensors) - 1

    new_op = copy.copy(op)
    new_op.inputs = [remap.get(int(i), -1) for i in _indices(op.inputs)]
    new_op.outputs = [remap[int(i)] for i in _indices(op.outputs)]
    new_op.intermediates = None
    new_op.opcodeIndex = 0
    sub = schema.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs = tensors, graph_inputs, list(new_op.outputs)
    sub.operators = [new_op]
    sub.name = "op"
    one = schema.ModelT()
    one.version = model.version
    one.operatorCodes = [model.operatorCodes[op.opcodeIndex]]
    one.subgraphs = [sub]
    one.buffers = buffers
    one.description = b"fleetbench single-operator model"
    builder = flatbuffers.Builder(1024)
    builder.Finish(one.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _indices(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def split_ops(content: bytes) -> list[tuple[str, str, bytes]]:
    """(operator name, operator type, one-op model bytes) for each op of the main subgraph."""
    schema = _schema()
    names = builtin_names(schema)
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    graph = model.subgraphs[0]
    pieces = []
    for op_index, op in enumerate(graph.operators or []):
        op_type = op_type_name(schema, model.operatorCodes[op.opcodeIndex], names)
        outputs = _indices(op.outputs)
        raw = graph.tensors[outputs[0]].name if outputs else b""
        name = raw.decode() if isinstance(raw, bytes) else str(raw or "")
        pieces.append((name or f"op{op_index}", op_type, _one_op_model(schema, model, op)))
    return pieces


def profile_ops(content: bytes, mod: Any, threads: int, runs: int, path: str) -> list[OpProfile]:
    """Time every operator of ``content`` alone; slowest first."""
    from agent.bench.backends.litert import quiet_native_stderr

    timed = []
    for name, op_type, model_bytes in split_ops(content):
        try:
            with quiet_native_stderr():
                interp = mod.Interpreter(model_content=model_bytes, num_threads=threads)
                interp.allocate_tensors()
            details = interp.get_input_details()
            specs = [
                TensorSpec(d["name"], tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"]).name)
                for d in details
            ]
            data = make_inputs(specs, {s.name: s.shape for s in specs}, seed=0)  # type: ignore[misc]
            for d in details:
                interp.set_tensor(d["index"], data[d["name"]])
            interp.invoke()  # warm-up
            out = np.zeros(max(runs, 1), dtype=np.int64)
            bench_kernels.time_calls(interp.invoke, len(out), out)
        except (ValueError, RuntimeError) as err:
            logger.debug("cannot time operator %s (%s) of %s alone: %s", name, op_type, path, err)
            continue
        timed.append((name, op_type, float(np.mean(out)) / 1e6))
    if not timed:
        raise BenchmarkError(f"no operator of {path!r} could be timed on its own")
    # Each entry is already a per-run mean, so the shared aggregation sees one "run".
    return aggregate_op_times(timed, runs=1)
