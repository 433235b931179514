"""Zero cost when unused: code that never touches micro-threads.

Run on the stock and on the patched interpreter, then compare::

    build/perf-venv-stock/bin/python bench_nouse.py --fast -o results/nouse-stock.json
    build/perf-venv-patched/bin/python bench_nouse.py --fast -o results/nouse-patched.json
    python -m pyperf compare_to --table results/nouse-stock.json results/nouse-patched.json

The patch changes the eval loop in these places, and each has benchmarks
that run exactly that path (times are per operation):

* the ``error:`` label (one pointer compare for the deferral):
  ``exc_raise_catch``, ``exc_unwind_10_frames``
* BEFORE_WITH / normal ``with`` exit (``CALL 2`` of a bound ``__exit__``) /
  WITH_EXCEPT_START (Python ``__enter__``/``__exit__`` now run inline):
  ``with_python_cm``, ``with_contextmanager``, ``with_c_lock``,
  ``with_exception_suppressed``
* generic FOR_ITER (records the iterator in the thread state):
  ``for_dict_items``, ``for_enumerate``, ``for_zip``, ``for_py_iterator``,
  plus the specialised ``for_range_list`` as a control
* CALL_FUNCTION_EX (bound Python methods inlined): ``call_ex_bound_method``,
  ``call_ex_function``
* generic CALL of bound methods: ``call_bound_method_polymorphic`` (a call
  site that sees several bound methods stays unspecialised),
  ``call_bound_method_defaults``, ``call_method``
* whole-program style: ``fib_recursive``, ``generator_pipeline``,
  ``dict_str_ops``

The benchmarks are deterministic and import nothing from this project.
"""

import contextlib
import threading

import pyperf

perf_counter = pyperf.perf_counter


# -- exceptions -----------------------------------------------------------

def exc_raise_catch(loops):
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        try:
            raise ValueError
        except ValueError:
            pass
    return perf_counter() - t0


def _raise_at(depth):
    if depth:
        return _raise_at(depth - 1)
    raise KeyError(depth)


def exc_unwind_10_frames(loops):
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        try:
            _raise_at(10)
        except KeyError:
            pass
    return perf_counter() - t0


# -- with statements ------------------------------------------------------

class PyCM:
    __slots__ = ("entered",)

    def __init__(self):
        self.entered = 0

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, exc_type, exc, tb):
        return False


class Suppress:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, LookupError)


def with_python_cm(loops):
    cm = PyCM()
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        with cm:
            pass
        with cm:
            pass
        with cm:
            pass
        with cm:
            pass
        with cm:
            pass
    return perf_counter() - t0


@contextlib.contextmanager
def _managed():
    yield 1


def with_contextmanager(loops):
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        with _managed():
            pass
    return perf_counter() - t0


def with_c_lock(loops):
    lock = threading.Lock()
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        with lock:
            pass
        with lock:
            pass
        with lock:
            pass
        with lock:
            pass
        with lock:
            pass
    return perf_counter() - t0


def with_exception_suppressed(loops):
    cm = Suppress()
    d = {}
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        with cm:
            d["missing"]
    return perf_counter() - t0


# -- for loops ------------------------------------------------------------

DATA = {f"key{i}": i for i in range(1000)}
LIST = list(range(1000))
LIST2 = [str(i) for i in range(1000)]


def for_dict_items(loops):
    data = DATA
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        total = 0
        for _k, v in data.items():
            total += v
    return perf_counter() - t0


def for_enumerate(loops):
    seq = LIST
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        total = 0
        for i, v in enumerate(seq):
            total += i
    return perf_counter() - t0


def for_zip(loops):
    a = LIST
    b = LIST2
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        n = 0
        for x, y in zip(a, b):
            n += x
    return perf_counter() - t0


class Countdown:
    __slots__ = ("n",)

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return self

    def __next__(self):
        n = self.n
        if not n:
            raise StopIteration
        self.n = n - 1
        return n


def for_py_iterator(loops):
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        total = 0
        for v in Countdown(1000):
            total += v
    return perf_counter() - t0


def for_range_list(loops):
    seq = LIST
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        total = 0
        for v in seq:
            total += v
        for v in range(1000):
            total += v
    return perf_counter() - t0


# -- calls ----------------------------------------------------------------

class Point:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def add(self, dx, dy):
        return self.x + dx + self.y + dy

    def scale(self, k):
        return self.x * k

    def shift(self, k):
        return self.y + k

    def norm(self, k):
        return self.x * self.x + self.y * self.y + k

    def with_default(self, k, factor=2):
        return self.x * factor + k


def call_ex_bound_method(loops):
    meth = Point(1, 2).add
    args = (3, 4)
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        meth(*args); meth(*args); meth(*args); meth(*args); meth(*args)
    return perf_counter() - t0


def _plain(a, b):
    return a + b


def call_ex_function(loops):
    fn = _plain
    args = (3, 4)
    kwargs = {"b": 4}
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        fn(*args); fn(*args); fn(3, **kwargs); fn(*args); fn(3, **kwargs)
    return perf_counter() - t0


def call_bound_method_polymorphic(loops):
    p = Point(1, 2)
    methods = (p.scale, p.shift, p.norm, p.scale, p.shift)
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        for m in methods:
            m(3)
    return perf_counter() - t0


def call_bound_method_defaults(loops):
    meth = Point(1, 2).with_default
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        meth(1); meth(2); meth(3); meth(4); meth(5)
    return perf_counter() - t0


def call_method(loops):
    p = Point(1, 2)
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        p.add(1, 2); p.scale(3); p.shift(4); p.norm(5); p.add(6, 7)
    return perf_counter() - t0


# -- whole-program style --------------------------------------------------

def _fib(n):
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


def fib_recursive(loops):
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        _fib(20)
    return perf_counter() - t0


def _numbers(n):
    for i in range(n):
        yield i


def _evens(src):
    for x in src:
        if not x & 1:
            yield x


def _squares(src):
    for x in src:
        yield x * x


def generator_pipeline(loops):
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        sum(_squares(_evens(_numbers(1000))))
    return perf_counter() - t0


WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda "
         "mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega").split()


def dict_str_ops(loops):
    words = WORDS
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        counts = {}
        for w in words:
            key = w.upper()
            counts[key] = counts.get(key, 0) + len(w)
        text = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        text.split(", ")
        "omega" in text
    return perf_counter() - t0


BENCHMARKS = [
    ("exc_raise_catch", exc_raise_catch, 1),
    ("exc_unwind_10_frames", exc_unwind_10_frames, 1),
    ("with_python_cm", with_python_cm, 5),
    ("with_contextmanager", with_contextmanager, 1),
    ("with_c_lock", with_c_lock, 5),
    ("with_exception_suppressed", with_exception_suppressed, 1),
    ("for_dict_items", for_dict_items, 1000),
    ("for_enumerate", for_enumerate, 1000),
    ("for_zip", for_zip, 1000),
    ("for_py_iterator", for_py_iterator, 1000),
    ("for_range_list", for_range_list, 2000),
    ("call_ex_bound_method", call_ex_bound_method, 5),
    ("call_ex_function", call_ex_function, 5),
    ("call_bound_method_polymorphic", call_bound_method_polymorphic, 5),
    ("call_bound_method_defaults", call_bound_method_defaults, 5),
    ("call_method", call_method, 5),
    ("fib_recursive", fib_recursive, 1),
    ("generator_pipeline", generator_pipeline, 1),
    ("dict_str_ops", dict_str_ops, 1),
]


def main():
    runner = pyperf.Runner()
    runner.metadata["description"] = (
        "Code that never uses micro-threads, on the paths the patch changes "
        "(compare stock vs patched)")
    for name, func, inner in BENCHMARKS:
        runner.bench_time_func(name, func, inner_loops=inner)


if __name__ == "__main__":
    main()
