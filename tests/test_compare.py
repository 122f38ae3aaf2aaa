"""Check bench/compare.py --matrix and --flatness on a tiny scale: one table each, and exit 0."""

import re
import subprocess
import sys

from tests.conftest import REPO


def compare(tmp_path, *args):
    """bench/compare.py run with ``args``, one round, its cells cached in tmp_path; it must exit 0."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "compare.py"), *args, "--rounds", "1",
                           "--cache-dir", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_matrix_prints_one_row_per_cell_and_exits_0(tmp_path):
    proc = compare(tmp_path, "--matrix", "--scale", "0.001", "--cells", "a,g")
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


def test_flatness_prints_each_size_with_its_rule_state(tmp_path):
    proc = compare(tmp_path, "--flatness", "--scale", "0.002", "--cells", "a")
    header = [line for line in proc.stdout.splitlines() if line.startswith("| cell |")]
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.startswith("| a: ")]
    assert len(header) == 1 and "rule state" in header[0] and len(rows) == 3
    lines = [int(row[2].replace(",", "")) for row in rows]
    assert lines == sorted(lines) and lines[0] < lines[-1]  # 1x, 10x and 30x of the smallest
    states = [float(row[7]) for row in rows]
    assert all(state > 0 for state in states)  # every run's summary.json was read: rules hold state
    peaks = re.search(r"cell a: peak RSS (\d+) / (\d+) / (\d+) MB, spread \(max / min - 1\) ([\d.]+)%", proc.stdout)
    peak_rss = [float(row[6]) for row in rows]
    assert peaks and [float(p) for p in peaks.groups()[:3]] == peak_rss
    # the spread of the unrounded peaks: the table's, rounded to whole MB, within their rounding
    # (each peak within half a MB: at most (high + 0.5) / (low - 0.5) - high / low apart)
    low, high = min(peak_rss), max(peak_rss)
    assert abs(float(peaks.group(4)) - (high / low - 1) * 100) <= 50 * (low + high) / (low * (low - 0.5)) + 0.05
    assert re.search(r"^every cell within the flatness target: (MET|NOT MET)$", proc.stdout, re.MULTILINE)
