"""transforms: normalisation, morphology, instances, post-processing, augmentation, defocus."""
from __future__ import annotations

import json

import numpy as np
import pytest

from transforms import (Augmenter, Compose, RandomDefocus, Normalization, PostProcess, blur_measure, connected_components,
                        defocus, defocus_psf, disk_psf, erode_dilate, fill_holes, gaussian_psf, instance_scores,
                        intensity_jitter, percentile_normalize, random_flip, random_rot90, random_translate,
                        relabel_consecutive, remove_large_objects, remove_small_objects, smooth, split_touching,
                        threshold, zscore_normalize)


def disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def ellipse(shape: tuple[int, int], a: float, b: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    y, x = yy - shape[0] / 2, xx - shape[1] / 2
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    """A 96x96 float image of 25 random bright discs on a dim background, in [0, 1]."""
    rng = np.random.default_rng(7)
    img = np.full((96, 96), 0.1)
    for _ in range(25):
        cy, cx = rng.uniform(0, 96, 2)
        img[disc(img.shape, cy, cx, rng.uniform(3, 8))] = rng.uniform(0.5, 1.0)
    return img


# --- normalize -------------------------------------------------------------------------------

def test_percentile_normalize_maps_percentiles_to_0_and_1():
    img = np.arange(101, dtype=np.uint8).reshape(1, 101)  # percentile p of 0..100 is exactly p
    out = percentile_normalize(img, low=10, high=90)
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_allclose(out[0, [0, 10, 50, 90, 100]], [-0.125, 0.0, 0.5, 1.0, 1.125], atol=1e-6)


def test_percentile_normalize_per_channel_vs_global():
    x = np.arange(101, dtype=np.float64).reshape(1, 101)
    img = np.stack([x, 10 * x], axis=-1)
    per = percentile_normalize(img, 0, 100, per_channel=True)
    np.testing.assert_allclose(per[..., 0], per[..., 1], atol=1e-6)
    glob = percentile_normalize(img, 0, 100, per_channel=False)
    np.testing.assert_allclose(glob[0, 100], [0.1, 1.0], atol=1e-6)


def test_normalizers_give_zeros_on_constant_image():
    img = np.full((4, 5, 3), 7.0)
    assert np.array_equal(percentile_normalize(img), np.zeros((4, 5, 3), np.float32))
    assert np.array_equal(zscore_normalize(img), np.zeros((4, 5, 3), np.float32))


def test_zscore_normalize_from_image_and_given_stats():
    img = np.array([[1.0, 3.0], [1.0, 3.0]])
    np.testing.assert_allclose(zscore_normalize(img), [[-1, 1], [-1, 1]])
    rgb = np.stack([img, img + 10], axis=-1)
    out = zscore_normalize(rgb, mean=(0.0, 10.0), std=(2.0, 4.0))
    np.testing.assert_allclose(out[0, 1], [1.5, 0.75])


def test_normalize_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 4, 5\)"):
        percentile_normalize(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="low < high"):
        percentile_normalize(np.zeros((3, 3)), low=50, high=10)
    with pytest.raises(ValueError, match="mean"):
        zscore_normalize(np.zeros((3, 3, 3)), mean=(1.0, 2.0))


def test_normalization_dispatch_and_round_trip():
    img = np.array([[1.0, 3.0], [1.0, 3.0]])
    z = Normalization(kind="zscore", mean=(2.0,), std=(0.5,))
    np.testing.assert_allclose(z(img), [[-2, 2], [-2, 2]])
    restored = Normalization.from_dict(json.loads(json.dumps(z.to_dict())))
    assert restored == z
    assert Normalization.from_dict(Normalization().to_dict()) == Normalization()
    np.testing.assert_allclose(Normalization(low=0, high=100)(img), [[0, 1], [0, 1]])
    assert Normalization(kind="none")(img.astype(np.uint8)).dtype == np.float32


def test_normalization_rejects_unknown_kind_and_fields():
    with pytest.raises(ValueError, match="unknown normalization kind 'minmax'"):
        Normalization(kind="minmax")
    with pytest.raises(ValueError, match="gamma"):
        Normalization.from_dict({"kind": "percentile", "gamma": 2})


# --- morphology ------------------------------------------------------------------------------

def test_smooth_keeps_mass_and_sigma_zero_is_identity():
    prob = np.zeros((21, 21))
    prob[10, 10] = 1.0
    assert np.array_equal(smooth(prob, 0), prob.astype(np.float32))
    s = smooth(prob, 2.0)
    assert s.dtype == np.float32
    assert s.sum() == pytest.approx(1.0, abs=1e-4)
    assert s[10, 10] == pytest.approx(1 / (2 * np.pi * 4), rel=0.05)  # peak of a 2-D Gaussian, sigma 2


def test_threshold_is_strict():
    assert threshold(np.array([[0.4, 0.5, 0.6]])).tolist() == [[False, False, True]]
    assert threshold(np.array([[0.4, 0.5, 0.6]]), 0.45).tolist() == [[False, True, True]]


def test_opening_removes_specks_and_keeps_border_objects():
    mask = np.zeros((20, 20), bool)
    mask[5:12, 5:12] = True   # 7x7 square survives an opening of radius 1
    mask[15, 15] = True       # isolated pixel goes
    mask[0:4, 16:20] = True   # square in the corner keeps its border pixels
    opened = erode_dilate(mask, 1, "open")
    assert not opened[15, 15]
    assert opened[0, 16:20].all() and opened[0:4, 19].all()  # pixels on the image border stay
    assert not opened[3, 16]  # the square's one corner inside the image is rounded off
    assert opened[6:11, 6:11].all()
    assert not opened[5, 5]   # a disk cannot reach the square's corner
    assert erode_dilate(mask, 0, "open").tolist() == mask.tolist()


def test_closing_bridges_a_one_pixel_gap():
    mask = np.zeros((9, 9), bool)
    mask[2:7, 1:4] = True
    mask[2:7, 5:8] = True
    closed = erode_dilate(mask, 1, "close")
    assert closed[3:6, 4].all()
    assert connected_components(closed).max() == 1
    with pytest.raises(ValueError, match="unknown morphological op 'blur'"):
        erode_dilate(mask, 1, "blur")


def test_fill_holes_fills_enclosed_background_only():
    ring = disc((15, 15), 7, 7, 6) & ~disc((15, 15), 7, 7, 3)
    assert fill_holes(ring).tolist() == disc((15, 15), 7, 7, 6).tolist()
    cup = np.zeros((5, 5), bool)
    cup[1:4, 0:3] = True
    cup[2, 0:2] = False  # a notch open to the image border is not a hole
    assert fill_holes(cup).tolist() == cup.tolist()


def test_remove_small_objects_on_mask_and_labels():
    mask = np.zeros((10, 10), bool)
    mask[0:2, 0:2] = True      # area 4
    mask[5:8, 5:8] = True      # area 9
    out = remove_small_objects(mask, 5)
    assert out.dtype == bool and out.sum() == 9 and out[6, 6]
    labels = np.zeros((10, 10), np.int32)
    labels[0:2, 0:2] = 3
    labels[5:8, 5:8] = 7
    kept = remove_small_objects(labels, 9)
    assert kept.dtype == np.int32
    assert sorted(np.unique(kept)) == [0, 7] and (kept == 7).sum() == 9


def test_remove_large_objects_keeps_small_ids():
    labels = np.zeros((10, 10), np.uint16)
    labels[0:2, 0:2] = 2
    labels[5:8, 5:8] = 5
    assert sorted(np.unique(remove_large_objects(labels, 4))) == [0, 2]
    with pytest.raises(ValueError, match="integer label image"):
        remove_large_objects(labels.astype(float), 4)


# --- instances -------------------------------------------------------------------------------

def test_connected_components_uses_8_connectivity():
    mask = np.array([[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 1]])
    labels = connected_components(mask)
    assert labels.dtype == np.uint16
    assert labels.tolist() == [[1, 0, 0, 0], [0, 1, 0, 2], [0, 0, 0, 2]]
    with pytest.raises(ValueError, match=r"expected a 2-D mask, got shape \(3, 4, 5\)"):
        connected_components(np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="0/1 mask"):
        connected_components(np.array([[0, 2]]))


def test_relabel_consecutive():
    assert relabel_consecutive(np.array([[0, 5, 5, 9], [9, 0, 2, 0]])).tolist() == [[0, 2, 2, 3], [3, 0, 1, 0]]


def test_split_touching_separates_two_overlapping_discs():
    shape = (70, 110)
    a, b = disc(shape, 35, 35, 20), disc(shape, 35, 70, 20)  # centres 35 apart, radius 20: overlap
    labels = split_touching(a | b)
    assert labels.dtype == np.uint16 and labels.max() == 2
    assert labels[35, 35] != labels[35, 70] and labels[35, 35] > 0 and labels[35, 70] > 0
    assert np.array_equal(labels > 0, a | b)
    areas = np.bincount(labels.ravel())[1:]
    assert abs(areas[0] - areas[1]) < 0.05 * areas.sum()
    # The cut runs between the centres: each label owns the far side of its own disc.
    assert labels[35, 16] == labels[35, 35] and labels[35, 89] == labels[35, 70]


@pytest.mark.parametrize("r,gap", [(5, 8), (10, 16)])
def test_split_touching_separates_small_touching_discs(r, gap):
    shape = (40, 60)
    labels = split_touching(disc(shape, 20, 20, r) | disc(shape, 20, 20 + gap, r), min_distance=3)
    assert labels.max() == 2 and labels[20, 20] != labels[20, 20 + gap]


def test_split_touching_uses_probability_valleys():
    shape = (30, 40)
    mask = disc(shape, 15, 15, 5) | disc(shape, 15, 21, 5)  # too overlapped to split on shape alone
    assert split_touching(mask, min_distance=3).max() == 1
    prob = np.where(mask, 0.9, 0.0)
    prob[:, 18] = 0.2                                          # an uncertain seam between the two
    labels = split_touching(mask, min_distance=3, prob=prob)
    assert labels.max() == 2 and labels[15, 15] != labels[15, 21]
    assert np.array_equal(labels > 0, mask)


# (30, 4) and (40, 6) are thin: their distance ridge is a bumpy plateau that peak_local_max
# alone cuts into several markers.
@pytest.mark.parametrize("a,b,angle", [(35, 12, 0.0), (40, 10, 0.5), (30, 15, 1.0), (25, 18, 2.0),
                                       (30, 4, 0.0), (40, 6, 0.7)])
@pytest.mark.parametrize("min_distance", [3, 5])
def test_split_touching_keeps_an_ellipse_whole(a, b, angle, min_distance):
    mask = ellipse((96, 96), a, b, angle)
    labels = split_touching(mask, min_distance=min_distance)
    assert labels.max() == 1 and np.array_equal(labels > 0, mask)


def test_split_touching_keeps_every_component():
    mask = disc((40, 40), 20, 20, 8)
    mask[2, 2] = True        # a single pixel
    mask[35, 5:30] = True    # a one-pixel-wide line
    labels = split_touching(mask)
    assert np.array_equal(labels > 0, mask)
    assert labels.max() == 3
    assert sorted(np.unique(labels)) == [0, 1, 2, 3]
    assert split_touching(np.zeros((8, 8), bool)).max() == 0


def test_instance_scores_are_mean_probability_per_id():
    labels = np.array([[1, 1, 3], [0, 3, 3]])
    prob = np.array([[0.2, 0.4, 0.9], [0.0, 0.6, 0.3]])
    scores = instance_scores(labels, prob)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, [0.3, 0.0, 0.6], atol=1e-6)  # id 2 is absent
    with pytest.raises(ValueError, match="prob of shape"):
        instance_scores(labels, prob[:1])


# --- compose ---------------------------------------------------------------------------------

def test_compose_applies_steps_in_order():
    assert Compose([lambda x: x + 1, lambda x: x * 2])(3) == 8
    with pytest.raises(ValueError, match="callable"):
        Compose([1])


def test_postprocess_turns_probabilities_into_instances():
    shape = (70, 110)
    prob = np.full(shape, 0.1)
    prob[disc(shape, 35, 35, 20) | disc(shape, 35, 70, 20)] = 0.9
    prob[2:4, 2:4] = 0.9                      # 4 px speck, under min_size
    labels = PostProcess()(prob)
    assert labels.dtype == np.uint16
    assert sorted(np.unique(labels)) == [0, 1, 2] and labels[2, 2] == 0
    merged = PostProcess(split=False)(prob)
    assert merged.max() == 1
    assert PostProcess(max_size=1000)(prob).max() == 0       # each half has > 1000 px
    assert PostProcess(threshold=0.95)(prob).max() == 0


def test_postprocess_round_trip_and_validation():
    pp = PostProcess(threshold=0.4, max_size=500, split=False)
    assert PostProcess.from_dict(json.loads(json.dumps(pp.to_dict()))) == pp
    with pytest.raises(ValueError, match="unknown PostProcess fields"):
        PostProcess.from_dict({"thresh": 0.5})
    with pytest.raises(ValueError, match="2-D"):
        pp(np.zeros((2, 8, 8)))


# --- augment ---------------------------------------------------------------------------------

def _pair(shape: tuple[int, int] = (12, 12)) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(shape[0] * shape[1]).reshape(shape)
    image = np.stack([labels * 0.5, labels * -1.0], axis=-1)
    return image, labels


@pytest.mark.parametrize("seed", range(6))
def test_geometric_augmentations_move_image_and_labels_together(seed):
    rng = np.random.default_rng(seed)
    image, labels = _pair()
    for fn in (random_flip, random_rot90, lambda i, l, r: random_translate(i, l, r, 5)):
        out_img, out_lab = fn(image, labels, rng)
        assert out_img.shape == image.shape and out_lab.shape == labels.shape
        np.testing.assert_array_equal(out_img[..., 0], out_lab * 0.5)
        np.testing.assert_array_equal(out_img[..., 1], out_lab * -1.0)


def test_random_translate_shifts_and_mirrors():
    _, labels = _pair((20, 20))
    for seed in range(10):
        _, out = random_translate(labels[..., None].astype(float), labels, np.random.default_rng(seed), 4)
        dy, dx = np.argwhere(out == labels[10, 10])[0] - 10  # the shift, read from a central value
        assert abs(dy) <= 4 and abs(dx) <= 4
        np.testing.assert_array_equal(out[max(dy, 0):20 + min(dy, 0), max(dx, 0):20 + min(dx, 0)],
                                      labels[max(-dy, 0):20 - max(dy, 0), max(-dx, 0):20 - max(dx, 0)])
        for k in range(dy):  # rows that moved in from the top mirror the rows below the seam
            np.testing.assert_array_equal(out[dy - 1 - k], out[dy + k])


def test_random_rot90_keeps_non_square_shapes():
    image, labels = _pair((6, 10))
    for seed in range(8):
        out_img, out_lab = random_rot90(image, labels, np.random.default_rng(seed))
        assert out_lab.shape == (6, 10) and out_img.shape == (6, 10, 2)


def test_intensity_jitter_hand_cases():
    x = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    rng = np.random.default_rng(0)
    out = intensity_jitter(x, rng, scale=(2, 2), shift=(0.5, 0.5), gamma=(1, 1))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.5, 1.5, 2.5]], atol=1e-6)
    np.testing.assert_allclose(intensity_jitter(x, rng, (1, 1), (0, 0), (2, 2)), [[0.0, 0.25, 1.0]], atol=1e-6)
    wide = np.array([[0.0, 255.0]], dtype=np.float32)  # the shift is a fraction of the range
    np.testing.assert_allclose(intensity_jitter(wide, rng, (1, 1), (0.1, 0.1), (1, 1)), [[25.5, 280.5]], rtol=1e-6)
    with pytest.raises(ValueError, match="floating-point"):
        intensity_jitter(np.zeros((3, 3), np.uint8), rng)


def test_augmenter_is_deterministic_and_defocuses(cells):
    labels = (cells > 0.3).astype(np.int32)
    aug = Augmenter(defocus_levels=(2, 4), defocus_prob=0.5, blur=RandomDefocus())
    a = aug(cells, labels, np.random.default_rng(3))
    b = aug(cells, labels, np.random.default_rng(3))
    c = aug(cells, labels, np.random.default_rng(4))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    only_blur = Augmenter(flips=False, rot90=False, translate=0, jitter=False, defocus_levels=(4,), defocus_prob=1.0)
    img, lab = only_blur(cells, labels, np.random.default_rng(0))
    assert blur_measure(img) < 0.5 * blur_measure(cells)
    assert np.array_equal(lab, labels)
    never = Augmenter(flips=False, rot90=False, translate=0, jitter=False, defocus_levels=(4,), defocus_prob=0.0)
    assert np.array_equal(never(cells, labels, np.random.default_rng(0))[0], cells)
    with pytest.raises(ValueError, match="labels of shape"):
        aug(cells, labels[:5], np.random.default_rng(0))


# --- defocus ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["disk", "gaussian", "optical"])
@pytest.mark.parametrize("level", [0, 0.7, 2, 5.5])
def test_psfs_sum_to_one_and_are_symmetric(kind, level):
    psf = defocus_psf(level, kind)
    assert psf.sum() == pytest.approx(1.0)
    assert psf.shape[0] == psf.shape[1] and psf.shape[0] % 2 == 1
    for sym in (psf.T, psf[::-1], psf[:, ::-1]):
        np.testing.assert_allclose(psf, sym, atol=1e-12)
    assert (psf >= 0).all()


def test_psf_conventions():
    assert defocus_psf(0, "optical").tolist() == [[1.0]] and disk_psf(0).tolist() == [[1.0]]
    assert gaussian_psf(0).tolist() == [[1.0]]
    # A disk of radius 1.5 lies inside the 3x3 block and covers the centre pixel fully.
    d = disk_psf(1.5)
    assert d.shape == (3, 3)
    assert d[1, 1] == pytest.approx(1 / (np.pi * 1.5 ** 2), rel=0.01)
    # "gaussian" at level L has sigma L/2, the per-axis spread of the disk of radius L.
    for kind in ("disk", "gaussian"):
        psf = defocus_psf(8, kind)
        r = np.arange(psf.shape[0]) - psf.shape[0] // 2
        assert (psf.sum(axis=0) * r ** 2).sum() == pytest.approx(16.0, rel=0.03)
    with pytest.raises(ValueError, match="unknown PSF kind 'airy'"):
        defocus_psf(2, "airy")
    with pytest.raises(ValueError, match="blur level >= 0"):
        defocus_psf(-1)


@pytest.mark.parametrize("kind", ["optical", "disk", "gaussian"])
def test_blur_grows_with_level(cells, kind):
    sharpness = [blur_measure(defocus(cells, level, kind)) for level in (0, 2, 4, 8)]
    assert all(a > b for a, b in zip(sharpness, sharpness[1:]))


def test_defocus_level_zero_is_identity_and_flux_is_kept(cells):
    img = (cells * 60000).astype(np.uint16)
    assert np.array_equal(defocus(img, 0), img)
    for level in (2, 8):
        out = defocus(img, level)
        assert out.dtype == np.uint16 and out.shape == img.shape
        assert out.mean() == pytest.approx(img.mean(), rel=0.01)
    rgb = np.stack([cells, 1 - cells], axis=-1).astype(np.float32)
    out = defocus(rgb, 3, "gaussian")
    assert out.dtype == np.float32 and out.shape == rgb.shape


def test_defocus_noise_is_seeded(cells):
    img = (cells * 200).astype(np.uint8)
    a = defocus(img, 2, photons=50, read_noise=0.02, seed=1)
    b = defocus(img, 2, photons=50, read_noise=0.02, seed=1)
    c = defocus(img, 2, photons=50, read_noise=0.02, seed=2)
    assert a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_defocus_noise_magnitudes():
    flat = np.ones((64, 64))
    shot = defocus(flat, 0, photons=100, seed=0)
    assert shot.std() == pytest.approx(0.1, rel=0.1)       # Poisson: std/mean = 1/sqrt(100)
    assert shot.mean() == pytest.approx(1.0, abs=0.01)
    two_level = np.zeros((64, 64))
    two_level[:, 32:] = 1.0                                 # dynamic range 1
    read = defocus(two_level, 0, read_noise=0.05, seed=0)
    assert (read - two_level).std() == pytest.approx(0.05, rel=0.1)
    saturated = defocus(np.full((16, 16), 255, np.uint8), 0, read_noise=0.5, seed=0)
    assert saturated.dtype == np.uint8 and saturated.max() == 255


def test_pupil_psf_follows_geometric_optics_with_diffraction():
    from transforms import pupil_psf
    assert pupil_psf(0).shape == (1, 1)
    psf = pupil_psf(12, airy_radius=0.8)
    assert psf.sum() == pytest.approx(1.0) and np.allclose(psf, psf.T) and np.allclose(psf, psf[::-1])
    yy, xx = np.indices(psf.shape) - psf.shape[0] // 2
    radius = np.hypot(yy, xx)
    assert (psf * radius).sum() == pytest.approx(2 / 3 * 12, rel=0.1)   # a uniform disk's mean radius is 2r/3
    assert psf[radius <= 14].sum() > 0.9
    def mean_radius(p):
        yy, xx = np.indices(p.shape) - p.shape[0] // 2
        return (p * np.hypot(yy, xx)).sum()
    assert mean_radius(pupil_psf(1, airy_radius=2.0)) > 1.5 * mean_radius(pupil_psf(1, airy_radius=0.6))  # diffraction
    assert not np.allclose(pupil_psf(8, spherical=1.0), pupil_psf(8, spherical=-1.0))  # either side of focus
    with pytest.raises(ValueError, match="pupil"):
        defocus_psf(4, "disk", airy_radius=1.0)


def test_pupil_defocus_blurs_each_rgb_channel_at_its_wavelength(cells):
    rgb = np.repeat((cells * 200)[..., None], 3, axis=2).astype(np.uint8)
    out = defocus(rgb, 6, "pupil", airy_radius=1.5)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert not np.array_equal(out[..., 0], out[..., 2])
    assert blur_measure(out[..., 0]) < blur_measure(out[..., 2])        # red: longer wavelength, wider PSF


def test_camera_transmission_and_background():
    two_level = np.zeros((32, 32))
    two_level[:, 16:] = 1.0
    dim = defocus(two_level, 0, transmission=0.5, background=0.1)
    assert dim.min() == pytest.approx(0.1) and dim.max() == pytest.approx(0.6)
    with pytest.raises(ValueError, match="transmission"):
        defocus(two_level, 0, transmission=0.0)


def test_random_defocus_is_seeded_and_checks_its_kinds(cells):
    img = (cells * 1000).astype(np.uint16)
    blur = RandomDefocus()
    a, b = (blur(img, 10, np.random.default_rng(5)) for _ in range(2))
    assert np.array_equal(a, b) and not np.array_equal(a, blur(img, 10, np.random.default_rng(6)))
    assert np.array_equal(RandomDefocus.plain("gaussian")(img, 3, np.random.default_rng(0)), defocus(img, 3, "gaussian"))
    quiet = RandomDefocus(kinds={"disk": 1.0}, camera_prob=0.0)(img, 4, np.random.default_rng(1))
    assert np.array_equal(quiet, defocus(img, 4, "disk"))          # the blur alone, no camera noise
    with pytest.raises(ValueError, match="PSF kinds"):
        RandomDefocus(kinds={"bokeh": 1.0})
    with pytest.raises(ValueError, match="camera_prob"):
        RandomDefocus(camera_prob=1.5)


def test_defocus_rejects_bad_input():
    with pytest.raises(ValueError, match=r"got shape \(5,\)"):
        defocus(np.zeros(5), 1)
    with pytest.raises(ValueError, match="photons > 0"):
        defocus(np.zeros((5, 5)), 1, photons=0)
    with pytest.raises(ValueError, match="dtype bool"):
        defocus(np.zeros((5, 5), bool), 1)


def test_noise_floor_keeps_an_empty_field_dark():
    from transforms import Normalization, noise_sigma
    rng = np.random.default_rng(0)
    empty = rng.normal(150, 5, (128, 128))
    assert abs(float(noise_sigma(empty).ravel()[0]) - 5) < 0.5
    assert Normalization(min_snr=0)(empty).max() > 0.9        # stretched: noise looks like signal
    assert Normalization(min_snr=20)(empty).max() < 0.5       # floored: stays dim
    field = empty.copy()
    field[40:60, 40:60] += 1000                               # a bright object: floor inactive
    np.testing.assert_allclose(Normalization(min_snr=20)(field), Normalization()(field))


def test_an_image_without_stain_contrast_is_blank():
    from transforms import Normalization
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(240, 2, (128, 128, 3)), 0, 255).round()
    assert Normalization(min_span=64).blank(glass)
    assert not Normalization().blank(glass)                     # no rule: never blank
    tissue = glass.copy()
    tissue[40:60, 40:60, :2] -= 150                             # a nucleus in two channels suffices
    assert not Normalization(min_span=64).blank(tissue)


def test_background_augmentation_gives_empty_labels_with_the_same_noise():
    from transforms import Augmenter, noise_sigma
    rng = np.random.default_rng(1)
    image = rng.normal(100, 3, (64, 64)).astype(np.float32)
    image[10:30, 10:30] += 500
    labels = np.zeros((64, 64), np.int32)
    labels[10:30, 10:30] = 1
    out, out_labels = Augmenter(background_prob=1.0, jitter=False)(image, labels, rng)
    assert not out_labels.any()
    assert out.max() < 150
    assert abs(float(noise_sigma(out).ravel()[0]) - 3) < 0.5
