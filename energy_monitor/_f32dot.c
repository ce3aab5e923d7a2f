/* The sum of a[i] * b[i] over two float32 columns, each product formed and accumulated in
 * float64: the one trace integral numpy cannot do at memory bandwidth.
 *
 * Why C: a float32 x float32 product is exact in float64 (24 + 24 significant bits < 53), but
 * numpy has no float32 -> float64 dot. np.einsum(..., dtype=float64) casts through small
 * buffers and takes about 2x the time of reading the two columns; a compiled loop that
 * converts in registers reads them at memory bandwidth (benchmarks/bench_integration.py).
 *
 * Sixteen partial sums let the compiler use vector registers for a reduction it may not
 * otherwise reorder. On x86-64 Linux with GCC or Clang the loop is also built for AVX2 and
 * chosen at load time (target_clones), since the baseline x86-64 build (SSE2) stays about
 * 1.3x the bandwidth probe. The loop runs without the GIL, so a meter's reader thread keeps
 * draining its port while a long trace is integrated.
 *
 * energy_monitor.trace uses this module when it was built and falls back to einsum when not
 * (setup.py builds it as an optional extension: no compiler still installs).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define LANES 16

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define DISPATCH "AVX2 or baseline x86-64, chosen at load time"
__attribute__((target_clones("avx2", "default")))
#else
#define DISPATCH "the baseline instruction set"
#endif
static double
dot_f32_f64(const float *a, const float *b, Py_ssize_t n)
{
    double partial[LANES] = {0};
    Py_ssize_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++)
            partial[k] += (double)a[i + k] * (double)b[i + k];
    double total = 0.0;
    for (; i < n; i++)
        total += (double)a[i] * (double)b[i];
    for (int k = 0; k < LANES; k++)
        total += partial[k];
    return total;
}

/* Whether a struct-module format names one float in this machine's byte order: "f", or "f"
 * after '@' or '=' (native), or after '<' / '>' where that is the native order (numpy writes
 * "<f" for a dtype spelled '<f4', as a memmap of a saved column may be). */
static int
native_float(const char *format)
{
    if (format == NULL)
        return 0;
    char order = format[0];
    if (order == '@' || order == '=' || order == (PY_LITTLE_ENDIAN ? '<' : '>'))
        format++;
    return strcmp(format, "f") == 0;
}

/* Borrow a one-dimensional, C-contiguous, aligned float32 buffer, or set an error naming
 * `which`. */
static int
float32_column(PyObject *obj, Py_buffer *view, const char *which)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (view->ndim != 1 || view->itemsize != sizeof(float) || !native_float(view->format)) {
        PyErr_Format(PyExc_TypeError,
                     "dot: %s must be a one-dimensional float32 array in native byte order, "
                     "got format '%s' with %d dimension(s)",
                     which, view->format ? view->format : "B", view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    if ((uintptr_t)view->buf % _Alignof(float) != 0) {
        PyErr_Format(PyExc_ValueError, "dot: %s is not aligned to 4 bytes (copy it first)",
                     which);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *
dot(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "dot() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    Py_buffer a, b;
    if (float32_column(args[0], &a, "the first column") < 0)
        return NULL;
    if (float32_column(args[1], &b, "the second column") < 0) {
        PyBuffer_Release(&a);
        return NULL;
    }
    if (a.shape[0] != b.shape[0]) {
        PyErr_Format(PyExc_ValueError, "dot: the columns differ in length (%zd and %zd)",
                     a.shape[0], b.shape[0]);
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        return NULL;
    }
    double total;
    Py_BEGIN_ALLOW_THREADS
    total = dot_f32_f64((const float *)a.buf, (const float *)b.buf, a.shape[0]);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return PyFloat_FromDouble(total);
}

static PyMethodDef methods[] = {
    {"dot", (PyCFunction)(void (*)(void))dot, METH_FASTCALL,
     "dot(a, b) -> float\n\nSum of a[i] * b[i] over two one-dimensional, C-contiguous float32 "
     "arrays of equal length, each product formed and accumulated in float64."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_f32dot",
    .m_doc = "Float32 x float32 -> float64 dot product at memory bandwidth (see _f32dot.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__f32dot(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "DISPATCH", DISPATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
