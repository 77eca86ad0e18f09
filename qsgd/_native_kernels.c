/* CPU kernels of the circuit family (qsgd.circuit) and of the attention's Phi, compiled on
 * first use by qsgd/_native.py (a C compiler with GNU C11, -O3) and called through ctypes.
 *
 * Every kernel works on blocks of QB circuits (or scores) held as structure-of-arrays, one
 * row of QB lanes per quantity, so the inner loops run over the lanes and the compiler
 * vectorises them; the only memory traffic outside the block's scratch rows is reading the
 * inputs and writing the outputs. The file is compiled for float and for double: the body
 * below is included twice (QSGD_REAL, QSGD_SUF).
 *
 * Conventions are those of qsgd.circuit: Ry(a) = exp(-i a Y/2), Rz(a) = exp(-i a Z/2),
 * little-endian basis index (qubit 0 the least significant bit), gates in time order
 * H, then per layer Ry then Rz on every qubit, then the CNOT chain CNOT(0->1) ... CNOT(n-2->n-1).
 *
 * Kernels (SUF = f32 or f64):
 *   qsgd_state_SUF   amplitudes of a batch of circuits, gate by gate (forward only);
 *   qsgd_line_state_fwd_SUF / qsgd_line_state_bwd_SUF   Phi(s) along x = a s by one
 *       statevector per score (readout Re amp_sum or mean <Z>), and its gradient by the
 *       adjoint method (qsgd/attention/state.py);
 *   qsgd_chain_fwd_SUF / qsgd_chain_bwd_SUF   Phi(s) = Re <+..+| C(a s; w) |0..0> for
 *       depth <= 2 by transfer matrices over the CNOT chain's prefix parity, and its exact
 *       gradient (see qsgd/attention/chain.py for the maths);
 *   qsgd_attn_fwd_SUF / qsgd_attn_bwd_SUF   one quantum-attention layer (scores, Phi by the
 *       chain, softmax, values) and its gradient in one pass per head, q, k, v read in place
 *       from the projection (qsgd/attention/fused.py);
 *   qsgd_reduce_SUF   the backward kernels' per-chunk partial sums, summed in a fixed order;
 *   qsgd_sincos_array_SUF   the kernels' sine and cosine over an array (for the tests);
 *   qsgd_mt_bernoulli_f32   torch's CPU bernoulli_(p) from a generator's state (dropout masks
 *       of qsgd.models.batched).
 */
#ifndef QSGD_BODY
#define QSGD_BODY

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define QB 32          /* lanes per block */
#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif
#define CHUNK 4096     /* scores per partial sum of the backward kernels (multiple of QB) */

/* Threads: with OpenMP (-fopenmp; the process's libgomp is torch's, loaded first, so these
 * regions run on torch's own thread pool and follow torch.set_num_threads) an exported kernel
 * splits its range [lo, hi), in units of `unit` indices, into one contiguous piece per thread
 * and runs CALL on [a_, b_); without OpenMP CALL runs on the whole range (the caller may split
 * it over its own threads). Results do not depend on the split: the backward kernels reduce
 * per fixed chunk. */
#ifdef _OPENMP
#include <omp.h>
#define PARALLEL_RANGE(lo, hi, unit, min_units, CALL)                                       \
    do {                                                                                    \
        const int64_t lo_ = (lo), hi_ = (hi), u_ = (unit);                                  \
        const int64_t units_ = (hi_ - lo_ + u_ - 1) / u_;                                   \
        const int many_ = units_ >= (min_units) && omp_get_max_threads() > 1;               \
        _Pragma("omp parallel if (many_)")                                                  \
        {                                                                                   \
            const int64_t nt_ = omp_get_num_threads(), t_ = omp_get_thread_num();           \
            int64_t a_ = lo_ + units_ * t_ / nt_ * u_, b_ = lo_ + units_ * (t_ + 1) / nt_ * u_; \
            if (b_ > hi_) b_ = hi_;                                                         \
            if (a_ < b_) CALL;                                                              \
        }                                                                                   \
    } while (0)
int qsgd_openmp(void) { return 1; }
#else
#define PARALLEL_RANGE(lo, hi, unit, min_units, CALL)                                       \
    do {                                                                                    \
        const int64_t a_ = (lo), b_ = (hi);                                                 \
        CALL;                                                                               \
    } while (0)
int qsgd_openmp(void) { return 0; }
#endif

/* sin and cos without branches or calls, so loops over lanes vectorise: Cody-Waite reduction
 * by pi/2 in double, then minimax polynomials on [-pi/4, pi/4] (fdlibm's kernels for double,
 * Cephes' for float), the quadrant chosen by selects. Accurate to about one ulp for the
 * arguments of a circuit (|x| < 2^20). */
static inline void qsgd_sincos_d(double x, double *s, double *c) {
    double j = rint(x * 0.63661977236758134308);
    double r = x - j * 1.57079632673412561417e+00;
    r = r - j * 6.07710050630396597660e-11;
    r = r - j * 2.02226624871116645580e-21;
    double z = r * r;
    double sr = r + r * z * (-1.66666666666666324348e-01 + z * (8.33333333332248946124e-03
              + z * (-1.98412698298579493134e-04 + z * (2.75573137070700676789e-06
              + z * (-2.50507602534068634195e-08 + z * 1.58969099521155010221e-10)))));
    double cr = 1.0 - 0.5 * z + z * z * (4.16666666666666019037e-02
              + z * (-1.38888888888741095749e-03 + z * (2.48015872894767294178e-05
              + z * (-2.75573143513906633035e-07 + z * (2.08757232129817482790e-09
              + z * -1.13596475577881948265e-11)))));
    int64_t q = (int64_t)j;
    double so = (q & 1) ? cr : sr;
    double co = (q & 1) ? sr : cr;
    *s = (q & 2) ? -so : so;
    *c = ((q + 1) & 2) ? -co : co;
}

static inline void qsgd_sincos_f(float x, float *s, float *c) {
    /* pi/2 in three parts (Cephes' split of pi/4, doubled): j * DP1 is exact for |j| < 2^15 */
    float j = rintf(x * 0.63661977236758134308f);
    float r = ((x - j * 1.5703125f) - j * 4.837512969970703125e-4f) - j * 7.54978995489188216e-8f;
    float z = r * r;
    float sr = r + r * z * (-1.6666654611e-1f + z * (8.3321608736e-3f + z * -1.9515295891e-4f));
    float cr = 1.0f - 0.5f * z + z * z * (4.166664568298827e-2f + z * (-1.388731625493765e-3f
             + z * 2.443315711809948e-5f));
    int32_t q = (int32_t)j;
    float so = (q & 1) ? cr : sr;
    float co = (q & 1) ? sr : cr;
    *s = (q & 2) ? -so : so;
    *c = ((q + 1) & 2) ? -co : co;
}

/* exp for float without calls, so softmax rows vectorise: n = rint(x log2 e),
 * r = x - n ln 2 (Cody-Waite, Cephes' split), Cephes' expf polynomial on |r| <= ln2/2, times
 * 2^n through the exponent bits; 0 below -87.3 (so exp(-inf) = 0), NaN kept; arguments above
 * 88 are taken as 88 (the softmax's are <= 0). About one ulp.
 * The double kernels call libm's exp (they serve the tests, where accuracy matters). */
static inline float qsgd_exp_f(float x) {
    float xc = x < -87.3f ? -87.3f : (x > 88.0f ? 88.0f : x);
    float n = rintf(xc * 1.44269504088896341f);
    float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
    float z = r * r;
    float y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    y = y * z + r + 1.0f;
    union { float f; int32_t i; } sc;
    sc.i = ((int32_t)n + 127) << 23;
    float out = y * sc.f;
    out = x < -87.3f ? 0.0f : out;
    return x != x ? x : out;
}
static inline double qsgd_exp_d(double x) { return exp(x); }

/* exported so the tests can check the approximations against libm */
void qsgd_sincos_array_f64(int64_t m, const double *x, double *s, double *c) {
    for (int64_t i = 0; i < m; ++i) qsgd_sincos_d(x[i], s + i, c + i);
}
void qsgd_sincos_array_f32(int64_t m, const float *x, float *s, float *c) {
    for (int64_t i = 0; i < m; ++i) qsgd_sincos_f(x[i], s + i, c + i);
}
void qsgd_exp_array_f32(int64_t m, const float *x, float *y) {
    for (int64_t i = 0; i < m; ++i) y[i] = qsgd_exp_f(x[i]);
}

/* torch's CPU Tensor.bernoulli_(p, generator=g) of n float entries in memory order (a dropout
 * mask), drawn from g's state as g.get_state() lays it out (uint64 seed at byte 0, int32 left at
 * 8, int32 seeded at 12, uint64 next at 16, the 624 MT19937 words as uint64 from 24), which is
 * advanced in place for g.set_state(): per entry two draws hi, lo of torch's mt19937 (its
 * random64), x = ((hi << 32 | lo) mod 2^53) * 2^-53 (its uniform double) and the entry is x < p.
 * The same numbers as torch's serial loop, at a fraction of its cost per entry. */
static void qsgd_mt_regen(uint32_t *mt) {
    const uint32_t A = 0x9908b0dfU, U = 0x80000000U, L = 0x7fffffffU;
    int k;
    for (k = 0; k < 624 - 397; ++k) {
        uint32_t y = (mt[k] & U) | (mt[k + 1] & L);
        mt[k] = mt[k + 397] ^ (y >> 1) ^ ((mt[k + 1] & 1U) ? A : 0U);
    }
    for (; k < 623; ++k) {
        uint32_t y = (mt[k] & U) | (mt[k + 1] & L);
        mt[k] = mt[k + 397 - 624] ^ (y >> 1) ^ ((mt[k + 1] & 1U) ? A : 0U);
    }
    uint32_t y = (mt[623] & U) | (mt[0] & L);
    mt[623] = mt[396] ^ (y >> 1) ^ ((mt[0] & 1U) ? A : 0U);
}

void qsgd_mt_bernoulli_f32(uint8_t *state, int64_t n, double p, float *out) {
    uint32_t mt[624], buf[624];
    int32_t left;
    uint64_t next, w;
    memcpy(&left, state + 8, 4);
    memcpy(&next, state + 16, 8);
    for (int i = 0; i < 624; ++i) {
        memcpy(&w, state + 24 + 8 * i, 8);
        mt[i] = (uint32_t)w;
    }
    /* x < p with x = v 2^-53 exactly (v < 2^53) is v < p 2^53 (exact), i.e. v < ceil(p 2^53) */
    const int64_t T = (int64_t)ceil(p * 9007199254740992.0);
    int64_t i = 0;
    int have_hi = 0;
    uint32_t hi = 0;
    while (i < n) {
        if (left == 1) { /* torch regenerates on the draw that takes left to 0 */
            qsgd_mt_regen(mt);
            left = 625;
            next = 0;
        }
        const int64_t avail = left - 1, need = 2 * (n - i) - have_hi;
        const int64_t take = avail < need ? avail : need;
        const uint32_t *src = mt + next;
        for (int64_t k = 0; k < take; ++k) { /* tempering, vectorised */
            uint32_t y = src[k];
            y ^= y >> 11;
            y ^= (y << 7) & 0x9d2c5680U;
            y ^= (y << 15) & 0xefc60000U;
            buf[k] = y ^ (y >> 18);
        }
        next += (uint64_t)take;
        left -= (int32_t)take;
        int64_t k = 0;
        if (have_hi) { /* a pair across two blocks of words */
            const int64_t v = ((int64_t)(hi & 0x1fffffU) << 32) | buf[0];
            out[i++] = v < T ? 1.0f : 0.0f;
            k = 1;
            have_hi = 0;
        }
        const int64_t pairs = (take - k) / 2;
        const uint32_t *b = buf + k;
        float *o = out + i;
        for (int64_t j = 0; j < pairs; ++j) { /* hi, lo: the high word first (random64) */
            const int64_t v = ((int64_t)(b[2 * j] & 0x1fffffU) << 32) | b[2 * j + 1];
            o[j] = v < T ? 1.0f : 0.0f;
        }
        i += pairs;
        k += 2 * pairs;
        if (k < take) {
            hi = buf[k];
            have_hi = 1;
        }
    }
    memcpy(state + 8, &left, 4);
    memcpy(state + 16, &next, 8);
    for (int j = 0; j < 624; ++j) {
        w = mt[j];
        memcpy(state + 24 + 8 * j, &w, 8);
    }
}

#define QSGD_REAL double
#define QSGD_SUF f64
#define QSGD_SINCOS qsgd_sincos_d
#define QSGD_EXP qsgd_exp_d
#include __FILE__
#undef QSGD_REAL
#undef QSGD_SUF
#undef QSGD_SINCOS
#undef QSGD_EXP

#define QSGD_REAL float
#define QSGD_SUF f32
#define QSGD_SINCOS qsgd_sincos_f
#define QSGD_EXP qsgd_exp_f
#include __FILE__

#else /* QSGD_BODY: the kernels, once per real type */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, QSGD_SUF)
#define real QSGD_REAL

/* Rz(b) Ry(a) on one pair of amplitude rows (basis states k0, k0 + 2^q) of a block:
 * [[c E, -s E], [s conj E, c conj E]] with E = e^{-ib/2} = ec - i es */
static inline void FN(rot_pair)(real *restrict r0, real *restrict j0, real *restrict r1,
                                real *restrict j1, const real *restrict cq,
                                const real *restrict sq, const real *restrict ecq,
                                const real *restrict esq) {
    for (int64_t i = 0; i < QB; ++i) {
        real c = cq[i], sn = sq[i], ec = ecq[i], es = esq[i];
        real ar = r0[i], ai = j0[i], br = r1[i], bi = j1[i];
        real t0r = c * ar - sn * br, t0i = c * ai - sn * bi;
        real t1r = sn * ar + c * br, t1i = sn * ai + c * bi;
        r0[i] = t0r * ec + t0i * es;  /* (t0r + i t0i)(ec - i es) */
        j0[i] = t0i * ec - t0r * es;
        r1[i] = t1r * ec - t1i * es;  /* (t1r + i t1i)(ec + i es) */
        j1[i] = t1i * ec + t1r * es;
    }
}

/* ------------------------------------------------------------------------- statevector
 * A block of QB circuits as (re, im) rows of QB lanes, one row per basis state. The gate
 * table gt holds per layer l and qubit q the cos and sin of the half angles of its Ry and Rz,
 * gt[((l n + q) 4 + k) QB + i], k = 0 cos Ry, 1 sin Ry, 2 cos Rz, 3 sin Rz. A gate whose
 * angle is 0 is the identity exactly (cos 0 = 1, sin 0 = 0), so absent gates need no flag.
 * perm (2^n): the CNOT chain's basis map, psi'[k] = psi[perm[k]]. */

#define GT(gt, n, l, q, k) ((gt) + ((((int64_t)(l) * (n) + (q)) * 4 + (k)) * QB))

/* the state after the gates of gt: *re, *im (swapped with *re2, *im2 by the permutations) */
static void FN(state_block)(int32_t n, int32_t depth, const real *gt, int32_t hadamard,
                            int32_t entangle, const int32_t *perm, real **pre, real **pim,
                            real **pre2, real **pim2) {
    const int64_t dim = (int64_t)1 << n;
    const real h = (real)0.70710678118654752440;
    real *re = *pre, *im = *pim, *re2 = *pre2, *im2 = *pim2;
    for (int32_t l = 0; l < depth; ++l) {
        if (l == 0) {
            /* a product state: per qubit v = Rz Ry (|0> or |+>), then Kronecker products,
             * qubit n-1 the most significant; v0 = y0 e^{-ib/2}, v1 = y1 e^{+ib/2} */
            for (int32_t q = 0; q < n; ++q) {
                const real *gc = GT(gt, n, 0, q, 0), *gs = GT(gt, n, 0, q, 1);
                const real *zc = GT(gt, n, 0, q, 2), *zs = GT(gt, n, 0, q, 3);
                real v0r[QB], v0i[QB], v1r[QB], v1i[QB];
                for (int64_t i = 0; i < QB; ++i) {
                    real c = gc[i], sn = gs[i];
                    real y0 = hadamard ? (c - sn) * h : c;
                    real y1 = hadamard ? (c + sn) * h : sn;
                    v0r[i] = y0 * zc[i]; v0i[i] = -y0 * zs[i];
                    v1r[i] = y1 * zc[i]; v1i[i] = y1 * zs[i];
                }
                if (q == 0) {
                    memcpy(re, v0r, sizeof v0r); memcpy(im, v0i, sizeof v0i);
                    memcpy(re + QB, v1r, sizeof v1r); memcpy(im + QB, v1i, sizeof v1i);
                    continue;
                }
                const int64_t half = (int64_t)1 << q;
                for (int64_t k = 0; k < half; ++k) {
                    real *ar = re + k * QB, *ai = im + k * QB;
                    real *br = re + (k + half) * QB, *bi = im + (k + half) * QB;
                    for (int64_t i = 0; i < QB; ++i) {
                        real xr = ar[i], xi = ai[i];
                        br[i] = xr * v1r[i] - xi * v1i[i];
                        bi[i] = xr * v1i[i] + xi * v1r[i];
                        ar[i] = xr * v0r[i] - xi * v0i[i];
                        ai[i] = xr * v0i[i] + xi * v0r[i];
                    }
                }
            }
        } else {
            for (int32_t q = 0; q < n; ++q) {
                const int64_t st = (int64_t)1 << q;
                for (int64_t k0 = 0; k0 < dim; ++k0) {
                    if (k0 & st) continue;
                    FN(rot_pair)(re + k0 * QB, im + k0 * QB, re + (k0 + st) * QB,
                                 im + (k0 + st) * QB, GT(gt, n, l, q, 0), GT(gt, n, l, q, 1),
                                 GT(gt, n, l, q, 2), GT(gt, n, l, q, 3));
                }
            }
        }
        if (entangle && n > 1) {
            for (int64_t k = 0; k < dim; ++k) {
                memcpy(re2 + k * QB, re + (int64_t)perm[k] * QB, sizeof(real) * QB);
                memcpy(im2 + k * QB, im + (int64_t)perm[k] * QB, sizeof(real) * QB);
            }
            real *t = re; re = re2; re2 = t;
            t = im; im = im2; im2 = t;
        }
    }
    *pre = re; *pim = im; *pre2 = re2; *pim2 = im2;
}

/* x (B, n) data angles; w (depth, 2, n) extra angles at w + b*w_stride for circuit b
 * (w_stride 0: shared; zeros when the circuit has none); data[l*2+g] = 1 where the gate's angle
 * carries x (the encoding). out (B, 2^n, 2): interleaved real and imaginary parts. Circuits
 * i0 <= b < i1 are computed. */
static void FN(state_range)(int64_t i0, int64_t i1, int32_t n, int32_t depth, const real *x,
                    const real *w, int64_t w_stride, const int32_t *data, int32_t hadamard,
                    int32_t entangle, const int32_t *perm, real *out) {
    const int64_t dim = (int64_t)1 << n;
    real *buf = (real *)malloc(sizeof(real) * (size_t)(4 * dim * QB + 4 * depth * n * QB));
    if (!buf) return;
    real *gt = buf + 4 * dim * QB;
    for (int64_t b0 = i0; b0 < i1; b0 += QB) {
        const int64_t L = i1 - b0 < QB ? i1 - b0 : QB;
        for (int32_t l = 0; l < depth; ++l) {
            const real dy = data[2 * l] ? (real)1 : (real)0;
            const real dz = data[2 * l + 1] ? (real)1 : (real)0;
            for (int32_t q = 0; q < n; ++q) {
                real *gc = GT(gt, n, l, q, 0), *gs = GT(gt, n, l, q, 1);
                real *zc = GT(gt, n, l, q, 2), *zs = GT(gt, n, l, q, 3);
                for (int64_t i = 0; i < QB; ++i) {
                    const int64_t bi = b0 + (i < L ? i : L - 1);
                    const real xv = x[bi * n + q];
                    const real *wb = w + bi * w_stride + (int64_t)(2 * l) * n + q;
                    real ay = dy * xv + wb[0], az = dz * xv + wb[n];
                    QSGD_SINCOS(ay * (real)0.5, gs + i, gc + i);
                    QSGD_SINCOS(az * (real)0.5, zs + i, zc + i);
                }
            }
        }
        real *re = buf, *im = buf + dim * QB, *re2 = buf + 2 * dim * QB, *im2 = buf + 3 * dim * QB;
        FN(state_block)(n, depth, gt, hadamard, entangle, perm, &re, &im, &re2, &im2);
        for (int64_t i = 0; i < L; ++i) {
            real *o = out + (b0 + i) * dim * 2;
            for (int64_t k = 0; k < dim; ++k) {
                o[2 * k] = re[k * QB + i];
                o[2 * k + 1] = im[k * QB + i];
            }
        }
    }
    free(buf);
}

/* ------------------------------------------------------------------------- Phi by the state
 * Phi(s) along the line x = a s with shared w (depth, 2, n), one statevector per score:
 * readout 0: Re <+..+|psi> = Re sum_k psi_k / 2^{n/2}; readout 1: the mean over qubits of
 * <Z_q> = sum_k zs(k) |psi_k|^2 / n with zs(k) = n - 2 popcount(k). The gradient by the adjoint
 * method: with G = dL/dRe psi + i dL/dIm psi after the last gate, each gate U = exp(-i t P/2)
 * (P = Y or Z of one qubit) taken back in reverse order gives dL/dt = Im<G|P psi>/2 (psi and G
 * after U), then psi <- U^H psi, G <- U^H G; the CNOT chain is undone by its inverse map. */

static void FN(line_gates)(int64_t b0, int64_t L, int32_t n, int32_t depth, const real *s,
                           const real *a, const real *w, const real *dflag, real *sb,
                           real *gt) {
    for (int64_t i = 0; i < QB; ++i) sb[i] = i < L ? s[b0 + i] : (real)0;
    for (int32_t l = 0; l < depth; ++l)
        for (int32_t q = 0; q < n; ++q)
            for (int32_t g = 0; g < 2; ++g) {
                const real d = dflag[2 * l + g], wq = w[(2 * l + g) * n + q], aq = a[q];
                real *c = GT(gt, n, l, q, 2 * g), *sn = GT(gt, n, l, q, 2 * g + 1);
                for (int64_t i = 0; i < QB; ++i)
                    QSGD_SINCOS((d * (sb[i] * aq) + wq) * (real)0.5, sn + i, c + i);
            }
}

static void FN(line_readout)(int32_t n, int32_t readout, const real *re, const real *im,
                             real *out) {
    const int64_t dim = (int64_t)1 << n;
    for (int64_t i = 0; i < QB; ++i) out[i] = 0;
    if (readout == 0) {
        for (int64_t k = 0; k < dim; ++k)
            for (int64_t i = 0; i < QB; ++i) out[i] += re[k * QB + i];
        const real sc = (real)pow(2.0, -0.5 * n);
        for (int64_t i = 0; i < QB; ++i) out[i] *= sc;
    } else {
        for (int64_t k = 0; k < dim; ++k) {
            const real zk = (real)(n - 2 * __builtin_popcountll((unsigned long long)k));
            for (int64_t i = 0; i < QB; ++i)
                out[i] += zk * (re[k * QB + i] * re[k * QB + i] + im[k * QB + i] * im[k * QB + i]);
        }
        for (int64_t i = 0; i < QB; ++i) out[i] /= (real)n;
    }
}

static void FN(line_state_fwd_range)(int64_t i0, int64_t i1, int32_t n, int32_t depth, const real *s,
                             const real *a, const real *w, const int32_t *data,
                             int32_t hadamard, int32_t entangle, const int32_t *perm,
                             int32_t readout, real *phi) {
    const int64_t dim = (int64_t)1 << n;
    real *buf = (real *)malloc(sizeof(real) * (size_t)(4 * dim * QB + 4 * depth * n * QB));
    if (!buf) return;
    real *gt = buf + 4 * dim * QB, dflag[64], sb[QB], val[QB];
    for (int k = 0; k < 2 * depth && k < 64; ++k) dflag[k] = data[k] ? (real)1 : (real)0;
    for (int64_t b0 = i0; b0 < i1; b0 += QB) {
        const int64_t L = i1 - b0 < QB ? i1 - b0 : QB;
        FN(line_gates)(b0, L, n, depth, s, a, w, dflag, sb, gt);
        real *re = buf, *im = buf + dim * QB, *re2 = buf + 2 * dim * QB, *im2 = buf + 3 * dim * QB;
        FN(state_block)(n, depth, gt, hadamard, entangle, perm, &re, &im, &re2, &im2);
        FN(line_readout)(n, readout, re, im, val);
        for (int64_t i = 0; i < L; ++i) phi[b0 + i] = val[i];
    }
    free(buf);
}

/* undo a permutation on both states: x[perm[k]] <- x[k] for x = psi, G */
static void FN(unpermute)(int64_t dim, const int32_t *perm, real **re, real **im, real **re2,
                          real **im2) {
    for (int64_t k = 0; k < dim; ++k) {
        memcpy(*re2 + (int64_t)perm[k] * QB, *re + k * QB, sizeof(real) * QB);
        memcpy(*im2 + (int64_t)perm[k] * QB, *im + k * QB, sizeof(real) * QB);
    }
    real *t = *re; *re = *re2; *re2 = t;
    t = *im; *im = *im2; *im2 = t;
}

/* The gradient of L = sum_b g_b Phi(s_b), as qsgd_chain_bwd: gs (B), and per CHUNK of scores
 * (chunks c0 <= c < c1) the partial sums part[c] (2 depth n + n): dL/dw (depth, 2, n), then
 * dL/da (n), in double in a fixed order. The CNOT chain is undone by scattering through
 * perm. */
static void FN(line_state_bwd_range)(int64_t c0, int64_t c1, int64_t B, int32_t n, int32_t depth,
                             const real *s, const real *a, const real *w, const int32_t *data,
                             int32_t hadamard, int32_t entangle, const int32_t *perm,
                             int32_t readout, const real *g, real *gs, double *part) {
    const int64_t dim = (int64_t)1 << n;
    const int64_t W = 2 * (int64_t)depth * n;
    real *buf = (real *)malloc(sizeof(real) * (size_t)(8 * dim * QB + 4 * depth * n * QB
                                                      + W * QB));
    double *acc = (double *)malloc(sizeof(double) * (size_t)((W + n) * QB));
    if (!buf || !acc) { free(buf); free(acc); return; }
    real *gt = buf + 8 * dim * QB, *ga = gt + 4 * depth * n * QB;  /* ga: dL/d(angle) rows */
    real dflag[64], sb[QB], gb[QB];
    for (int k = 0; k < 2 * depth && k < 64; ++k) dflag[k] = data[k] ? (real)1 : (real)0;
    const real sc = (real)pow(2.0, -0.5 * n);
    for (int64_t ch = c0; ch < c1; ++ch) {
        const int64_t e0 = ch * CHUNK, e1 = e0 + CHUNK < B ? e0 + CHUNK : B;
        for (int64_t k = 0; k < (W + n) * QB; ++k) acc[k] = 0.0;
        for (int64_t b0 = e0; b0 < e1; b0 += QB) {
            const int64_t L = e1 - b0 < QB ? e1 - b0 : QB;
            for (int64_t i = 0; i < QB; ++i) gb[i] = i < L ? g[b0 + i] : (real)0;
            FN(line_gates)(b0, L, n, depth, s, a, w, dflag, sb, gt);
            real *re = buf, *im = buf + dim * QB, *re2 = buf + 2 * dim * QB;
            real *im2 = buf + 3 * dim * QB, *lr = buf + 4 * dim * QB, *li = buf + 5 * dim * QB;
            real *lr2 = buf + 6 * dim * QB, *li2 = buf + 7 * dim * QB;
            FN(state_block)(n, depth, gt, hadamard, entangle, perm, &re, &im, &re2, &im2);
            /* G of the readout */
            for (int64_t k = 0; k < dim; ++k) {
                if (readout == 0) {
                    for (int64_t i = 0; i < QB; ++i) {
                        lr[k * QB + i] = gb[i] * sc; li[k * QB + i] = 0;
                    }
                } else {
                    const real zk = (real)(2 * (n - 2 * __builtin_popcountll(
                                              (unsigned long long)k))) / (real)n;
                    for (int64_t i = 0; i < QB; ++i) {
                        lr[k * QB + i] = gb[i] * zk * re[k * QB + i];
                        li[k * QB + i] = gb[i] * zk * im[k * QB + i];
                    }
                }
            }
            for (int32_t l = depth - 1; l >= 0; --l) {
                if (entangle && n > 1) {
                    FN(unpermute)(dim, perm, &re, &im, &re2, &im2);
                    FN(unpermute)(dim, perm, &lr, &li, &lr2, &li2);
                }
                for (int32_t q = 0; q < n; ++q) {
                    const int64_t st = (int64_t)1 << q;
                    const real *yc = GT(gt, n, l, q, 0), *ys = GT(gt, n, l, q, 1);
                    const real *zc = GT(gt, n, l, q, 2), *zs = GT(gt, n, l, q, 3);
                    real *gy = ga + ((int64_t)(2 * l) * n + q) * QB;
                    real *gz = ga + ((int64_t)(2 * l + 1) * n + q) * QB;
                    for (int64_t i = 0; i < QB; ++i) { gy[i] = 0; gz[i] = 0; }
                    for (int64_t k0 = 0; k0 < dim; ++k0) {
                        if (k0 & st) continue;
                        real *r0 = re + k0 * QB, *j0 = im + k0 * QB;
                        real *r1 = re + (k0 + st) * QB, *j1 = im + (k0 + st) * QB;
                        real *m0 = lr + k0 * QB, *n0 = li + k0 * QB;
                        real *m1 = lr + (k0 + st) * QB, *n1 = li + (k0 + st) * QB;
                        for (int64_t i = 0; i < QB; ++i) {
                            /* Rz (the later gate): dL/db = Im<G|Z psi>/2 = sum z (Gr pi - Gi pr)/2 */
                            real ar = r0[i], ai = j0[i], br = r1[i], bi = j1[i];
                            real pr = m0[i], pi = n0[i], qr = m1[i], qi = n1[i];
                            gz[i] += (real)0.5 * ((pr * ai - pi * ar) - (qr * bi - qi * br));
                            /* undo Rz: bit 0 times e^{+ib/2}, bit 1 times e^{-ib/2} */
                            real c = zc[i], sn = zs[i];
                            real a2r = ar * c - ai * sn, a2i = ai * c + ar * sn;
                            real b2r = br * c + bi * sn, b2i = bi * c - br * sn;
                            real p2r = pr * c - pi * sn, p2i = pi * c + pr * sn;
                            real q2r = qr * c + qi * sn, q2i = qi * c - qr * sn;
                            /* Ry: dL/da = Im<G|Y psi>/2 = Re sum (conj(G1) psi0 - conj(G0) psi1)/2 */
                            gy[i] += (real)0.5 * ((q2r * a2r + q2i * a2i) - (p2r * b2r + p2i * b2i));
                            /* undo Ry: (u, v) -> (c u + s v, -s u + c v) */
                            real cy = yc[i], sy = ys[i];
                            r0[i] = cy * a2r + sy * b2r; j0[i] = cy * a2i + sy * b2i;
                            r1[i] = cy * b2r - sy * a2r; j1[i] = cy * b2i - sy * a2i;
                            m0[i] = cy * p2r + sy * q2r; n0[i] = cy * p2i + sy * q2i;
                            m1[i] = cy * q2r - sy * p2r; n1[i] = cy * q2i - sy * p2i;
                        }
                    }
                }
            }
            /* accumulate: dL/dw per gate, dL/dx_q = sum_gates data dL/d(angle) */
            real gsb[QB];
            for (int64_t i = 0; i < QB; ++i) gsb[i] = 0;
            for (int32_t q = 0; q < n; ++q) {
                real gx[QB];
                for (int64_t i = 0; i < QB; ++i) gx[i] = 0;
                for (int32_t k = 0; k < 2 * depth; ++k) {
                    const real *gk = ga + ((int64_t)k * n + q) * QB;
                    double *aw = acc + ((int64_t)k * n + q) * QB;
                    const real d = dflag[k];
                    for (int64_t i = 0; i < QB; ++i) {
                        aw[i] += (double)gk[i];
                        gx[i] += d * gk[i];
                    }
                }
                double *aa = acc + (W + q) * QB;
                const real aq = a[q];
                for (int64_t i = 0; i < QB; ++i) {
                    gsb[i] += aq * gx[i];
                    aa[i] += (double)(sb[i] * gx[i]);
                }
            }
            for (int64_t i = 0; i < L; ++i) gs[b0 + i] = gsb[i];
        }
        double *pc = part + ch * (W + n);
        for (int64_t k = 0; k < W + n; ++k) {
            double tot = 0.0;
            for (int64_t i = 0; i < QB; ++i) tot += acc[k * QB + i];
            pc[k] = tot;
        }
    }
    free(buf);
    free(acc);
}

/* ------------------------------------------------------------------------- chain (Phi)
 * Phi(s) = Re <+..+| C(a s; w) |init> for depth <= 2 (qsgd/attention/chain.py). Per qubit q
 * the four gates g = (layer 0 Ry, layer 0 Rz, layer 1 Ry, layer 1 Rz) have angles
 * data[g]*a_q*s + w_gq (a depth-1 circuit's layer 1 is the identity: angle 0, no data). With
 * v_q = Rz Ry |init> (layer 0) and r_q = <+| Rz Ry (layer 1), m_0[p] = r_0[p] v_0[p],
 * m_q[p] = r_q[p] t_q[p] with t_q[p] = sum_p' m_{q-1}[p'] v_q[p xor p'] (entangle) or
 * (m0 + m1) v_q[p] (no CNOTs), and Phi = Re(m_{n-1}[0] + m_{n-1}[1]).
 *
 * The gradient comes from the adjoint of every complex product, G = dL/dRe + i dL/dIm of
 * each quantity, G_x = G_z conj(y) for z = x y, run from the last qubit back to the first. */

/* cos and sin of the half angles w/2 of the four gates of every qubit (4, n) */
static void FN(half_angles)(int32_t n, int32_t depth, const real *w, real *cw, real *sw) {
    for (int32_t k = 0; k < 4 * n; ++k) {
        double ang = k < 2 * depth * n ? 0.5 * (double)w[k] : 0.0;
        cw[k] = (real)cos(ang);
        sw[k] = (real)sin(ang);
    }
}

/* one qubit of chain_forward: the lanes of one block */
static ALWAYS_INLINE void FN(chain_qubit)(const real *restrict sb, const real *restrict mp,
        real *restrict o, real *restrict mo, real aq, real cw0, real sw0, real cw1, real sw1,
        real cw2, real sw2, real cw3, real sw3, real d0, real d1, real d2, real d3, real hA,
        real hB, int32_t entangle, int32_t store, int32_t first) {
    const real h = (real)0.70710678118654752440;
        for (int64_t i = 0; i < QB; ++i) {
            real sx, cx;
            QSGD_SINCOS(aq * sb[i], &sx, &cx);
            /* cos, sin of (d x + w)/2 by the addition theorem (d = 0: those of w/2) */
            real C = d0 * cx + (1 - d0), S = d0 * sx;
            real c0 = C * cw0 - S * sw0, s0 = S * cw0 + C * sw0;
            C = d1 * cx + (1 - d1); S = d1 * sx;
            real c1 = C * cw1 - S * sw1, s1 = S * cw1 + C * sw1;
            C = d2 * cx + (1 - d2); S = d2 * sx;
            real c2 = C * cw2 - S * sw2, s2 = S * cw2 + C * sw2;
            C = d3 * cx + (1 - d3); S = d3 * sx;
            real c3 = C * cw3 - S * sw3, s3 = S * cw3 + C * sw3;
            real y0 = hA * c0 - hB * s0, y1 = hB * c0 + hA * s0;
            real z0r = h * c3, z0i = -h * s3;       /* z0 = e^{-i b3/2}/sqrt 2 */
            real v0r = y0 * c1, v0i = -y0 * s1;     /* v0 = y0 (c1 - i s1) */
            real v1r = y1 * c1, v1i = y1 * s1;      /* v1 = y1 (c1 + i s1) */
            real r0r = z0r * (c2 + s2), r0i = z0i * (c2 - s2);   /* z0 c2 + conj(z0) s2 */
            real r1r = z0r * (c2 - s2), r1i = -z0i * (c2 + s2);  /* -z0 s2 + conj(z0) c2 */
            /* t0 = m0 v0 + m1 u0, t1 = m0 v1 + m1 u1: (u0, u1) = (v1, v0) with CNOTs, else
             * (v0, v1), i.e. t = (m0 + m1) v */
            real u0r = entangle ? v1r : v0r, u0i = entangle ? v1i : v0i;
            real u1r = entangle ? v0r : v1r, u1i = entangle ? v0i : v1i;
            /* qubit 0 (first): the message before it is (1, 0), so t = v */
            real ar = first ? (real)1 : mp[i], ai = first ? (real)0 : mp[QB + i];
            real br = first ? (real)0 : mp[2 * QB + i], bi = first ? (real)0 : mp[3 * QB + i];
            real t0r = ar * v0r - ai * v0i + br * u0r - bi * u0i;
            real t0i = ar * v0i + ai * v0r + br * u0i + bi * u0r;
            real t1r = ar * v1r - ai * v1i + br * u1r - bi * u1i;
            real t1i = ar * v1i + ai * v1r + br * u1i + bi * u1r;
            mo[i] = r0r * t0r - r0i * t0i; mo[QB + i] = r0r * t0i + r0i * t0r;
            mo[2 * QB + i] = r1r * t1r - r1i * t1i; mo[3 * QB + i] = r1r * t1i + r1i * t1r;
            if (store) {
                o[i] = v0r; o[QB + i] = v0i; o[2 * QB + i] = v1r; o[3 * QB + i] = v1i;
                o[4 * QB + i] = r0r; o[5 * QB + i] = r0i; o[6 * QB + i] = r1r;
                o[7 * QB + i] = r1i; o[8 * QB + i] = y0; o[9 * QB + i] = y1;
                o[10 * QB + i] = c1; o[11 * QB + i] = s1; o[12 * QB + i] = c2;
                o[13 * QB + i] = s2; o[14 * QB + i] = z0r; o[15 * QB + i] = z0i;
                o[16 * QB + i] = t0r; o[17 * QB + i] = t0i; o[18 * QB + i] = t1r;
                o[19 * QB + i] = t1i;
            }
        }
}

/* One block of QB scores, forward: per qubit 20 rows of QB lanes in st when store (for the
 * derivatives): v (0-3), r (4-7), y0 y1 c1 s1 c2 s2 z0r z0i (8-15), t (16-19); and the
 * message m after every qubit in ms (4 rows each). d0..d3: the data flags as 0/1; hA, hB: Ry
 * on the initial state, (c, s) -> (hA c - hB s, hB c + hA s) (|+>: hA = hB = 1/sqrt 2; |0>:
 * 1, 0). m_init: the message (1, 0) before qubit 0, so that t_0 = v_0 without a branch.
 * Always inlined, so that constant flags fold. */
static ALWAYS_INLINE void FN(chain_forward)(int64_t b0, int64_t L, int32_t n,
        const real *restrict s, const real *restrict a, const real *restrict cw,
        const real *restrict sw, real d0, real d1, real d2, real d3, real hA, real hB,
        int32_t entangle, int32_t store, const real *restrict m_init, real *restrict st,
        real *restrict ms) {
    real sb[QB];
    for (int64_t i = 0; i < QB; ++i) sb[i] = i < L ? s[b0 + i] : (real)0;
    for (int32_t q = 0; q < n; ++q) {
#define CHAIN_QUBIT(first)                                                                  \
        FN(chain_qubit)(sb, q ? ms + (int64_t)(q - 1) * 4 * QB : m_init,                     \
                        st + (int64_t)q * 20 * QB, ms + (int64_t)q * 4 * QB, (real)0.5 * a[q], \
                        cw[q], sw[q], cw[n + q], sw[n + q], cw[2 * n + q], sw[2 * n + q],    \
                        cw[3 * n + q], sw[3 * n + q], d0, d1, d2, d3, hA, hB, entangle, store, \
                        first)
        if (q == 0) CHAIN_QUBIT(1); else CHAIN_QUBIT(0);
#undef CHAIN_QUBIT
    }
}

/* one qubit of chain_reverse: G (4 rows) holds G_m after qubit q on entry and G_m before it
 * (after qubit q - 1) on exit; o: qubit q's stored rows, mp: the message before it. The four
 * angle gradients g0..g3 are accumulated at once (no round trip through memory): into
 * aw0..aw3 (dL/dw), and through dL/dx_q = sum_g d_g g_g into gsb (dL/ds, times a_q) and aa
 * (dL/da, times s). */
static ALWAYS_INLINE void FN(chain_qubit_reverse)(int32_t entangle, const real *restrict o,
        const real *restrict mp, real *restrict G, const real *restrict sb, real aq, real d0,
        real d1, real d2, real d3, real *restrict gsb, double *restrict aw0,
        double *restrict aw1, double *restrict aw2, double *restrict aw3,
        double *restrict aa, int32_t first) {
    for (int64_t i = 0; i < QB; ++i) {
        real v0r = o[i], v0i = o[QB + i], v1r = o[2 * QB + i], v1i = o[3 * QB + i];
        real r0r = o[4 * QB + i], r0i = o[5 * QB + i], r1r = o[6 * QB + i];
        real r1i = o[7 * QB + i];
        real t0r = o[16 * QB + i], t0i = o[17 * QB + i], t1r = o[18 * QB + i];
        real t1i = o[19 * QB + i];
        real m0r = G[i], m0i = G[QB + i], m1r = G[2 * QB + i], m1i = G[3 * QB + i];
        /* m = r t: G_r = G_m conj(t), G_t = G_m conj(r) */
        real Gr0r = m0r * t0r + m0i * t0i, Gr0i = m0i * t0r - m0r * t0i;
        real Gr1r = m1r * t1r + m1i * t1i, Gr1i = m1i * t1r - m1r * t1i;
        real Gt0r = m0r * r0r + m0i * r0i, Gt0i = m0i * r0r - m0r * r0i;
        real Gt1r = m1r * r1r + m1i * r1i, Gt1i = m1i * r1r - m1r * r1i;
        /* t0 = m0 v0 + m1 u0, t1 = m0 v1 + m1 u1 (chain_qubit):
         * G_v0 = G_t0 conj(m0) + X0 conj(m1), G_v1 = G_t1 conj(m0) + X1 conj(m1) with
         * (X0, X1) = (G_t1, G_t0) with CNOTs, else (G_t0, G_t1);
         * G_m0 = G_t0 conj(v0) + G_t1 conj(v1), G_m1 = G_t0 conj(u0) + G_t1 conj(u1) */
        /* qubit 0 (first): the message before it is (1, 0); no G_m is needed before it */
        real ar = first ? (real)1 : mp[i], ai = first ? (real)0 : mp[QB + i];
        real br = first ? (real)0 : mp[2 * QB + i], bi = first ? (real)0 : mp[3 * QB + i];
        real X0r = entangle ? Gt1r : Gt0r, X0i = entangle ? Gt1i : Gt0i;
        real X1r = entangle ? Gt0r : Gt1r, X1i = entangle ? Gt0i : Gt1i;
        real Gv0r = Gt0r * ar + Gt0i * ai + X0r * br + X0i * bi;
        real Gv0i = Gt0i * ar - Gt0r * ai + X0i * br - X0r * bi;
        real Gv1r = Gt1r * ar + Gt1i * ai + X1r * br + X1i * bi;
        real Gv1i = Gt1i * ar - Gt1r * ai + X1i * br - X1r * bi;
        real u0r = entangle ? v1r : v0r, u0i = entangle ? v1i : v0i;
        real u1r = entangle ? v0r : v1r, u1i = entangle ? v0i : v1i;
        if (!first) {
            G[i] = Gt0r * v0r + Gt0i * v0i + Gt1r * v1r + Gt1i * v1i;
            G[QB + i] = Gt0i * v0r - Gt0r * v0i + Gt1i * v1r - Gt1r * v1i;
            G[2 * QB + i] = Gt0r * u0r + Gt0i * u0i + Gt1r * u1r + Gt1i * u1i;
            G[3 * QB + i] = Gt0i * u0r - Gt0r * u0i + Gt1i * u1r - Gt1r * u1i;
        }
        /* the angle derivatives Re(conj(G) dz/dangle) */
        real y0 = o[8 * QB + i], y1 = o[9 * QB + i], c1 = o[10 * QB + i];
        real s1 = o[11 * QB + i];
        /* layer-0 Ry: dy/da = (-y1, y0)/2, v0 = y0 (c1 - i s1), v1 = y1 (c1 + i s1) */
        const real g0 = (real)0.5 * (Gv0r * (-y1 * c1) + Gv0i * (y1 * s1)
                                   + Gv1r * (y0 * c1) + Gv1i * (y0 * s1));
        /* layer-0 Rz: dv0 = -i v0/2, dv1 = +i v1/2 */
        const real g1 = (real)0.5 * ((Gv0r * v0i - Gv0i * v0r) - (Gv1r * v1i - Gv1i * v1r));
        /* layer-1 Ry: dr/da = (r1, -r0)/2 */
        const real g2 = (real)0.5 * ((Gr0r * r1r + Gr0i * r1i) - (Gr1r * r0r + Gr1i * r0i));
        /* layer-1 Rz: dr0 = (i/2)(z1 s2 - z0 c2), dr1 = (i/2)(z0 s2 + z1 c2), z1 = conj z0 */
        real c2 = o[12 * QB + i], s2 = o[13 * QB + i], z0r = o[14 * QB + i];
        real z0i = o[15 * QB + i];
        real w0r = z0r * (s2 - c2), w0i = -z0i * (s2 + c2);
        real w1r = z0r * (s2 + c2), w1i = z0i * (s2 - c2);
        const real g3 = (real)0.5 * (-Gr0r * w0i + Gr0i * w0r - Gr1r * w1i + Gr1i * w1r);
        const real gx = d0 * g0 + d1 * g1 + d2 * g2 + d3 * g3;
        gsb[i] += aq * gx;
        aw0[i] += (double)g0; aw1[i] += (double)g1; aw2[i] += (double)g2; aw3[i] += (double)g3;
        aa[i] += (double)(sb[i] * gx);
    }
}

/* One block, backward: from the rows of chain_forward (store = 1) and the seed g = dL/dPhi
 * per lane, the gradients of every gate angle, accumulated per lane (chain_qubit_reverse):
 * acc (5 n rows of QB doubles: dL/dw of the gates (g n + q), dL/da (4 n + q)) and gsb. */
static ALWAYS_INLINE void FN(chain_reverse)(int32_t n, int32_t entangle,
        const real *restrict m_init, const real *restrict st, const real *restrict ms,
        const real *restrict seed, const real *restrict sb, const real *restrict a, real d0,
        real d1, real d2, real d3, real *restrict gsb, double *restrict acc) {
    real G[4 * QB];  /* Phi = Re(m0 + m1) of the last qubit: G_m0 = G_m1 = g */
    for (int64_t i = 0; i < QB; ++i) {
        G[i] = seed[i]; G[QB + i] = 0; G[2 * QB + i] = seed[i]; G[3 * QB + i] = 0;
    }
    for (int32_t q = n - 1; q >= 0; --q) {
#define CHAIN_QUBIT_REVERSE(first)                                                          \
        FN(chain_qubit_reverse)(entangle, st + (int64_t)q * 20 * QB,                         \
                                q ? ms + (int64_t)(q - 1) * 4 * QB : m_init, G, sb, a[q], d0, \
                                d1, d2, d3, gsb, acc + (int64_t)q * QB,                      \
                                acc + (int64_t)(n + q) * QB, acc + (int64_t)(2 * n + q) * QB, \
                                acc + (int64_t)(3 * n + q) * QB,                             \
                                acc + (int64_t)(4 * n + q) * QB, first)
        if (q == 0) CHAIN_QUBIT_REVERSE(1); else CHAIN_QUBIT_REVERSE(0);
#undef CHAIN_QUBIT_REVERSE
    }
}

/* what both entry points share: gate tables, flags, the initial message and scratch rows */
typedef struct {
    real *buf, *cw, *sw, *st, *ms, m_init[4 * QB], d[4], hA, hB;
    int paper;
} FN(chain_ctx);

static int FN(chain_setup)(FN(chain_ctx) *c, int32_t n, int32_t depth, const real *w,
                           const int32_t *data, int32_t hadamard, int32_t entangle) {
    c->buf = (real *)malloc(sizeof(real) * (size_t)(8 * n + 24 * n * QB));
    if (!c->buf) return 0;
    c->cw = c->buf; c->sw = c->cw + 4 * n; c->st = c->cw + 8 * n;
    c->ms = c->st + 20 * n * QB;
    FN(half_angles)(n, depth, w, c->cw, c->sw);
    const real h = (real)0.70710678118654752440;
    /* the paper's circuit (data in every gate, H, CNOTs) gets its flags as constants */
    c->paper = data[0] && data[1] && data[2] && data[3] && hadamard && entangle;
    for (int k = 0; k < 4; ++k) c->d[k] = data[k] ? (real)1 : (real)0;
    c->hA = hadamard ? h : (real)1;
    c->hB = hadamard ? h : (real)0;
    for (int64_t i = 0; i < 4 * QB; ++i) c->m_init[i] = i < QB ? (real)1 : (real)0;
    return 1;
}

#define CHAIN_FORWARD(c, b0, L, store)                                                    \
    do {                                                                                  \
        const real h_ = (real)0.70710678118654752440;                                     \
        if ((c)->paper)                                                                   \
            FN(chain_forward)(b0, L, n, s, a, (c)->cw, (c)->sw, 1, 1, 1, 1, h_, h_, 1,     \
                              store, (c)->m_init, (c)->st, (c)->ms);                       \
        else                                                                              \
            FN(chain_forward)(b0, L, n, s, a, (c)->cw, (c)->sw, (c)->d[0], (c)->d[1],      \
                              (c)->d[2], (c)->d[3], (c)->hA, (c)->hB, entangle, store,     \
                              (c)->m_init, (c)->st, (c)->ms);                              \
    } while (0)

/* Phi at count scores s (count a multiple of QB or not), with a set-up context */
static void FN(chain_eval)(FN(chain_ctx) *c, int32_t n, int32_t entangle, const real *s,
                           const real *a, int64_t count, real *phi) {
    const real *mf = c->ms + (int64_t)(n - 1) * 4 * QB;
    for (int64_t b0 = 0; b0 < count; b0 += QB) {
        const int64_t L = count - b0 < QB ? count - b0 : QB;
        CHAIN_FORWARD(c, b0, L, 0);
        for (int64_t i = 0; i < L; ++i) phi[b0 + i] = mf[i] + mf[2 * QB + i];
    }
}

/* The gradient of sum_b g_b Phi(s_b) over count scores, with a set-up context: gs = dL/ds,
 * and the per-lane sums added to acc (5 n rows of QB doubles, as chain_reverse). */
static void FN(chain_grad)(FN(chain_ctx) *c, int32_t n, int32_t entangle, const real *s,
                           const real *a, const real *g, int64_t count, real *gs,
                           double *acc) {
    real gb[QB], gsb[QB], sb[QB];
    for (int64_t b0 = 0; b0 < count; b0 += QB) {
        const int64_t L = count - b0 < QB ? count - b0 : QB;
        for (int64_t i = 0; i < QB; ++i) {
            sb[i] = i < L ? s[b0 + i] : (real)0;
            gb[i] = i < L ? g[b0 + i] : (real)0;  /* padded lanes: g = 0, no gradient */
            gsb[i] = 0;
        }
        CHAIN_FORWARD(c, b0, L, 1);
        if (c->paper)  /* constant flags */
            FN(chain_reverse)(n, 1, c->m_init, c->st, c->ms, gb, sb, a, 1, 1, 1, 1, gsb, acc);
        else
            FN(chain_reverse)(n, entangle, c->m_init, c->st, c->ms, gb, sb, a, c->d[0],
                              c->d[1], c->d[2], c->d[3], gsb, acc);
        for (int64_t i = 0; i < L; ++i) gs[b0 + i] = gsb[i];
    }
}

/* the per-lane sums of acc (width rows of QB) into out (width), in a fixed order */
static void FN(lane_sums)(int64_t width, const double *acc, double *out) {
    for (int64_t k = 0; k < width; ++k) {
        double tot = 0.0;
        for (int64_t i = 0; i < QB; ++i) tot += acc[k * QB + i];
        out[k] = tot;
    }
}

/* Phi at the scores i0 <= b < i1 of s; w (depth, 2, n); data[4]: which gates carry the data
 * angle. */
static void FN(chain_fwd_range)(int64_t i0, int64_t i1, int32_t n, int32_t depth, const real *s,
                        const real *a, const real *w, const int32_t *data, int32_t hadamard,
                        int32_t entangle, real *phi) {
    FN(chain_ctx) c;
    if (!FN(chain_setup)(&c, n, depth, w, data, hadamard, entangle)) return;
    FN(chain_eval)(&c, n, entangle, s + i0, a, i1 - i0, phi + i0);
    free(c.buf);
}

/* The gradient of L = sum_b g_b Phi(s_b): the chain recomputed per block, then run back from
 * G = g. gs (B) = dL/ds, and for every CHUNK of scores (chunks c0 <= c < c1; the last one
 * may be short) the partial sums part[c] (5, n): dL/dw of the four gates (rows 0-3) and
 * dL/da (row 4), summed in double in a fixed order, so that they do not depend on how the
 * chunks are spread over threads. The data angle of qubit q is a_q s, so dL/ds =
 * sum_q a_q dL/dx_q, dL/da_q = sum_b s dL/dx_q, dL/dx_q = sum_g data[g] dL/d(angle g). */
static void FN(chain_bwd_range)(int64_t c0, int64_t c1, int64_t B, int32_t n, int32_t depth,
                        const real *s, const real *a, const real *w, const int32_t *data,
                        int32_t hadamard, int32_t entangle, const real *g, real *gs,
                        double *part) {
    FN(chain_ctx) c;
    if (!FN(chain_setup)(&c, n, depth, w, data, hadamard, entangle)) return;
    double *acc = (double *)malloc(sizeof(double) * (size_t)(5 * n * QB));
    if (!acc) { free(c.buf); return; }
    for (int64_t ch = c0; ch < c1; ++ch) {
        const int64_t e0 = ch * CHUNK, e1 = e0 + CHUNK < B ? e0 + CHUNK : B;
        for (int64_t k = 0; k < 5 * n * QB; ++k) acc[k] = 0.0;
        FN(chain_grad)(&c, n, entangle, s + e0, a, g + e0, e1 - e0, gs + e0, acc);
        FN(lane_sums)(5 * n, acc, part + ch * 5 * n);
    }
    free(acc);
    free(c.buf);
}

/* ------------------------------------------------------------------------- fused attention
 * One quantum-attention layer for the heads bh0 <= bh < bh1 (bh = b H + h), q, k, v read in
 * place from the projection's output qkv (B, L, 3, H, E):
 *     S = scale q k^T,  logits = S + gamma Phi(S) + mask,  P = softmax over keys,  O = P v,
 * Phi the chain's readout (above); mask -inf where pad[b L + j] (a padding key) or, causal,
 * j > i. O is written at out (B, L, H, E); S, Phi and P (B, H, L, L) are kept for the
 * backward. A row with every key masked gives NaN, as torch's softmax. */
#define QKV(b, i, part, h) (qkv + ((((b) * L + (i)) * 3 + (part)) * H + (h)) * E)

/* out[c] = sum_t a[t as] x[t xs + c] for c < m: a small matrix-vector product whose
 * accumulators stay in registers (two 32-byte GNU C vectors: 16 float or 8 double columns at
 * a time; a scalar tail) */
typedef real FN(vec) __attribute__((vector_size(32)));
#define VW ((int64_t)(32 / sizeof(real)))

static inline void FN(combo)(int64_t T, const real *a, int64_t as, const real *x, int64_t xs,
                             int64_t m, real *out) {
    int64_t c0 = 0;
    for (; c0 + 2 * VW <= m; c0 += 2 * VW) {
        FN(vec) acc0 = {0}, acc1 = {0}, x0, x1;
        for (int64_t t = 0; t < T; ++t) {
            const real *xr = x + t * xs + c0;
            memcpy(&x0, xr, sizeof x0);
            memcpy(&x1, xr + VW, sizeof x1);
            const real at = a[t * as];
            acc0 += at * x0;
            acc1 += at * x1;
        }
        memcpy(out + c0, &acc0, sizeof acc0);
        memcpy(out + c0 + VW, &acc1, sizeof acc1);
    }
    for (; c0 < m; ++c0) {
        real acc = 0;
        for (int64_t t = 0; t < T; ++t) acc += a[t * as] * x[t * xs + c0];
        out[c0] = acc;
    }
}
/* sum_e x[e] y[e] for e < m, in vectors of VW lanes (then a fixed-order sum of the lanes)
 * and a scalar tail */
static inline real FN(dot)(const real *x, const real *y, int64_t m) {
    FN(vec) acc = {0}, xv, yv;
    int64_t e = 0;
    for (; e + VW <= m; e += VW) {
        memcpy(&xv, x + e, sizeof xv);
        memcpy(&yv, y + e, sizeof yv);
        acc += xv * yv;
    }
    real tot = 0;
    for (int64_t l = 0; l < VW; ++l) tot += acc[l];
    for (; e < m; ++e) tot += x[e] * y[e];
    return tot;
}
#undef VW

static void FN(attn_fwd_range)(int64_t bh0, int64_t bh1, int64_t H, int64_t L, int64_t E,
        const real *qkv, const uint8_t *pad, int32_t causal, real scale, real gamma, int32_t n,
        int32_t depth, const real *a, const real *w, const int32_t *data, int32_t hadamard,
        int32_t entangle, real *out, real *S, real *Phi, real *P) {
    FN(chain_ctx) c;
    if (!FN(chain_setup)(&c, n, depth, w, data, hadamard, entangle)) return;
    real *madd = (real *)malloc(sizeof(real) * (size_t)L);  /* the keys' additive mask */
    if (!madd) { free(c.buf); return; }
    const int64_t ld = 3 * H * E;  /* the stride of consecutive positions in qkv */
    for (int64_t bh = bh0; bh < bh1; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        real *Sb = S + bh * L * L, *Fb = Phi + bh * L * L, *Pb = P + bh * L * L;
        for (int64_t j = 0; j < L; ++j) madd[j] = pad && pad[b * L + j] ? -(real)INFINITY : 0;
        for (int64_t i = 0; i < L; ++i) {  /* S = scale q k^T */
            const real *q = QKV(b, i, 0, h);
            for (int64_t j = 0; j < L; ++j) Sb[i * L + j] = FN(dot)(q, QKV(b, j, 1, h), E) * scale;
        }
        FN(chain_eval)(&c, n, entangle, Sb, a, L * L, Fb);
        for (int64_t i = 0; i < L; ++i) {  /* logits, softmax, O = P v */
            real *row = Pb + i * L, m = -(real)INFINITY, tot = 0;
            const int64_t keep = causal ? i + 1 : L;
            /* separate loops: the elementwise ones vectorise, the two reductions are short */
            for (int64_t j = 0; j < L; ++j) {
                const real val = Sb[i * L + j] + gamma * Fb[i * L + j] + madd[j];
                row[j] = j < keep ? val : -(real)INFINITY;
            }
            for (int64_t j = 0; j < L; ++j) m = row[j] > m ? row[j] : m;
            for (int64_t j = 0; j < L; ++j) row[j] = QSGD_EXP(row[j] - m);
            for (int64_t j = 0; j < L; ++j) tot += row[j];
            const real inv = (real)1 / tot;
            for (int64_t j = 0; j < L; ++j) row[j] *= inv;
            FN(combo)(L, row, 1, QKV(b, 0, 2, h), ld, E, out + ((b * L + i) * H + h) * E);
        }
    }
    free(madd);
    free(c.buf);
}

/* Its backward for the heads bh0 <= bh < bh1: dO (B, L, H, E) in, dqkv (B, L, 3, H, E) out
 * (every entry of these heads written), and per head the partial sums part[bh] (5 n + 1):
 * the chain's (dL/dw of the four gates, dL/da, as qsgd_chain_bwd) and dL/dgamma, in double.
 *     dP = dO v^T, dv = P^T dO, dlogits = P (dP - rowsum(P dP)), dgamma = sum dlogits Phi,
 *     dS = dlogits + (the chain's dL/ds for g = gamma dlogits), dq = scale dS k,
 *     dk = scale dS^T q. */
static void FN(attn_bwd_range)(int64_t bh0, int64_t bh1, int64_t H, int64_t L, int64_t E,
        const real *qkv, real scale, real gamma, int32_t n, int32_t depth, const real *a,
        const real *w, const int32_t *data, int32_t hadamard, int32_t entangle, const real *S,
        const real *Phi, const real *P, const real *dout, real *dqkv, double *part) {
    FN(chain_ctx) c;
    if (!FN(chain_setup)(&c, n, depth, w, data, hadamard, entangle)) return;
    real *buf = (real *)malloc(sizeof(real) * (size_t)(3 * L * L));
    double *acc = (double *)malloc(sizeof(double) * (size_t)(5 * n * QB));
    if (!buf || !acc) { free(buf); free(acc); free(c.buf); return; }
    real *dl = buf, *g = buf + L * L, *gs = buf + 2 * L * L;
    const int64_t ld = 3 * H * E, lo = H * E;  /* position strides of qkv and dO */
#define DQKV(b, i, part, h) (dqkv + ((((b) * L + (i)) * 3 + (part)) * H + (h)) * E)
    for (int64_t bh = bh0; bh < bh1; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        const real *Fb = Phi + bh * L * L, *Pb = P + bh * L * L;
        const real *dO = dout + (b * L * H + h) * E;  /* row i at dO + i lo */
        double dgamma = 0.0;
        for (int64_t i = 0; i < L; ++i) {  /* dP = dO v^T, then dlogits */
            real *row = dl + i * L, rs = 0;
            for (int64_t j = 0; j < L; ++j) row[j] = FN(dot)(dO + i * lo, QKV(b, j, 2, h), E);
            for (int64_t j = 0; j < L; ++j) rs += Pb[i * L + j] * row[j];
            for (int64_t j = 0; j < L; ++j) {
                const real d = Pb[i * L + j] * (row[j] - rs);
                row[j] = d;
                g[i * L + j] = gamma * d;
            }
            real dg = 0;  /* the row's share of dL/dgamma, then in double */
            for (int64_t j = 0; j < L; ++j) dg += row[j] * Fb[i * L + j];
            dgamma += (double)dg;
        }
        for (int64_t j = 0; j < L; ++j)  /* dv = P^T dO */
            FN(combo)(L, Pb + j, L, dO, lo, E, DQKV(b, j, 2, h));
        for (int64_t k = 0; k < 5 * n * QB; ++k) acc[k] = 0.0;
        FN(chain_grad)(&c, n, entangle, S + bh * L * L, a, g, L * L, gs, acc);
        FN(lane_sums)(5 * n, acc, part + bh * (5 * n + 1));
        part[bh * (5 * n + 1) + 5 * n] = dgamma;
        for (int64_t k = 0; k < L * L; ++k) dl[k] = (dl[k] + gs[k]) * scale;  /* scale dS */
        for (int64_t i = 0; i < L; ++i)  /* dq = dS k */
            FN(combo)(L, dl + i * L, 1, QKV(b, 0, 1, h), ld, E, DQKV(b, i, 0, h));
        for (int64_t j = 0; j < L; ++j)  /* dk = dS^T q */
            FN(combo)(L, dl + j, L, QKV(b, 0, 0, h), ld, E, DQKV(b, j, 1, h));
    }
#undef DQKV
    free(buf);
    free(acc);
    free(c.buf);
}
#undef QKV

/* the sum over chunks of part (chunks, width), in double in a fixed order, written as reals:
 * entries [o1, o1 + n1) to out1 and [o2, o2 + n2) to out2 (the backward kernels' gradients of
 * w and of a) */
void FN(qsgd_reduce)(int64_t chunks, int64_t width, const double *part, int64_t o1, int64_t n1,
                     real *out1, int64_t o2, int64_t n2, real *out2) {
    for (int64_t k = 0; k < width; ++k) {
        double tot = 0.0;
        for (int64_t c = 0; c < chunks; ++c) tot += part[c * width + k];
        if (k >= o1 && k < o1 + n1) out1[k - o1] = (real)tot;
        if (k >= o2 && k < o2 + n2) out2[k - o2] = (real)tot;
    }
}
/* ------------------------------------------------------------------------- exported
 * The kernels as called from Python: each splits its range over the threads
 * (PARALLEL_RANGE: blocks of QB circuits or scores, or chunks of CHUNK scores). */

void FN(qsgd_state)(int64_t i0, int64_t i1, int32_t n, int32_t depth, const real *x,
                    const real *w, int64_t w_stride, const int32_t *data, int32_t hadamard,
                    int32_t entangle, const int32_t *perm, real *out) {
    PARALLEL_RANGE(i0, i1, QB, 4, FN(state_range)(a_, b_, n, depth, x, w, w_stride, data,
                                                  hadamard, entangle, perm, out));
}

void FN(qsgd_line_state_fwd)(int64_t i0, int64_t i1, int32_t n, int32_t depth, const real *s,
                             const real *a, const real *w, const int32_t *data,
                             int32_t hadamard, int32_t entangle, const int32_t *perm,
                             int32_t readout, real *phi) {
    PARALLEL_RANGE(i0, i1, QB, 4, FN(line_state_fwd_range)(a_, b_, n, depth, s, a, w, data,
                                                           hadamard, entangle, perm, readout,
                                                           phi));
}

void FN(qsgd_line_state_bwd)(int64_t c0, int64_t c1, int64_t B, int32_t n, int32_t depth,
                             const real *s, const real *a, const real *w, const int32_t *data,
                             int32_t hadamard, int32_t entangle, const int32_t *perm,
                             int32_t readout, const real *g, real *gs, double *part) {
    PARALLEL_RANGE(c0, c1, 1, 2, FN(line_state_bwd_range)(a_, b_, B, n, depth, s, a, w, data,
                                                          hadamard, entangle, perm, readout,
                                                          g, gs, part));
}

void FN(qsgd_chain_fwd)(int64_t i0, int64_t i1, int32_t n, int32_t depth, const real *s,
                        const real *a, const real *w, const int32_t *data, int32_t hadamard,
                        int32_t entangle, real *phi) {
    PARALLEL_RANGE(i0, i1, QB, 64, FN(chain_fwd_range)(a_, b_, n, depth, s, a, w, data,
                                                       hadamard, entangle, phi));
}

void FN(qsgd_chain_bwd)(int64_t c0, int64_t c1, int64_t B, int32_t n, int32_t depth,
                        const real *s, const real *a, const real *w, const int32_t *data,
                        int32_t hadamard, int32_t entangle, const real *g, real *gs,
                        double *part) {
    PARALLEL_RANGE(c0, c1, 1, 2, FN(chain_bwd_range)(a_, b_, B, n, depth, s, a, w, data,
                                                     hadamard, entangle, g, gs, part));
}

void FN(qsgd_attn_fwd)(int64_t bh0, int64_t bh1, int64_t H, int64_t L, int64_t E,
                       const real *qkv, const uint8_t *pad, int32_t causal, double scale,
                       double gamma, int32_t n, int32_t depth, const real *a, const real *w,
                       const int32_t *data, int32_t hadamard, int32_t entangle, real *out,
                       real *S, real *Phi, real *P) {
    PARALLEL_RANGE(bh0, bh1, 1, 2, FN(attn_fwd_range)(a_, b_, H, L, E, qkv, pad, causal,
                                                      (real)scale, (real)gamma, n, depth, a, w,
                                                      data, hadamard, entangle, out, S, Phi,
                                                      P));
}

void FN(qsgd_attn_bwd)(int64_t bh0, int64_t bh1, int64_t H, int64_t L, int64_t E,
                       const real *qkv, double scale, double gamma, int32_t n, int32_t depth,
                       const real *a, const real *w, const int32_t *data, int32_t hadamard,
                       int32_t entangle, const real *S, const real *Phi, const real *P,
                       const real *dout, real *dqkv, double *part) {
    PARALLEL_RANGE(bh0, bh1, 1, 2, FN(attn_bwd_range)(a_, b_, H, L, E, qkv, (real)scale,
                                                      (real)gamma, n, depth, a, w, data,
                                                      hadamard, entangle, S, Phi, P, dout,
                                                      dqkv, part));
}

#undef GT
#undef CAT_
#undef CAT
#undef FN
#undef real
#endif /* QSGD_BODY */
