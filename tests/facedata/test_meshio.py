"""The order-preserving frame readers: values, order and error messages."""

from __future__ import annotations

import re

import numpy as np
import pytest

from facedata.errors import InputError
from facedata.meshio import parse_obj, read_bin, read_obj, read_obj_vertices, read_transform, write_obj


def _obj_text(vertices: np.ndarray, faces: np.ndarray, fmt: str = "{:.6f}") -> str:
    lines = ["# generated", "mtllib none.mtl"]
    lines += ["v " + " ".join(fmt.format(float(x)) for x in v) for v in vertices]
    lines += [f"vt {u:.4f} {w:.4f}" for u, w in np.random.default_rng(1).random((vertices.shape[0] + 7, 2))]
    lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in f) for f in faces]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("scanner", ["compiled", "csv"])
@pytest.mark.parametrize("fmt", ["{:.6f}", "{:.3e}", "{:g}", "{!r}"])
def test_obj_vertices_match_a_decimal_parse_in_file_order(tmp_path, fmt, scanner):
    rng = np.random.default_rng(0)
    vertices = (rng.normal(size=(500, 3)) * [80, 120, 60]).astype(np.float32)
    faces = rng.integers(0, 500, size=(300, 3))
    path = tmp_path / "frame.obj"
    path.write_text(_obj_text(vertices.astype(np.float64), faces, fmt))
    mesh = read_obj(path, scanner=scanner)
    expected = np.array([[float(t) for t in line.split()[1:4]] for line in path.read_text().splitlines()
                         if line.startswith("v ")]).astype(np.float32)
    np.testing.assert_array_equal(mesh.vertices, expected)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_array_equal(read_obj(path, faces=False, scanner=scanner).vertices, expected)


def test_the_csv_scanner_reads_plain_files_itself_and_leaves_the_rest(tmp_path):
    """The CSV path must really be taken on plain files (else the tests above prove nothing about it), and hand
    every other layout to the compiled scanner, which then gives its own values or errors."""
    from facedata.meshio import _scan_plain_obj

    rng = np.random.default_rng(3)
    vertices = rng.normal(size=(50, 3)) * 40
    faces = rng.integers(0, 50, size=(30, 3))
    plain = _obj_text(vertices, faces).encode()
    mesh = _scan_plain_obj(plain, faces=True)
    assert mesh is not None and mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32
    np.testing.assert_array_equal(mesh.vertices, parse_obj(np.frombuffer(plain, np.uint8)).vertices)
    np.testing.assert_array_equal(mesh.faces, faces)
    # Layouts the CSV path must decline: read naively, they would give other vertices, faces or errors.
    declined = {
        "indented v line later": plain + b"  v 1 2 3\n",
        "second v block": plain + b"v 1 2 3\n",
        "polygon": plain + b"f 1 2 3 4\n",
        "negative index": plain + b"f -1 -2 -3\n",
        "index out of range": plain + b"f 1 2 51\n",
        "nan": plain.replace(b"\nv ", b"\nv nan ", 1).replace(b"\nv nan ", b"\nv nan", 1),
        "short line": plain.replace(b"\nvt", b"\nv 1 2\nvt", 1),
    }
    # Layouts it may take or decline, as long as the result is the compiled scanner's.
    either = {
        "crlf": plain.replace(b"\n", b"\r\n"),
        "tab after v": plain.replace(b"\nv ", b"\nv\t", 1),
        "double space": plain.replace(b"\nv ", b"\nv  ", 1),
        "a w coordinate": plain.replace(b"\nvt", b" 1.0\nvt", 1),
    }
    for name in declined:
        assert _scan_plain_obj(declined[name], faces=True) is None, name
    for text in [*declined.values(), *either.values()]:
        path = tmp_path / "odd.obj"
        path.write_bytes(text)
        try:
            expected = read_obj(path)
        except InputError as e:
            with pytest.raises(InputError, match=re.escape(e.what)):
                read_obj(path, scanner="csv")
        else:
            got = read_obj(path, scanner="csv")
            np.testing.assert_array_equal(got.vertices, expected.vertices)
            np.testing.assert_array_equal(got.faces, expected.faces)


@pytest.mark.parametrize("scanner", ["compiled", "csv"])
def test_many_files_read_at_once_give_each_file_its_own_vertices_or_error(tmp_path, scanner):
    """One parse for a batch must split back into each file's vertices, and a bad file among good ones must get its
    own error, whatever it does to the batch's parse (a field too many, an empty one, a word, a missing file)."""
    rng = np.random.default_rng(5)
    texts = {f"good{k}": _obj_text(rng.normal(size=(40 + k, 3)) * 50, rng.integers(0, 40, (20, 3))).encode()
             for k in range(4)}
    good = texts["good0"]
    texts |= {
        "no final newline": b"v 1 2 3\nv 4 5 6",
        "empty field": good.replace(b"\nvt", b"\nv 1 2 \nvt", 1),
        "word": good.replace(b"\nvt", b"\nv 1 two 3\nvt", 1),
        "nan": good.replace(b"\nvt", b"\nv 1 nan 3\nvt", 1),
        "short line": good.replace(b"\nvt", b"\nv 1 2\nvt", 1),
        "crlf": good.replace(b"\n", b"\r\n"),
    }
    paths = []
    for name, text in texts.items():
        paths.append(tmp_path / f"{name}.obj")
        paths[-1].write_bytes(text)
        paths.append(tmp_path / f"then-good-{name}.obj")  # a good file after each odd one
        paths[-1].write_bytes(texts["good1"])
    paths.append(tmp_path / "missing.obj")
    got = read_obj_vertices(paths, scanner=scanner)
    assert len(got) == len(paths)
    for path, result in zip(paths, got, strict=True):
        try:
            expected = read_obj(path, faces=False).vertices
        except InputError as e:
            assert isinstance(result, InputError), path.name
            assert (result.path, result.what) == (e.path, e.what)
        else:
            assert isinstance(result, np.ndarray) and result.dtype == np.float32, path.name
            np.testing.assert_array_equal(result, expected, err_msg=path.name)
    assert sum(isinstance(r, InputError) for r in got) >= 3  # word, short line, missing: errors, not values


@pytest.mark.parametrize("scanner", ["compiled", "csv"])
def test_obj_polygons_negative_indices_and_whitespace(tmp_path, scanner):
    text = b"v 0 0 0\r\nv 1 0 0\n\tv 1 1 0\nv 0 1 0 1.0\nvn 0 0 1\nf 1//1 2//1 3//1 4//1\nf -4 -3 -1\n"
    (tmp_path / "m.obj").write_bytes(text)
    mesh = read_obj(tmp_path / "m.obj", scanner=scanner)
    assert mesh.vertices.shape == (4, 3)
    np.testing.assert_array_equal(mesh.vertices[3], [0, 1, 0])
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [0, 1, 3]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"v 1 2\n", "malformed vertex line 1"),
        (b"v 1 2 3\nv 4 five 6\n", "malformed vertex line 2"),
        (b"v 1 2 3\nv 1 2 3\nv 1 2 3\nf 1 2 4\n", "malformed face line 4"),
        (b"v 1 2 3\nf 1 2\n", "malformed face line 2"),
    ],
)
def test_malformed_obj_names_the_line(text, message):
    with pytest.raises(InputError, match=message):
        parse_obj(np.frombuffer(text, np.uint8), path="x.obj")


def test_bin_reader_checks_size_and_values(tmp_path):
    v = np.arange(7306 * 3, dtype="<f4").reshape(7306, 3)
    path = tmp_path / "000102.bin"
    v.tofile(path)
    np.testing.assert_array_equal(read_bin(path), v)
    path.write_bytes(v.tobytes()[:-4])
    with pytest.raises(InputError, match=r"expected 87672 bytes \(7306 vertices\), got 87668 bytes"):
        read_bin(path)
    v[17, 1] = np.nan
    v.tofile(path)
    with pytest.raises(InputError, match="first 17"):
        read_bin(path)
    with pytest.raises(InputError, match="unreadable file"):
        read_bin(tmp_path / "missing.bin")


def test_transform_and_write_obj_round_trip(tmp_path):
    (tmp_path / "t.txt").write_text("1 0 0 5\n0 1 0 6\n0 0 1 1000\n")
    rt = read_transform(tmp_path / "t.txt")
    np.testing.assert_array_equal(rt[:, 3], [5, 6, 1000])
    (tmp_path / "bad.txt").write_text("1 0 0\n")
    with pytest.raises(InputError, match="expected 12 finite numbers"):
        read_transform(tmp_path / "bad.txt")
    vertices = np.random.default_rng(2).normal(size=(40, 3)).astype(np.float32)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    write_obj(tmp_path / "m.obj", vertices, faces)
    mesh = read_obj(tmp_path / "m.obj")
    np.testing.assert_allclose(mesh.vertices, vertices, atol=1e-4)
    np.testing.assert_array_equal(mesh.faces, faces)
