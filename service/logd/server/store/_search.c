/* The chunk search of a query (store/search.py is its only importer).
 *
 * containing(data, ends, needle, folded, whole) -> [event index, ...]: the events of a
 * chunk (`data` the events back to back, `ends` their uint32 end offsets) where `needle`
 * starts, each event once, in order. `folded`: where it starts in data.lower() (an ASCII,
 * lower-case needle), found without lowering or copying the chunk. `whole`: only where the
 * byte before it can end a length varint of len(needle) (filters.whole_field_in).
 *
 * Speed: the scan looks for the needle's rarest byte (both cases when folded) with
 * memchr, which glibc runs at many bytes per cycle, and compares the rest only there.
 * Rarest by a table of log text; when the needle has no byte the table calls rare, by
 * how often each of its bytes is in the chunk's first SAMPLE bytes (every byte of a
 * needle like `region=us-east-2` is common in logs, but not every one in these logs).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

/* How common a byte is in log text, higher is more common: lower-case letters by English
 * letter frequency (e 200 .. z 50), upper case half as common, digits and the punctuation
 * of logs (key=value, paths, ids) as common as the common letters. Bytes not listed: 0. */
static unsigned char COMMON[256];

static void init_common(void) {
    static const char by_rank[] = "etaoinsrhldcumfpgwybvkxjqz"; /* most common first */
    for (int i = 0; by_rank[i]; i++) {
        unsigned char rank = (unsigned char)(200 - 6 * i);
        COMMON[(unsigned char)by_rank[i]] = rank;
        COMMON[(unsigned char)by_rank[i] - 32] = (unsigned char)(rank / 2);
    }
    for (int c = '0'; c <= '9'; c++) COMMON[c] = 150;
    const char *punct = "-_.:/=,\"'()[]{}";
    for (const char *p = punct; *p; p++) COMMON[(unsigned char)*p] = 150;
    COMMON[' '] = 255;
}

static inline unsigned char fold(unsigned char c) {
    return (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
}

static inline int is_lower_letter(unsigned char c) { return c >= 'a' && c <= 'z'; }

#define SAMPLE 1024  /* bytes of the chunk counted to choose the byte to scan for */
#define RARE_RANK 80 /* a byte the table ranks at most this needs no sample (j q x z ...) */

/* The needle's position to scan for. A folded letter is looked for in both cases: two
 * memchr streams, so it counts double. */
static Py_ssize_t rarest(const unsigned char *hay, Py_ssize_t size, const unsigned char *pat,
                         Py_ssize_t n, int folded) {
    Py_ssize_t best = 0;
    for (Py_ssize_t i = 1; i < n; i++)
        if (COMMON[pat[i]] < COMMON[pat[best]]) best = i;
    if (COMMON[pat[best]] <= RARE_RANK || n == 1) return best;
    unsigned int seen[256] = {0};
    Py_ssize_t span = size < SAMPLE ? size : SAMPLE;
    for (Py_ssize_t i = 0; i < span; i++) seen[folded ? fold(hay[i]) : hay[i]]++;
    unsigned long best_cost = ULONG_MAX;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = pat[i];
        unsigned long cost = (unsigned long)seen[c] * (folded && is_lower_letter(c) ? 2 : 1);
        if (cost < best_cost || (cost == best_cost && COMMON[c] < COMMON[pat[best]])) {
            best = i;
            best_cost = cost;
        }
    }
    return best;
}

/* Where the next byte equal to `c` (and to its upper case when `both`) is, from `p`. */
static const unsigned char *next_byte(const unsigned char *p, const unsigned char *end,
                                      unsigned char c, int both, const unsigned char **lo,
                                      const unsigned char **up) {
    if (!both) return p < end ? memchr(p, c, (size_t)(end - p)) : NULL;
    /* Two running memchr positions: each is searched again only once passed. */
    if (*lo != end && (*lo == NULL || *lo < p)) {
        *lo = p < end ? memchr(p, c, (size_t)(end - p)) : NULL;
        if (*lo == NULL) *lo = end;
    }
    if (*up != end && (*up == NULL || *up < p)) {
        *up = p < end ? memchr(p, c - 32, (size_t)(end - p)) : NULL;
        if (*up == NULL) *up = end;
    }
    const unsigned char *found = *lo < *up ? *lo : *up;
    return found == end ? NULL : found;
}

static int same(const unsigned char *at, const unsigned char *needle, Py_ssize_t n, int folded) {
    if (!folded) return memcmp(at, needle, (size_t)n) == 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (fold(at[i]) != needle[i]) return 0;
    return 1;
}

/* The first event whose end is past `offset` (bisect_right of the ends). */
static Py_ssize_t event_at(const uint32_t *ends, Py_ssize_t count, Py_ssize_t offset) {
    Py_ssize_t lo = 0, hi = count;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if ((Py_ssize_t)ends[mid] <= offset) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static PyObject *containing(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data, ends, needle;
    int folded, whole;
    if (!PyArg_ParseTuple(args, "y*y*y*pp", &data, &ends, &needle, &folded, &whole)) return NULL;
    PyObject *found = NULL;
    if (ends.len % 4 || needle.len == 0) {
        PyErr_SetString(PyExc_ValueError, "ends must be uint32 offsets, the needle not empty");
        goto done;
    }
    found = PyList_New(0);
    if (found == NULL) goto done;
    const unsigned char *hay = data.buf, *pat = needle.buf;
    const uint32_t *end_of = ends.buf;
    Py_ssize_t n = needle.len, count = ends.len / 4, size = data.len;
    if (count == 0 || (Py_ssize_t)end_of[count - 1] < size) size = count ? end_of[count - 1] : 0;

    Py_ssize_t rare = rarest(hay, size, pat, n, folded);
    unsigned char c = pat[rare];
    int both = folded && is_lower_letter(c);

    unsigned char last = (unsigned char)n; /* the last byte of the length's shortest varint */
    for (Py_ssize_t len = n; len >= 0x80; len >>= 7) last = (unsigned char)(len >> 7);

    const unsigned char *stop = hay + size, *lo = NULL, *up = NULL;
    const unsigned char *p = hay + rare;
    while ((p = next_byte(p, stop, c, both, &lo, &up)) != NULL) {
        Py_ssize_t start = (p - hay) - rare;
        if (start + n > size) break;
        if (same(hay + start, pat, n, folded) &&
            (!whole || (start > 0 && (hay[start - 1] == last || hay[start - 1] == 0)))) {
            Py_ssize_t i = event_at(end_of, count, start);
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(found, index) < 0) {
                Py_XDECREF(index);
                Py_CLEAR(found);
                goto done;
            }
            Py_DECREF(index);
            if (i + 1 >= count) break;
            p = hay + end_of[i] + rare; /* the next event */
        } else {
            p++;
        }
    }
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&ends);
    PyBuffer_Release(&needle);
    return found;
}

static PyMethodDef METHODS[] = {
    {"containing", containing, METH_VARARGS,
     "containing(data, ends, needle, folded, whole) -> indexes of the events holding needle"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_search", NULL, -1, METHODS,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__search(void) {
    init_common();
    return PyModule_Create(&MODULE);
}
