"""ONNX per-layer int8 error through ONNX Runtime's QDQ debugging helpers (``qdq_loss_debug``).

The fp32 model (tf2onnx) and its int8 QDQ model (the project's ``quantize_onnx``) are both augmented to
output every intermediate tensor (``modify_model_output_intermediate_tensors``), run on the calibration
samples (``collect_activations``), and matched tensor by tensor (``create_activation_matching``): for each
quantized activation the value before and after its QuantizeLinear/DequantizeLinear pair, and the float
model's value. The SQNRs (whole tensor, as ``compute_activation_error``'s ``qdq_err``, and per channel) are
computed here from the matched tensors before and after QDQ: the error each tensor's own quantization adds. Node names for ``nodes_to_exclude`` come from the graph that
ONNX Runtime's quantizer actually sees (after ``quant_pre_process``).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgecnn.converters.inspect import InspectOptions, LayerError, keras_layer_names, layer_of, tensor_metrics

BATCH = 50


@dataclass(frozen=True)
class OnnxGraph:
    """Node names and tensor producers/consumers of a prepared fp32 ONNX graph, mapped to Keras layers."""

    nodes: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...]  # (name, op_type, inputs, outputs)
    known: tuple[str, ...]

    @classmethod
    def read(cls, path: Path, known: Sequence[str]) -> "OnnxGraph":
        import onnx  # noqa: PLC0415

        graph = onnx.load(str(path), load_external_data=False).graph
        return cls(tuple((n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in graph.node), tuple(known))

    def layer(self, node_name: str) -> str:
        return layer_of(node_name, self.known)

    def producer(self, tensor: str) -> Optional[tuple]:
        return next((n for n in self.nodes if tensor in n[3]), None)

    def keep_float(self, tensor: str) -> tuple[str, ...]:
        """The layers to keep in float so ``tensor`` is never quantized: its producer and consumers."""
        found = []
        producer = self.producer(tensor)
        if producer is not None:
            found.append(self.layer(producer[0]))
        found += [self.layer(n[0]) for n in self.nodes if tensor in n[2]]
        return tuple(dict.fromkeys(found))

    def nodes_of(self, layers: Sequence[str]) -> list[str]:
        """Node names (as in this graph) belonging to ``layers``: the ``nodes_to_exclude`` to keep them float."""
        wanted = set(layers)
        return [n[0] for n in self.nodes if self.layer(n[0]) in wanted]


def onnx_layer_errors(loaded: Any, samples: np.ndarray, options: InspectOptions
                      ) -> tuple[list[LayerError], list[str], tuple[Any, ...]]:
    """Per-tensor errors of the int8 model built with ``options``' ONNX settings, notes, and that model's
    fusion report (edgecnn.converters.onnx_graph.FusionReport, as a 1-tuple)."""
    from edgecnn.converters.onnx_export import export_onnx  # noqa: PLC0415
    from edgecnn.converters.onnx_graph import fusion_report  # noqa: PLC0415
    from edgecnn.converters.onnx_quant import quantize_onnx  # noqa: PLC0415
    from edgecnn.converters.onnx_targets import onnx_settings  # noqa: PLC0415

    settings = onnx_settings(options.onnx_target, full_int8=options.onnx_full_int8)
    with tempfile.TemporaryDirectory(prefix="edgecnn-inspect-onnx-") as work:
        fp32, int8 = Path(work) / "fp32.onnx", Path(work) / f"{loaded.name}_int8.onnx"
        export_onnx(loaded.keras_model if loaded.keras_model is not None else loaded.path, fp32)
        quantize_onnx(fp32, samples, int8, method=options.calib_method, per_channel=options.per_channel,
                      settings=settings)
        graph = prepared_graph(fp32, keras_layer_names(loaded), Path(work))
        rows = qdq_rows(fp32, int8, samples, graph, Path(work))
        fusion = fusion_report(int8)
    return rows, [f"ONNX Runtime qdq_loss_debug on {len(samples)} calibration samples ({options.calib_method} "
                  f"ranges); {settings.describe(options.per_channel)}"], (fusion,)


def prepared_graph(fp32: Path, known: Sequence[str], work: Path) -> OnnxGraph:
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    prepared = Path(work) / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared))
    return OnnxGraph.read(prepared, known)


def qdq_rows(fp32: Path, int8: Path, samples: np.ndarray, graph: OnnxGraph, work: Path) -> list[LayerError]:
    from onnxruntime.quantization import qdq_loss_debug as qdq  # noqa: PLC0415

    aug_f, aug_q = work / "aug_fp32.onnx", work / "aug_int8.onnx"
    qdq.modify_model_output_intermediate_tensors(str(fp32), str(aug_f))
    qdq.modify_model_output_intermediate_tensors(str(int8), str(aug_q))
    input_name = _input_name(fp32)
    float_acts = qdq.collect_activations(str(aug_f), _reader(input_name, samples))
    quant_acts = qdq.collect_activations(str(aug_q), _reader(input_name, samples))
    matching = qdq.create_activation_matching(quant_acts, float_acts)
    shapes, scales = _tensor_shapes(fp32), _qdq_scales(int8)
    rows = []
    for tensor, pair in matching.items():
        pre = _stack(pair["pre_qdq"], shapes.get(tensor), len(samples))
        producer = graph.producer(tensor)
        if producer is not None and producer[1] == "Relu":
            # The quantizer drops a Relu whose output is quantized (the int8 range's clip at 0 does its
            # work), so "before QDQ" is the pre-activation; the float layer's output is its ReLU.
            pre = np.maximum(pre, 0.0)
        post = _stack(pair["post_qdq"], shapes.get(tensor), len(samples))
        metrics = tensor_metrics(pre, post, scales.get(tensor, 0.0), channel_axis=1 if pre.ndim > 1 else 0)
        rows.append(LayerError(tensor=tensor, layer=graph.layer(producer[0]) if producer else "input",
                               op=producer[1] if producer else "input", scale=scales.get(tensor, 0.0),
                               keep_float=graph.keep_float(tensor), **metrics))
    return rows


def _reader(input_name: str, samples: np.ndarray) -> Any:
    from onnxruntime.quantization import CalibrationDataReader  # noqa: PLC0415

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([samples[i:i + BATCH] for i in range(0, len(samples), BATCH)])

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    return Reader()


def _input_name(path: Path) -> str:
    from edgecnn.converters.onnx_export import onnx_io_specs  # noqa: PLC0415

    return onnx_io_specs(path)[0].name


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of the fp32 graph's tensors (shape inference), batch dimension dropped."""
    import onnx  # noqa: PLC0415

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        dims = value.type.tensor_type.shape.dim
        rest = [d.dim_value if d.HasField("dim_value") else 0 for d in list(dims)[1:]]
        if dims and all(rest):
            shapes[value.name] = tuple(rest)
    return shapes


def _qdq_scales(path: Path) -> dict[str, float]:
    """Each quantized activation's scale, read from the initializer its QuantizeLinear node uses."""
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    model = onnx.load(str(path))
    inits = {init.name: init for init in model.graph.initializer}
    scales = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in inits:
            scales[node.input[0]] = float(np.asarray(numpy_helper.to_array(inits[node.input[1]])).reshape(-1)[0])
    return scales


def _stack(chunks: Sequence[np.ndarray], shape: Optional[tuple[int, ...]], count: int) -> np.ndarray:
    flat = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1) for c in chunks])
    if shape and flat.size == count * int(np.prod(shape)):
        return flat.reshape(count, *shape)
    return flat.reshape(count, -1) if flat.size % count == 0 else flat
