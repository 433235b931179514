"""read_d(), write_d() and close() on file descriptors."""

import errno
import os
import threading
import time

import pytest

from helpers import fill, require

pytestmark = pytest.mark.usefixtures("os_block_guard")

#: More than a pipe holds (64 KiB on Linux), so a writer has to wait.
BIG = 256 * 1024


def _write_all(mt, fd, data):
    """Write all of *data* to *fd* with write_d; return the call count."""
    calls = written = 0
    while written < len(data):
        count = mt.write_d(fd, data[written:])
        assert 0 < count <= len(data) - written
        written += count
        calls += 1
    return calls


def _drain(mt, fd, total, chunks=None):
    """Read *total* bytes from *fd* with read_d; return them."""
    data = bytearray()
    while len(data) < total:
        chunk = mt.read_d(fd, 65536)
        assert chunk, "unexpected end of file"
        if chunks is not None:
            chunks.append(len(chunk))
        data += chunk
    return bytes(data)


def test_read_d_returns_available_data_at_once(mt, res):
    require(mt, "read_d")
    r, w = res.pipe()
    os.write(w, b"abc")
    assert mt.run(mt.read_d, r, 10) == b"abc"
    os.write(w, b"def")
    assert mt.read_d(r, 10) == b"def"   # in the root


def test_read_d_reads_at_most_n_bytes(mt, res):
    require(mt, "read_d")
    r, w = res.pipe()
    os.write(w, b"0123456789")
    assert mt.read_d(r, 4) == b"0123"
    assert mt.read_d(r, 100) == b"456789"


def test_read_d_of_zero_bytes_does_not_wait(mt, res):
    require(mt, "read_d")
    r, w = res.pipe()
    assert os.read(r, 0) == b""    # read(2) of 0 bytes returns at once
    with mt.timeout(0.2):
        assert mt.read_d(r, 0) == b""
        assert mt.run(mt.read_d, r, 0) == b""


def test_read_d_waits_for_data_while_others_run(mt, res):
    require(mt, "read_d")
    r, w = res.pipe()
    events = []

    def reader():
        events.append("reader waits")
        data = mt.read_d(r, 100)
        events.append(("reader got", data))

    def writer(reader_thread):
        for _ in range(3):
            mt.sleep(0)
        events.append(("reader is", reader_thread.state))
        os.write(w, b"hello")
        events.append("written")

    def main():
        reading = mt.start(reader)
        writing = mt.start(writer, reading)
        reading.join()
        writing.join()

    mt.run(main)
    assert events == ["reader waits", ("reader is", "blocked"), "written",
                      ("reader got", b"hello")]


def test_read_d_in_the_root_drives_the_scheduler(mt, res):
    require(mt, "read_d")
    r, w = res.pipe()

    def writer():
        mt.sleep(0.01)
        os.write(w, b"from a micro_thread")

    thread = mt.start(writer)
    assert mt.read_d(r, 100) == b"from a micro_thread"
    thread.join()


def test_read_d_returns_empty_bytes_at_end_of_file(mt, res):
    require(mt, "read_d")
    r, w = res.pipe()

    def closer():
        mt.sleep(0.01)
        os.close(w)

    def main():
        thread = mt.start(closer)
        data = mt.read_d(r, 100)
        thread.join()
        return data, mt.read_d(r, 100)

    assert mt.run(main) == (b"", b"")


@pytest.mark.parametrize("n", [-1, 1.5, "1", None])
def test_read_d_rejects_what_os_read_rejects(mt, res, n):
    require(mt, "read_d")
    r, w = res.pipe()
    with pytest.raises(Exception) as expected:
        os.read(r, n)
    with pytest.raises(expected.type):
        mt.read_d(r, n)


def test_read_d_on_a_closed_fd_raises_ebadf(mt, res):
    require(mt, "read_d")
    r, w = res.pipe()
    os.close(r)
    with pytest.raises(OSError) as info:
        mt.read_d(r, 1)
    assert info.value.errno == errno.EBADF


def test_write_d_returns_the_count(mt, res):
    require(mt, "write_d")
    r, w = res.pipe()
    assert mt.run(mt.write_d, w, b"hello") == 5
    assert mt.write_d(w, bytearray(b"12")) == 2
    assert mt.write_d(w, memoryview(b"xyz")[1:]) == 2
    assert mt.write_d(w, b"") == 0
    assert os.read(r, 100) == b"hello12yz"


def test_write_d_waits_while_the_pipe_is_full(mt, res):
    require(mt, "read_d", "write_d")
    r, w = res.pipe()
    fill(w)
    events = []

    def writer():
        events.append("writer waits")
        count = mt.write_d(w, b"last")
        events.append("written")
        return count

    def reader(writer_thread):
        mt.sleep(0)
        events.append(("writer is", writer_thread.state))
        data = b""
        while not data.endswith(b"last"):
            data += mt.read_d(r, 65536)
        events.append("read")

    def main():
        writing = mt.start(writer)
        reading = mt.start(reader, writing)
        reading.join()
        return writing.join()

    assert mt.run(main) == 4
    assert events == ["writer waits", ("writer is", "blocked"), "written",
                      "read"]


def test_write_d_writes_at_most_what_cannot_block(mt, res):
    require(mt, "write_d")
    r, w = res.pipe()
    count = mt.write_d(w, b"x" * BIG)    # a pipe has room for 64 KiB
    assert 0 < count < BIG
    assert os.read(r, BIG) == b"x" * count


def test_write_d_in_a_loop_lets_the_reader_run(mt, res):
    require(mt, "read_d", "write_d")
    r, w = res.pipe()
    data = os.urandom(BIG)

    def main():
        chunks = []
        reader = mt.start(_drain, mt, r, len(data), chunks)
        calls = _write_all(mt, w, data)
        assert reader.join() == data
        return calls, chunks

    calls, chunks = mt.run(main)
    assert calls > 1 and len(chunks) > 1


def test_write_d_in_the_root_drives_the_scheduler(mt, res):
    require(mt, "read_d", "write_d")
    r, w = res.pipe()
    data = os.urandom(BIG)
    chunks = []
    reader = mt.start(_drain, mt, r, len(data), chunks)
    _write_all(mt, w, data)
    assert reader.join() == data
    assert len(chunks) > 1   # the reader ran while the root wrote


def test_write_d_of_nothing_does_not_wait(mt, res):
    require(mt, "write_d")
    r, w = res.pipe()
    fill(w)
    assert os.write(w, b"") == 0    # write(2) of 0 bytes returns at once
    with mt.timeout(0.2):
        assert mt.write_d(w, b"") == 0


@pytest.mark.parametrize("data", ["text", 42, None])
def test_write_d_rejects_what_os_write_rejects(mt, res, data):
    require(mt, "write_d")
    r, w = res.pipe()
    with pytest.raises(Exception) as expected:
        os.write(w, data)
    with pytest.raises(expected.type):
        mt.write_d(w, data)


def test_write_d_to_a_closed_fd_raises_ebadf(mt, res):
    require(mt, "write_d")
    r, w = res.pipe()
    os.close(w)
    with pytest.raises(OSError) as info:
        mt.write_d(w, b"x")
    assert info.value.errno == errno.EBADF


def test_close_closes_the_fd(mt, res):
    r, w = res.pipe()
    assert mt.close(w) is None
    with pytest.raises(OSError) as info:
        os.fstat(w)
    assert info.value.errno == errno.EBADF
    assert os.read(r, 10) == b""
    with pytest.raises(OSError):
        mt.close(w)


def test_regular_file_fds(mt, res, tmp_path):
    require(mt, "read_d", "write_d")
    fd = res.fd(os.open(tmp_path / "data", os.O_RDWR | os.O_CREAT))

    def body():
        assert mt.write_d(fd, b"line one\nline two\n") == 18  # all of it
        os.lseek(fd, 0, os.SEEK_SET)
        first = mt.read_d(fd, 9)
        rest = mt.read_d(fd, 100)
        return first, rest, mt.read_d(fd, 100)

    assert mt.run(body) == (b"line one\n", b"line two\n", b"")


def test_concurrent_regular_file_io(mt, res, tmp_path):
    require(mt, "read_d", "write_d")
    data = os.urandom(BIG)
    ticks = []

    def ticker():
        while True:
            ticks.append(None)
            mt.sleep(0.001)

    def worker(index):
        path = tmp_path / f"file{index}"
        fd = res.fd(os.open(path, os.O_RDWR | os.O_CREAT))
        _write_all(mt, fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        assert _drain(mt, fd, len(data)) == data

    def main():
        tick = mt.start(ticker)
        with mt.Group() as group:
            for index in range(4):
                group.start(worker, index)
        tick.kill()

    mt.run(main)


def test_many_micro_threads_read_their_own_pipes(mt, res):
    require(mt, "read_d")
    pipes = [res.pipe() for _ in range(20)]

    def main():
        readers = [mt.start(mt.read_d, r, 100) for r, _ in pipes]
        mt.sleep(0)
        assert all(t.state == "blocked" for t in readers)
        for index, (_, w) in reversed(list(enumerate(pipes))):
            os.write(w, b"%d" % index)
        return [t.join() for t in readers]

    assert mt.run(main) == [b"%d" % i for i in range(20)]


def test_each_os_thread_has_its_own_notifier(mt, res):
    require(mt, "read_d")
    r, w = res.pipe()
    r2, w2 = res.pipe()
    result = {}

    def other_os_thread():
        result["data"] = mt.run(mt.read_d, r, 100)
        os.write(w2, b"done")

    thread = threading.Thread(target=other_os_thread)
    thread.start()
    time.sleep(0.02)
    os.write(w, b"cross-thread")
    assert mt.read_d(r2, 100) == b"done"
    thread.join(5)
    assert result == {"data": b"cross-thread"}


def test_busy_micro_threads_do_not_starve_io(mt, res):
    require(mt, "read_d")
    r, w = res.pipe()
    got = []

    def spinner():
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            mt.sleep(0)     # always ready: the scheduler never idles

    def reader():
        got.append(mt.read_d(r, 100))

    def main():
        threads = [mt.start(spinner), mt.start(spinner), mt.start(reader)]
        timer = threading.Timer(0.02, os.write, (w, b"through"))
        timer.start()
        start = time.monotonic()
        for thread in threads:
            thread.join()
        timer.join()
        return time.monotonic() - start

    assert mt.run(main) < 1
    assert got == [b"through"]
