"""converters.tflite_io: field-by-field round trips of real converted models, clear errors, fuzzing."""

import functools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from converters import tflite_io
from tests._rewrite_case import converted_depthwise
from wbmm_mobile.errors import CorruptModelError, ModelNotFoundError


@functools.lru_cache(maxsize=None)
def while_loop_model() -> bytes:
    """A model with three subgraphs (main, WHILE cond, WHILE body), from a constants-only tf.function."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
    def loop(x):
        i = tf.constant(0)
        _, y = tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, y * 2.0 + tf.constant([1.0, 2, 3, 4])),
                             (i, x))
        return y

    return tf.lite.TFLiteConverter.from_concrete_functions([loop.get_concrete_function()], loop).convert()


def assert_same_tree(a, b, path="model"):
    """Every field of two object-API trees is equal (numpy arrays by value, bytes exactly)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)
        return
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{path}[{i}]")
        return
    if hasattr(a, "__dict__"):
        assert type(a) is type(b) or isinstance(b, type(a)) or isinstance(a, type(b)), path
        assert set(vars(a)) == set(vars(b)), path
        for key in vars(a):
            assert_same_tree(getattr(a, key), getattr(b, key), f"{path}.{key}")
        return
    assert a == b, f"{path}: {a!r} != {b!r}"


MODELS = {
    "float32": lambda: converted_depthwise(7),
    "float16": lambda: converted_depthwise(7, quantize="float16"),
    "int8": lambda: converted_depthwise(7, quantize="int8"),
    "while": while_loop_model,
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_round_trip_field_by_field(kind, tmp_path):
    data = MODELS[kind]()
    model = tflite_io.load_model(data)
    path = tflite_io.write_model(model, tmp_path / "copy.tflite")
    again = tflite_io.load_model(path)
    assert_same_tree(model, again)
    # A second trip is byte-stable.
    assert tflite_io.model_to_bytes(again) == path.read_bytes()


def test_round_trip_keeps_what_matters():
    model = tflite_io.load_model(MODELS["int8"]())
    again = tflite_io.load_model(tflite_io.model_to_bytes(model))
    assert [s.signatureKey for s in again.signatureDefs] == [b"serving_default"]
    assert {m.name for m in again.metadata} >= {b"min_runtime_version", b"CONVERSION_METADATA"}
    weights = [t for t in again.subgraphs[0].tensors if t.type == tflite_io.schema.TensorType.INT8
               and len(t.shape) == 4 and t.shape[0] == 1 and t.shape[1] == 7]
    assert len(weights) == 1
    q = weights[0].quantization
    assert len(q.scale) == 4 and q.quantizedDimension == 3          # per-channel scales kept
    assert len(tflite_io.load_model(MODELS["while"]()).subgraphs) == 3


def test_buffers_are_16_byte_aligned_in_the_file():
    data = tflite_io.model_to_bytes(tflite_io.load_model(MODELS["float32"]()))
    import ai_edge_litert.schema_py_generated as schema
    root = schema.Model.GetRootAs(data, 0)
    for i in range(root.BuffersLength()):
        buffer = root.Buffers(i)
        if buffer.DataLength():
            start = buffer._tab.Vector(buffer._tab.Offset(4))
            assert start % 16 == 0


def test_round_tripped_model_runs_the_same():
    from converters import verify
    data = MODELS["float32"]()
    copy = tflite_io.model_to_bytes(tflite_io.load_model(data))
    inputs = verify.random_inputs(data, 0)
    np.testing.assert_array_equal(verify.run_tflite(data, inputs)[0], verify.run_tflite(copy, inputs)[0])


def test_missing_file_is_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        tflite_io.load_model(tmp_path / "absent.tflite")
    assert isinstance(info.value, FileNotFoundError) and "absent.tflite" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"abc", b"\x00" * 64, b"not a flatbuffer at all, just text" * 4])
def test_garbage_is_corrupt_naming_the_file(tmp_path, content):
    path = tmp_path / "garbage.tflite"
    path.write_bytes(content)
    with pytest.raises(CorruptModelError, match="garbage.tflite"):
        tflite_io.load_model(path)


def test_directory_and_truncation(tmp_path):
    with pytest.raises(CorruptModelError, match="directory"):
        tflite_io.load_model(tmp_path)
    data = MODELS["float32"]()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModelError, match="cut.tflite"):
        tflite_io.load_model(path)


@given(st.sampled_from(sorted(MODELS)[:3]),
       st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1, max_size=12),
       st.one_of(st.none(), st.integers(0, 10**7)))
def test_fuzzed_models_load_or_raise_corrupt(kind, flips, cut):
    data = bytearray(MODELS[kind]())
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    try:
        model = tflite_io.load_model(bytes(data), name="fuzzed.tflite")
    except CorruptModelError as exc:
        assert "fuzzed.tflite" in str(exc)
        return
    # What loads must be walkable by the passes and writable again.
    for g in range(len(model.subgraphs)):
        tflite_io.op_names(model, g)
    tflite_io.model_to_bytes(model)


@given(st.binary(min_size=8, max_size=512))
def test_random_bytes_with_the_identifier_never_escape(tail):
    data = tail[:4] + b"TFL3" + tail[8:]
    try:
        tflite_io.load_model(data, name="random.tflite")
    except CorruptModelError:
        pass


def test_buffers_stored_after_the_flatbuffer_are_read():
    # Files past 2 GB keep buffer bytes after the flatbuffer (Buffer.offset/size); the
    # reader brings them back in. Built small here: the layout does not depend on size.
    model = tflite_io.load_model(MODELS["float32"]())
    index, buffer = max(enumerate(model.buffers), key=lambda item: 0 if item[1].data is None else len(item[1].data))
    payload = bytes(np.asarray(buffer.data, dtype=np.uint8))
    buffer.data, buffer.offset, buffer.size = None, 1, len(payload)
    length = len(tflite_io.model_to_bytes(model))
    buffer.offset = -(-length // 16) * 16
    head = tflite_io.model_to_bytes(model)
    assert len(head) == length
    data = head + b"\0" * (buffer.offset - length) + payload
    again = tflite_io.load_model(data)
    assert bytes(np.asarray(again.buffers[index].data, dtype=np.uint8)) == payload
    assert again.buffers[index].offset == 0
    with pytest.raises(CorruptModelError, match="past the end"):
        tflite_io.load_model(data[:-8], name="cut.tflite")


@given(st.sampled_from(sorted(MODELS)[:3]),
       st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzzed_models_that_load_rewrite_or_fail_cleanly(kind, flips):
    from converters.rewrite import RewriteOptions, rewrite_model
    from wbmm_mobile.errors import WbmmError

    data = bytearray(MODELS[kind]())
    for position, value in flips:
        data[position % len(data)] = value
    try:
        rewrite_model(bytes(data), RewriteOptions(strategy="split", verify=False), name="fuzzed.tflite")
    except WbmmError as exc:
        assert str(exc)
