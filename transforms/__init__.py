"""Pre/post-processing and augmentation on numpy arrays (no Cytomine, no models)."""
from .augment import Augmenter, intensity_jitter, random_flip, random_rot90, random_translate, rescale_pair
from .colour import hsv_jitter, jpeg_compress, stain_jitter
from .compose import Compose, PostProcess
from .defocus import RandomDefocus, blur_measure, defocus, defocus_psf, disk_psf, gaussian_psf, pupil_psf
from .instances import connected_components, instance_scores, relabel_consecutive, split_touching, touching_borders
from .morphology import erode_dilate, fill_holes, remove_large_objects, remove_small_objects, smooth, threshold
from .normalize import Normalization, noise_sigma, percentile_normalize, zscore_normalize

__all__ = [
    "Augmenter", "Compose", "Normalization", "PostProcess", "RandomDefocus", "blur_measure", "connected_components", "defocus",
    "defocus_psf", "disk_psf", "erode_dilate", "fill_holes", "gaussian_psf", "hsv_jitter", "instance_scores",
    "intensity_jitter", "jpeg_compress", "noise_sigma",
    "percentile_normalize", "pupil_psf", "random_flip", "random_rot90", "random_translate", "relabel_consecutive",
    "remove_large_objects", "remove_small_objects", "rescale_pair", "smooth", "split_touching", "stain_jitter", "threshold",
    "touching_borders",
    "zscore_normalize",
]
