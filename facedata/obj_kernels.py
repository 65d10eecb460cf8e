"""The compiled OBJ scanners behind ``facedata.meshio.parse_obj`` (numba, cached on disk).

They live apart from ``meshio`` so that importing ``meshio`` (for its constants, ``.bin`` reader or OBJ writer) does
not import numba; this module is imported on the first OBJ read.
"""

from __future__ import annotations

import numba
import numpy as np

# Powers of ten up to 1e22 are exact in float64, so mantissa / 10**k is correctly rounded.
_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def parse_vertices(buf):  # pragma: no cover - compiled
    """Scan OBJ text for `v x y z` lines. Returns (vertices, count, first bad line or -1)."""
    n = buf.shape[0]
    out = np.empty((n // 8 + 1, 3), dtype=np.float32)
    pow10 = _POW10
    count = 0
    line = 0
    i = 0
    while i < n:
        line += 1
        while i < n and (buf[i] == 32 or buf[i] == 9):
            i += 1
        if i + 1 < n and buf[i] == 118 and (buf[i + 1] == 32 or buf[i + 1] == 9):  # "v "
            i += 2
            for axis in range(3):
                while i < n and (buf[i] == 32 or buf[i] == 9):
                    i += 1
                negative = i < n and buf[i] == 45
                if i < n and (buf[i] == 45 or buf[i] == 43):
                    i += 1
                # Digits accumulate into an int64 mantissa; value = mantissa / 10**decimals is then correctly
                # rounded in float64 (powers of ten up to 1e22 are exact).
                mantissa = 0
                digits = 0
                decimals = 0
                while i < n:
                    c = np.int64(buf[i]) - 48
                    if c < 0 or c > 9:
                        break
                    if digits < 18:
                        mantissa = mantissa * 10 + c
                        digits += 1
                    else:
                        decimals -= 1
                    i += 1
                if i < n and buf[i] == 46:  # '.'
                    i += 1
                    while i < n:
                        c = np.int64(buf[i]) - 48
                        if c < 0 or c > 9:
                            break
                        if digits < 18:
                            mantissa = mantissa * 10 + c
                            digits += 1
                            decimals += 1
                        i += 1
                if digits == 0:
                    return out, count, line
                if i < n and (buf[i] == 101 or buf[i] == 69):  # exponent
                    i += 1
                    exp_negative = i < n and buf[i] == 45
                    if i < n and (buf[i] == 45 or buf[i] == 43):
                        i += 1
                    exponent = 0
                    exp_digits = 0
                    while i < n and 48 <= buf[i] <= 57:
                        exponent = exponent * 10 + (np.int64(buf[i]) - 48)
                        exp_digits += 1
                        i += 1
                    if exp_digits == 0:
                        return out, count, line
                    decimals += -exponent if not exp_negative else exponent
                if 0 <= decimals <= 22:
                    value = mantissa / pow10[decimals]
                elif -22 <= decimals < 0:
                    value = mantissa * pow10[-decimals]
                else:
                    value = mantissa * 10.0 ** (-decimals)
                out[count, axis] = -value if negative else value
            count += 1
        while i < n and buf[i] != 10:  # the rest of the line (a w or colours after xyz are ignored)
            i += 1
        i += 1
    return out, count, -1


@numba.njit(cache=True, nogil=True)
def parse_faces(buf, n_vertices):  # pragma: no cover - compiled
    n = buf.shape[0]
    capacity = n // 6 + 1
    out = np.empty((capacity, 3), dtype=np.int32)
    corners = np.empty(64, dtype=np.int64)
    count = 0
    line = 0
    i = 0
    while i < n:
        line += 1
        while i < n and (buf[i] == 32 or buf[i] == 9):
            i += 1
        if i + 1 < n and buf[i] == 102 and (buf[i + 1] == 32 or buf[i + 1] == 9):  # "f "
            i += 2
            k = 0
            while True:
                while i < n and (buf[i] == 32 or buf[i] == 9 or buf[i] == 13):
                    i += 1
                if i >= n or buf[i] == 10:
                    break
                neg = False
                if buf[i] == 45:
                    neg = True
                    i += 1
                value = 0
                digits = 0
                while i < n and 48 <= buf[i] <= 57:
                    value = value * 10 + (buf[i] - 48)
                    digits += 1
                    i += 1
                if digits == 0 or k >= 64:
                    return out, count, line
                index = n_vertices - value if neg else value - 1
                if index < 0 or index >= n_vertices:
                    return out, count, line
                corners[k] = index
                k += 1
                # skip "/vt/vn"
                while i < n and buf[i] != 32 and buf[i] != 9 and buf[i] != 10 and buf[i] != 13:
                    i += 1
            if k < 3:
                return out, count, line
            for j in range(1, k - 1):
                if count >= capacity:
                    return out, count, line
                out[count, 0] = corners[0]
                out[count, 1] = corners[j]
                out[count, 2] = corners[j + 1]
                count += 1
        while i < n and buf[i] != 10:
            i += 1
        i += 1
    return out, count, -1
