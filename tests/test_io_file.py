"""read_d, readline_d and write_d of the file objects open() returns."""

import io
import os

import pytest

from helpers import require

pytestmark = pytest.mark.usefixtures("os_block_guard")


def _writer(mt, fd, *pieces):
    """Start a micro_thread that writes *pieces* to *fd*, yielding between.
    """
    def write():
        for piece in pieces:
            mt.sleep(0.002)
            os.write(fd, piece)
    return mt.start(write)


def test_open_returns_the_usual_kinds_of_file(mt, res, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"")
    kinds = {("rb", 0): io.FileIO, ("rb", -1): io.BufferedReader,
             ("wb", -1): io.BufferedWriter, ("r+b", -1): io.BufferedRandom,
             ("r", -1): io.TextIOWrapper}
    for (mode, buffering), kind in kinds.items():
        with mt.open(path, mode, buffering=buffering) as f:
            assert isinstance(f, kind)
    with pytest.raises(ValueError):
        mt.open(path, "rt", buffering=0)
    with pytest.raises(ValueError):
        mt.open(path, "rw")
    with pytest.raises(FileNotFoundError):
        mt.open(tmp_path / "missing")


def test_regular_file_binary(mt, tmp_path):
    require(mt, "BufferedWriter.write_d", "BufferedReader.read_d",
            "BufferedReader.readline_d")
    path = tmp_path / "data"

    def body():
        with mt.open(path, "wb") as f:
            assert f.write_d(b"first line\nsecond line\n") == 23
            assert f.write_d(bytearray(b"tail")) == 4
        with mt.open(path, "rb") as f:
            return (f.readline_d(), f.read_d(3), f.readline_d(), f.read_d(),
                    f.read_d(), f.readline_d())

    assert mt.run(body) == (b"first line\n", b"sec", b"ond line\n", b"tail",
                            b"", b"")


def test_regular_file_text(mt, tmp_path):
    require(mt, "TextIOWrapper.write_d", "TextIOWrapper.read_d",
            "TextIOWrapper.readline_d")
    path = tmp_path / "text"
    with mt.open(path, "w", encoding="utf-8") as f:
        assert f.write_d("h\u00e9llo\nw\u00f6rld\n") == 12
    with mt.open(path, encoding="utf-8") as f:
        assert f.readline_d() == "h\u00e9llo\n"
        assert f.readline_d(2) == "w\u00f6"
        assert f.read_d() == "rld\n"
        assert f.read_d() == ""
    assert path.read_bytes() == "h\u00e9llo\nw\u00f6rld\n".encode()


def test_regular_file_unbuffered_and_random_access(mt, tmp_path):
    require(mt, "FileIO.write_d", "FileIO.read_d", "FileIO.readline_d",
            "BufferedRandom.write_d", "BufferedRandom.read_d")
    path = tmp_path / "raw"
    with mt.open(path, "wb", buffering=0) as f:
        assert f.write_d(b"0123456789\nabc") == 14
    with mt.open(path, "rb", buffering=0) as f:
        assert f.readline_d() == b"0123456789\n"
        assert f.read_d(2) == b"ab"
        assert f.read_d() == b"c"
    with mt.open(path, "r+b") as f:
        f.seek(4)
        assert f.write_d(b"XY") == 2
        f.seek(0)
        assert f.read_d(8) == b"0123XY67"


def test_unbuffered_read_d_on_a_pipe_returns_what_is_there(mt, res):
    require(mt, "FileIO.read_d")
    r, w = res.pipe()
    f = res.add(mt.open(r, "rb", buffering=0, closefd=False))

    def main():
        writer = _writer(mt, w, b"abc")
        data = f.read_d(100)
        writer.join()
        return data

    assert mt.run(main) == b"abc"


def test_buffered_read_d_waits_for_all_it_asked_for(mt, res):
    require(mt, "BufferedReader.read_d")
    r, w = res.pipe()
    f = res.add(mt.open(r, "rb", closefd=False))

    def main():
        writer = _writer(mt, w, b"ab", b"cd", b"ef")
        data = f.read_d(5)
        writer.join()
        return data, f.read_d(1)

    assert mt.run(main) == (b"abcde", b"f")


def test_read_d_until_end_of_file(mt, res):
    require(mt, "BufferedReader.read_d", "FileIO.read_d")
    for buffering in (0, -1):
        r, w = res.pipe()
        f = res.add(mt.open(r, "rb", buffering=buffering, closefd=False))

        def main():
            writer = _writer(mt, w, b"one ", b"two ", b"three")
            closer = mt.start(lambda: (writer.join(), os.close(w)))
            data = f.read_d()
            closer.join()
            return data

        assert mt.run(main) == b"one two three"


def test_readline_d_on_a_pipe(mt, res):
    require(mt, "BufferedReader.readline_d", "FileIO.readline_d")
    for buffering in (0, -1):
        r, w = res.pipe()
        f = res.add(mt.open(r, "rb", buffering=buffering, closefd=False))

        def main():
            writer = _writer(mt, w, b"hel", b"lo\nnext", b" line\n")
            lines = [f.readline_d(), f.readline_d(3), f.readline_d()]
            writer.join()
            return lines

        assert mt.run(main) == [b"hello\n", b"nex", b"t line\n"]


def test_text_on_a_pipe(mt, res):
    require(mt, "TextIOWrapper.readline_d", "TextIOWrapper.read_d")
    r, w = res.pipe()
    f = res.add(mt.open(r, encoding="utf-8", closefd=False))

    def main():
        writer = _writer(mt, w, b"line \xc3", b"\xa9\n", b"rest")
        closer = mt.start(lambda: (writer.join(), os.close(w)))
        lines = f.readline_d(), f.read_d()
        closer.join()
        return lines

    assert mt.run(main) == ("line \u00e9\n", "rest")


def test_read_d_in_the_root(mt, res):
    require(mt, "BufferedReader.readline_d")
    r, w = res.pipe()
    f = res.add(mt.open(r, "rb", closefd=False))
    writer = _writer(mt, w, b"to ", b"the root\n")
    assert f.readline_d() == b"to the root\n"
    writer.join()


def test_unbuffered_write_d_on_a_pipe_lets_the_reader_run(mt, res):
    require(mt, "FileIO.write_d", "read_d")
    r, w = res.pipe()
    f = res.add(mt.open(w, "wb", buffering=0, closefd=False))
    data = os.urandom(256 * 1024)

    def reader():
        received = bytearray()
        while len(received) < len(data):
            received += mt.read_d(r, 65536)
        return bytes(received)

    def main():
        reading = mt.start(reader)
        view, written = memoryview(data), 0
        while written < len(data):
            count = f.write_d(view[written:])
            assert 0 < count <= len(data) - written
            written += count
        return reading.join()

    assert mt.run(main) == data


def test_buffered_write_d_on_a_pipe_lets_the_reader_run(mt, res):
    require(mt, "BufferedWriter.write_d", "read_d")
    r, w = res.pipe()
    buffer_size = 4096
    f = res.add(mt.open(w, "wb", buffering=buffer_size, closefd=False))
    data = os.urandom(256 * 1024)
    mostly_read = mt.Event()

    def reader():
        received = bytearray()
        while len(received) < len(data):
            received += mt.read_d(r, 65536)
            if len(received) >= len(data) - buffer_size:
                mostly_read.set()
        return bytes(received)

    def main():
        reading = mt.start(reader)
        assert f.write_d(data) == len(data)   # at most a buffer is left
        mostly_read.wait()
        f.flush()                              # fits in the drained pipe
        return reading.join()

    assert mt.run(main) == data


def test_line_buffered_text_write_d_reaches_the_pipe(mt, res):
    require(mt, "TextIOWrapper.write_d", "read_d")
    r, w = res.pipe()
    f = res.add(mt.open(w, "w", buffering=1, encoding="ascii",
                        closefd=False))

    def main():
        assert f.write_d("one line\n") == 9
        return mt.read_d(r, 100)

    assert mt.run(main) == b"one line\n"


def test_two_micro_threads_read_lines_of_one_file(mt, res):
    require(mt, "TextIOWrapper.readline_d")
    r, w = res.pipe()
    f = res.add(mt.open(r, encoding="ascii", closefd=False))

    def main():
        readers = [mt.start(f.readline_d), mt.start(f.readline_d)]
        mt.sleep(0)
        writer = _writer(mt, w, b"first\nsec", b"ond\n")
        writer.join()
        return sorted(t.join() for t in readers)

    assert mt.run(main) == ["first\n", "second\n"]


def test_plain_methods_still_work(mt, tmp_path):
    path = tmp_path / "plain"
    with mt.open(path, "w", encoding="ascii") as f:
        f.write("plain\n")
    with mt.open(path, encoding="ascii") as f:
        assert f.read() == "plain\n"
    with mt.open(path, "rb") as f:
        assert list(f) == [b"plain\n"]
