"""A pytest plugin (``-p tests.result_log``): one line per finished test, ``nodeid<TAB>outcome<TAB>message``,
appended to the file named by ``AIHF_TEST_RESULT_LOG`` as soon as the test ends, so that a run stopped
by a time limit (scripts/gpu_check.sh) still leaves every result so far. Works under xdist (the
controller receives every worker's reports)."""

import os


def pytest_runtest_logreport(report):
    path = os.environ.get("AIHF_TEST_RESULT_LOG")
    if not path:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "error" if report.when == "setup" and report.failed else report.outcome
        message = ""
        if report.failed:
            message = str(getattr(report.longrepr, "reprcrash", None) and report.longrepr.reprcrash.message or "")
            message = message.splitlines()[0][:200] if message else ""
        with open(path, "a") as f:
            f.write(f"{report.nodeid}\t{outcome}\t{message}\n")
