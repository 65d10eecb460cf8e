"""Rendering and MP4 encoding speed, measured against peers in the same run.

    .venv/bin/python benchmarks/bench_render.py [--frames 300] [--peer-frames 8]

The mesh is a face-sized ellipsoid cap with exactly 6172 vertices and 12221 triangles (MeshTalk's face has 6172
vertices), deformed every frame by a jaw-like opening, so normals really change per frame. Rendered at 640 x 480.

Peers:
- matplotlib's Agg with a ``Poly3DCollection`` (flat-shaded with per-frame face normals, as good as it gets there):
  the slowest path that still runs headless from PyPI alone; the ratio is printed against it.
- moderngl on EGL (Mesa's llvmpipe), only when ``moderngl`` is importable and an EGL context can be made; it needs
  Debian's libegl1/libegl-mesa0/libgl1-mesa-dri, so it is not a dependency.
open3d's ``OffscreenRenderer`` was tried and does not start here (it needs a Vulkan or EGL display driver stack).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from facedata.render import Camera, ComparisonRenderer, MeshRenderer, ellipsoid_mesh
from facedata.video import Mp4Writer, probe_media

WIDTH, HEIGHT = 640, 480


def face_sized_mesh() -> tuple[np.ndarray, np.ndarray]:
    vertices, faces = ellipsoid_mesh((75.0, 100.0, 85.0), rings=51, segments=121, cap_deg=110.0)
    assert vertices.shape == (6172, 3), vertices.shape
    return vertices, faces


def deformed_frames(vertices: np.ndarray, n: int) -> np.ndarray:
    """(n, V, 3) float32: the lower half drops by up to 12 mm at the chin, opening and closing about 3 times/s."""
    opening = 0.5 - 0.5 * np.cos(2 * np.pi * 3.0 * np.arange(n) / 30.0)  # (n,)
    weight = np.clip(-vertices[:, 1] / 100.0, 0.0, 1.0)  # (V,) 0 above the middle, 1 at the chin
    frames = np.repeat(vertices[None], n, axis=0)
    frames[:, :, 1] -= 12.0 * opening[:, None] * weight[None]
    frames[:, :, 2] += 3.0 * opening[:, None] * weight[None] * np.sin(np.pi * weight)[None]
    return frames


def rate(fn, frames: np.ndarray, n: int) -> float:
    """Frames per second of ``fn(vertices)`` over n frames cycling through ``frames``."""
    start = time.perf_counter()
    for i in range(n):
        fn(frames[i % len(frames)])
    return n / (time.perf_counter() - start)


def interleaved_rates(contenders: dict[str, tuple], frames: np.ndarray, *, rounds: int = 5) -> dict[str, float]:
    """Median frames/s of each ``name: (fn, frames_per_round)``, measured in alternating rounds so that every
    contender sees the same background load (the machine is shared and its load drifts within seconds)."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (fn, n) in contenders.items():
            rates[name].append(rate(fn, frames, n))
    return {name: float(np.median(r)) for name, r in rates.items()}


def matplotlib_peer(faces: np.ndarray, reference: np.ndarray):
    """A per-frame renderer with matplotlib's Agg: returns fn(vertices) -> (H, W, 3) uint8."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    fig = Figure(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1), projection="3d")
    ax.set_axis_off()
    centre = 0.5 * (reference.min(0) + reference.max(0))
    half = 0.55 * (reference.max(0) - reference.min(0)).max()
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[2] - half, centre[2] + half)
    ax.set_zlim(centre[1] - half, centre[1] + half)
    ax.set_box_aspect((1, 1, 1), zoom=1.5)
    ax.view_init(elev=0, azim=90)  # looking from the plot's +y, which is the head's +z: the front view
    collection = Poly3DCollection(np.zeros((len(faces), 3, 3)), linewidths=0, antialiased=False)
    ax.add_collection3d(collection)
    skin = np.array([0.87, 0.70, 0.60])
    # The plot is seen from its +y, so the viewer's left is the plot's +x: the key light from the upper left.
    light = np.array([0.45, 1.0, 0.55]) / np.linalg.norm([0.45, 1.0, 0.55])  # plot axes (x, y, z) = head (x, z, y)

    def render(vertices: np.ndarray) -> np.ndarray:
        v = vertices[:, [0, 2, 1]]  # matplotlib's z is up
        tri = v[faces]  # (F, 3, 3)
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
        level = 0.32 + 0.68 * np.abs(normal @ light)
        collection.set_verts(tri)
        collection.set_facecolor(np.clip(skin[None] * level[:, None], 0, 1))
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    return render


def moderngl_peer(faces: np.ndarray, camera: Camera):
    """moderngl on EGL, if available: fn(vertices) -> (H, W, 3) uint8, else None with the reason."""
    try:
        import moderngl

        ctx = moderngl.create_standalone_context(backend="egl")
    except Exception as e:  # any failure means the peer is unavailable here, which is the point of measuring
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    program = ctx.program(
        vertex_shader="""
            #version 330
            uniform mat4 mvp; uniform mat3 rot;
            in vec3 in_pos; in vec3 in_normal; out vec3 n;
            void main() { gl_Position = mvp * vec4(in_pos, 1.0); n = rot * in_normal; }""",
        fragment_shader="""
            #version 330
            in vec3 n; out vec4 colour;
            void main() {
                vec3 l = normalize(vec3(-0.45, 0.55, 1.0));
                float d = abs(dot(normalize(n), l));
                colour = vec4(vec3(0.87, 0.70, 0.60) * (0.32 + 0.68 * d), 1.0);
            }""")
    rot = camera.rotation
    view = np.eye(4)
    view[:3, :3] = rot * np.array([[1], [1], [-1]])  # OpenGL looks down -z
    view[:3, 3] = -view[:3, :3] @ camera.eye_mm
    f = 1 / np.tan(np.radians(camera.fov_deg) / 2)
    near, far = 0.1 * camera.distance_mm, 10 * camera.distance_mm
    proj = np.array([[f * HEIGHT / WIDTH, 0, 0, 0], [0, f, 0, 0],
                     [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)], [0, 0, -1, 0]])
    program["mvp"].write((proj @ view).T.astype("f4").tobytes())
    program["rot"].write(view[:3, :3].T.astype("f4").tobytes())
    n_vertices = int(faces.max()) + 1
    vbo = ctx.buffer(reserve=n_vertices * 24)
    ibo = ctx.buffer(faces.astype("i4").tobytes())
    vao = ctx.vertex_array(program, [(vbo, "3f 3f", "in_pos", "in_normal")], ibo)
    fbo = ctx.simple_framebuffer((WIDTH, HEIGHT))
    fbo.use()
    ctx.enable(moderngl.DEPTH_TEST)

    def render(vertices: np.ndarray) -> np.ndarray:
        tri = vertices[faces]
        face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals = np.zeros_like(vertices)
        for k in range(3):
            np.add.at(normals, faces[:, k], face_n)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
        vbo.write(np.hstack([vertices, normals]).astype("f4").tobytes())
        fbo.clear(0.96, 0.96, 0.96, 1.0)
        vao.render()
        return np.frombuffer(fbo.read(components=3), np.uint8).reshape(HEIGHT, WIDTH, 3)[::-1]

    return render, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="frames timed for the fast paths")
    parser.add_argument("--peer-frames", type=int, default=25, help="frames timed for matplotlib")
    args = parser.parse_args()

    vertices, faces = face_sized_mesh()
    frames = deformed_frames(vertices, 90)
    camera = Camera.framing(vertices, aspect=WIDTH / HEIGHT)
    print(f"mesh: {len(vertices)} vertices, {len(faces)} triangles; {WIDTH} x {HEIGHT}; "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")

    start = time.perf_counter()
    renderer = MeshRenderer(faces, camera, width_px=WIDTH, height_px=HEIGHT)
    renderer.render(frames[0])
    print(f"first frame (compile or load the numba cache): {time.perf_counter() - start:.2f} s")
    coverage = (renderer.render(frames[0]) != renderer.render(frames[0])[0, 0]).any(axis=2).mean()
    print(f"the mesh covers {coverage:.0%} of the image")
    all_threads = MeshRenderer(faces, camera, width_px=WIDTH, height_px=HEIGHT, threads=None)
    smooth = MeshRenderer(faces, camera, width_px=WIDTH, height_px=HEIGHT, supersample=2)
    ortho = MeshRenderer(faces, Camera.framing(vertices, orthographic=True), width_px=WIDTH, height_px=HEIGHT)
    comparison = ComparisonRenderer(faces, vertices)
    peer = matplotlib_peer(faces, vertices)
    contenders = {
        "facedata.render MeshRenderer": (renderer.render, max(1, args.frames // 5)),
        f"  threads=None (all {os.cpu_count()} cores)": (all_threads.render, max(1, args.frames // 5)),
        "  supersample=2": (smooth.render, max(1, args.frames // 15)),
        "  orthographic": (ortho.render, max(1, args.frames // 5)),
        f"  ComparisonRenderer ({comparison.width_px} x {comparison.height_px}, 3 panels)":
            (lambda v: comparison.render(vertices, v), max(1, args.frames // 15)),
        "matplotlib Agg Poly3DCollection (flat)": (peer, max(1, args.peer_frames // 5)),
    }
    gl, reason = moderngl_peer(faces, camera)
    if gl is not None:
        contenders["moderngl on EGL (llvmpipe)"] = (gl, max(1, args.frames // 5))
    for fn, _ in contenders.values():
        fn(frames[0])  # compile, allocate, warm caches
    rates = interleaved_rates(contenders, frames)
    for name, fps in rates.items():
        print(f"{name + ':':<50} {fps:7.1f} frames/s")
    ours = rates["facedata.render MeshRenderer"]
    print(f"ratio facedata.render / matplotlib: {ours / rates['matplotlib Agg Poly3DCollection (flat)']:.1f}x")
    if gl is None:
        print(f"moderngl on EGL: not available here ({reason})")
    else:
        print(f"ratio facedata.render / moderngl: {ours / rates['moderngl on EGL (llvmpipe)']:.2f}x")

    # MP4: encoding alone (pre-rendered frames) and render + encode + mux end to end.
    rendered = np.stack([renderer.render(v) for v in frames[:60]])
    with tempfile.TemporaryDirectory() as tmp:
        for preset in ("veryfast", "medium"):
            n = args.frames
            start = time.perf_counter()
            with Mp4Writer(Path(tmp) / f"{preset}.mp4", width_px=WIDTH, height_px=HEIGHT, preset=preset) as video:
                for i in range(n):
                    video.write(rendered[i % len(rendered)])
            seconds = time.perf_counter() - start
            size_kb = (Path(tmp) / f"{preset}.mp4").stat().st_size / 1024
            print(f"MP4 encode only (libx264 {preset}, crf 20): {n / seconds:7.1f} frames/s, "
                  f"{size_kb / (n / 30):.0f} KB per second of video")
        import soundfile

        n = args.frames
        sr = 16_000
        t = np.arange(int(n / 30 * sr)) / sr
        soundfile.write(Path(tmp) / "speech.wav", 0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)),
                        sr)
        start = time.perf_counter()
        with Mp4Writer(Path(tmp) / "av.mp4", width_px=WIDTH, height_px=HEIGHT, audio=Path(tmp) / "speech.wav") as video:
            for i in range(n):
                video.write(renderer.render(frames[i % len(frames)]))
        seconds = time.perf_counter() - start
        info = probe_media(Path(tmp) / "av.mp4")
        print(f"render + encode + mux audio end to end: {n / seconds:7.1f} frames/s "
              f"({n / 30 / seconds:.1f}x real time); probed video {info.video_seconds:.3f} s, "
              f"audio {info.audio_seconds:.3f} s, {info.video_frames} frames")


if __name__ == "__main__":
    main()
