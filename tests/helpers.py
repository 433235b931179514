"""Small helpers shared by the test modules."""

import threading


def run_in_os_thread(fn, *args):
    """Run ``fn(*args)`` in a new OS thread; return its result or raise."""
    outcome = {}

    def body():
        try:
            outcome["result"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "OS thread did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
