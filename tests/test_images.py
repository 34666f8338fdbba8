"""Image loading (formats, EXIF, modes, 16 bit, bad files) and the mapping back to the photo."""
import numpy as np
import pytest
from PIL import Image

from famegui.data.images import ImageLoadError, load_image, prepare


def _gradient(w=40, h=30):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 77)], -1).astype(np.uint8)


@pytest.mark.parametrize("ext", ["jpg", "png", "bmp", "tiff", "webp"])
def test_formats(tmp_path, ext):
    rgb = _gradient()
    f = tmp_path / f"img.{ext}"
    Image.fromarray(rgb).save(f, **({"quality": 98} if ext in ("jpg", "webp") else {}))
    im = load_image(f)
    assert im.rgb.shape == (30, 40, 3) and im.rgb.dtype == np.float32
    tol = 6 / 255 if ext in ("jpg", "webp") else 1e-6
    assert np.abs(im.rgb - rgb / 255.0).mean() < tol


def test_exif_orientation(tmp_path):
    rgb = _gradient(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=98)
    im = load_image(tmp_path / "r.jpg")
    assert im.rgb.shape[:2] == (40, 30)  # portrait after applying EXIF
    expected = np.rot90(rgb, k=-1) / 255.0
    assert np.abs(im.rgb - expected).mean() < 6 / 255


def test_modes(tmp_path):
    g = Image.fromarray(np.full((10, 12), 200, np.uint8), "L")
    g.save(tmp_path / "g.png")
    assert np.allclose(load_image(tmp_path / "g.png").rgb, 200 / 255)
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :6, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    im = load_image(tmp_path / "a.png").rgb
    assert np.allclose(im[0, 0], [1, 0, 0]) and np.allclose(im[0, -1], [1, 1, 1])  # over white
    p = Image.fromarray(_gradient()).convert("P", palette=Image.ADAPTIVE, colors=16)
    p.save(tmp_path / "p.png")
    ref = np.asarray(p.convert("RGB")) / 255.0
    assert np.allclose(load_image(tmp_path / "p.png").rgb, ref, atol=1e-6)


def test_16bit_gray_and_color(tmp_path):
    import cv2

    g16 = (np.arange(12 * 10).reshape(10, 12) * 500).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    im = load_image(tmp_path / "g16.png").rgb
    assert np.allclose(im[..., 0], g16 / 65535.0, atol=1e-6)
    c16 = np.zeros((10, 12, 3), np.uint16)
    c16[..., 0] = 1000  # R, a value 8-bit loading would round to 0 or 1/255
    c16[..., 2] = 60000
    cv2.imwrite(str(tmp_path / "c16.png"), c16[..., ::-1])  # OpenCV writes BGR
    im = load_image(tmp_path / "c16.png").rgb
    assert np.allclose(im[0, 0], [1000 / 65535, 0, 60000 / 65535], atol=1e-6)


def test_bad_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(_gradient(200, 200)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    for name, frag in [("empty.jpg", "empty"), ("text.png", "not a readable image"),
                       ("trunc.jpg", "damaged or truncated"), ("nope.jpg", "not found")]:
        with pytest.raises(ImageLoadError, match=frag) as e:
            load_image(tmp_path / name)
        assert "\n" not in str(e.value)


def test_huge_image_is_downscaled(tmp_path):
    Image.new("RGB", (9000, 3000), (10, 200, 30)).save(tmp_path / "big.png")
    im = load_image(tmp_path / "big.png")
    assert max(im.shape) == 4096 and im.original_size == (3000, 9000) and "downscaled" in im.note


@pytest.mark.parametrize("mode", ["resize-crop", "center-crop", "resize"])
def test_mapping_back_to_the_photo(mode):
    from famegui.data.images import image_from_array

    rgb = np.zeros((300, 500, 3), np.uint8)
    rgb[140:150, 260:270] = 255  # a bright square near the centre
    im = image_from_array(rgb)
    p = prepare(im, (224, 224), mode)
    t = p.tensor[0].mean(0).numpy()
    ys, xs = np.nonzero(t > 0.5)
    cx, cy = xs.mean(), ys.mean()
    back = p.to_image @ np.array([cx, cy, 1.0])
    assert abs(back[0] - 264.5) < 1.5 and abs(back[1] - 144.5) < 1.5
    # a map that is hot on the square lands on the square in the photo
    amap = (t > 0.5).astype(np.float32)
    big = p.map_to_image(amap)
    assert big[145, 265] > 0.5 and big[20, 20] == 0
