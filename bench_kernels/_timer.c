/*
 * bench_kernels._timer: the one native piece of fleetbench.
 *
 * Times a Python callable n times in a C loop, so the loop itself adds no
 * interpreter overhead between two clock reads. Clock: CLOCK_MONOTONIC_RAW
 * where the kernel has it (not slewed by NTP, which matters on boards that sync
 * their clock after boot, e.g. a Raspberry Pi without an RTC), else
 * CLOCK_MONOTONIC.
 *
 * The pure-Python twin in _python.py has the same signatures and errors; the
 * whole timer test suite runs against both.  Builds without numpy headers: the
 * output is any writable, contiguous buffer of signed 64-bit integers
 * (array.array('q'), a numpy int64 array, ...).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>
#include <string.h>

#if defined(CLOCK_MONOTONIC_RAW)
#define FB_CLOCK CLOCK_MONOTONIC_RAW
#define FB_CLOCK_NAME "CLOCK_MONOTONIC_RAW"
#else
#define FB_CLOCK CLOCK_MONOTONIC
#define FB_CLOCK_NAME "CLOCK_MONOTONIC"
#endif

static inline long long
fb_now(void)
{
    struct timespec ts;
    clock_gettime(FB_CLOCK, &ts);
    return (long long)ts.tv_sec * 1000000000LL + (long long)ts.tv_nsec;
}

static PyObject *
timer_now_ns(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLongLong(fb_now());
}

static PyObject *
timer_resolution_ns(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    struct timespec ts;
    if (clock_getres(FB_CLOCK, &ts) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLongLong((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

/* Accept only native-order signed 64-bit items: 'q', or 'l' where long is 64 bits
 * (numpy's int64 on LP64 Linux), optionally prefixed by '@', '=' or '<' on a
 * little-endian host. */
static int
is_int64_format(const char *fmt, Py_ssize_t itemsize)
{
    if (itemsize != 8 || fmt == NULL) {
        return 0;
    }
    if (fmt[0] == '@' || fmt[0] == '=') {
        fmt++;
    }
#if PY_LITTLE_ENDIAN
    else if (fmt[0] == '<') {
        fmt++;
    }
#else
    else if (fmt[0] == '>' || fmt[0] == '!') {
        fmt++;
    }
#endif
    if (fmt[0] == '\0' || fmt[1] != '\0') {
        return 0;
    }
    return fmt[0] == 'q' || (fmt[0] == 'l' && sizeof(long) == 8);
}

static PyObject *
timer_time_calls(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *fn, *out;
    Py_ssize_t n;
    Py_buffer view;

    if (!PyArg_ParseTuple(args, "OnO:time_calls", &fn, &n, &out)) {
        return NULL;
    }
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "time_calls: fn must be callable");
        return NULL;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "time_calls: n must be >= 0");
        return NULL;
    }
    if (PyObject_GetBuffer(out, &view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) != 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError,
                        "time_calls: out must be a writable contiguous buffer of int64");
        return NULL;
    }
    if (!is_int64_format(view.format, view.itemsize)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError,
                        "time_calls: out must be a writable contiguous buffer of int64");
        return NULL;
    }
    if (view.len / 8 < n) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "time_calls: out holds fewer than n items");
        return NULL;
    }

    long long *dst = (long long *)view.buf;
    /* Call through the callable's vectorcall slot when it has one (functions, bound
     * methods, functools.partial, most builtins): it skips PyObject_CallNoArgs'
     * dispatch, about 10 ns per sample on the 2-core x86 CI machine. */
    vectorcallfunc vc = PyVectorcall_Function(fn);
    for (Py_ssize_t i = 0; i < n; i++) {
        long long t0 = fb_now();
        PyObject *res = vc ? vc(fn, NULL, 0, NULL) : PyObject_CallNoArgs(fn);
        long long t1 = fb_now();
        if (res == NULL) {
            PyBuffer_Release(&view);
            if (!PyErr_Occurred()) {  /* what PyObject_Call* would have caught */
                PyErr_SetString(PyExc_SystemError, "time_calls: fn returned NULL without an exception");
            }
            return NULL;
        }
        /* The result is released after the second clock read: freeing a model's
         * output arrays is the caller's business, not the model's latency. */
        Py_DECREF(res);
        dst[i] = t1 - t0;
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyMethodDef timer_methods[] = {
    {"now_ns", timer_now_ns, METH_NOARGS,
     "now_ns() -> int\n\nCurrent value of the benchmark clock in nanoseconds."},
    {"resolution_ns", timer_resolution_ns, METH_NOARGS,
     "resolution_ns() -> int\n\nResolution of the benchmark clock in nanoseconds."},
    {"time_calls", timer_time_calls, METH_VARARGS,
     "time_calls(fn, n, out) -> None\n\n"
     "Call fn() n times; write each call's duration in ns into out[0:n]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef timer_module = {
    PyModuleDef_HEAD_INIT, "bench_kernels._timer",
    "Native benchmark timer (see bench_kernels).", -1, timer_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__timer(void)
{
    PyObject *m = PyModule_Create(&timer_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddStringConstant(m, "CLOCK", FB_CLOCK_NAME) != 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
