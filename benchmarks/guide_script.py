"""The TensorFlow guide "Basic training loops" as a plain script: its own code, top to bottom, with the
figures saved as PNGs instead of shown. The baseline `trainflow run specs/guide.yaml` is measured against
(benchmarks/run_cost.py). The guide's noise is unseeded; it is seeded here so runs are alike."""

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402

out = tempfile.mkdtemp()
colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
TRUE_W, TRUE_B, NUM_EXAMPLES = 3.0, 2.0, 201
x = tf.cast(tf.linspace(-2, 2, NUM_EXAMPLES), tf.float32)


def f(x):
    return x * TRUE_W + TRUE_B


noise = tf.random.stateless_normal(shape=[NUM_EXAMPLES], seed=[42, 0])
y = f(x) + noise
plt.plot(x, y, ".")
plt.savefig(f"{out}/data.png")
plt.close()


class MyModel(tf.Module):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = tf.Variable(5.0)
        self.b = tf.Variable(0.0)

    def __call__(self, x):
        return self.w * x + self.b


model = MyModel()
assert model(3.0).numpy() == 15.0


def loss(target_y, predicted_y):
    return tf.reduce_mean(tf.square(target_y - predicted_y))


plt.plot(x, y, ".", label="Data")
plt.plot(x, f(x), label="Ground truth")
plt.plot(x, model(x), label="Predictions")
plt.legend()
plt.savefig(f"{out}/before.png")
plt.close()


def train(model, x, y, learning_rate):
    with tf.GradientTape() as t:
        current_loss = loss(y, model(x))
    dw, db = t.gradient(current_loss, [model.w, model.b])
    model.w.assign_sub(learning_rate * dw)
    model.b.assign_sub(learning_rate * db)


weights, biases = [], []
epochs = range(10)


def report(model, loss):
    return f"W = {model.w.numpy():1.2f}, b = {model.b.numpy():1.2f}, loss={loss:2.5f}"


def training_loop(model, x, y):
    for epoch in epochs:
        train(model, x, y, learning_rate=0.1)
        weights.append(model.w.numpy())
        biases.append(model.b.numpy())
        current_loss = loss(y, model(x))
        print(f"Epoch {epoch:2d}:")
        print("    ", report(model, current_loss))


print("Starting:")
print("    ", report(model, loss(y, model(x))))
training_loop(model, x, y)
plt.plot(epochs, weights, label="Weights", color=colors[0])
plt.plot(epochs, [TRUE_W] * len(epochs), "--", label="True weight", color=colors[0])
plt.plot(epochs, biases, label="bias", color=colors[1])
plt.plot(epochs, [TRUE_B] * len(epochs), "--", label="True bias", color=colors[1])
plt.legend()
plt.savefig(f"{out}/weights.png")
plt.close()
plt.plot(x, y, ".", label="Data")
plt.plot(x, f(x), label="Ground truth")
plt.plot(x, model(x), label="Predictions")
plt.legend()
plt.savefig(f"{out}/after.png")
plt.close()
print("Current loss: %1.6f" % loss(model(x), y).numpy(), file=sys.stderr)
