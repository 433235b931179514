"""Unretrieved exceptions are reported; interpreter exit does not hang."""

import gc
import os
import subprocess
import sys
import textwrap

import micro_thread


def _collect_reports(monkeypatch):
    reports = []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)
    return reports


def test_unjoined_failure_is_reported_when_collected(mt, monkeypatch):
    reports = _collect_reports(monkeypatch)
    error = ValueError("nobody joins me")

    def fail():
        raise error

    thread = mt.start(fail)
    thread.name = "orphan"
    mt.sleep(0)
    assert thread.done()
    del thread
    for _ in range(3):
        gc.collect()
    assert len(reports) == 1
    assert reports[0].exc_value is error
    assert "orphan" in f"{reports[0].err_msg} {reports[0].object!r}"


def test_joined_failure_is_not_reported(mt, monkeypatch):
    reports = _collect_reports(monkeypatch)

    def fail():
        raise ValueError("joined")

    thread = mt.start(fail)
    try:
        thread.join()
    except ValueError:
        pass
    del thread
    gc.collect()
    assert reports == []


def test_killed_micro_thread_is_not_reported(mt, monkeypatch):
    reports = _collect_reports(monkeypatch)
    thread = mt.start(mt.sleep, 60)
    mt.sleep(0)
    thread.kill()
    mt.sleep(0)
    assert thread.done()
    del thread
    gc.collect()
    assert reports == []


def _run_script(mt, source):
    env = dict(os.environ, PYTHON_MICRO_THREAD=mt.__name__.rpartition(".")[2])
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(micro_thread.__file__)),
         env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(source)],
                          env=env, capture_output=True, text=True, timeout=60)


def test_exit_kills_blocked_micro_threads_and_runs_finally(mt):
    proc = _run_script(mt, """
        import micro_thread as mt
        pipe = mt.MicroPipe()

        def waiter():
            try:
                pipe.get()
            finally:
                print("finally ran", flush=True)

        mt.start(waiter)
        mt.sleep(0)
        print("main done", flush=True)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["main", "done", "finally", "ran"]


def test_exit_reports_unretrieved_exceptions(mt):
    proc = _run_script(mt, """
        import micro_thread as mt

        def fail():
            raise ValueError("reported at exit")

        kept = mt.start(fail)
        mt.sleep(0)
    """)
    assert proc.returncode == 0
    assert "reported at exit" in proc.stderr
    assert "never retrieved" in proc.stderr


def test_exit_does_not_hang_on_a_stubborn_micro_thread(mt):
    proc = _run_script(mt, """
        import micro_thread as mt

        def stubborn():
            while True:
                try:
                    mt.sleep(0.01)
                except mt.MicroThreadExit:
                    pass

        mt.start(stubborn)
        mt.sleep(0)
    """)
    assert proc.returncode == 0, proc.stderr
