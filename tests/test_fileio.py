"""Atomic writes: nothing partial is left when the writer fails, nothing is overwritten without --force."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from edgecnn.errors import OutputExistsError, OutputPathError
from edgecnn.fileio import (atomic_path, check_writable_dir, refuse_overwrite, sha256_of, write_bytes_atomic,
                            write_json_atomic, write_text_atomic)

needs_unprivileged = pytest.mark.skipif(os.geteuid() == 0 and os.environ.get("EDGECNN_TEST_AS_ROOT") is None,
                                        reason="root ignores permission bits")


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_failed_writer_leaves_nothing_and_keeps_the_old_file(tmp_path):
    final = tmp_path / "model.tflite"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("converter crashed")
    assert listing(tmp_path) == []
    final.write_bytes(b"finished v1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half of v2")
            raise KeyboardInterrupt
    assert listing(tmp_path) == ["model.tflite"] and final.read_bytes() == b"finished v1"


def test_successful_writes_replace_and_hash(tmp_path):
    write_bytes_atomic(tmp_path / "a.bin", b"one")
    write_bytes_atomic(tmp_path / "a.bin", b"two")
    write_text_atomic(tmp_path / "sub" / "t.txt", "hello")
    write_json_atomic(tmp_path / "m.json", {"k": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"two" and (tmp_path / "sub" / "t.txt").read_text() == "hello"
    assert (tmp_path / "m.json").read_text() == '{\n  "k": [\n    1,\n    2\n  ]\n}\n'
    assert listing(tmp_path) == ["a.bin", "m.json", "sub"]
    assert sha256_of(tmp_path / "a.bin") == "3fc4ccfe745870e2c0d99f71f30ff0656c8dedd41cc1d7d3d376b0dbe685e2f3"


def test_directories_are_replaced_whole(tmp_path):
    final = tmp_path / "saved_model"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "saved_model.pb").write_bytes(b"v1")
        (tmp / "variables").mkdir()
    digest_v1 = sha256_of(final)
    with pytest.raises(ValueError):
        with atomic_path(final) as tmp:
            tmp.mkdir()
            (tmp / "saved_model.pb").write_bytes(b"v2 partial")
            raise ValueError("export failed")
    assert sha256_of(final) == digest_v1 and listing(tmp_path) == ["saved_model"]
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "saved_model.pb").write_bytes(b"v2")
    assert listing(final) == ["saved_model.pb"] and listing(tmp_path) == ["saved_model"]
    assert sha256_of(final) != digest_v1


def test_writer_that_writes_nothing_or_the_wrong_kind_is_an_output_path_error(tmp_path):
    with pytest.raises(OutputPathError, match="nothing was written"):
        with atomic_path(tmp_path / "x.onnx"):
            pass
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep").write_text("k")
    with pytest.raises(OutputPathError, match="cannot move"):
        with atomic_path(tmp_path / "folder") as tmp:
            tmp.write_bytes(b"a file where a folder is")
    assert listing(tmp_path / "folder") == ["keep"] and listing(tmp_path) == ["folder"]


def test_refuse_overwrite(tmp_path):
    refuse_overwrite([tmp_path / "a", tmp_path / "b"], force=False)
    (tmp_path / "a").write_text("x")
    (tmp_path / "b").mkdir()
    with pytest.raises(OutputExistsError, match=r"a already exists \(and 1 more\): pass --force"):
        refuse_overwrite([tmp_path / "a", tmp_path / "b", tmp_path / "c"], force=False)
    refuse_overwrite([tmp_path / "a"], force=True)


def test_unwritable_locations_are_output_path_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder")
    with pytest.raises(OutputPathError, match="cannot"):
        check_writable_dir(blocker / "out")
    with pytest.raises(OutputPathError, match="cannot create output folder"):
        write_bytes_atomic(blocker / "out" / "model.tflite", b"x")


@needs_unprivileged
def test_read_only_folder_is_an_output_path_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputPathError):
            check_writable_dir(ro)
        with pytest.raises(OutputPathError):
            write_bytes_atomic(ro / "m.bin", b"x")
    finally:
        ro.chmod(0o700)


def test_read_only_folder_as_unprivileged_child(tmp_path):
    """Root ignores permission bits, so prove the read-only case in a child that drops to 'nobody'."""
    if os.geteuid() != 0:
        pytest.skip("covered by test_read_only_folder_is_an_output_path_error")
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(tmp_path, 0o755)
    ro.chmod(0o555)
    code = textwrap.dedent(f"""
        import os, sys
        from edgecnn.errors import OutputPathError
        from edgecnn.fileio import check_writable_dir, write_bytes_atomic
        os.setgid(65534); os.setuid(65534)  # after the imports: 'nobody' cannot read the interpreter's home
        for call in (lambda: check_writable_dir({str(ro)!r}), lambda: write_bytes_atomic(__import__('pathlib').Path({str(ro)!r}) / 'm', b'x')):
            try:
                call()
            except OutputPathError as exc:
                print('OK', exc)
            else:
                print('WROTE')
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("OK ") == 2 and "WROTE" not in out.stdout, out.stdout


def test_killed_writer_leaves_the_old_file_and_its_partial_is_cleaned_next_time(tmp_path):
    final = tmp_path / "model.onnx"
    final.write_bytes(b"finished")
    code = textwrap.dedent(f"""
        import sys, time
        from edgecnn.fileio import atomic_path
        with atomic_path(__import__('pathlib').Path({str(final)!r})) as tmp:
            tmp.write_bytes(b"partial")
            print("writing", flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert final.read_bytes() == b"finished"
    assert [p for p in listing(tmp_path) if ".partial-" in p]  # the killed writer's leftover, beside, not in place
    write_bytes_atomic(final, b"v2")
    assert listing(tmp_path) == ["model.onnx"] and final.read_bytes() == b"v2"
