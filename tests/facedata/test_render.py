"""The CPU renderer, the composition helpers and the MP4 writer, on generated ellipsoids.

Silhouettes are checked against closed forms: an orthographic sphere of radius R covers pi (R s)^2 pixels at s
pixels/mm, and a perspective one on the axis at distance d covers pi (f R / sqrt(d^2 - R^2))^2 with f the focal
length in pixels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile

from facedata.errors import FacedataError, InputError
from facedata.render import (
    BlankFrameError,
    Camera,
    ComparisonRenderer,
    MeshRenderer,
    Shading,
    colormap_lut,
    ellipsoid_mesh,
    encode_png,
    render_value_map,
    render_views,
    values_to_rgb,
    write_comparison_video,
    write_mesh_video,
    write_png,
)
from facedata.video import Mp4Writer, probe_media, read_video_frames, write_mp4

W, H = 160, 120
# White surface on black: every covered pixel is at least ambient * 255 > 0, every other pixel is 0.
SILHOUETTE = Shading(base_rgb=(1.0, 1.0, 1.0), background_rgb=(0.0, 0.0, 0.0), ambient=0.4, diffuse=0.6)
RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


def sphere(radius_mm: float = 50.0, centre_mm=(0.0, 0.0, 0.0)):
    return ellipsoid_mesh((radius_mm,) * 3, rings=48, segments=96, centre_mm=centre_mm)


def silhouette(image: np.ndarray) -> np.ndarray:
    return image.max(axis=2) > 0


def centroid_xy(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean() + 0.5), float(ys.mean() + 0.5)


def two_colour(vertices: np.ndarray, axis: int) -> np.ndarray:
    """Red where the coordinate along ``axis`` is positive, blue elsewhere."""
    return np.where(vertices[:, axis:axis + 1] > 0, RED, BLUE).astype(np.float32)


def colour_fractions(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pixels = image.astype(int)
    red = (pixels[..., 0] > 40) & (pixels[..., 0] > 2 * pixels[..., 2])
    blue = (pixels[..., 2] > 40) & (pixels[..., 2] > 2 * pixels[..., 0])
    return red, blue


# --- silhouettes, framing and orientation -------------------------------------------------------------------------


def test_orthographic_sphere_has_the_expected_area_and_centroid():
    v, f = sphere(50.0, centre_mm=(20.0, 10.0, 0.0))
    camera = Camera(target_mm=(0.0, 0.0, 0.0), distance_mm=500.0, fov_deg=30.0, orthographic=True)
    image = MeshRenderer(f, camera, width_px=W, height_px=H, shading=SILHOUETTE).render(v)
    px_per_mm = H / camera.view_height_mm
    mask = silhouette(image)
    expected_area = math.pi * (50.0 * px_per_mm) ** 2
    assert mask.sum() == pytest.approx(expected_area, rel=0.02)
    x, y = centroid_xy(mask)
    # +x is right and +y is up in the front view; image rows grow downwards.
    assert x == pytest.approx(W / 2 + 20.0 * px_per_mm, abs=0.3)
    assert y == pytest.approx(H / 2 - 10.0 * px_per_mm, abs=0.3)


def test_perspective_sphere_on_the_axis_has_the_expected_area():
    v, f = sphere(40.0)
    camera = Camera(target_mm=(0.0, 0.0, 0.0), distance_mm=300.0, fov_deg=40.0)
    image = MeshRenderer(f, camera, width_px=W, height_px=H, shading=SILHOUETTE).render(v)
    focal_px = (H / 2) / math.tan(math.radians(20.0))
    radius_px = focal_px * 40.0 / math.sqrt(300.0**2 - 40.0**2)
    mask = silhouette(image)
    assert mask.sum() == pytest.approx(math.pi * radius_px**2, rel=0.02)
    assert centroid_xy(mask) == pytest.approx((W / 2, H / 2), abs=0.3)


@pytest.mark.parametrize("supersample", [1, 2])
def test_front_and_side_views_show_the_width_and_the_depth(supersample):
    v, f = ellipsoid_mesh((40.0, 60.0, 20.0), rings=32, segments=64)
    front = Camera(distance_mm=500.0, fov_deg=30.0, orthographic=True)
    px_per_mm = H / front.view_height_mm
    extents = {}
    for yaw in (0.0, 90.0):
        renderer = MeshRenderer(f, front.with_orbit(yaw_deg=yaw), width_px=W, height_px=H, shading=SILHOUETTE,
                                supersample=supersample)
        mask = silhouette(renderer.render(v))
        cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        extents[yaw] = (cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)
    assert extents[0.0][0] == pytest.approx(80 * px_per_mm, abs=2)  # width 2 x 40 mm
    assert extents[90.0][0] == pytest.approx(40 * px_per_mm, abs=2)  # depth 2 x 20 mm
    assert extents[0.0][1] == extents[90.0][1] == pytest.approx(120 * px_per_mm, abs=2)  # height either way


def test_orbit_directions_and_vertex_colours():
    v, f = sphere(50.0)
    base = Camera.framing(v, aspect=W / H)

    def render(colours, **orbit):
        return MeshRenderer(f, base.with_orbit(**orbit), width_px=W, height_px=H).render(v, vertex_rgb=colours)

    # The +z half (red) faces the front camera; at yaw +90 the camera is on +x and sees +z on its left.
    red, blue = colour_fractions(render(two_colour(v, 2)))
    assert red.sum() > 20 * blue.sum() and red.sum() > 1000
    red, blue = colour_fractions(render(two_colour(v, 2), yaw_deg=90.0))
    assert centroid_xy(red)[0] < W / 2 < centroid_xy(blue)[0]
    red, blue = colour_fractions(render(two_colour(v, 2), yaw_deg=-90.0))
    assert centroid_xy(blue)[0] < W / 2 < centroid_xy(red)[0]
    # +y (red) is up; a positive pitch looks down on it and shows more of it.
    red, blue = colour_fractions(render(two_colour(v, 1)))
    assert centroid_xy(red)[1] < H / 2 < centroid_xy(blue)[1]
    red_above, _ = colour_fractions(render(two_colour(v, 1), pitch_deg=60.0))
    assert red_above.sum() > 1.5 * red.sum()


@pytest.mark.parametrize("yaw", [0.0, 45.0, 90.0, 180.0, -135.0])
def test_framing_keeps_the_mesh_inside_the_image_from_every_angle(yaw):
    v, f = ellipsoid_mesh((75.0, 100.0, 85.0), rings=12, segments=24, cap_deg=110.0, centre_mm=(5.0, -30.0, 40.0))
    camera = Camera.framing(v, yaw_deg=yaw, pitch_deg=20.0, aspect=W / H)
    mask = silhouette(MeshRenderer(f, camera, width_px=W, height_px=H, shading=SILHOUETTE).render(v))
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert not border.any()
    assert mask.mean() > 0.15  # and it fills a fair part of it


def test_inside_of_an_open_mesh_and_reversed_winding_are_lit():
    v, f = ellipsoid_mesh((75.0, 100.0, 85.0), rings=12, segments=24, cap_deg=110.0)
    camera = Camera.framing(v, yaw_deg=180.0, aspect=W / H)  # from behind: the inside of the cap
    renderer = MeshRenderer(f, camera, width_px=W, height_px=H)
    inside = renderer.render(v)
    flipped = MeshRenderer(f[:, ::-1], camera, width_px=W, height_px=H).render(v)
    covered = inside != inside[0, 0]
    assert covered.any(axis=2).mean() > 0.15
    assert inside[covered.any(axis=2)].mean() > 60  # lit, not black
    np.testing.assert_array_equal(inside, flipped)


def test_identical_inputs_give_identical_pixels():
    v, f = sphere(50.0)
    colours = values_to_rgb(v[:, 0])
    a = MeshRenderer(f, Camera.framing(v), width_px=W, height_px=H).render(v, vertex_rgb=colours)
    renderer = MeshRenderer(f, Camera.framing(v.copy()), width_px=W, height_px=H)
    renderer.render(v * 1.1)  # a different frame in between must leave no trace
    b = renderer.render(v.copy(), vertex_rgb=colours.copy())
    all_threads = MeshRenderer(f, Camera.framing(v), width_px=W, height_px=H, threads=None)
    assert a.dtype == np.uint8 and a.shape == (H, W, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, all_threads.render(v, vertex_rgb=colours))  # bands make threads irrelevant


# --- blank frames and bad input -----------------------------------------------------------------------------------


def _blank_message(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "expected" in message and "got" in message
    return message


@pytest.mark.parametrize("where", ["behind the camera", "off to the side", "a speck"])
def test_a_mesh_out_of_view_raises_blank_frame(where):
    v, f = sphere(50.0)
    camera = Camera.framing(v)
    moved = {"behind the camera": v + np.float32([0.0, 0.0, 2.5 * camera.distance_mm]),
             "off to the side": v + np.float32([10 * camera.distance_mm, 0.0, 0.0]),
             "a speck": v * np.float32(0.005)}[where]  # metres taken for millimetres, say
    renderer = MeshRenderer(f, camera, width_px=W, height_px=H)
    with pytest.raises(BlankFrameError) as excinfo:
        renderer.render(moved, label="frame 7")
    message = _blank_message(excinfo)
    assert message.startswith("frame 7: blank frame") and "pixels covered, got" in message


def test_degenerate_faces_and_uniform_frames_raise():
    v, f = sphere(50.0)
    camera = Camera.framing(v)
    degenerate = np.repeat(f[:, :1], 3, axis=1)  # every triangle collapsed onto one vertex
    with pytest.raises(BlankFrameError) as excinfo:
        MeshRenderer(degenerate, camera, width_px=W, height_px=H).render(v)
    _blank_message(excinfo)
    flat = Shading(base_rgb=(0.5, 0.5, 0.5), background_rgb=(0.5, 0.5, 0.5), ambient=1.0, diffuse=0.0, specular=0.0)
    with pytest.raises(BlankFrameError, match="uniform frame") as excinfo:
        MeshRenderer(f, camera, width_px=W, height_px=H, shading=flat).render(v)
    _blank_message(excinfo)


def test_nan_vertices_wrong_shapes_and_bad_faces_raise_input_errors():
    v, f = sphere(50.0)
    renderer = MeshRenderer(f, Camera.framing(v), width_px=W, height_px=H)
    bad = v.copy()
    bad[[5, 9], 1] = np.nan
    with pytest.raises(InputError, match=r"frame 3: non-finite vertex .*NaN/inf at 2 vertices, first 5"):
        renderer.render(bad, label="frame 3")
    with pytest.raises(InputError, match=r"vertices \(expected \(V, 3\) with V >= "):
        renderer.render(v[:10])
    with pytest.raises(InputError, match="vertex colours"):
        renderer.render(v, vertex_rgb=np.ones((3, 3)))
    with pytest.raises(InputError, match="face indices"):
        MeshRenderer(f - 1, Camera.framing(v))
    with pytest.raises(InputError, match="faces"):
        MeshRenderer(f[:, :2], Camera.framing(v))
    with pytest.raises(InputError, match="pitch"):
        Camera(pitch_deg=90.0)
    with pytest.raises(InputError, match="reference vertices"):
        Camera.framing(bad)
    assert issubclass(BlankFrameError, InputError) and issubclass(BlankFrameError, ValueError)


# --- colours, composition, PNG ------------------------------------------------------------------------------------


def test_values_to_rgb_maps_the_ends_clips_and_greys_out_nan():
    lut = colormap_lut("viridis")
    rgb = values_to_rgb(np.array([0.0, 5.0, 10.0, 20.0, -3.0, np.nan]), cmap="viridis", vmin=0.0, vmax=10.0)
    np.testing.assert_array_equal(rgb[0], lut[0])
    np.testing.assert_array_equal(rgb[2], lut[-1])
    np.testing.assert_array_equal(rgb[3], lut[-1])
    np.testing.assert_array_equal(rgb[4], lut[0])
    np.testing.assert_allclose(rgb[1], lut[128], atol=1e-6)
    np.testing.assert_allclose(rgb[5], (0.55, 0.55, 0.55), atol=1e-6)
    with pytest.raises(InputError, match="unknown name"):
        colormap_lut("no-such-map")


def test_comparison_view_has_three_panels_and_its_heat_map_follows_the_error():
    v, f = ellipsoid_mesh((75.0, 100.0, 85.0), rings=16, segments=32, cap_deg=110.0)
    view = ComparisonRenderer(f, v, max_error_mm=4.0, panel_width_px=120, panel_height_px=144)
    assert view.width_px % 2 == 0 and view.height_px % 2 == 0 and view.width_px > 3 * 120
    same = view.render(v, v)
    moved = view.render(v, v + np.float32([0.0, 0.0, 4.0]))  # 4 mm everywhere: the top of the scale
    top = view.height_px - 144  # panels sit under the title strip
    heat_same = same[top:, 240:360].astype(int)
    heat_moved = moved[top:, 240:360].astype(int)
    assert heat_moved.sum() > heat_same.sum() + 120 * 144  # inferno's top is bright yellow, its bottom black
    np.testing.assert_array_equal(same[top:, :120], moved[top:, :120])  # ground truth panel unchanged
    assert not np.array_equal(same[:top], np.full_like(same[:top], same[0, 0]))  # titles were drawn
    with pytest.raises(BlankFrameError, match="frame 2, prediction: blank"):
        view.render(v, v + np.float32([1e4, 0.0, 0.0]), label="frame 2")


def test_value_map_and_views_are_even_sized_stills(tmp_path):
    v, f = ellipsoid_mesh((75.0, 100.0, 85.0), rings=16, segments=32, cap_deg=110.0)
    image = render_value_map(v, f, v[:, 1], unit="mm", panel_width_px=101, panel_height_px=121, supersample=1)
    assert image.shape[0] % 2 == 0 and image.shape[1] % 2 == 0 and image.shape[1] > 2 * 101
    views = render_views(v, f, vertex_rgb=two_colour(v, 1), yaws_deg=(0.0, 90.0, -90.0), panel_width_px=80,
                         panel_height_px=96, supersample=1)
    assert views.shape == (36 + 96, 240, 3)
    with pytest.raises(InputError, match="one per vertex"):
        render_value_map(v, f, v[:10, 1])


def test_png_round_trips_through_pillow(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    path = write_png(tmp_path / "x.png", image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    grey = rng.integers(0, 256, size=(5, 4), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(write_png(tmp_path / "g.png", grey))), grey)
    with pytest.raises(InputError, match="uint8"):
        encode_png(image.astype(np.float32))


# --- MP4 ----------------------------------------------------------------------------------------------------------


def _moving_frames(n: int, width: int = W, height: int = H):
    v, f = sphere(50.0)
    renderer = MeshRenderer(f, Camera.framing(v, aspect=width / height), width_px=width, height_px=height)
    colours = two_colour(v, 1)
    for i in range(n):
        yield renderer.render(v * np.float32([1.0, 1.0 + 0.2 * math.sin(i / 4), 1.0]), vertex_rgb=colours)


def test_mp4_has_the_expected_streams_and_decodes_to_frames_that_are_not_blank(tmp_path):
    n, rate_hz = 45, 22_050
    t = np.arange(round(n / 30 * rate_hz)) / rate_hz
    stereo = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1)
    soundfile.write(tmp_path / "speech.wav", stereo, rate_hz, subtype="PCM_16")
    path = write_mp4(tmp_path / "out.mp4", _moving_frames(n), audio=tmp_path / "speech.wav")
    info = probe_media(path)
    assert (info.video_codec, info.pix_fmt, info.audio_codec) == ("h264", "yuv420p", "aac")
    assert (info.width_px, info.height_px, info.fps) == (W, H, 30.0)
    assert info.video_frames == n
    assert info.video_seconds == pytest.approx(n / 30, abs=1e-6)
    assert info.audio_seconds == pytest.approx(n / 30, abs=1 / 30)
    assert info.faststart
    frames = list(read_video_frames(path))
    assert len(frames) == n
    assert all(frame.std() > 10 for frame in frames)
    # the first decoded frame looks like the first rendered one (lossy, so on average)
    first = next(_moving_frames(1))
    assert np.abs(frames[0].astype(int) - first).mean() < 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "speech.wav"]  # no temporary left behind


def test_mp4_pads_or_trims_audio_to_the_video_and_takes_samples(tmp_path):
    n = 30
    with Mp4Writer(tmp_path / "a.mp4", width_px=W + 1, height_px=H + 1,
                   audio=(np.zeros(16_000 + 3_000, np.float32), 16_000)) as video:  # 1.19 s of audio for 1 s
        for frame in _moving_frames(n, W + 1, H + 1):
            video.write(frame)
    info = probe_media(tmp_path / "a.mp4")
    assert (info.width_px, info.height_px) == (W + 2, H + 2)  # padded to even sizes
    assert info.video_frames == n and info.audio_seconds == pytest.approx(1.0, abs=1 / 30)


def test_mp4_refuses_mismatched_audio_and_bad_frames_and_leaves_nothing(tmp_path):
    soundfile.write(tmp_path / "long.wav", np.zeros(48_000 * 3, np.float32), 48_000)
    with pytest.raises(InputError, match=r"audio duration \(expected 0.500 s .* got 3.000 s\)"):
        write_mp4(tmp_path / "x.mp4", _moving_frames(15), audio=tmp_path / "long.wav")
    with pytest.raises(InputError, match=r"frame 0 \(expected \(120, 160, 3\) uint8"):
        with Mp4Writer(tmp_path / "y.mp4", width_px=W, height_px=H) as video:
            video.write(np.zeros((H, W, 3), np.float32))
    with pytest.raises(InputError, match="unreadable audio"):
        Mp4Writer(tmp_path / "z.mp4", width_px=W, height_px=H, audio=tmp_path / "missing.wav")
    with pytest.raises(InputError, match="output directory"):
        Mp4Writer(tmp_path / "no" / "z.mp4", width_px=W, height_px=H)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav"]
    with pytest.raises(FacedataError):
        probe_media(tmp_path / "long.wav.mp4")


def test_sequence_videos_stream_from_a_memmap_and_name_the_blank_frame(tmp_path):
    v, f = ellipsoid_mesh((75.0, 100.0, 85.0), rings=16, segments=32, cap_deg=110.0)
    n = 20
    sequence = np.lib.format.open_memmap(tmp_path / "seq.npy", mode="w+", dtype=np.float32, shape=(n, len(v), 3))
    sequence[:] = v[None] + np.float32(2.0) * np.sin(np.arange(n) / 3.0, dtype=np.float32)[:, None, None]
    sequence.flush()
    frames = np.load(tmp_path / "seq.npy", mmap_mode="r")
    audio = (np.zeros(int(16_000 * n / 30), np.float32), 16_000)
    mesh = probe_media(write_mesh_video(tmp_path / "mesh.mp4", frames, f, audio=audio, reference_mm=v,
                                        width_px=W, height_px=H))
    assert (mesh.video_frames, mesh.width_px, mesh.height_px) == (n, W, H)
    assert mesh.audio_seconds == pytest.approx(n / 30, abs=1 / 30)
    comparison = probe_media(write_comparison_video(tmp_path / "cmp.mp4", frames, frames[::-1].copy(), f,
                                                    panel_width_px=80, panel_height_px=96))
    assert comparison.video_frames == n and comparison.audio_seconds is None and comparison.width_px > 3 * 80
    broken = np.array(frames)
    broken[13] += np.float32(1e5)
    with pytest.raises(BlankFrameError, match=r"broken.mp4: frame 13: blank frame"):
        write_mesh_video(tmp_path / "broken.mp4", broken, f, reference_mm=v, width_px=W, height_px=H)
    assert not (tmp_path / "broken.mp4").exists()
