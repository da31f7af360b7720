"""Online prediction: published versions answering over HTTP in TensorFlow Serving's REST format.

- `settings.py`: batching, body limit and polling, declared once (light: the CLI's options read it);
- `signature.py`: what a version takes and gives, from its SavedModel's `serving_default` signature;
- `parse.py`: a request body (`instances` or `inputs`) to the model's inputs, checked field by field;
- `batching.py`: concurrent requests coalesced into one model call, each caller getting its own rows;
- `registry.py`: the versions each reference serves, and the hot swap when an alias or `latest` moves;
- `responses.py`: TensorFlow Serving's response shapes, with trainflow's fields under `trainflow`;
- `metrics.py`: `/metrics` (requests, errors, latency, batch sizes, the version each label serves);
- `app.py`: the Starlette app; `server.py`: running it with uvicorn (`serve`, `Background`).

It reuses what batch prediction does: `tasks/scoring/model.py` loads a version (checking its files against the
manifest), `tasks/scoring/cells.py` turns a table's columns into the model's inputs and counts unseen values,
`tasks/scoring/outputs.py` maps outputs to class labels; aliases resolve through `tasks/lifecycle/aliases.py`.
"""
