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

int8 (``--precision int8``): the placeholder is WBMM itself in builtin ops, so that the
converter's calibration sees WBMM's own values: the map, zero-padded bottom/right to whole
windows, is cut into its windows stacked on the batch axis (RESHAPE/TRANSPOSE, rank <= 4), a
'same' depthwise conv with the table as kernel runs on each window (zero padding at the window
border is exactly WBMM's), and the windows are put back and cropped. The TFLite converter
quantises it at full integer as it quantises any depthwise conv: the table (without the
identity; a following BatchNorm's scale s folded in) per channel symmetric (scale
max|table_c| / 127, zero point 0, quantized_dimension 3), the bias int32 at input_scale *
filter_scale[c], the input and output scales from calibration (pad, reshape, transpose and
slice keep their input's scale, so the chain's ends carry the conv's). The shortcut follows
as plain ops, ``y + x`` (``y + x * s`` with a BatchNorm), which the converter quantises as
any int8 ADD (and MUL by a constant): the ADD gets its own calibrated output scale and the
identity never touches the table's scales. ``finalize`` keeps those int8 tensors and
replaces the window chain by the int8 ``WBMM`` op from the chain's input to its output
(shortcut flag 0; ``converters/custom_ops.py`` describes the int8 form); the MUL and ADD
stay builtin ops.

Measured (``benchmarks/int8_custom_shortcut.py``, through the delegate, against Keras): the
identity folded into the centre tap instead was 2.8 output steps off on a 10x12x8 w=4 layer
and 4.6 on 56x56x96 w=7 (the tap, about 1, set each channel's scale and left the off-centre
taps, about 0.03, a few levels); WBMM + ADD is 0.6 and 0.76 steps off.
"""

from __future__ import annotations

import numpy as np

from converters.custom_ops import WBMM_OP, WbmmOptions
from converters.lowerings.base import (Lowering, WbmmParams, add_constant, add_tensor_like, consumers,
                                       deployed_layer, has_marker, opcode_index, producers)
from converters.lowerings.bmm import to_windows
from wbmm_mobile.errors import ConversionError


class CustomLowering(Lowering):
    name = "custom"
    summary = "one CUSTOM 'WBMM' op per layer (compact table in kernel layout); needs the C++ delegate"
    edits_flatbuffer = True
    needs_delegate = True

    # int8 keeps the identity out of the table (``WbmmParams.shortcut_scale``): folded, the
    # centre tap (about 1) would set each channel's weight scale and leave the off-centre taps
    # (about 0.03) a few int8 levels (2.8 / 4.6 output steps off Keras against 0.6 / 0.76 without).

    def deploy_layer(self, params: WbmmParams, precision: str = "float32"):
        return deployed_layer(params, self.emit_windowed if precision == "int8" else self.emit)

    def emit(self, x, p: WbmmParams):
        """A 'same' depthwise conv with the deploy table as kernel: only a marker that
        finalize() replaces by the WBMM custom op."""
        import tensorflow as tf

        kernel = tf.constant(p.kernel()[..., None])           # (kh, kw, C, 1)
        y = tf.nn.depthwise_conv2d(x, kernel, strides=[1, 1, 1, 1], padding="SAME")
        if p.bias is not None:
            y = y + tf.constant(p.bias.astype(np.float32))
        return y

    def emit_windowed(self, x, p: WbmmParams):
        """WBMM in builtin ops (the int8 placeholder): the same conv on each window, windows on
        the batch axis, so that calibration sees WBMM's values; then the shortcut as the ops
        TFLite quantises on its own: ADD of x (times a following BatchNorm's scale s by an int8
        MUL, s being folded into the table and bias already)."""
        windows, restore = to_windows(x, p.window)
        y = restore(self.emit(windows, p))
        if p.shortcut_scale is None:
            return y
        if np.all(p.shortcut_scale == 1.0):
            return y + x
        return y + x * p.shortcut_scale.astype(np.float32)

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
            # int8: the placeholder is a chain (windows in, conv, windows out); the op spans it.
            map_shape = [int(v) for v in params.input_shape[1:]]
            source, before_conv = _chain_end(model, subgraph, int(conv.inputs[0]), map_shape, backwards=True)
            output, after_conv = _chain_end(model, subgraph, int(conv.outputs[0]), map_shape, backwards=False)
            op.inputs = [source, filter_index, bias_index]
            activation = int(options.fusedActivationFunction)
            if activation == schema.ActivationFunctionType.NONE:
                op.outputs = [output]
                replacement = [op]
            elif activation in activations:
                before = add_tensor_like(subgraph, subgraph.tensors[output], subgraph.tensors[output].shape,
                                         f"{params.marker}/before_activation")
                op.outputs = [before]
                act = schema.OperatorT()
                act.opcodeIndex = opcode_index(model, activations[activation])
                act.inputs, act.outputs = [before], [output]
                replacement = [op, act]
            else:
                raise ConversionError(f"layer {params.name!r}: the converter fused activation {activation} "
                                      "into it, which the custom lowering does not split off")
            # The op goes where the chain's last op was: its input exists by then, its readers come later.
            chain = sorted(before_conv + [at] + after_conv)
            subgraph.operators[chain[-1]:chain[-1] + 1] = replacement
            for index in reversed(chain[:-1]):
                del subgraph.operators[index]
            notes.append(f"{params.name}: CUSTOM {WBMM_OP} (table {kh}x{kw}x{params.channels})")
        _drop_dead_dequantize(model, subgraph)
        return notes


# Ops that only move or crop values (and keep their input's quantisation): the window chain.
_LAYOUT_OPS = ("PAD", "PADV2", "RESHAPE", "TRANSPOSE", "STRIDED_SLICE", "SLICE")


def _chain_end(model, subgraph, tensor: int, map_shape: list[int], backwards: bool) -> tuple[int, list[int]]:
    """Follow the layout ops of the window chain from ``tensor`` (the conv's input or output) to the
    first tensor of the layer's (H, W, C) ``map_shape``: backwards to the tensor the chain reads,
    forwards to the one it writes. Returns (that tensor, the indices of the ops passed). Every
    tensor inside the chain has another shape, so the walk never leaves the layer; the float
    placeholder (no chain) stops at once. When the map is one window and needs no padding the
    windows already have the map's shape: the walk stops there and the chain's identity
    reshapes stay, harmless."""
    from converters import tflite_io

    passed = []
    while [int(s) for s in subgraph.tensors[tensor].shape[1:]] != map_shape:
        if backwards:
            at = producers(subgraph).get(tensor)
            candidates = [] if at is None else [at]
        else:
            candidates = consumers(subgraph).get(tensor, [])
        if len(candidates) != 1 or tflite_io.opcode_name(
                model, subgraph.operators[candidates[0]].opcodeIndex) not in _LAYOUT_OPS:
            raise ConversionError(f"the window chain around the WBMM placeholder is not the expected layout ops "
                                  f"(at tensor {tflite_io.tensor_name(subgraph.tensors[tensor])!r})")
        passed.append(candidates[0])
        op = subgraph.operators[candidates[0]]
        tensor = int(op.inputs[0]) if backwards else int(op.outputs[0])
    return tensor, passed


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
