"""Batch prediction: a published version's SavedModel over a CSV or Parquet file, streamed batch by batch.

- `model.py`: what the version's model takes and gives, from its folder alone (no trainflow class rebuilt);
- `inputs.py`: the checks a file passes before any row is scored (`InputError`, exit 2 from the CLI);
- `read.py`: record batches as read, cut to the size the model is fed;
- `cells.py`: columns turned into model inputs as training turned cells into features;
- `outputs.py`: the prediction and probability columns, the running summary, the preview;
- `stream.py`: `score`, the whole pass, written to a temporary file renamed into place at the end.

Output columns: every input column as read, then `prediction`, then for classification one
`probability_<label>` column per class (a row whose probabilities are NaN, from a NaN input, gets no label;
the summary's `unscored` counts such rows). A CSV's text feature columns are read as text, so cells that look
like numbers keep their spelling ('02134'); a Parquet file's numbers in a text feature are turned into their
text. A bad cell found after the first batch is a `DataError` naming its line (CSV) or row (Parquet), and
nothing is written either way.
"""
