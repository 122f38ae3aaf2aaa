"""Check bench/compare.py --matrix on a tiny scale: one table with a row per requested cell, and exit 0."""

import re
import subprocess
import sys

from tests.conftest import REPO


def test_matrix_prints_one_row_per_cell_and_exits_0(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "compare.py"), "--matrix", "--scale", "0.001",
                           "--rounds", "1", "--cells", "a,g", "--cache-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    header = [line for line in proc.stdout.splitlines() if line.startswith("| cell |")]
    rows = [line for line in proc.stdout.splitlines() if re.match(r"\| [a-g]: ", line)]
    assert len(header) == 1 and [row[2] for row in rows] == ["a", "g"]
    assert all(row.count("|") == header[0].count("|") and "| equal |" in row for row in rows)
    assert all(re.search(r"\| \d+\.\d% \|", row) for row in rows)  # the output share, to a tenth of a percent
    assert "output share < 5%" in proc.stdout  # a target the verdict checks
    assert "results: every cell right" in proc.stdout
    assert re.search(r"^every cell within target: (MET|NOT MET \(cells [a-g, ]+\))$", proc.stdout, re.MULTILINE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generate-lines10000-days0.003-seed42",
                                                          "traffic-lines10000-days0.003-seed42-profileheavy"]
