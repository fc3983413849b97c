/* logd.server.ingest._fastpath: the UDP accept path of PROTOCOL.md in C, for the memory store
 * and, held for the replay check across nodes, for the Valkey store.
 *
 * Python costs a few hundred nanoseconds per call and per attribute here, and a frame
 * needs dozens of them; the checks themselves are cheap. So one call drains the socket
 * with recvmmsg(2) and, per datagram, runs the checks of PROTOCOL.md in their order
 * (length and version, key_id, HMAC with precomputed pad states, age, replay) and reads
 * the WRITE payload with a strict protobuf reader. It hands back runs of events bound
 * for the same ring, as the bytes that arrived, so the store appends many at once. Events
 * of different rings arrive interleaved, so a drain gathers up to MAX_OPEN runs at once,
 * one per ring, each in arrival order: one run per ring per drain, whatever the mix.
 *
 * With a store shared by several nodes (Valkey) the engine runs `held`: every check but
 * the replay check across nodes, which needs a round trip. It hands back, per drain, the
 * frames that passed (MAC, signed_at, what Python counts for them) and their events in
 * runs, each event marked with its frame, runs bounded in events and bytes (one stream
 * entry each); Python stores a run once its frames are found fresh, O(frames) work.
 *
 * The Python checker (accept.py) stays the reference: a frame this reader does not
 * take whole (a PING, a read key, an unknown field, an odd encoding, a time that needs
 * the receive time and a repair) goes back to Python with its checks done, and Python
 * parses it with the official protobuf library. So this code never decides that a
 * payload is bad: it either reads exactly what protobuf would read, or it passes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_CTX: copyable pad states, as RFC 2104 allows */
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#define VERSION 1
#define SIGNED_LEN 13
#define HEADER_LEN 29
#define MAC_LEN 16
#define BLOCK 64
#define RECV_SIZE 65536
#define BATCH 64           /* datagrams per recvmmsg call */
#define MAX_KEYS 16        /* current, pending and previous per role, with room to spare */
#define MAX_EVENTS 4096    /* events read per frame here; a larger batch goes to Python */
#define NS 1000000000LL
#define MIN_T_S (-9223372036LL) /* event times kept: int64 nanoseconds, as ingest.py */
#define MAX_T_S 9223372035LL
#define MAX_NAME 128       /* bytes of env, svc, fn or an attribute key; longer: Python refuses */
#define MAX_LVL 6 /* FATAL: a level outside 0..6 goes to Python, which stores it as 0 */
#define MAX_OPEN 16        /* runs gathered at once in a drain, one per ring */
#define KEEP_CAP (256 << 10) /* a run buffer grown past this is freed when a drain ends */

/* The order and names of accept.Reject's first seven members (the checks before the payload). */
enum { R_BAD_FRAME, R_UNKNOWN_KEY, R_BAD_MAC, R_STALE, R_FUTURE, R_REPLAY, R_OVERLOAD, N_REASONS };
enum { ITEM_RUN = 0, ITEM_FRAME = 1 };

/* ------------------------------------------------------------------ growable buffer */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const void *src, size_t n) {
    if (n == 0) return 0; /* src may be NULL then (an absent field), which memcpy forbids */
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static void buf_free(Buf *b) {
    PyMem_Free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ------------------------------------------------------------------ replay table */

/* An exact set of MACs with their expiry, as replay.ReplayGuard. A frame's MAC expires
 * at signed_at + max_age, so every MAC belongs to one generation, the BUCKET_NS-wide
 * slice of time its expiry falls in, and a replay (same frame, same expiry) is looked
 * up in that generation alone. A generation is a small open-addressing set on the MAC's
 * first bytes (MACs of authenticated frames are uniformly random); once its slice has
 * passed, it is emptied whole. Nothing is forgotten early; the whole is bounded.
 * (A MAC names one frame, so one signing time: a MAC is never seen with two.) */
#define BUCKET_NS 100000000LL

typedef struct {
    uint64_t a, b;
    int64_t expiry;
    uint64_t used;
} Slot;

typedef struct {
    Slot *slots; /* NULL until the first insert */
    size_t mask, count;
} Gen;

typedef struct {
    PyObject_HEAD
    Gen *gens;        /* a circle: generation `i` (first <= i < first + n_gens) at i % n_gens */
    int64_t n_gens;
    int64_t first;    /* the oldest generation that may hold MACs */
    size_t count;
    Py_ssize_t capacity;
    int64_t max_age_ns;
    unsigned long long overflows;
} ReplayTable;

#define MIN_GENS 16
#define MIN_SLOTS 1024

static int64_t add_sat(int64_t x, int64_t y) {
    int64_t r;
    return __builtin_add_overflow(x, y, &r) ? (y > 0 ? INT64_MAX : INT64_MIN) : r;
}

static int64_t floor_div(int64_t x, int64_t d) { return x / d - (x % d < 0); }

static int64_t circle(int64_t i, int64_t n) { return ((i % n) + n) % n; }

static Slot *gen_find(Slot *slots, size_t mask, uint64_t a, uint64_t b) {
    size_t i = (size_t)a & mask;
    while (slots[i].used && !(slots[i].a == a && slots[i].b == b)) i = (i + 1) & mask;
    return &slots[i];
}

static int gen_grow(Gen *g) {
    size_t n = g->slots == NULL ? MIN_SLOTS : 2 * (g->mask + 1);
    Slot *fresh = PyMem_Calloc(n, sizeof(Slot));
    if (fresh == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; g->slots != NULL && i <= g->mask; i++)
        if (g->slots[i].used) *gen_find(fresh, n - 1, g->slots[i].a, g->slots[i].b) = g->slots[i];
    PyMem_Free(g->slots);
    g->slots = fresh;
    g->mask = n - 1;
    return 0;
}

static void gen_clear(ReplayTable *t, Gen *g) {
    if (g->count) memset(g->slots, 0, (g->mask + 1) * sizeof(Slot));
    t->count -= g->count;
    g->count = 0;
}

/* Empty the generations whose slice of time ended at or before `now`. */
static void rt_sweep(ReplayTable *t, int64_t now) {
    int64_t done = floor_div(now, BUCKET_NS); /* generations before this one have passed */
    if (done - t->first >= t->n_gens) { /* long idle: everything has passed */
        for (int64_t i = 0; i < t->n_gens; i++) gen_clear(t, &t->gens[i]);
        t->first = done;
        return;
    }
    for (; t->first < done; t->first++) gen_clear(t, &t->gens[circle(t->first, t->n_gens)]);
}

/* Make room for generation `idx` in the circle (a window longer than the circle). */
static int rt_widen(ReplayTable *t, int64_t idx) {
    int64_t n = t->n_gens;
    while (idx - t->first >= n) n *= 2;
    Gen *gens = PyMem_Calloc((size_t)n, sizeof(Gen));
    if (gens == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int64_t i = t->first; i < t->first + t->n_gens; i++)
        gens[circle(i, n)] = t->gens[circle(i, t->n_gens)];
    PyMem_Free(t->gens);
    t->gens = gens;
    t->n_gens = n;
    return 0;
}

/* 1: first sight, now remembered; 0: a replay; -1: full (fail closed); -2: no memory. */
static int rt_check(ReplayTable *t, const uint8_t *mac, int64_t signed_at, int64_t now) {
    uint64_t a, b;
    memcpy(&a, mac, 8);
    memcpy(&b, mac + 8, 8);
    int64_t expiry = add_sat(signed_at, t->max_age_ns);
    /* A generation already emptied: its MACs had all expired. This one has too (for a
     * `now` that does not go back); keep it in the oldest, which lives longer. */
    int64_t idx = floor_div(expiry, BUCKET_NS);
    if (idx < t->first) idx = t->first;
    if (idx - t->first >= t->n_gens) {
        rt_sweep(t, now);
        if (idx < t->first) idx = t->first;
        if (idx - t->first >= t->n_gens && rt_widen(t, idx) < 0) return -2;
    }
    Gen *g = &t->gens[circle(idx, t->n_gens)];
    Slot *s = g->slots != NULL ? gen_find(g->slots, g->mask, a, b) : NULL;
    if (s != NULL && s->used) {
        if (s->expiry >= now) return 0;
        s->expiry = expiry; /* seen, but long enough ago to be stale: remember anew */
        return 1;
    }
    if ((Py_ssize_t)t->count >= t->capacity) {
        rt_sweep(t, now);
        if ((Py_ssize_t)t->count >= t->capacity || idx < t->first) {
            t->overflows++;
            return -1;
        }
        s = g->slots != NULL ? gen_find(g->slots, g->mask, a, b) : NULL;
    }
    if (g->slots == NULL || 2 * (g->count + 1) > g->mask + 1) {
        if (gen_grow(g) < 0) return -2;
        s = gen_find(g->slots, g->mask, a, b);
    }
    s->a = a;
    s->b = b;
    s->expiry = expiry;
    s->used = 1;
    g->count++;
    t->count++;
    return 1;
}

static int ReplayTable_init(ReplayTable *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"max_age_ns", "capacity", NULL};
    long long max_age_ns;
    Py_ssize_t capacity;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$Ln", kwlist, &max_age_ns, &capacity))
        return -1;
    if (capacity < 1) {
        PyErr_SetString(PyExc_ValueError, "replay capacity must be at least 1");
        return -1;
    }
    for (int64_t i = 0; self->gens != NULL && i < self->n_gens; i++)
        PyMem_Free(self->gens[i].slots);
    PyMem_Free(self->gens);
    self->gens = PyMem_Calloc(MIN_GENS, sizeof(Gen));
    if (self->gens == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->n_gens = MIN_GENS;
    self->first = INT64_MIN / BUCKET_NS;
    self->count = 0;
    self->capacity = capacity;
    self->max_age_ns = max_age_ns;
    self->overflows = 0;
    return 0;
}

static void ReplayTable_dealloc(ReplayTable *self) {
    for (int64_t i = 0; self->gens != NULL && i < self->n_gens; i++)
        PyMem_Free(self->gens[i].slots);
    PyMem_Free(self->gens);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int rt_ready(ReplayTable *t) {
    if (t->gens != NULL) return 1;
    PyErr_SetString(PyExc_RuntimeError, "ReplayTable.__init__ was not called");
    return 0;
}

static PyObject *ReplayTable_check_and_remember(ReplayTable *self, PyObject *args) {
    Py_buffer mac;
    long long signed_at, now;
    if (!rt_ready(self) || !PyArg_ParseTuple(args, "y*LL", &mac, &signed_at, &now)) return NULL;
    if (mac.len != MAC_LEN) {
        PyBuffer_Release(&mac);
        PyErr_SetString(PyExc_ValueError, "a MAC is 16 bytes");
        return NULL;
    }
    int r = rt_check(self, mac.buf, signed_at, now);
    PyBuffer_Release(&mac);
    if (r == -2) return NULL;
    if (r == -1) Py_RETURN_NONE;
    return PyBool_FromLong(r);
}

static PyObject *ReplayTable_expire(ReplayTable *self, PyObject *arg) {
    long long now = PyLong_AsLongLong(arg);
    if ((now == -1 && PyErr_Occurred()) || !rt_ready(self)) return NULL;
    rt_sweep(self, now);
    Py_RETURN_NONE;
}

static Py_ssize_t ReplayTable_len(ReplayTable *self) { return (Py_ssize_t)self->count; }

static PyMethodDef ReplayTable_methods[] = {
    {"check_and_remember", (PyCFunction)ReplayTable_check_and_remember, METH_VARARGS,
     "True: first sight, now remembered. False: a replay. None: full, refuse."},
    {"expire", (PyCFunction)ReplayTable_expire, METH_O,
     "Forget the MACs whose frames are now stale (a generation at a time)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef ReplayTable_members[] = {
    {"capacity", T_PYSSIZET, offsetof(ReplayTable, capacity), READONLY, NULL},
    {"overflows", T_ULONGLONG, offsetof(ReplayTable, overflows), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods ReplayTable_as_sequence = {.sq_length = (lenfunc)ReplayTable_len};

static PyTypeObject ReplayTableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "logd.server.ingest._fastpath.ReplayTable",
    .tp_basicsize = sizeof(ReplayTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An exact, bounded memory of accepted MACs (the interface of replay.ReplayGuard).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ReplayTable_init,
    .tp_dealloc = (destructor)ReplayTable_dealloc,
    .tp_methods = ReplayTable_methods,
    .tp_members = ReplayTable_members,
    .tp_as_sequence = &ReplayTable_as_sequence,
};

/* ------------------------------------------------------------------ writers table */

/* The table of recent writers of writers.py (its rule, in the same words, is there): per
 * 8-byte sender, the highest seq, frames, lost frames, and a bitmap of the WINDOW seqs
 * below the highest that were counted lost and have not come. A fixed array of entries
 * in least-recently-heard order (a doubly linked list: the oldest is forgotten first),
 * found through an open-addressing index of twice as many slots (linear probing, deleted
 * by shifting back: no tombstones), hashed with a per-table random seed. */
#define SENDER_LEN 8
#define WINDOW 1024
#define WINDOW_WORDS (WINDOW / 64)
#define WT_CAPACITY 4096

typedef struct {
    uint64_t sender, highest, frames, lost;
    int64_t last_seen;
    /* The seqs highest - WINDOW .. highest - 1 counted lost and not come, a bit each at
     * seq % WINDOW: a frame one above the highest (the usual case) clears one bit. */
    uint64_t window[WINDOW_WORDS];
    int32_t prev, next;             /* toward the newer and the older entry */
    uint8_t host_len, svc_len;
    char host[MAX_NAME], svc[MAX_NAME];
} Writer;

typedef struct {
    PyObject_HEAD
    Writer *entries;  /* capacity of them, `count` used */
    int32_t *index;   /* mask + 1 slots (a power of two, at least 2 * capacity): an entry, or -1 */
    size_t mask;
    Py_ssize_t capacity, count;
    int32_t newest, oldest;
    uint64_t seed;
    unsigned long long frames, lost, forgotten, malformed;
} WriterTable;

static uint64_t wt_hash(const WriterTable *t, uint64_t sender) {
    uint64_t z = sender ^ t->seed; /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The index slot of `sender`: where it is, or the empty slot where it would go. */
static size_t wt_slot(const WriterTable *t, uint64_t sender) {
    size_t i = (size_t)wt_hash(t, sender) & t->mask;
    while (t->index[i] >= 0 && t->entries[t->index[i]].sender != sender) i = (i + 1) & t->mask;
    return i;
}

static void wt_unindex(WriterTable *t, uint64_t sender) {
    size_t hole = wt_slot(t, sender), i = hole;
    t->index[hole] = -1;
    for (;;) { /* shift back the entries after the hole that probed past it */
        i = (i + 1) & t->mask;
        int32_t e = t->index[i];
        if (e < 0) return;
        size_t home = (size_t)wt_hash(t, t->entries[e].sender) & t->mask;
        if ((i > hole && (home <= hole || home > i)) || (i < hole && home <= hole && home > i)) {
            t->index[hole] = e;
            t->index[i] = -1;
            hole = i;
        }
    }
}

static void wt_unlink(WriterTable *t, int32_t e) {
    Writer *w = &t->entries[e];
    if (w->prev >= 0) t->entries[w->prev].next = w->next;
    else t->newest = w->next;
    if (w->next >= 0) t->entries[w->next].prev = w->prev;
    else t->oldest = w->prev;
}

static void wt_push(WriterTable *t, int32_t e) {
    Writer *w = &t->entries[e];
    w->prev = -1;
    w->next = t->newest;
    if (t->newest >= 0) t->entries[t->newest].prev = e;
    t->newest = e;
    if (t->oldest < 0) t->oldest = e;
}

static void wt_set(uint64_t *win, uint64_t seq, int on) {
    uint64_t slot = seq % WINDOW, bit = 1ULL << (slot % 64);
    win[slot / 64] = on ? win[slot / 64] | bit : win[slot / 64] & ~bit;
}

/* The highest moves from `highest` to `seq`: `highest` (seen) joins the window, the seqs
 * between (lost) too, and as many leave it, the ones whose slots they take. */
static void wt_advance(uint64_t *win, uint64_t highest, uint64_t seq) {
    uint64_t gap = seq - highest - 1;
    if (gap >= WINDOW) { /* the whole window is the gap */
        memset(win, 0xFF, WINDOW_WORDS * sizeof *win);
        return;
    }
    wt_set(win, highest, 0);
    for (uint64_t s = highest + 1; s < seq; s++) wt_set(win, s, 1);
}

static void wt_name(char *dst, uint8_t *len, const uint8_t *src, size_t n) {
    if (n) memcpy(dst, src, n); /* n <= MAX_NAME: the reader and accept.py refuse longer */
    *len = (uint8_t)n;
}

/* One accepted WRITE frame carrying a sender; `named`: host and svc are its first event's
 * (0 for a WRITE without events: the writer's stay). */
static void wt_note(WriterTable *t, const uint8_t *sender, size_t sender_len, uint64_t seq,
                    int named, const uint8_t *host, size_t host_len, const uint8_t *svc,
                    size_t svc_len, int64_t now) {
    if (sender_len != SENDER_LEN || seq == 0) {
        t->malformed++;
        return;
    }
    uint64_t key;
    memcpy(&key, sender, SENDER_LEN);
    t->frames++;
    size_t slot = wt_slot(t, key);
    int32_t e = t->index[slot];
    Writer *w;
    if (e < 0) {
        if (t->count >= t->capacity) { /* forget the least recently heard */
            e = t->oldest;
            wt_unlink(t, e);
            wt_unindex(t, t->entries[e].sender);
            t->forgotten++;
            slot = wt_slot(t, key);
        } else {
            e = (int32_t)t->count++;
        }
        t->index[slot] = e;
        w = &t->entries[e];
        memset(w, 0, sizeof *w);
        w->sender = key;
        w->highest = seq;
        w->frames = 1;
        w->last_seen = now;
        if (named) {
            wt_name(w->host, &w->host_len, host, host_len);
            wt_name(w->svc, &w->svc_len, svc, svc_len);
        }
        wt_push(t, e);
        return;
    }
    w = &t->entries[e];
    if (t->newest != e) {
        wt_unlink(t, e);
        wt_push(t, e);
    }
    w->frames++;
    w->last_seen = now;
    if (named) {
        wt_name(w->host, &w->host_len, host, host_len);
        wt_name(w->svc, &w->svc_len, svc, svc_len);
    }
    if (seq > w->highest) {
        uint64_t gap = seq - w->highest - 1;
        wt_advance(w->window, w->highest, seq);
        w->highest = seq;
        w->lost += gap; /* at most 2**64 - 2 in all: highest never passes 2**64 - 1 */
        t->lost = t->lost + gap < t->lost ? UINT64_MAX : t->lost + gap;
    } else if (seq < w->highest && w->highest - 1 - seq < WINDOW) {
        if (w->window[seq % WINDOW / 64] >> (seq % 64) & 1) { /* counted lost: now it came */
            wt_set(w->window, seq, 0);
            w->lost--;
            if (t->lost) t->lost--;
        }
    }
}

static int WriterTable_init(WriterTable *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"capacity", NULL};
    Py_ssize_t capacity = WT_CAPACITY;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|n", kwlist, &capacity)) return -1;
    if (capacity < 1 || capacity > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "the writers table needs a capacity of at least 1");
        return -1;
    }
    size_t slots = 2;
    while (slots < (size_t)capacity * 2) slots *= 2;
    PyMem_Free(self->entries);
    PyMem_Free(self->index);
    self->entries = PyMem_Calloc((size_t)capacity, sizeof(Writer));
    self->index = PyMem_Malloc(slots * sizeof(int32_t));
    if (self->entries == NULL || self->index == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(self->index, 0xFF, slots * sizeof(int32_t)); /* all -1 */
    self->mask = slots - 1;
    self->capacity = capacity;
    self->count = 0;
    self->newest = self->oldest = -1;
    /* a hostile writer that knew the hash could make its senders collide */
    if (getrandom(&self->seed, sizeof self->seed, GRND_NONBLOCK) != sizeof self->seed)
        self->seed = (uint64_t)(uintptr_t)self ^ (uint64_t)time(NULL);
    self->frames = self->lost = self->forgotten = self->malformed = 0;
    return 0;
}

static void WriterTable_dealloc(WriterTable *self) {
    PyMem_Free(self->entries);
    PyMem_Free(self->index);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int wt_ready(WriterTable *t) {
    if (t->entries != NULL) return 1;
    PyErr_SetString(PyExc_RuntimeError, "WriterTable.__init__ was not called");
    return 0;
}

/* note(sender, seq, host, svc, now_ns): for the frames Python accepts (writers.Writers). */
static PyObject *WriterTable_note(WriterTable *self, PyObject *args) {
    const char *sender, *host, *svc;
    Py_ssize_t sender_n, host_n, svc_n;
    unsigned long long seq;
    long long now;
    if (!wt_ready(self) || !PyArg_ParseTuple(args, "y#Kz#z#L", &sender, &sender_n, &seq, &host,
                                             &host_n, &svc, &svc_n, &now))
        return NULL;
    if (host_n > MAX_NAME || svc_n > MAX_NAME) {
        PyErr_SetString(PyExc_ValueError, "host and svc are at most MAX_NAME bytes");
        return NULL;
    }
    wt_note(self, (const uint8_t *)sender, (size_t)sender_n, seq, host != NULL,
            (const uint8_t *)host, (size_t)host_n, (const uint8_t *)svc, (size_t)svc_n, now);
    Py_RETURN_NONE;
}

static PyObject *wt_entry(const Writer *w) {
    return Py_BuildValue("(y#s#s#KKL)", (const char *)&w->sender, (Py_ssize_t)SENDER_LEN,
                         w->host, (Py_ssize_t)w->host_len, w->svc, (Py_ssize_t)w->svc_len,
                         w->frames, w->lost, (long long)w->last_seen);
}

static PyObject *wt_list(const Writer *const *ws, Py_ssize_t n) {
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *item = wt_entry(ws[i]);
        if (item == NULL) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, item);
    }
    return out;
}

/* entries() -> [(sender, host, svc, frames, lost, last_seen_ns), ...], newest first. */
static PyObject *WriterTable_entries(WriterTable *self, PyObject *Py_UNUSED(ignored)) {
    if (!wt_ready(self)) return NULL;
    const Writer **ws = PyMem_Malloc((size_t)(self->count ? self->count : 1) * sizeof *ws);
    if (ws == NULL) return PyErr_NoMemory();
    Py_ssize_t n = 0;
    for (int32_t e = self->newest; e >= 0; e = self->entries[e].next) ws[n++] = &self->entries[e];
    PyObject *out = wt_list(ws, n);
    PyMem_Free(ws);
    return out;
}

/* Whether `a` shows before `b` in most_lost: more lost, then heard later, then the larger
 * sender bytes (writers.most_lost's order). */
static int wt_before(const Writer *a, const Writer *b) {
    if (a->lost != b->lost) return a->lost > b->lost;
    if (a->last_seen != b->last_seen) return a->last_seen > b->last_seen;
    return memcmp(&a->sender, &b->sender, SENDER_LEN) > 0;
}

#define MOST_LOST_MAX 100

/* most_lost(n) -> the n entries with the most loss, in that order: a pass over the table
 * keeping the best n (n <= MOST_LOST_MAX), so that /info costs microseconds, not a list
 * of every writer. */
static PyObject *WriterTable_most_lost(WriterTable *self, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if ((n == -1 && PyErr_Occurred()) || !wt_ready(self)) return NULL;
    if (n < 0 || n > MOST_LOST_MAX) {
        PyErr_Format(PyExc_ValueError, "most_lost takes 0 to %d", MOST_LOST_MAX);
        return NULL;
    }
    const Writer *best[MOST_LOST_MAX];
    Py_ssize_t kept = 0;
    for (Py_ssize_t e = 0; e < self->count && n > 0; e++) {
        const Writer *w = &self->entries[e];
        if (kept == n && !wt_before(w, best[n - 1])) continue;
        Py_ssize_t at = kept < n ? kept++ : n - 1; /* the last place, or a new one */
        while (at > 0 && wt_before(w, best[at - 1])) {
            best[at] = best[at - 1];
            at--;
        }
        best[at] = w;
    }
    return wt_list(best, kept);
}

static Py_ssize_t WriterTable_len(WriterTable *self) { return self->count; }

static PyMethodDef WriterTable_methods[] = {
    {"note", (PyCFunction)WriterTable_note, METH_VARARGS,
     "note(sender, seq, host, svc, now_ns): one accepted WRITE frame carrying a sender."},
    {"entries", (PyCFunction)WriterTable_entries, METH_NOARGS,
     "[(sender, host, svc, frames, lost, last_seen_ns), ...], the newest first."},
    {"most_lost", (PyCFunction)WriterTable_most_lost, METH_O,
     "most_lost(n): the n entries with the most loss, the most first."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef WriterTable_members[] = {
    {"capacity", T_PYSSIZET, offsetof(WriterTable, capacity), READONLY, NULL},
    {"frames", T_ULONGLONG, offsetof(WriterTable, frames), READONLY, NULL},
    {"lost", T_ULONGLONG, offsetof(WriterTable, lost), READONLY, NULL},
    {"forgotten", T_ULONGLONG, offsetof(WriterTable, forgotten), READONLY, NULL},
    {"malformed", T_ULONGLONG, offsetof(WriterTable, malformed), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods WriterTable_as_sequence = {.sq_length = (lenfunc)WriterTable_len};

static PyTypeObject WriterTableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "logd.server.ingest._fastpath.WriterTable",
    .tp_basicsize = sizeof(WriterTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The table of recent writers (the interface of writers.WriterTable).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)WriterTable_init,
    .tp_dealloc = (destructor)WriterTable_dealloc,
    .tp_methods = WriterTable_methods,
    .tp_members = WriterTable_members,
    .tp_as_sequence = &WriterTable_as_sequence,
};

/* ------------------------------------------------------------------ protobuf reader */

/* A varint of at most 10 bytes whose value fits 64 bits; 0 on anything else. */
static int rd_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= end) return 0;
        uint8_t byte = *p++;
        if (shift == 63 && byte > 1) return 0;
        v |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            *pp = p;
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* A tag with a field number >= 1 that fits 29 bits. */
static int rd_tag(const uint8_t **pp, const uint8_t *end, uint32_t *field, uint32_t *wire) {
    uint64_t tag;
    if (!rd_varint(pp, end, &tag) || tag > 0xFFFFFFFFu || (tag >> 3) == 0) return 0;
    *field = (uint32_t)(tag >> 3);
    *wire = (uint32_t)(tag & 7);
    return 1;
}

/* A length-delimited field's bytes. */
static int rd_bytes(const uint8_t **pp, const uint8_t *end, const uint8_t **out, size_t *n) {
    uint64_t len;
    if (!rd_varint(pp, end, &len) || len > (uint64_t)(end - *pp)) return 0;
    *out = *pp;
    *n = (size_t)len;
    *pp += len;
    return 1;
}

/* Strict UTF-8 (RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF), as upb
 * checks proto3 strings. */
static int utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint64_t word;
        if (n - i >= 8 && (memcpy(&word, s + i, 8), !(word & 0x8080808080808080ULL))) {
            i += 8; /* eight ASCII bytes at once: most log text */
            continue;
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) need = 2, lo = 0xA0;
        else if (c == 0xED) need = 2, hi = 0x9F;
        else if (c >= 0xE1 && c <= 0xEF) need = 2;
        else if (c == 0xF0) need = 3, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) need = 3, hi = 0x8F;
        else return 0;
        if (n - i <= need) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += need + 1;
    }
    return 1;
}

static int rd_string(const uint8_t **pp, const uint8_t *end, const uint8_t **out, size_t *n) {
    return rd_bytes(pp, end, out, n) && utf8_ok(*out, *n);
}

typedef struct {
    const uint8_t *data, *env, *svc, *host;
    size_t len, env_len, svc_len, host_len;
    int has_t;
    int64_t t_ns;
    uint8_t lvl;
} Event;

/* A Timestamp that fits int64 nanoseconds: else 0 (Python gives the receive time). */
static int rd_timestamp(const uint8_t *p, const uint8_t *end, int64_t *t_ns) {
    uint64_t seconds = 0, nanos = 0;
    while (p < end) {
        uint32_t field, wire;
        if (!rd_tag(&p, end, &field, &wire) || wire != 0) return 0;
        if (field == 1) {
            if (!rd_varint(&p, end, &seconds)) return 0;
        } else if (field == 2) {
            if (!rd_varint(&p, end, &nanos)) return 0;
        } else {
            return 0;
        }
    }
    int64_t s = (int64_t)seconds;
    if (s < MIN_T_S || s > MAX_T_S || nanos >= (uint64_t)NS) return 0;
    *t_ns = s * NS + (int64_t)nanos;
    return 1;
}

/* A map<string, string> entry. */
static int rd_attr(const uint8_t *p, const uint8_t *end) {
    while (p < end) {
        uint32_t field, wire;
        const uint8_t *s;
        size_t n;
        if (!rd_tag(&p, end, &field, &wire) || wire != 2 || (field != 1 && field != 2)) return 0;
        if (!rd_string(&p, end, &s, &n) || (field == 1 && n > MAX_NAME)) return 0;
    }
    return 1;
}

/* One logd.v1.Msg, every field known and well formed; 0 sends the frame to Python. */
static int rd_msg(const uint8_t *p, size_t len, Event *ev) {
    const uint8_t *end = p + len;
    memset(ev, 0, sizeof *ev);
    ev->data = p;
    ev->len = len;
    while (p < end) {
        uint32_t field, wire;
        uint64_t v;
        const uint8_t *s;
        size_t n;
        if (!rd_tag(&p, end, &field, &wire)) return 0;
        switch (field) {
        case 1: /* t: a second occurrence would merge; leave that to protobuf */
            if (wire != 2 || ev->has_t || !rd_bytes(&p, end, &s, &n)) return 0;
            if (!rd_timestamp(s, s + n, &ev->t_ns)) return 0;
            ev->has_t = 1;
            break;
        case 3: /* env */
            if (wire != 2 || !rd_string(&p, end, &ev->env, &ev->env_len)) return 0;
            if (ev->env_len > MAX_NAME) return 0;
            break;
        case 4: /* svc */
            if (wire != 2 || !rd_string(&p, end, &ev->svc, &ev->svc_len)) return 0;
            if (ev->svc_len > MAX_NAME) return 0;
            break;
        case 5: /* fn */
            if (wire != 2 || !rd_string(&p, end, &s, &n) || n > MAX_NAME) return 0;
            break;
        case 7: case 8: case 10: /* txt, stack_trace, url */
            if (wire != 2 || !rd_string(&p, end, &s, &n)) return 0;
            break;
        case 6: /* lvl: a level of the enum; other values go through Python */
            if (wire != 0 || !rd_varint(&p, end, &v) || v > MAX_LVL) return 0;
            ev->lvl = (uint8_t)v;
            break;
        case 9: case 11: /* http_method, response_status */
            if (wire != 0 || !rd_varint(&p, end, &v)) return 0;
            break;
        case 13: /* attrs */
            if (wire != 2 || !rd_bytes(&p, end, &s, &n) || !rd_attr(s, s + n)) return 0;
            break;
        case 14: /* host: a name like svc (the writers table and /hits by=host hold it) */
            if (wire != 2 || !rd_string(&p, end, &ev->host, &ev->host_len)) return 0;
            if (ev->host_len > MAX_NAME) return 0;
            break;
        case 15: /* pid */
            if (wire != 0 || !rd_varint(&p, end, &v)) return 0;
            break;
        default:
            return 0;
        }
    }
    return 1;
}

/* The loss accounting fields of a WRITE Cmd; a repeated one counts as its last, as
 * protobuf reads it. */
typedef struct {
    const uint8_t *sender;
    size_t sender_len;
    uint64_t seq;
} Numbered;

/* A WRITE Cmd: `msg` (at most once) then `batch`, in order. Returns the number of events
 * (0 for an empty WRITE), or -1 when Python must read the payload. */
static int rd_write(const uint8_t *p, size_t len, Event *events, Numbered *num) {
    const uint8_t *end = p + len;
    const uint8_t *msg = NULL;
    size_t msg_len = 0;
    int n_batch = 0;
    uint64_t name = 0;
    memset(num, 0, sizeof *num);
    /* batch entries land from events[1]; events[0] is kept for `msg` */
    while (p < end) {
        uint32_t field, wire;
        const uint8_t *s;
        size_t n;
        if (!rd_tag(&p, end, &field, &wire)) return -1;
        if (field == 1 && wire == 0) {
            if (!rd_varint(&p, end, &name)) return -1;
        } else if (field == 2 && wire == 2) {
            if (msg != NULL || !rd_bytes(&p, end, &s, &n)) return -1;
            msg = s;
            msg_len = n;
        } else if (field == 4 && wire == 2) {
            if (n_batch + 1 >= MAX_EVENTS || !rd_bytes(&p, end, &s, &n)) return -1;
            if (!rd_msg(s, n, &events[1 + n_batch])) return -1;
            n_batch++;
        } else if (field == 5 && wire == 2) {
            if (!rd_bytes(&p, end, &num->sender, &num->sender_len)) return -1;
        } else if (field == 6 && wire == 0) {
            if (!rd_varint(&p, end, &num->seq)) return -1;
        } else {
            return -1;
        }
    }
    if (name != 0) return -1; /* PING, PONG, unknown names: Python answers or refuses */
    if (msg == NULL) {
        memmove(&events[0], &events[1], (size_t)n_batch * sizeof(Event));
        return n_batch;
    }
    if (!rd_msg(msg, msg_len, &events[0])) return -1;
    return 1 + n_batch;
}

/* ------------------------------------------------------------------ the engine */

typedef struct {
    uint8_t key_id[4];
    int may_write;
    SHA256_CTX inner, outer;
} KeySlot;

/* Events bound for one ring: their bytes back to back, end offsets, times and levels;
 * held: each event's frame (uint32, its index in the drain's checks). */
typedef struct {
    Buf env, svc, data, ends, times, lvls, owners;
    int64_t t_min, t_max;
} Run;

static void run_free(Run *r) {
    buf_free(&r->env);
    buf_free(&r->svc);
    buf_free(&r->data);
    buf_free(&r->ends);
    buf_free(&r->times);
    buf_free(&r->lvls);
    buf_free(&r->owners);
}

typedef struct {
    PyObject_HEAD
    ReplayTable *guard;
    WriterTable *writers; /* NULL: no loss accounting (an engine built without one) */
    Py_ssize_t max_frame;
    int64_t max_age_ns, max_future_ns, not_before_ns; /* engine.restart_floor */
    KeySlot keys[MAX_KEYS];
    int n_keys;
    /* counters since the last take_counts() */
    unsigned long long received, rejected[N_REASONS], frames, events, key_frames[MAX_KEYS];
    unsigned long long deferred; /* this drain: events the frames left to Python may hold */
    /* receive buffers, allocated on the first drain */
    uint8_t *bufs;
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_storage addrs[BATCH];
    Event *parsed;
    /* the runs being gathered, one per ring, in the order their rings first came */
    Run runs[MAX_OPEN];
    int n_open, last; /* runs[last]: the one the previous event went to */
    /* Gathering reorders events of different rings, which only matters where two of them
     * share a ring: the overflow ring, of services past --max-rings. So a drain gathers
     * while the rings it may have to open (runs of rings not in `rings`, the store's
     * dict, and what frames left to Python could hold) fit in `free_rings`: then none
     * overflows. Past that it closes its runs and keeps arrival order, one run open. */
    PyObject *rings; /* borrowed for one drain; NULL: every ring may be new */
    Py_ssize_t free_rings, opened;
    int gathering;
    /* held: the frames wait for a check across nodes (see the top); Python counts them */
    int held;
    Py_ssize_t run_events, run_bytes; /* held: a run past either is handed back (0: none) */
    PyObject *checks;                 /* held, this drain: one tuple per frame that passed */
    uint32_t owner;                   /* held: the frame whose events are being added */
} Engine;

static int Engine_init(Engine *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"guard",   "max_frame", "max_age_ns", "max_future_ns",
                             "not_before_ns", "writers", "held", "run_events",
                             "run_bytes", NULL};
    PyObject *guard, *writers = NULL;
    Py_ssize_t max_frame = -1, run_events = 0, run_bytes = 0;
    long long max_age = LLONG_MIN, max_future = LLONG_MIN, not_before = LLONG_MIN;
    int held = 0;
    /* the limits are keyword-only and, past `|`, optional to the parser: required here
     * (but not_before_ns, whose default is no floor) */
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!|$nLLLO!pnn", kwlist, &ReplayTableType,
                                     &guard, &max_frame, &max_age, &max_future, &not_before,
                                     &WriterTableType, &writers, &held, &run_events, &run_bytes))
        return -1;
    if (run_events < 0 || run_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "run_events and run_bytes are at least 0");
        return -1;
    }
    self->held = held;
    self->run_events = run_events;
    self->run_bytes = run_bytes;
    if (max_frame < 0 || max_age == LLONG_MIN || max_future == LLONG_MIN) {
        PyErr_SetString(PyExc_TypeError, "Engine needs max_frame, max_age_ns and max_future_ns");
        return -1;
    }
    self->max_frame = max_frame;
    if (!rt_ready((ReplayTable *)guard)) return -1;
    if (writers != NULL && !wt_ready((WriterTable *)writers)) return -1;
    Py_XSETREF(self->guard, (ReplayTable *)Py_NewRef(guard));
    Py_XSETREF(self->writers, (WriterTable *)Py_XNewRef(writers));
    self->max_age_ns = max_age;
    self->max_future_ns = max_future;
    self->not_before_ns = not_before;
    return 0;
}

static void Engine_dealloc(Engine *self) {
    Py_XDECREF(self->guard);
    Py_XDECREF(self->checks);
    Py_XDECREF(self->writers);
    PyMem_Free(self->bufs);
    PyMem_Free(self->parsed);
    for (int i = 0; i < MAX_OPEN; i++) run_free(&self->runs[i]);
    OPENSSL_cleanse(self->keys, sizeof self->keys);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* set_keys([(key_id, inner_pad, outer_pad, may_write), ...]): slot i is the list's i-th. */
static PyObject *Engine_set_keys(Engine *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "set_keys takes a list of keys");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_KEYS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "at most %d keys", MAX_KEYS);
        return NULL;
    }
    KeySlot keys[MAX_KEYS];
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *kid, *ipad, *opad;
        Py_ssize_t kid_n, ipad_n, opad_n;
        int may_write;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "y#y#y#p", &kid, &kid_n, &ipad,
                              &ipad_n, &opad, &opad_n, &may_write) ||
            kid_n != 4 || ipad_n != BLOCK || opad_n != BLOCK) {
            Py_DECREF(seq);
            OPENSSL_cleanse(keys, sizeof keys);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "malformed key");
            return NULL;
        }
        memcpy(keys[i].key_id, kid, 4);
        keys[i].may_write = may_write;
        SHA256_Init(&keys[i].inner);
        SHA256_Update(&keys[i].inner, ipad, BLOCK);
        SHA256_Init(&keys[i].outer);
        SHA256_Update(&keys[i].outer, opad, BLOCK);
    }
    Py_DECREF(seq);
    OPENSSL_cleanse(self->keys, sizeof self->keys);
    memcpy(self->keys, keys, sizeof keys);
    OPENSSL_cleanse(keys, sizeof keys);
    self->n_keys = (int)n;
    memset(self->key_frames, 0, sizeof self->key_frames);
    Py_RETURN_NONE;
}

static int mac_ok(const KeySlot *k, const uint8_t *frame, size_t n) {
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256_CTX c = k->inner;
    SHA256_Update(&c, frame, SIGNED_LEN);
    SHA256_Update(&c, frame + HEADER_LEN, n - HEADER_LEN);
    SHA256_Final(digest, &c);
    c = k->outer;
    SHA256_Update(&c, digest, sizeof digest);
    SHA256_Final(digest, &c);
    return CRYPTO_memcmp(digest, frame + SIGNED_LEN, MAC_LEN) == 0;
}

static int64_t be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return (int64_t)v;
}

static PyObject *bytes_of(const Buf *b) {
    return PyBytes_FromStringAndSize((const char *)b->p, (Py_ssize_t)b->len);
}

/* Hand a run over as (ITEM_RUN, env, svc, data, ends, times, lvls, t_min, t_max), held:
 * and its events' frames (owners). */
static int hand_over(Engine *self, PyObject *items, const Run *run) {
    PyObject *env =
        PyUnicode_DecodeUTF8((const char *)run->env.p, (Py_ssize_t)run->env.len, "strict");
    PyObject *svc =
        PyUnicode_DecodeUTF8((const char *)run->svc.p, (Py_ssize_t)run->svc.len, "strict");
    PyObject *item =
        self->held ? Py_BuildValue("(iNNNNNNLLN)", ITEM_RUN, env, svc, bytes_of(&run->data),
                                   bytes_of(&run->ends), bytes_of(&run->times),
                                   bytes_of(&run->lvls), (long long)run->t_min,
                                   (long long)run->t_max, bytes_of(&run->owners))
                   : Py_BuildValue("(iNNNNNNLL)", ITEM_RUN, env, svc, bytes_of(&run->data),
                                   bytes_of(&run->ends), bytes_of(&run->times),
                                   bytes_of(&run->lvls), (long long)run->t_min,
                                   (long long)run->t_max);
    if (item == NULL) return -1;
    int r = PyList_Append(items, item);
    Py_DECREF(item);
    return r;
}

/* Close the open runs, in the order they opened. */
static int close_runs(Engine *self, PyObject *items) {
    int n = self->n_open;
    self->n_open = self->last = 0;
    for (int i = 0; i < n; i++)
        if (hand_over(self, items, &self->runs[i]) < 0) return -1;
    return 0;
}

static void run_restart(Run *run) {
    run->data.len = run->ends.len = run->times.len = run->lvls.len = run->owners.len = 0;
    run->t_min = INT64_MAX;
    run->t_max = INT64_MIN;
}

static int same(const Buf *b, const uint8_t *p, size_t n) {
    return b->len == n && (n == 0 || memcmp(b->p, p, n) == 0);
}

/* A Timestamp field (tag 1) holding `t_ns`, for an event that came without a time. */
static size_t put_varint(uint8_t *out, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

static size_t encode_time(uint8_t *out, int64_t t_ns) {
    int64_t s = t_ns / NS, nanos = t_ns % NS;
    if (nanos < 0) s -= 1, nanos += NS;
    uint8_t body[24];
    size_t n = 0;
    if (s) body[n++] = 0x08, n += put_varint(body + n, (uint64_t)s);
    if (nanos) body[n++] = 0x10, n += put_varint(body + n, (uint64_t)nanos);
    out[0] = 0x0A;
    out[1] = (uint8_t)n;
    memcpy(out + 2, body, n);
    return n + 2;
}

static int run_of(const Run *r, const Event *ev) {
    return same(&r->env, ev->env, ev->env_len) && same(&r->svc, ev->svc, ev->svc_len);
}

/* The open run of the event's ring, or a new one (closing all first when none is free). */
static Run *run_for(Engine *self, PyObject *items, const Event *ev) {
    if (self->n_open && run_of(&self->runs[self->last], ev)) return &self->runs[self->last];
    for (int i = 0; i < self->n_open; i++) {
        if (run_of(&self->runs[i], ev)) {
            self->last = i;
            return &self->runs[i];
        }
    }
    if (self->gathering && self->opened >= self->free_rings) {
        /* no room left for a new ring: gather on only with a ring the store has */
        int known = 0;
        if (self->rings != NULL) {
            PyObject *key = Py_BuildValue(
                "(NN)",
                PyUnicode_DecodeUTF8((const char *)ev->env, (Py_ssize_t)ev->env_len, "strict"),
                PyUnicode_DecodeUTF8((const char *)ev->svc, (Py_ssize_t)ev->svc_len, "strict"));
            if (key == NULL) return NULL;
            known = PyDict_Contains(self->rings, key);
            Py_DECREF(key);
            if (known < 0) return NULL;
        }
        if (!known) self->gathering = 0;
    } else {
        self->opened++; /* counted as new without looking: at worst gathering stops early */
    }
    if (self->n_open >= (self->gathering ? MAX_OPEN : 1) && close_runs(self, items) < 0)
        return NULL;
    Run *run = &self->runs[self->n_open];
    self->last = self->n_open++;
    run->env.len = run->svc.len = 0;
    if (buf_put(&run->env, ev->env, ev->env_len) < 0) return NULL;
    if (buf_put(&run->svc, ev->svc, ev->svc_len) < 0) return NULL;
    run_restart(run);
    return run;
}

static int add_event(Engine *self, PyObject *items, const Event *ev, int64_t now) {
    Run *run = run_for(self, items, ev);
    if (run == NULL) return -1;
    /* held: a run at its bounds goes now (one stream entry), the ring's next one follows
     * it; other rings' open runs stay: each ring keeps its order */
    size_t count = run->lvls.len;
    if (count && ((self->run_events && count >= (size_t)self->run_events) ||
                  (self->run_bytes && run->data.len + ev->len + 26 > (size_t)self->run_bytes))) {
        if (hand_over(self, items, run) < 0) return -1;
        run_restart(run);
    }
    if (self->held && buf_put(&run->owners, &self->owner, sizeof self->owner) < 0) return -1;
    int64_t t_ns = ev->has_t ? ev->t_ns : now;
    if (buf_put(&run->data, ev->data, ev->len) < 0) return -1;
    if (!ev->has_t) { /* as Python does: the receive time, stored in the event */
        uint8_t stamp[26];
        if (buf_put(&run->data, stamp, encode_time(stamp, now)) < 0) return -1;
    }
    uint32_t end = (uint32_t)run->data.len;
    if (buf_put(&run->ends, &end, sizeof end) < 0) return -1;
    if (buf_put(&run->times, &t_ns, sizeof t_ns) < 0) return -1;
    if (buf_put(&run->lvls, &ev->lvl, 1) < 0) return -1;
    if (t_ns < run->t_min) run->t_min = t_ns;
    if (t_ns > run->t_max) run->t_max = t_ns;
    return 0;
}

static PyObject *make_addr(const struct sockaddr_storage *ss) {
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, ntohs(a->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        return Py_BuildValue("(siII)", host, ntohs(a->sin6_port), ntohl(a->sin6_flowinfo),
                             a->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

static PyObject *name_of(const uint8_t *p, size_t n) {
    return PyUnicode_DecodeUTF8(p ? (const char *)p : "", (Py_ssize_t)n, "strict");
}

/* held: note a frame that passed every local check, for the check across nodes, as
 * (mac, signed_at, key slot, events or -1 when Python reads it, sender or None, seq,
 * first event's host and svc or None): what Python counts once it is found fresh. */
static int hold(Engine *self, const uint8_t *f, int64_t signed_at, int slot, int count,
                const Numbered *num) {
    PyObject *sender, *host, *svc;
    if (count > 0) {
        host = name_of(self->parsed[0].host, self->parsed[0].host_len);
        svc = name_of(self->parsed[0].svc, self->parsed[0].svc_len);
    } else {
        host = Py_NewRef(Py_None);
        svc = Py_NewRef(Py_None);
    }
    if (count >= 0 && num->sender != NULL && num->sender_len)
        sender = PyBytes_FromStringAndSize((const char *)num->sender, (Py_ssize_t)num->sender_len);
    else
        sender = Py_NewRef(Py_None);
    PyObject *check = Py_BuildValue("(y#LiiNKNN)", (const char *)f + SIGNED_LEN, (Py_ssize_t)MAC_LEN,
                                    (long long)signed_at, slot, count < 0 ? -1 : count, sender,
                                    (unsigned long long)(count >= 0 ? num->seq : 0), host, svc);
    if (check == NULL) return -1;
    int r = PyList_Append(self->checks, check);
    Py_DECREF(check);
    return r;
}

/* The checks of PROTOCOL.md on one datagram; stores it or queues it for Python. */
static int take_frame(Engine *self, PyObject *items, const uint8_t *f, size_t n,
                      const struct sockaddr_storage *addr, int64_t now) {
    self->received++;
    if (n < HEADER_LEN || (Py_ssize_t)n > self->max_frame || f[0] != VERSION) {
        self->rejected[R_BAD_FRAME]++;
        return 0;
    }
    int slot = -1, known = 0;
    for (int i = 0; i < self->n_keys; i++) {
        if (memcmp(self->keys[i].key_id, f + 1, 4) != 0) continue;
        known = 1;
        if (mac_ok(&self->keys[i], f, n)) {
            slot = i;
            break;
        }
    }
    if (slot < 0) {
        self->rejected[known ? R_BAD_MAC : R_UNKNOWN_KEY]++;
        return 0;
    }
    int64_t signed_at = be64(f + 5);
    if (signed_at < add_sat(now, -self->max_age_ns) || signed_at < self->not_before_ns) {
        self->rejected[R_STALE]++;
        return 0;
    }
    if (signed_at > add_sat(now, self->max_future_ns)) {
        self->rejected[R_FUTURE]++;
        return 0;
    }
    int fresh = rt_check(self->guard, f + SIGNED_LEN, signed_at, now);
    if (fresh == -2) return -1;
    if (fresh != 1) { /* 0: a replay; -1: the table is full, failing closed */
        self->rejected[fresh == 0 ? R_REPLAY : R_OVERLOAD]++;
        return 0;
    }
    Numbered num;
    int count = self->keys[slot].may_write
                    ? rd_write(f + HEADER_LEN, n - HEADER_LEN, self->parsed, &num)
                    : -1;
    Py_ssize_t check = self->held ? PyList_GET_SIZE(self->checks) : -1;
    if (self->held && hold(self, f, signed_at, slot, count, &num) < 0) return -1;
    if (count < 0) { /* authenticated and fresh; Python parses, authorises and acts */
        /* Toward the drain's bound, as many events as its payload could hold (2 bytes
         * each, at least): frames that Python stores must not escape the bound. */
        unsigned long long most = (unsigned long long)(n - HEADER_LEN) / 2 + 1;
        self->deferred += most;
        /* and as many new rings, at most: runs opened after it count them */
        self->opened = self->opened + (Py_ssize_t)most; /* n <= max_frame: no overflow */
        /* Python stores it after the runs before it: close them, so that each ring
         * keeps arrival order across both paths. */
        if (close_runs(self, items) < 0) return -1;
        PyObject *item =
            self->held ? Py_BuildValue("(iy#NiLn)", ITEM_FRAME, (const char *)f, (Py_ssize_t)n,
                                       make_addr(addr), slot, (long long)signed_at, check)
                       : Py_BuildValue("(iy#NiL)", ITEM_FRAME, (const char *)f, (Py_ssize_t)n,
                                       make_addr(addr), slot, (long long)signed_at);
        if (item == NULL) return -1;
        int r = PyList_Append(items, item);
        Py_DECREF(item);
        return r;
    }
    if (self->held) { /* Python counts and notes it once it is found fresh */
        self->deferred += (unsigned long long)count;
        self->owner = (uint32_t)check;
        for (int i = 0; i < count; i++)
            if (add_event(self, items, &self->parsed[i], now) < 0) return -1;
        return 0;
    }
    self->frames++;
    self->key_frames[slot]++;
    self->events += (unsigned long long)count;
    if (num.sender != NULL && num.sender_len && self->writers != NULL) {
        const Event *first = &self->parsed[0]; /* as drain.py: its first event, if any */
        wt_note(self->writers, num.sender, num.sender_len, num.seq, count > 0, first->host,
                first->host_len, first->svc, first->svc_len, now);
    }
    for (int i = 0; i < count; i++)
        if (add_event(self, items, &self->parsed[i], now) < 0) return -1;
    return 0;
}

/* drain(fd, now_ns, max_frames, max_events, free_rings=0, rings=None) -> (items, errno),
 * held: (items, checks, errno): reads datagrams until the socket is empty or a bound is
 * reached. errno is 0, or why a receive failed. free_rings: how many more rings the store may open; rings: its dict of
 * (env, svc) -> ring, looked up only (see Engine.gathering). */
static PyObject *Engine_drain(Engine *self, PyObject *args) {
    int fd;
    long long now;
    Py_ssize_t max_frames, max_events, free_rings = 0; /* 0: arrival order, one run open */
    PyObject *rings = Py_None;
    if (!PyArg_ParseTuple(args, "iLnn|nO", &fd, &now, &max_frames, &max_events, &free_rings,
                          &rings))
        return NULL;
    if (rings != Py_None && !PyDict_Check(rings)) {
        PyErr_SetString(PyExc_TypeError, "rings: a dict of the store's rings, or None");
        return NULL;
    }
    if (self->bufs == NULL) {
        self->bufs = PyMem_Malloc((size_t)BATCH * RECV_SIZE);
        self->parsed = PyMem_Malloc(MAX_EVENTS * sizeof(Event));
        if (self->bufs == NULL || self->parsed == NULL) return PyErr_NoMemory();
        for (int i = 0; i < BATCH; i++) {
            self->iov[i].iov_base = self->bufs + (size_t)i * RECV_SIZE;
            self->iov[i].iov_len = RECV_SIZE;
        }
    }
    PyObject *items = PyList_New(0);
    if (items == NULL) return NULL;
    if (self->held) {
        Py_XSETREF(self->checks, PyList_New(0));
        if (self->checks == NULL) {
            Py_DECREF(items);
            return NULL;
        }
    }
    unsigned long long events_max = self->events + (unsigned long long)max_events;
    Py_ssize_t left = max_frames;
    int err = 0;
    self->n_open = self->last = 0;
    self->opened = 0;
    self->free_rings = free_rings;
    self->rings = rings == Py_None ? NULL : rings;
    self->gathering = 1;
    self->deferred = 0;
    while (left > 0 && self->events + self->deferred < events_max) {
        unsigned int want = left < BATCH ? (unsigned int)left : BATCH;
        for (unsigned int i = 0; i < want; i++) {
            memset(&self->msgs[i].msg_hdr, 0, sizeof self->msgs[i].msg_hdr);
            self->msgs[i].msg_hdr.msg_iov = &self->iov[i];
            self->msgs[i].msg_hdr.msg_iovlen = 1;
            self->msgs[i].msg_hdr.msg_name = &self->addrs[i];
            self->msgs[i].msg_hdr.msg_namelen = sizeof self->addrs[i];
        }
        int got = recvmmsg(fd, self->msgs, want, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) err = errno;
            break;
        }
        for (int i = 0; i < got; i++) {
            if (take_frame(self, items, self->iov[i].iov_base, self->msgs[i].msg_len,
                           &self->addrs[i], now) < 0) {
                self->rings = NULL;
                self->n_open = 0;
                Py_DECREF(items);
                return NULL;
            }
        }
        left -= got;
        if ((unsigned int)got < want) break; /* the socket is empty */
    }
    int closed = close_runs(self, items);
    self->rings = NULL;
    /* Memory: the runs are copied into `items`, as many bytes as the drain read (at most
     * max_frames datagrams); the runs' buffers hold as much again while it lasts, and
     * between drains at most MAX_OPEN runs of KEEP_CAP per buffer (bigger ones are freed). */
    for (int i = 0; i < MAX_OPEN; i++) {
        Buf *bufs[] = {&self->runs[i].data, &self->runs[i].ends, &self->runs[i].times,
                       &self->runs[i].lvls, &self->runs[i].owners};
        for (size_t j = 0; j < sizeof bufs / sizeof bufs[0]; j++)
            if (bufs[j]->cap > KEEP_CAP) buf_free(bufs[j]);
    }
    if (closed < 0) {
        Py_DECREF(items);
        return NULL;
    }
    if (self->held) {
        PyObject *checks = self->checks;
        self->checks = NULL;
        return Py_BuildValue("(NNi)", items, checks, err);
    }
    return Py_BuildValue("(Ni)", items, err);
}

/* take_counts() -> (received, rejected[7], frames, events, key_frames[n_keys]); zeroes them. */
static PyObject *Engine_take_counts(Engine *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *rejected = PyTuple_New(N_REASONS);
    PyObject *keys = PyTuple_New(self->n_keys);
    if (rejected == NULL || keys == NULL) {
        Py_XDECREF(rejected);
        Py_XDECREF(keys);
        return NULL;
    }
    for (int i = 0; i < N_REASONS; i++)
        PyTuple_SET_ITEM(rejected, i, PyLong_FromUnsignedLongLong(self->rejected[i]));
    for (int i = 0; i < self->n_keys; i++)
        PyTuple_SET_ITEM(keys, i, PyLong_FromUnsignedLongLong(self->key_frames[i]));
    PyObject *out = Py_BuildValue("(KNKKN)", self->received, rejected, self->frames, self->events,
                                  keys);
    self->received = self->frames = self->events = 0;
    memset(self->rejected, 0, sizeof self->rejected);
    memset(self->key_frames, 0, sizeof self->key_frames);
    return out;
}

static PyMethodDef Engine_methods[] = {
    {"set_keys", (PyCFunction)Engine_set_keys, METH_O,
     "Replace the accepted keys: [(key_id, inner_pad, outer_pad, may_write), ...]."},
    {"drain", (PyCFunction)Engine_drain, METH_VARARGS,
     "drain(fd, now_ns, max_frames, max_events, free_rings=0, rings=None) -> (items, errno)."},
    {"take_counts", (PyCFunction)Engine_take_counts, METH_NOARGS,
     "The counters since the last call, then zero them."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "logd.server.ingest._fastpath.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Drains a UDP socket through the checks of PROTOCOL.md.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "logd.server.ingest._fastpath",
    .m_doc = "The UDP accept path in C.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&ReplayTableType) < 0 || PyType_Ready(&WriterTableType) < 0 ||
        PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "ReplayTable", (PyObject *)&ReplayTableType) < 0 ||
        PyModule_AddObjectRef(m, "WriterTable", (PyObject *)&WriterTableType) < 0 ||
        PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddIntConstant(m, "WINDOW", WINDOW) < 0 ||
        PyModule_AddIntConstant(m, "WRITERS", WT_CAPACITY) < 0 ||
        PyModule_AddIntConstant(m, "ITEM_RUN", ITEM_RUN) < 0 ||
        PyModule_AddIntConstant(m, "ITEM_FRAME", ITEM_FRAME) < 0 ||
        PyModule_AddIntConstant(m, "MAX_EVENTS", MAX_EVENTS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_LVL", MAX_LVL) < 0 ||
        PyModule_AddIntConstant(m, "VERSION", VERSION) < 0 ||
        PyModule_AddIntConstant(m, "SIGNED_LEN", SIGNED_LEN) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_LEN", HEADER_LEN) < 0 ||
        PyModule_AddIntConstant(m, "MAC_LEN", MAC_LEN) < 0 ||
        PyModule_AddIntConstant(m, "RECV_SIZE", RECV_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "MAX_NAME", MAX_NAME) < 0 ||
        PyModule_AddObject(m, "MIN_T_S", PyLong_FromLongLong(MIN_T_S)) < 0 ||
        PyModule_AddObject(m, "MAX_T_S", PyLong_FromLongLong(MAX_T_S)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    /* The refusals the engine counts, in its order (accept.py's Reject values). */
    PyObject *reasons = Py_BuildValue("(sssssss)", "bad_frame", "unknown_key", "bad_mac",
                                      "stale", "future", "replay", "overload");
    if (reasons == NULL || PyModule_AddObject(m, "REASONS", reasons) < 0) {
        Py_XDECREF(reasons);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
