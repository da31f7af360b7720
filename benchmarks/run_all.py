"""`make bench`: run every benchmark in turn; each prints its ratios and rewrites its docs/benchmarks.md section."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
for script in ("light_commands.py", "epoch_cost.py", "keras_fit.py", "any_model.py", "images.py", "table_read.py", "table_fit.py", "table_defaults.py", "predict_memory.py", "checkpoint_cost.py", "serving.py", "sweep_speed.py", "search_cost.py", "orchestration.py", "second_run.py", "run_cost.py", "cache_cost.py", "long_runs.py"):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True, cwd=HERE)
