"""tasks/serving without a server: request bodies parsed against a signature of any shape, and the batcher.

The signatures are described directly (`TensorSpec`), as a SavedModel's would be read; the batcher runs on a
real event loop with a plain NumPy function standing for the model, so each promise is checked in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pyarrow as pa
import pytest

from tasks.results import Feature
from tasks.serving.batching import Batcher
from tasks.serving.parse import RequestError, parse
from tasks.serving.signature import TensorSpec

TABLE = [TensorSpec("age", "float32", "DT_FLOAT", (), Feature("age", "age", "number")),
         TensorSpec("annual_income", "float32", "DT_FLOAT", (), Feature("annual income", "annual_income", "number")),
         TensorSpec("plan", "string", "DT_STRING", (), Feature("plan", "plan", "text", ["basic", "pro"]))]
IMAGE = [TensorSpec("pixels", "uint8", "DT_UINT8", (2, 2, 3))]
BYTES = [TensorSpec("image_bytes", "string", "DT_STRING", ())]
TWO = [TensorSpec("ids", "int32", "DT_INT32", (3,)), TensorSpec("mask", "bool", "DT_BOOL", (3,))]


def _body(value) -> bytes:
    return json.dumps(value).encode()


def _refused(body, specs) -> str:
    with pytest.raises(RequestError) as caught:
        parse(body if isinstance(body, bytes) else _body(body), specs)
    return caught.value.message


def test_rows_and_columns_give_the_same_inputs_and_a_column_takes_its_own_name_or_the_signatures():
    rows = [{"age": 30, "annual income": 5e4, "plan": " pro"}, {"age": None, "annual_income": 1, "plan": True}]
    by_rows = parse(_body({"instances": rows}), TABLE)
    by_columns = parse(_body({"inputs": {"age": [30, None], "annual_income": [5e4, 1], "plan": [" pro", True]}}), TABLE)
    assert not by_rows.columnar and by_columns.columnar and by_rows.rows == by_columns.rows == 2
    for key in ("age", "annual_income", "plan"):
        assert by_rows.inputs[key] == by_columns.inputs[key]
    assert by_rows.inputs["age"] == [30.0, None] and type(by_rows.inputs["age"][0]) is float, \
        "a whole number and an empty cell, as a file's number column holds them"
    assert by_rows.inputs["plan"] == [" pro", "True"], "true/false as training read it; trimmed later"
    assert parse(_body({"instances": [{**rows[0], "age": 2**60}]}), TABLE).inputs["age"] == [float(2**60)], \
        "a whole number past float64's exact range is still a number"
    assert _refused({"instances": [{**rows[0], "age": 2**1100}]}, TABLE) == \
        "instances[0].age: a number too large where the model takes a number"
    assert _refused({"instances": [{"age": 1, "annual income": 2, "annual_income": 3, "plan": "x"}]}, TABLE) == \
        "instances[0]: annual_income and 'annual income' name the same input; give one"


def test_an_input_of_any_rank_and_dtype_is_checked_against_its_signature():
    image = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)
    parsed = parse(_body({"instances": image.tolist()}), IMAGE)
    assert parsed.inputs["pixels"].dtype == np.uint8 and (parsed.inputs["pixels"] == image).all()
    assert parsed.shapes == ((2, 2, 3),)
    assert parse(_body({"instances": [{"pixels": image[0].tolist()}]}), IMAGE).rows == 1, "the object form too"
    assert _refused({"instances": (image.astype(int) + 300).tolist()}, IMAGE) == "instances[*]: numbers outside uint8's range (0 to 255)"
    assert _refused({"instances": (image / 2).tolist()}, IMAGE) == "instances[*]: fractions where the model takes whole numbers (uint8)"
    assert _refused({"instances": [[[["a", 1, 2]] * 2] * 2]}, IMAGE) == "instances[0]: text where the model takes numbers"
    assert _refused({"instances": image[:, :1].tolist()}, IMAGE) == \
        "instances[*]: rows of [1, 2, 3] where the model takes [2, 2, 3] per row"
    two = parse(_body({"inputs": {"ids": [[1, 2, 3]], "mask": [[True, False, True]]}}), TWO)
    assert two.inputs["ids"].dtype == np.int32 and two.inputs["mask"].dtype == np.bool_
    assert _refused({"inputs": {"ids": [[1, 2, 3]], "mask": [[1, 0, 1]]}}, TWO) == \
        "inputs.mask: numbers where the model takes true/false"
    assert _refused({"instances": [[1, 2, 3]]}, TWO).startswith("instances[0]: must be an object of the model's inputs")


def test_bytes_come_as_b64_objects_and_nan_as_tensorflow_serving_accepts_it():
    parsed = parse(_body({"instances": [{"b64": "aW1hZ2UgYnl0ZXM="}, "plain text"]}), BYTES)
    assert parsed.inputs["image_bytes"].tolist() == [b"image bytes", "plain text"]
    assert _refused({"instances": [{"b64": "not base64!"}]}, BYTES) == "instances[0]: not valid base64 in 'b64'"
    assert _refused({"instances": [3]}, BYTES) == "instances[0]: a number where the model takes text (one value per row)"
    line = [TensorSpec("x", "float32", "DT_FLOAT", (), Feature("x", "x", "number"))]
    assert np.isnan(parse(b'{"instances": [NaN, 1.0]}', line).inputs["x"][0])


def test_the_body_itself_is_checked_and_never_quoted():
    assert _refused(b"\xff\xfe", TABLE) == "the request body is not UTF-8 text"
    assert _refused(b"[" * 100_000, TABLE) in ("malformed JSON: nested too deeply",
                                               "malformed JSON: Expecting value at line 1 column 100001")
    assert _refused({"instance": []}, TABLE) == ("instance: not a field of a predict request (did you mean 'instances'?); "
                                                 "send 'instances' (rows) or 'inputs' (columns)")
    assert _refused({"instances": [1], "signature_name": "other"}, TABLE) == \
        "signature_name: this server serves the 'serving_default' signature only"
    assert _refused({"instances": [{"age": 1, "annual income": 2, "plan": {"x": "secret"}}]}, TABLE) == \
        "instances[0].plan: an object where the model takes text (one value per row)"


def _echo(inputs: dict) -> dict:
    """A model standing in for TensorFlow: each row's input doubled, and one row count per call."""
    x = inputs["x"]
    return {"y": np.asarray(x) * 2, "rows": np.full(len(x), len(x))}


async def _submit(batcher: Batcher, values: list[float]) -> dict:
    batcher.expect()
    return await batcher.submit({"x": np.array(values)}, len(values), ())


def test_requests_that_arrive_together_share_one_call_and_each_gets_its_own_rows():
    async def scenario():
        batcher = Batcher(_echo, max_rows=64, timeout=0.05)
        batcher.start()
        answers = await asyncio.gather(*(_submit(batcher, [i, i + 0.5]) for i in range(10)))
        await batcher.close()
        return batcher.calls, answers

    calls, answers = asyncio.run(scenario())
    assert calls == 1
    for i, answer in enumerate(answers):
        assert answer["y"].tolist() == [2 * i, 2 * i + 1] and answer["rows"].tolist() == [20, 20]


def test_a_batch_holds_at_most_max_rows_and_a_larger_request_runs_alone():
    async def scenario():
        batcher = Batcher(_echo, max_rows=4, timeout=0.05)
        batcher.start()
        answers = await asyncio.gather(*(_submit(batcher, [i]) for i in range(9)), _submit(batcher, list(range(6))))
        await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    assert [a["rows"][0] for a in answers[:9]] == [4, 4, 4, 4, 4, 4, 4, 4, 1]
    assert answers[9]["rows"].tolist() == [6] * 6 and answers[9]["y"].tolist() == [0, 2, 4, 6, 8, 10]


def test_a_lone_request_never_waits_for_the_timeout_and_batching_off_is_one_call_per_request():
    async def scenario():
        batcher = Batcher(_echo, max_rows=64, timeout=5.0)
        batcher.start()
        started = time.monotonic()
        await _submit(batcher, [1.0])
        waited = time.monotonic() - started
        off = Batcher(_echo, max_rows=1, timeout=5.0)
        off.start()
        await asyncio.gather(*(_submit(off, [i]) for i in range(5)))
        await batcher.close()
        await off.close()
        return waited, off.calls

    waited, calls = asyncio.run(scenario())
    assert waited < 1.0, "nobody else was on the way: no wait for the 5 s timeout"
    assert calls == 5


def test_one_bad_request_in_a_shared_call_fails_alone():
    def model(inputs):
        if (np.asarray(inputs["x"]) < 0).any():
            raise ValueError("negative")
        return _echo(inputs)

    async def scenario():
        batcher = Batcher(model, max_rows=64, timeout=0.05)
        batcher.start()
        answers = await asyncio.gather(_submit(batcher, [1.0]), _submit(batcher, [-1.0]), _submit(batcher, [2.0]),
                                       return_exceptions=True)
        await batcher.close()
        return answers

    first, bad, third = asyncio.run(scenario())
    assert isinstance(bad, ValueError) and first["y"].tolist() == [2.0] and third["y"].tolist() == [4.0]


def test_table_columns_from_several_requests_are_joined_as_arrow_arrays():
    async def scenario():
        seen = []

        def model(inputs):
            seen.append(inputs["plan"])
            return {"n": np.arange(len(inputs["plan"]))}

        batcher = Batcher(model, max_rows=64, timeout=0.05)
        batcher.start()
        jobs = []
        for values in (["a"], ["b", "c"]):
            batcher.expect()
            jobs.append(batcher.submit({"plan": values}, len(values), ()))
        answers = await asyncio.gather(*jobs)
        await batcher.close()
        return seen, answers

    seen, answers = asyncio.run(scenario())
    assert seen == [["a", "b", "c"]]
    assert [a["n"].tolist() for a in answers] == [[0], [1, 2]]


@pytest.mark.parametrize("imputed", [False, True], ids=["as sent", "imputed"])
def test_a_small_batchs_text_cells_convert_through_the_memo_as_column_wise_conversion_does(imputed):
    from pathlib import Path

    from tasks.scoring.model import Model
    from tasks.serving.call import TextMemo, _convert
    from tasks.scoring.cells import unseen_cells

    plan = Feature("plan", "plan", "text", ["basic", "pro", "missing"])
    promo = Feature("promo", "promo", "text", ["False", "True"])  # a true/false column, read as training read it
    model = Model(Path("."), "classification", [plan, promo], ["no", "yes"], impute=imputed)
    cells = [" pro ", "pro", None, "", "  ", "TRUE", "true", "1", "0", "False", "max", "basic\t", "pro"]
    for feature in (plan, promo):
        memo = TextMemo(model, feature)
        part = Model(Path("."), "classification", [feature], impute=imputed)
        (expected,) = _convert(part, pa.record_batch([pa.array(cells, pa.string())], names=[feature.name]))
        for _ in range(2):  # converted, then remembered
            texts, unseen = memo(cells)
            assert texts == expected.to_pylist()
            assert unseen.tolist() == unseen_cells(feature, expected).to_pylist()
    assert "missing" in texts if imputed else "" in texts
