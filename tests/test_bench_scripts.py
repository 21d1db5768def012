"""bench/bench_scripts.py runs a script in-process under cProfile and reports where its time went."""
import importlib.util

from conftest import ROOT


def test_bench_scripts_reports_phases(capsys):
    spec = importlib.util.spec_from_file_location("bench_scripts", ROOT / "bench" / "bench_scripts.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick", "--scripts", "bon", "--threads", "1"])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("bon "))
    wall, sampling = (float(x) for x in row.split()[1:3])
    assert wall > 0 and 0 < sampling <= wall + 1        # bon samples: time was found inside generate
