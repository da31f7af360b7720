"""Light commands: `trainflow validate` on 100 specs in one call, and `trainflow --help`.

Bars: validate on 100 specs < 2 s in total; --help < 0.5 s. Both import neither TensorFlow nor Prefect.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, best_of, table, write_section

TRAINFLOW = str(Path(sys.executable).parent / "trainflow")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "specs"
        shutil.copytree(ROOT / "specs", folder)  # the data files, scoring sources and extends targets they name
        sources = sorted(folder.glob("*.yaml"))
        specs = []
        for i in range(100):
            source = sources[i % len(sources)]
            target = folder / f"{i:03d}-{source.name}"
            shutil.copy(source, target)
            specs.append(str(target))
        validate = best_of(lambda: subprocess.run([TRAINFLOW, "validate", *specs], check=True, capture_output=True))
    help_time = best_of(lambda: subprocess.run([TRAINFLOW, "--help"], check=True, capture_output=True))
    python = best_of(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
    write_section("Light commands", table(
        ["command", "wall s", "bar"],
        [["trainflow validate (100 specs, one call)", f"**{validate:.2f}**", "< 2 s"],
         ["trainflow --help", f"**{help_time:.2f}**", "< 0.5 s"],
         ["python -c pass (interpreter start)", f"{python:.2f}", ""]]))


if __name__ == "__main__":
    main()
