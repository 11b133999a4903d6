"""pytest plugin (``-p tests.nbval_durations``): print how long each notebook took under nbval."""

from collections import defaultdict

_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    if report.nodeid.split("::")[0].endswith(".ipynb"):
        _seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if _seconds:
        terminalreporter.section("notebook durations (nbval, CPU profile)")
        for path, seconds in sorted(_seconds.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{seconds:7.1f} s  {path}")
