"""``custom`` lowering: one custom op ``WBMM`` per layer, executed by the project's C++ delegate.

The layer is traced as a placeholder the converter understands, a 'same' DEPTHWISE_CONV_2D
whose (1, 2wh-1, 2ww-1, C) filter is the deploy table in kernel layout (the layout
``converters/custom_ops.py`` fixes) plus the bias. After conversion that op is replaced by a
CUSTOM ``WBMM`` op with the same input, filter (float32, or the float16 constant of a float16
file without its DEQUANTIZE) and bias, and ``WbmmOptions(wh, ww, shortcut=False)`` (the
shortcut is already in the table's centre). Whatever the converter folded into the placeholder
(a following per-channel scale or shift) stays valid, because WBMM is linear in (table, bias);
a fused activation becomes its own RELU/RELU6 op after the custom op.

The stock interpreter cannot run the result: it needs the delegate (``delegates``).

int8 (``--precision int8``): the same placeholder, converted by the TFLite converter at full
integer, is an int8 DEPTHWISE_CONV_2D whose filter (the table, identity shortcut already in
its centre tap) is quantised per channel symmetric (scale max|table_c| / 127, zero point 0,
quantized_dimension 3), whose bias is int32 at input_scale * filter_scale[c], and whose input
and output scales come from the converter's calibration: exactly how TFLite quantises the
equivalent op. ``finalize`` keeps those int8 tensors as they are and swaps the op for the
int8 ``WBMM`` (shortcut flag 0; ``converters/custom_ops.py`` describes the int8 form).
Calibration sees a 'same' conv of the whole map, which differs from WBMM only where a tap
crosses a window border; the output scale is therefore the equivalent conv's, not WBMM's own
(close: both sum the same taps inside each window).
"""

from __future__ import annotations

import numpy as np

from converters.custom_ops import WBMM_OP, WbmmOptions
from converters.lowerings.base import (Lowering, WbmmParams, add_constant, add_tensor_like, consumers, has_marker,
                                       opcode_index, producers)
from wbmm_mobile.errors import ConversionError


class CustomLowering(Lowering):
    name = "custom"
    summary = "one CUSTOM 'WBMM' op per layer (compact table in kernel layout); needs the C++ delegate"
    edits_flatbuffer = True
    needs_delegate = True

    # int8: the identity shortcut goes into the table's centre tap before the table is quantised.
    folds_shortcut_at_int8 = True

    def emit(self, x, p: WbmmParams):
        """A 'same' depthwise conv with the deploy table as kernel: only a marker that
        finalize() replaces by the WBMM custom op."""
        import tensorflow as tf

        kernel = tf.constant(p.kernel()[..., None])           # (kh, kw, C, 1)
        y = tf.nn.depthwise_conv2d(x, kernel, strides=[1, 1, 1, 1], padding="SAME")
        if p.bias is not None:
            y = y + tf.constant(p.bias.astype(np.float32))
        return y

    def finalize(self, model, layers: list[WbmmParams]) -> list[str]:
        from ai_edge_litert import schema_py_generated as schema
        from converters import tflite_io

        subgraph = model.subgraphs[0]
        custom_code = opcode_index(model, schema.BuiltinOperator.CUSTOM, WBMM_OP)
        activations = {schema.ActivationFunctionType.RELU: schema.BuiltinOperator.RELU,
                       schema.ActivationFunctionType.RELU6: schema.BuiltinOperator.RELU6}
        notes = []
        for params in layers:
            written_by = producers(subgraph)
            at = next((i for i, op in enumerate(subgraph.operators)
                       if tflite_io.opcode_name(model, op.opcodeIndex) == "DEPTHWISE_CONV_2D"
                       and any(has_marker(subgraph.tensors[t], params.marker)
                               for t in list(op.outputs) + [int(op.inputs[1])])), None)
            if at is None:
                raise ConversionError(f"layer {params.name!r}: its placeholder op was not found in the file")
            conv = subgraph.operators[at]
            options = conv.builtinOptions
            if (options.strideH, options.strideW, options.dilationHFactor, options.dilationWFactor) != (1, 1, 1, 1) \
                    or options.padding != schema.Padding.SAME:
                raise ConversionError(f"layer {params.name!r}: the converter changed the placeholder's geometry")
            kh, kw = 2 * params.window[0] - 1, 2 * params.window[1] - 1
            filter_index = int(conv.inputs[1])
            if filter_index in written_by and tflite_io.opcode_name(
                    model, subgraph.operators[written_by[filter_index]].opcodeIndex) == "DEQUANTIZE":
                filter_index = int(subgraph.operators[written_by[filter_index]].inputs[0])   # the float16 constant
            if list(subgraph.tensors[filter_index].shape) != [1, kh, kw, params.channels]:
                raise ConversionError(f"layer {params.name!r}: placeholder filter has shape "
                                      f"{list(subgraph.tensors[filter_index].shape)}, expected {[1, kh, kw, params.channels]}")
            bias_index = int(conv.inputs[2]) if len(conv.inputs) > 2 else -1
            if bias_index >= 0:
                bias = tflite_io.constant_value(model, 0, bias_index)
                if bias is None and bias_index in written_by:      # float16 file: DEQUANTIZE'd bias
                    source = int(subgraph.operators[written_by[bias_index]].inputs[0])
                    bias = tflite_io.constant_value(model, 0, source)
                if bias is None:
                    raise ConversionError(f"layer {params.name!r}: the placeholder's bias is not a constant")
                integer = subgraph.tensors[int(conv.inputs[0])].type == schema.TensorType.INT8
                if integer:
                    pass                                              # int8: the converter's int32 bias as it is
                elif not np.any(bias) and params.bias is None:
                    bias_index = -1                                   # the converter's zero bias: drop it
                elif subgraph.tensors[bias_index].type != schema.TensorType.FLOAT32 or bias_index in written_by:
                    bias_index = add_constant(model, subgraph, bias.astype(np.float32), f"{params.marker}/bias",
                                              schema.TensorType.FLOAT32)

            op = schema.OperatorT()
            op.opcodeIndex = custom_code
            op.customOptions = list(WbmmOptions(params.window[0], params.window[1], shortcut=False).pack())
            op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS   # the schema's only value
            op.inputs = [int(conv.inputs[0]), filter_index, bias_index]
            output = int(conv.outputs[0])
            activation = int(options.fusedActivationFunction)
            if activation == schema.ActivationFunctionType.NONE:
                op.outputs = [output]
                subgraph.operators[at] = op
            elif activation in activations:
                before = add_tensor_like(subgraph, subgraph.tensors[output], subgraph.tensors[output].shape,
                                         f"{params.marker}/before_activation")
                op.outputs = [before]
                act = schema.OperatorT()
                act.opcodeIndex = opcode_index(model, activations[activation])
                act.inputs, act.outputs = [before], [output]
                subgraph.operators[at:at + 1] = [op, act]
            else:
                raise ConversionError(f"layer {params.name!r}: the converter fused activation {activation} "
                                      "into it, which the custom lowering does not split off")
            notes.append(f"{params.name}: CUSTOM {WBMM_OP} (table {kh}x{kw}x{params.channels})")
        _drop_dead_dequantize(model, subgraph)
        return notes


def _drop_dead_dequantize(model, subgraph) -> None:
    """Remove DEQUANTIZE ops whose output nothing reads any more (filters now read as float16)."""
    from converters import tflite_io

    while True:
        readers = consumers(subgraph)
        outputs = set(int(t) for t in subgraph.outputs)
        dead = [i for i, op in enumerate(subgraph.operators)
                if tflite_io.opcode_name(model, op.opcodeIndex) == "DEQUANTIZE"
                and not readers.get(int(op.outputs[0])) and int(op.outputs[0]) not in outputs]
        if not dead:
            return
        for i in reversed(dead):
            del subgraph.operators[i]


LOWERING = CustomLowering()
