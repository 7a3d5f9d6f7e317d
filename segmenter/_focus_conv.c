/* FocusLiteNN's convolution read straight from an 8-bit RGB image (AVX-512 VBMI + VNNI).
 *
 * The convolution (k kernels of 7×7 over RGB, stride 5) sees each image row as a line of
 * interleaved bytes: output column j reads the 21 bytes from 15·j. For 4 outputs side by side,
 * 8 taps each lie within 64 bytes, so one byte permute spreads them into 16 lanes of two int16
 * (output i, taps 2p and 2p+1), and one int16 dot product (VPDPWSSD) multiplies them by the
 * kernel's weights, quantised to int16 per kernel (largest weight → 32767; sums exact in int32,
 * responses within ~3e-5 of their range of the float convolution). The image is never copied to
 * floats, which is what kept PyTorch's convolution waiting on memory (`benchmarks/focus_bench.py`).
 *
 * `responses` fills a float32 k×h×w array from an H×W×3 uint8 image and float32 k×7×21 weights
 * (kernels laid out as the image: rows of 7 RGB pixels), without bias. Output rows are handed
 * out CHUNK at a time from a shared counter, so threads calling it on the same arrays share the
 * work. `supported` says whether this CPU has the instructions; where it does not,
 * `segmenter/focus.py` uses PyTorch's convolution.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define KERNEL 7
#define STRIDE 5
#define CHANNELS 3
#define TAPS (KERNEL * CHANNELS)    /* bytes of a kernel row */
#define GROUP 8                     /* taps per dot-product vector: 4 pairs */
#define GROUPS ((TAPS + GROUP - 1) / GROUP)  /* per kernel row; the last one padded with zero weights */
#define STEP (STRIDE * CHANNELS)    /* bytes between output columns */
#define HALF 4                      /* output columns per vector */
#define LANES (2 * HALF)            /* output columns per block */
#define SPAN (HALF * STEP + GROUP * (GROUPS - 1) + 64)  /* bytes a block reads from a row */
#define TERMS (KERNEL * GROUPS)     /* vectors per half block */
#define WEIGHT_ONE 32767            /* a kernel's largest weight, as int16 */
#define MAX_KERNELS 64
#define CHUNK 4                     /* output rows a caller takes at a time */

typedef struct {
    const uint8_t *image;
    const int16_t *weights;         /* k × TERMS × GROUP: kernel rows of 24 taps (0 past the 21st) */
    const float *scales;            /* k: weight = int16 × scale */
    float *out;
    Py_ssize_t height, width, rows, cols, kernels;
    Py_ssize_t first, last;         /* the output rows to compute */
} Work;

#define VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512vnni")))

/* The 8 outputs of a block from its halves' dot products `a`, `b` (16 lanes: 4 outputs × 4 pairs). */
VNNI static inline __m256 block_outputs(__m512i a, __m512i b, float scale) {
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512 x = _mm512_cvtepi32_ps(a), y = _mm512_cvtepi32_ps(b);
    __m512 pairs = _mm512_add_ps(_mm512_shuffle_ps(x, y, 0x88), _mm512_shuffle_ps(x, y, 0xDD));
    __m512 sums = _mm512_add_ps(_mm512_shuffle_ps(pairs, pairs, 0x88), _mm512_shuffle_ps(pairs, pairs, 0xDD));
    return _mm256_mul_ps(_mm512_castps512_ps256(_mm512_permutexvar_ps(order, sums)), _mm256_set1_ps(scale));
}

/* The outputs of `group` kernels (1, 2 or 4) for one block from its samples `x` (two halves of
 * TERMS vectors): 8 independent accumulators hide the dot product's latency; with `group` a
 * constant after inlining, the loops unroll and the accumulators stay in registers. */
VNNI static inline void kernel_sums(const __m512i *x, const int16_t *weights, const float *scales, int group,
                                    __m256 *sums) {
    const int chains = 4 / group;
    __m512i acc[2][4];
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 4; i++)
            acc[h][i] = _mm512_setzero_si512();
#pragma GCC unroll 32
    for (int i = 0; i < TERMS; i++)
#pragma GCC unroll 4
        for (int g = 0; g < group; g++) {
            __m512i w = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(weights + GROUP * (g * TERMS + i))));
            int a = g * chains + i % chains;
            acc[0][a] = _mm512_dpwssd_epi32(acc[0][a], x[i], w);
            acc[1][a] = _mm512_dpwssd_epi32(acc[1][a], x[TERMS + i], w);
        }
    for (int g = 0; g < group; g++) {
        for (int c = 1; c < chains; c++)
            for (int h = 0; h < 2; h++)
                acc[h][g * chains] = _mm512_add_epi32(acc[h][g * chains], acc[h][g * chains + c]);
        sums[g] = block_outputs(acc[0][g * chains], acc[1][g * chains], scales[g]);
    }
}

VNNI static void convolve_rows(const Work *work) {
    const Py_ssize_t row_bytes = work->width * CHANNELS, plane = work->rows * work->cols;
    const __mmask64 low_bytes = 0x5555555555555555ULL;  /* byte 0 of each int16 */
    uint8_t bytes[64] = {0};  /* int16 2l + t: tap 2(l % 4) + t of a group for output l / 4 */
    for (int lane = 0; lane < 16; lane++)
        for (int t = 0; t < 2; t++)
            bytes[4 * lane + 2 * t] = (uint8_t)(STEP * (lane / 4) + 2 * (lane % 4) + t);
    const __m512i index = _mm512_loadu_si512(bytes);
    uint8_t tail[SPAN];
    __m512i x[2 * TERMS];
    for (Py_ssize_t y = work->first; y < work->last; y++) {
        const uint8_t *top = work->image + STRIDE * y * row_bytes;
        float *dst = work->out + y * work->cols;
        for (Py_ssize_t j0 = 0; j0 < work->cols; j0 += LANES) {
            Py_ssize_t base = STEP * j0;
            for (int ky = 0; ky < KERNEL; ky++) {
                const uint8_t *src = top + ky * row_bytes + base;
                if (base + SPAN > row_bytes) {  /* the row's end: read a zero-padded copy */
                    memset(tail, 0, SPAN);
                    memcpy(tail, src, (size_t)(row_bytes - base));
                    src = tail;
                }
                for (int h = 0; h < 2; h++)
                    for (int g = 0; g < GROUPS; g++)
                        x[h * TERMS + ky * GROUPS + g] = _mm512_maskz_permutexvar_epi8(
                            low_bytes, index, _mm512_loadu_si512(src + HALF * STEP * h + GROUP * g));
            }
            Py_ssize_t count = work->cols - j0 < LANES ? work->cols - j0 : LANES;
            __mmask8 mask = (__mmask8)((1u << count) - 1);
            __m256 sums[4];
            for (Py_ssize_t k = 0; k < work->kernels;) {
                int group = work->kernels - k >= 4 ? 4 : work->kernels - k >= 2 ? 2 : 1;
                const int16_t *weights = work->weights + k * TERMS * GROUP;
                if (group == 4) kernel_sums(x, weights, work->scales + k, 4, sums);
                else if (group == 2) kernel_sums(x, weights, work->scales + k, 2, sums);
                else kernel_sums(x, weights, work->scales + k, 1, sums);
                for (int g = 0; g < group; g++)
                    _mm256_mask_storeu_ps(dst + (k + g) * plane + j0, mask, sums[g]);
                k += group;
            }
        }
    }
}

static int cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vnni");
}

static PyObject *supported(PyObject *self, PyObject *args) {
    return PyBool_FromLong(cpu_supported());
}

/* Each kernel's weights as int16 (its largest magnitude → 32767) and its scale back to float. */
static void quantise(const float *w, Py_ssize_t kernels, int16_t *weights, float *scales) {
    for (Py_ssize_t k = 0; k < kernels; k++) {
        const float *kernel = w + k * KERNEL * TAPS;
        float largest = 0;
        for (int i = 0; i < KERNEL * TAPS; i++)
            largest = fabsf(kernel[i]) > largest ? fabsf(kernel[i]) : largest;
        scales[k] = largest / WEIGHT_ONE;
        for (int ky = 0; ky < KERNEL; ky++)
            for (int tap = 0; tap < TAPS; tap++)
                weights[(k * KERNEL + ky) * GROUPS * GROUP + tap] =
                    largest > 0 ? (int16_t)lrintf(kernel[ky * TAPS + tap] / scales[k]) : 0;
    }
}

static PyObject *responses(PyObject *self, PyObject *args) {
    Py_buffer image, weights, out, taken;
    Py_ssize_t height, width, kernels;
    if (!PyArg_ParseTuple(args, "y*nny*nw*w*", &image, &height, &width, &weights, &kernels, &out, &taken))
        return NULL;
    PyObject *result = NULL;
    int16_t *quantised = NULL;
    float scales[MAX_KERNELS];
    Py_ssize_t rows = (height - KERNEL) / STRIDE + 1, cols = (width - KERNEL) / STRIDE + 1;
    if (!cpu_supported()) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU lacks AVX-512 VBMI or VNNI");
    } else if (height < KERNEL || width < KERNEL || kernels < 1 || kernels > MAX_KERNELS) {
        PyErr_Format(PyExc_ValueError, "bad shape: an image of %zd x %zd px, %zd kernels (at most %d)",
                     height, width, kernels, MAX_KERNELS);
    } else if (image.len != height * width * CHANNELS
               || weights.len != kernels * KERNEL * TAPS * (Py_ssize_t)sizeof(float)
               || out.len != kernels * rows * cols * (Py_ssize_t)sizeof(float)
               || taken.len != sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "buffer sizes do not match the shapes");
    } else if (!(quantised = PyMem_Calloc((size_t)(kernels * TERMS * GROUP), sizeof(int16_t)))) {
        PyErr_NoMemory();
    } else {
        quantise(weights.buf, kernels, quantised, scales);
        int64_t *next = taken.buf;
        Py_BEGIN_ALLOW_THREADS
        for (;;) {
            Py_ssize_t first = (Py_ssize_t)__atomic_fetch_add(next, CHUNK, __ATOMIC_RELAXED);
            if (first >= rows)
                break;
            Work work = {image.buf, quantised, scales, out.buf, height, width, rows, cols, kernels,
                         first, first + CHUNK < rows ? first + CHUNK : rows};
            convolve_rows(&work);
        }
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    PyMem_Free(quantised);
    PyBuffer_Release(&image);
    PyBuffer_Release(&weights);
    PyBuffer_Release(&out);
    PyBuffer_Release(&taken);
    return result;
}

static PyMethodDef methods[] = {
    {"supported", supported, METH_NOARGS, "Whether this CPU can run `responses` (AVX-512 VBMI and VNNI)."},
    {"responses", responses, METH_VARARGS,
     "responses(image, height, width, weights, kernels, out, taken): FocusLiteNN's response maps "
     "(no bias) of an H×W×3 uint8 image into a float32 k×h×w buffer; weights: float32 k×7×21; taken: "
     "one int64, the output rows handed out so far (callers sharing it in threads share the rows)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_focus_conv", NULL, -1, methods};

PyMODINIT_FUNC PyInit__focus_conv(void) {
    return PyModule_Create(&module);
}
