/* Counter-based draws of stabfw.core.streams, compiled.
 *
 * The same numbers as the numpy code of streams.py, draw for draw: SplitMix64 on
 * key + counter * golden ratio, the uniform ((bits >> 11) + 0.5) * 2^-53, the normal as
 * the inverse normal CDF of that uniform, and Marsaglia-Tsang gamma candidates. The
 * numpy code passes over each array once per operation; here a draw stays in registers.
 * Best of 5 on the 2-core CI machine, on 10^5 keys: a uniform 2 ns (numpy 17 ns), a
 * normal 17 ns (numpy 35 ns: ndtri itself, two logarithms in its tails, is most of either),
 * a gamma of shape 49.5 31 ns (numpy 131 ns).
 *
 * Bit-for-bit equality with the numpy path needs the same operations in the same order
 * and no fused multiply-adds: setup.py compiles this file with -ffp-contract=off.
 *
 * The inverse normal CDF is Cephes' ndtri (S. L. Moshier, Cephes Math Library 2.1,
 * 1989), the algorithm and coefficients scipy.special.ndtri evaluates; log and sqrt come
 * from the C library, as in scipy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN 0x9E3779B97F4A7C15ULL

static inline uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* draw `counter` (1-based, as streams._bits numbers them) of `key`, as a uniform in (0, 1) */
static inline double uniform(uint64_t key, uint64_t counter)
{
    return ((double)(mix(key + counter * GOLDEN) >> 11) + 0.5) * 0x1.0p-53;
}

/* Cephes ndtri: x with Phi(x) = y, for y in (0, 1) (the uniforms above never reach 0 or 1) */
static const double P0[5] = {
    -5.99633501014107895267E1, 9.80010754185999661536E1, -5.66762857469070293439E1,
    1.39312609387279679503E1, -1.23916583867381258016E0,
};
static const double Q0[8] = {
    1.95448858338141759834E0, 4.67627912898881538453E0, 8.63602421390890590575E1,
    -2.25462687854119370527E2, 2.00260212380060660359E2, -8.20372256168333339912E1,
    1.59056225126211695515E1, -1.18331621121330003142E0,
};
static const double P1[9] = {
    4.05544892305962419923E0, 3.15251094599893866154E1, 5.71628192246421288162E1,
    4.40805073893200834700E1, 1.46849561928858024014E1, 2.18663306850790267539E0,
    -1.40256079171354495875E-1, -3.50424626827848203418E-2, -8.57456785154685413611E-4,
};
static const double Q1[8] = {
    1.57799883256466749731E1, 4.53907635128879210584E1, 4.13172038254672030440E1,
    1.50425385692907503408E1, 2.50464946208309415979E0, -1.42182922854787788574E-1,
    -3.80806407691578277194E-2, -9.33259480895457427372E-4,
};
static const double P2[9] = {
    3.23774891776946035970E0, 6.91522889068984211695E0, 3.93881025292474443415E0,
    1.33303460815807542389E0, 2.01485389549179081538E-1, 1.23716634817820021358E-2,
    3.01581553508235416007E-4, 2.65806974686737550832E-6, 6.23974539184983293730E-9,
};
static const double Q2[8] = {
    6.02427039364742014255E0, 3.67983563856160859403E0, 1.37702099489081330271E0,
    2.16236993594496635890E-1, 1.34204006088543189037E-2, 3.28014464682127739104E-4,
    2.89247864745380683936E-6, 6.79019408009981274425E-9,
};
static const double EXP_M2 = 0.13533528323661269189; /* exp(-2) */
static const double SQRT2PI = 2.50662827463100050242E0;

/* Horner's rule, highest power first; p1 has an implicit leading coefficient 1 */
static inline double poly(double x, const double *c, int degree)
{
    double a = c[0];
    for (int i = 1; i <= degree; i++)
        a = a * x + c[i];
    return a;
}

static inline double poly1(double x, const double *c, int degree)
{
    double a = x + c[0];
    for (int i = 1; i < degree; i++)
        a = a * x + c[i];
    return a;
}

/* the central branch of ndtri, on y already reflected as ndtri reflects it */
static inline double ndtri_central(double y)
{
    y = y - 0.5;
    double y2 = y * y;
    double x = y + y * (y2 * poly(y2, P0, 4) / poly1(y2, Q0, 8));
    return x * SQRT2PI;
}

/* the tails: y = min(y0, 1 - y0) at most exp(-2); negate when y0 was the lower one */
static inline double ndtri_tail(double y, int negate)
{
    double x = sqrt(-2.0 * log(y));
    double x0 = x - log(x) / x;
    double z = 1.0 / x;
    double x1 = (x < 8.0) ? z * poly(z, P1, 8) / poly1(z, Q1, 8)
                          : z * poly(z, P2, 8) / poly1(z, Q2, 8);
    x = x0 - x1;
    return negate ? -x : x;
}

static inline double ndtri(double y0)
{
    double y = (y0 > 1.0 - EXP_M2) ? 1.0 - y0 : y0;
    return (y > EXP_M2) ? ndtri_central(y) : ndtri_tail(y, y0 <= 1.0 - EXP_M2);
}

/* draws offset + 1 .. offset + n of key into dst: uniforms, or their normals */
static void fill(uint64_t key, Py_ssize_t n, uint64_t offset, int normal, double *dst)
{
    for (Py_ssize_t j = 0; j < n; j++) {
        double u = uniform(key, offset + (uint64_t)j + 1);
        dst[j] = normal ? ndtri(u) : u;
    }
}

/* Marsaglia-Tsang for Gamma(d + 1/3) with c = 1/sqrt(9d): candidate j draws its normal from
 * counter 2j + 1 and its uniform from counter 2j + 2; the first accepted one is d * v */
static inline double gamma_mt(uint64_t key, double d, double c)
{
    for (uint64_t j = 0;; j++) {
        double z = ndtri(uniform(key, 2 * j + 1));
        double u = uniform(key, 2 * j + 2);
        double v = 1.0 + c * z;
        v = v * v * v;
        /* the squeeze first: it implies the exact test, and spares its two logarithms */
        if (v > 0 && (u < 1.0 - 0.0331 * (z * z) * (z * z) ||
                      log(u) < 0.5 * z * z + d - d * v + d * log(v)))
            return d * v;
    }
}

/* --- SHAKE-128 (FIPS 202), for the seeds of per-stream generators ---------------------
 * streams._KeyedSeedSequence takes a PCG64's 256 bits of seed from SHAKE-128 of a domain
 * string and the stream key; hashlib gives the same bytes, but its object copy, update and
 * digest cost ~0.7 µs a stream, a large share of a cheap loop's overhead. One block: the
 * input is short and a PCG64 asks for 32 bytes. Lanes are read and written byte by byte
 * (little-endian, as the standard defines them), so the bytes do not depend on the host. */
static const uint64_t KECCAK_RC[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL,
    0x8000000080008000ULL, 0x000000000000808bULL, 0x0000000080000001ULL,
    0x8000000080008081ULL, 0x8000000000008009ULL, 0x000000000000008aULL,
    0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL,
    0x8000000000008003ULL, 0x8000000000008002ULL, 0x8000000000000080ULL,
    0x000000000000800aULL, 0x800000008000000aULL, 0x8000000080008081ULL,
    0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};
static inline uint64_t rotl(uint64_t x, unsigned r) { return (x << r) | (x >> (64 - r)); }

/* the permutation, its 25 lanes unrolled (lane x + 5 y; rho's rotations and pi's moves
 * written out): 1.8x faster than looping over index tables (410 against 740 ns) */
static void keccak_f1600(uint64_t st[25])
{
    uint64_t c0, c1, c2, c3, c4, d0, d1, d2, d3, d4;
    uint64_t b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16, b17,
        b18, b19, b20, b21, b22, b23, b24;
    for (int round = 0; round < 24; round++) {
        c0 = st[0] ^ st[5] ^ st[10] ^ st[15] ^ st[20];
        c1 = st[1] ^ st[6] ^ st[11] ^ st[16] ^ st[21];
        c2 = st[2] ^ st[7] ^ st[12] ^ st[17] ^ st[22];
        c3 = st[3] ^ st[8] ^ st[13] ^ st[18] ^ st[23];
        c4 = st[4] ^ st[9] ^ st[14] ^ st[19] ^ st[24];
        d0 = c4 ^ rotl(c1, 1);
        d1 = c0 ^ rotl(c2, 1);
        d2 = c1 ^ rotl(c3, 1);
        d3 = c2 ^ rotl(c4, 1);
        d4 = c3 ^ rotl(c0, 1);
        b0 = st[0] ^ d0;
        b10 = rotl(st[1] ^ d1, 1);
        b20 = rotl(st[2] ^ d2, 62);
        b5 = rotl(st[3] ^ d3, 28);
        b15 = rotl(st[4] ^ d4, 27);
        b16 = rotl(st[5] ^ d0, 36);
        b1 = rotl(st[6] ^ d1, 44);
        b11 = rotl(st[7] ^ d2, 6);
        b21 = rotl(st[8] ^ d3, 55);
        b6 = rotl(st[9] ^ d4, 20);
        b7 = rotl(st[10] ^ d0, 3);
        b17 = rotl(st[11] ^ d1, 10);
        b2 = rotl(st[12] ^ d2, 43);
        b12 = rotl(st[13] ^ d3, 25);
        b22 = rotl(st[14] ^ d4, 39);
        b23 = rotl(st[15] ^ d0, 41);
        b8 = rotl(st[16] ^ d1, 45);
        b18 = rotl(st[17] ^ d2, 15);
        b3 = rotl(st[18] ^ d3, 21);
        b13 = rotl(st[19] ^ d4, 8);
        b14 = rotl(st[20] ^ d0, 18);
        b24 = rotl(st[21] ^ d1, 2);
        b9 = rotl(st[22] ^ d2, 61);
        b19 = rotl(st[23] ^ d3, 56);
        b4 = rotl(st[24] ^ d4, 14);
        st[0] = b0 ^ (~b1 & b2);
        st[1] = b1 ^ (~b2 & b3);
        st[2] = b2 ^ (~b3 & b4);
        st[3] = b3 ^ (~b4 & b0);
        st[4] = b4 ^ (~b0 & b1);
        st[5] = b5 ^ (~b6 & b7);
        st[6] = b6 ^ (~b7 & b8);
        st[7] = b7 ^ (~b8 & b9);
        st[8] = b8 ^ (~b9 & b5);
        st[9] = b9 ^ (~b5 & b6);
        st[10] = b10 ^ (~b11 & b12);
        st[11] = b11 ^ (~b12 & b13);
        st[12] = b12 ^ (~b13 & b14);
        st[13] = b13 ^ (~b14 & b10);
        st[14] = b14 ^ (~b10 & b11);
        st[15] = b15 ^ (~b16 & b17);
        st[16] = b16 ^ (~b17 & b18);
        st[17] = b17 ^ (~b18 & b19);
        st[18] = b18 ^ (~b19 & b15);
        st[19] = b19 ^ (~b15 & b16);
        st[20] = b20 ^ (~b21 & b22);
        st[21] = b21 ^ (~b22 & b23);
        st[22] = b22 ^ (~b23 & b24);
        st[23] = b23 ^ (~b24 & b20);
        st[24] = b24 ^ (~b20 & b21);
        st[0] ^= KECCAK_RC[round];
    }
}

#define SHAKE128_RATE 168

static inline void xor_byte(uint64_t st[25], size_t i, uint8_t b)
{
    st[i / 8] ^= (uint64_t)b << (8 * (i % 8));
}

/* out[0 .. n) = SHAKE-128(msg[0 .. len)) */
static void shake128(const uint8_t *msg, size_t len, uint8_t *out, size_t n)
{
    uint64_t st[25] = {0};
    size_t i = 0;
    for (; len - i >= SHAKE128_RATE; i += SHAKE128_RATE) {
        for (size_t j = 0; j < SHAKE128_RATE; j++)
            xor_byte(st, j, msg[i + j]);
        keccak_f1600(st);
    }
    for (size_t j = 0; i + j < len; j++)
        xor_byte(st, j, msg[i + j]);
    xor_byte(st, len - i, 0x1F);  /* SHAKE's domain bits and the first padding bit */
    xor_byte(st, SHAKE128_RATE - 1, 0x80);
    for (size_t done = 0; done < n; done += SHAKE128_RATE) {
        keccak_f1600(st);
        for (size_t j = 0; j < SHAKE128_RATE && done + j < n; j++)
            out[done + j] = (uint8_t)(st[j / 8] >> (8 * (j % 8)));
    }
}

/* --- the Python interface: numpy arrays in and out through the buffer protocol -------- */

/* v = the buffer of obj: C-contiguous 8-byte items, `count` of them (any number if < 0) */
static int view(PyObject *obj, Py_buffer *v, int writable, Py_ssize_t count, const char *what)
{
    if (PyObject_GetBuffer(obj, v, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (v->itemsize != 8 || v->len % 8 || (count >= 0 && v->len != count * 8)) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of 8 bytes", what,
                     count >= 0 ? count : v->len / 8);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

static void release(Py_buffer *v, int n)
{
    for (int i = 0; i < n; i++)
        PyBuffer_Release(&v[i]);
}

/* uniforms or normals: out[i, j] = draw offset + j + 1 of keys[i] */
static PyObject *draw_many(PyObject *args, int normal)
{
    PyObject *keys_o, *out_o;
    Py_ssize_t n;
    unsigned long long offset;
    if (!PyArg_ParseTuple(args, "OnKO", &keys_o, &n, &offset, &out_o))
        return NULL;
    Py_buffer v[2];
    if (view(keys_o, &v[0], 0, -1, "keys") < 0)
        return NULL;
    Py_ssize_t m = v[0].len / 8;
    if (view(out_o, &v[1], 1, m * n, "out") < 0) {
        release(v, 1);
        return NULL;
    }
    const uint64_t *k = v[0].buf;
    double *o = v[1].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m; i++)
        fill(k[i], n, offset, normal, o + i * n);
    Py_END_ALLOW_THREADS
    release(v, 2);
    Py_RETURN_NONE;
}

static PyObject *uniforms(PyObject *self, PyObject *args) { return draw_many(args, 0); }
static PyObject *normals(PyObject *self, PyObject *args) { return draw_many(args, 1); }

/* f(x, out, m) over the buffers of (x, out), m 8-byte items each: the one-array functions */
static PyObject *elementwise(PyObject *args, const char *what,
                             void (*f)(const void *x, void *out, Py_ssize_t m))
{
    PyObject *x_o, *out_o;
    if (!PyArg_ParseTuple(args, "OO", &x_o, &out_o))
        return NULL;
    Py_buffer v[2];
    if (view(x_o, &v[0], 0, -1, what) < 0)
        return NULL;
    Py_ssize_t m = v[0].len / 8;
    if (view(out_o, &v[1], 1, m, "out") < 0) {
        release(v, 1);
        return NULL;
    }
    f(v[0].buf, v[1].buf, m);
    release(v, 2);
    Py_RETURN_NONE;
}

static void ndtri_all(const void *x, void *out, Py_ssize_t m)
{
    const double *y = x;
    double *o = out;
    for (Py_ssize_t i = 0; i < m; i++)
        o[i] = (y[i] > 0.0 && y[i] < 1.0) ? ndtri(y[i]) : NAN;
}

/* ndtri(y, out) on any float64 y: lets the tests reach the far tails, which the uniforms
 * above reach once in ~1e14 draws; NaN outside (0, 1) */
static PyObject *ndtri_of(PyObject *self, PyObject *args)
{
    return elementwise(args, "y", ndtri_all);
}

/* gammas(keys, d, c, out): out[i] = Marsaglia-Tsang's draw for keys[i], d[i], c[i] */
static PyObject *gammas(PyObject *self, PyObject *args)
{
    PyObject *o_[4];
    if (!PyArg_ParseTuple(args, "OOOO", &o_[0], &o_[1], &o_[2], &o_[3]))
        return NULL;
    static const char *what[4] = {"keys", "d", "c", "out"};
    Py_buffer v[4];
    Py_ssize_t m = -1;
    for (int i = 0; i < 4; i++) {
        if (view(o_[i], &v[i], i == 3, m, what[i]) < 0) {
            release(v, i);
            return NULL;
        }
        m = v[0].len / 8;
    }
    const uint64_t *k = v[0].buf;
    const double *d = v[1].buf, *c = v[2].buf;
    double *o = v[3].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m; i++)
        o[i] = gamma_mt(k[i], d[i], c[i]);
    Py_END_ALLOW_THREADS
    release(v, 4);
    Py_RETURN_NONE;
}

/* bartlett(keys, d, diag, out): one lower-triangular (d, d) matrix per key, the diagonal
 * given and normals(keys, d (d - 1) / 2) below it in the row-major order of np.tril_indices */
static PyObject *bartlett(PyObject *self, PyObject *args)
{
    PyObject *keys_o, *diag_o, *out_o;
    Py_ssize_t d;
    if (!PyArg_ParseTuple(args, "OnOO", &keys_o, &d, &diag_o, &out_o))
        return NULL;
    Py_buffer v[3];
    if (view(keys_o, &v[0], 0, -1, "keys") < 0)
        return NULL;
    Py_ssize_t m = v[0].len / 8, below = d * (d - 1) / 2;
    if (view(diag_o, &v[1], 0, m * d, "diag") < 0) {
        release(v, 1);
        return NULL;
    }
    if (view(out_o, &v[2], 1, m * d * d, "out") < 0) {
        release(v, 2);
        return NULL;
    }
    double *z = malloc((size_t)(below > 0 ? below : 1) * sizeof(double));
    if (!z) {
        release(v, 3);
        return PyErr_NoMemory();
    }
    const uint64_t *k = v[0].buf;
    const double *dg = v[1].buf;
    double *o = v[2].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t s = 0; s < m; s++) {
        double *a = o + s * d * d;
        const double *next = z;
        fill(k[s], below, 0, 1, z);
        for (Py_ssize_t i = 0; i < d; i++) {
            for (Py_ssize_t j = 0; j < i; j++)
                a[i * d + j] = *next++;
            a[i * d + i] = dg[s * d + i];
            for (Py_ssize_t j = i + 1; j < d; j++)
                a[i * d + j] = 0.0;
        }
    }
    Py_END_ALLOW_THREADS
    free(z);
    release(v, 3);
    Py_RETURN_NONE;
}

static void mix_all(const void *x, void *out, Py_ssize_t m)
{
    const uint64_t *z = x;
    uint64_t *o = out;
    for (Py_ssize_t i = 0; i < m; i++)
        o[i] = mix(z[i]);
}

/* mix(z, out): out[i] = SplitMix64's finaliser of z[i] (streams._mix), in one pass over
 * the keys instead of numpy's nine */
static PyObject *mix_of(PyObject *self, PyObject *args)
{
    return elementwise(args, "z", mix_all);
}

/* stream_key(seed, generation, code): streams.stream's key of (seed, generation, purpose
 * code), SplitMix64 three times as streams.stream_keys mixes them; in Python-int arithmetic
 * these three rounds cost ~0.8 µs a stream */
static PyObject *stream_key(PyObject *self, PyObject *args)
{
    unsigned long long seed, code;
    long long generation;
    if (!PyArg_ParseTuple(args, "KLK", &seed, &generation, &code))
        return NULL;
    uint64_t k = mix((uint64_t)seed + GOLDEN);
    k = mix(k ^ ((uint64_t)(generation + 2) * GOLDEN));
    return PyLong_FromUnsignedLongLong(mix(k ^ (uint64_t)code));
}

/* stream_seed(domain, key, out): the bytes of out = SHAKE-128(domain + key as 8
 * little-endian bytes), as hashlib.shake_128(domain + key.to_bytes(8, "little")).digest() */
static PyObject *stream_seed(PyObject *self, PyObject *args)
{
    const char *domain;
    Py_ssize_t dlen;
    unsigned long long key;
    PyObject *out_o;
    if (!PyArg_ParseTuple(args, "y#KO", &domain, &dlen, &key, &out_o))
        return NULL;
    if (dlen > 256) {
        PyErr_SetString(PyExc_ValueError, "domain: at most 256 bytes");
        return NULL;
    }
    Py_buffer v;
    if (PyObject_GetBuffer(out_o, &v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    uint8_t msg[256 + 8];
    memcpy(msg, domain, (size_t)dlen);
    for (int i = 0; i < 8; i++)
        msg[dlen + i] = (uint8_t)(key >> (8 * i));
    shake128(msg, (size_t)dlen + 8, v.buf, (size_t)v.len);
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"uniforms", uniforms, METH_VARARGS,
     "uniforms(keys, n, offset, out): out[i, j] = draw offset + j of keys[i], in (0, 1)"},
    {"normals", normals, METH_VARARGS,
     "normals(keys, n, offset, out): the inverse normal CDF of uniforms(keys, n, offset)"},
    {"ndtri", ndtri_of, METH_VARARGS,
     "ndtri(y, out): the inverse normal CDF the normals use, NaN outside (0, 1)"},
    {"gammas", gammas, METH_VARARGS,
     "gammas(keys, d, c, out): Marsaglia-Tsang draws d * v, first accepted candidate per key"},
    {"bartlett", bartlett, METH_VARARGS,
     "bartlett(keys, d, diag, out): lower-triangular (d, d) per key, normals below diag"},
    {"mix", mix_of, METH_VARARGS, "mix(z, out): out[i] = SplitMix64's finaliser of z[i]"},
    {"stream_key", stream_key, METH_VARARGS,
     "stream_key(seed, generation, code): the key of stream (seed, generation, purpose code)"},
    {"stream_seed", stream_seed, METH_VARARGS,
     "stream_seed(domain, key, out): out's bytes = SHAKE-128(domain + key, 8 bytes LE)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_counter",
    "Compiled counter-based draws; see stabfw.core.streams.", -1, methods,
};

/* What these draws are: streams.py refuses a module built from another version of this file
 * (an in-place build that was not redone). Raise it with any change to what is drawn. */
#define DRAWS_VERSION 2

PyMODINIT_FUNC PyInit__counter(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "DRAWS_VERSION", DRAWS_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
