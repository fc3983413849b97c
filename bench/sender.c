/* Load generator for `make bench`: signed logd frames (docs/protocol.md v1) over UDP.
 *
 * Every frame is built and signed at send time, as a real writer does:
 *   frame = 0x01 | key_id(4) | signed_at(8, BE ns) | HMAC-SHA256(secret, frame[0:13]+payload)[0:16] | payload
 * The payload is a hand-encoded `logd.v1.Cmd` holding one `msg` (--batch 1) or
 * `batch` entries. Each event's txt carries `seq=` and `sent=<signing time ns>`, so
 * a tail reader can measure write -> received latency.
 *
 * Frames go out with sendmmsg, paced to --rate frames/s (0: flat out), for
 * --duration seconds or --count frames, or until SIGTERM/SIGINT. With --keys N,
 * frame i goes to service "<svc>-<i mod N>" (N rings at once). With --origin, frames
 * carry sender and seq (1, 2, 3...) and events host and pid, as logd.logger sends them.
 * The secret comes from LOGD_WRITE_SECRET (never argv, which `ps` shows). The result is
 * one JSON line on stdout.
 *
 * --test-vector prints docs/protocol.md's test-vector frame in hex, built by the same code.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/sha.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEADER_LEN 29
#define SIGNED_LEN 13
#define MAC_LEN 16
#define MAX_FRAME 65507
#define MAX_BURST 256
#define MAX_TXT 65000
#define MAX_NAME 64
#define LVL_INFO 3
#define LVL_ERROR 5

static const char FILLER[] =
    "GET /api/v1/orders/8f14e45f ceea167a 5a36dedd user=alice region=eu-west-1 "
    "status=200 bytes=5120 upstream=orders-svc cache=miss took_ms=12 "
    "GET /api/v1/orders/8f14e45f ceea167a 5a36dedd user=alice region=eu-west-1 ";
#define MARKER "needle-1pct"

struct opts {
    const char *host;
    int port;
    double rate;      /* frames per second; 0 = as fast as possible */
    double duration;  /* seconds */
    long long count;  /* frames; 0 = no limit */
    int batch;        /* events per frame */
    int txt_len;      /* bytes of txt per event */
    int marker_every; /* every Nth event carries MARKER in its txt (0: never) */
    int error_every;  /* every Nth event is ERROR, the rest INFO (0: never) */
    int burst;        /* frames per sendmmsg call at most */
    int cpu;          /* pin to this CPU (-1: do not pin) */
    const char *env;
    const char *svc;
    int keys;         /* frames cycle over this many services <svc>-<i> (0: svc alone) */
    int origin;       /* --origin: sender and seq on every frame, host and pid on every event */
};

/* What --origin sets, as logd.logger does: a host name of the length EC2 gives and a pid
 * of two varint bytes (the same on every machine and run, so that runs compare: this
 * process's own pid takes 3 bytes from 16,384 on; ORIGIN_BYTES in run.py counts 2), and
 * 8 random bytes. */
static const char origin_host[] = "ip-10-0-12-34.ec2.internal";
static const uint32_t origin_pid = 4321;
/* Frames are numbered from 2**14, so that every frame's seq is a varint of 3 bytes (to
 * 2**21 frames), as ORIGIN_BYTES counts: numbered from 1, a short run's frames were a byte
 * or two shorter, and its bytes no longer matched the padded frames' (the smoke test). */
#define ORIGIN_FIRST_SEQ 16384
static unsigned char origin_sender[8];

struct signer {
    EVP_MAC_CTX *ctx;
    unsigned char key_id[4];
};

static volatile sig_atomic_t stopping;

static void on_stop(int sig) {
    (void)sig;
    stopping = 1;
}

static void die(const char *what) {
    fprintf(stderr, "sender: %s\n", what);
    exit(2);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* --- signing ------------------------------------------------------------ */

static void signer_init(struct signer *s, const char *secret) {
    size_t len = strlen(secret);
    if (len == 0) die("the write secret is empty");
    unsigned char buf[12 + 4096];
    if (len > 4096) die("the write secret is too long");
    memcpy(buf, "logd-key-id\0", 12);
    memcpy(buf + 12, secret, len);
    unsigned char digest[32];
    SHA256(buf, 12 + len, digest);
    memcpy(s->key_id, digest, 4);

    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac) die("OpenSSL has no HMAC");
    s->ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    /* The key schedule (inner/outer pads) is computed here once; each frame re-inits
     * with a NULL key, which restarts from those precomputed states. */
    if (!s->ctx || !EVP_MAC_init(s->ctx, (const unsigned char *)secret, len, params))
        die("HMAC init failed");
}

/* Writes the 29-byte header in front of the payload at frame[HEADER_LEN:]. */
static void sign_frame(struct signer *s, unsigned char *frame, size_t payload_len,
                       int64_t signed_at) {
    frame[0] = 1;
    memcpy(frame + 1, s->key_id, 4);
    uint64_t t = (uint64_t)signed_at;
    for (int i = 0; i < 8; i++) frame[5 + i] = (unsigned char)(t >> (56 - 8 * i));
    unsigned char out[32];
    size_t outl = 0;
    if (!EVP_MAC_init(s->ctx, NULL, 0, NULL) || !EVP_MAC_update(s->ctx, frame, SIGNED_LEN) ||
        !EVP_MAC_update(s->ctx, frame + HEADER_LEN, payload_len) ||
        !EVP_MAC_final(s->ctx, out, &outl, sizeof out))
        die("HMAC failed");
    memcpy(frame + SIGNED_LEN, out, MAC_LEN);
}

/* --- protobuf encoding ---------------------------------------------------- */

static size_t put_varint(unsigned char *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (unsigned char)v;
    return n;
}

static size_t put_bytes(unsigned char *p, unsigned tag, const void *data, size_t len) {
    size_t n = put_varint(p, tag);
    n += put_varint(p + n, len);
    memcpy(p + n, data, len);
    return n + len;
}

/* Msg{t (when t_ns >= 0), env=3, svc=4, lvl=6, txt=7, host=14 and pid=15 (with `origin`)}. */
static size_t encode_msg(unsigned char *p, int64_t t_ns, const char *env, const char *svc,
                         int lvl, const char *txt, size_t txt_len, int origin) {
    size_t n = 0;
    if (t_ns >= 0) {
        unsigned char ts[24];
        size_t m = 0;
        ts[m++] = 0x08; /* seconds */
        m += put_varint(ts + m, (uint64_t)(t_ns / 1000000000LL));
        ts[m++] = 0x10; /* nanos */
        m += put_varint(ts + m, (uint64_t)(t_ns % 1000000000LL));
        n += put_bytes(p + n, 0x0a, ts, m);
    }
    if (*env) n += put_bytes(p + n, 0x1a, env, strlen(env));
    if (*svc) n += put_bytes(p + n, 0x22, svc, strlen(svc));
    if (lvl) {
        p[n++] = 0x30;
        n += put_varint(p + n, (uint64_t)lvl);
    }
    n += put_bytes(p + n, 0x3a, txt, txt_len);
    if (origin) {
        n += put_bytes(p + n, 0x72, origin_host, strlen(origin_host));
        p[n++] = 0x78;
        n += put_varint(p + n, origin_pid);
    }
    return n;
}

/* The txt of event `seq`: "seq=... sent=... " then filler (repeated), `len` bytes in all. */
static size_t make_txt(char *out, int len, uint64_t seq, int64_t sent, int marker) {
    int n = snprintf(out, (size_t)len + 1, "seq=%010llu sent=%lld %s", (unsigned long long)seq,
                     (long long)sent, marker ? MARKER " " : "");
    if (n >= len) return (size_t)len; /* truncated to len (snprintf wrote len bytes + NUL) */
    size_t at = (size_t)n;
    while (at < (size_t)len) {
        size_t rest = (size_t)len - at;
        if (rest > sizeof FILLER - 1) rest = sizeof FILLER - 1;
        memcpy(out + at, FILLER, rest);
        at += rest;
    }
    return at;
}

/* Payload of one frame carrying events seq0..seq0+batch-1 (with --origin: numbered
 * `frame_no`, from ORIGIN_FIRST_SEQ); returns its length. */
static size_t encode_cmd(unsigned char *p, const struct opts *o, const char *svc, uint64_t seq0,
                         uint64_t frame_no, int64_t t_ns, size_t *msg_bytes) {
    static unsigned char msg[MAX_TXT + 256];
    static char txt[MAX_TXT + 1];
    size_t n = 0;
    for (int i = 0; i < o->batch; i++) {
        uint64_t seq = seq0 + (uint64_t)i;
        int marker = o->marker_every > 0 && seq % (uint64_t)o->marker_every == 0;
        int error = o->error_every > 0 && seq % (uint64_t)o->error_every == 0;
        size_t tl = make_txt(txt, o->txt_len, seq, t_ns, marker);
        size_t ml = encode_msg(msg, t_ns, o->env, svc, error ? LVL_ERROR : LVL_INFO, txt, tl,
                               o->origin);
        *msg_bytes += ml;
        /* Cmd.msg (2) for a single event, Cmd.batch (4) for a batch. */
        n += put_bytes(p + n, o->batch == 1 ? 0x12 : 0x22, msg, ml);
    }
    if (o->origin) { /* Cmd.sender (5), Cmd.seq (6) */
        n += put_bytes(p + n, 0x2a, origin_sender, sizeof origin_sender);
        p[n++] = 0x30;
        n += put_varint(p + n, frame_no);
    }
    return n;
}

static int test_vector(void) {
    struct signer s;
    signer_init(&s, "test-secret");
    unsigned char frame[256], msg[128];
    size_t ml = encode_msg(msg, -1, "prod", "api", LVL_INFO, "hello", 5, 0);
    size_t pl = put_bytes(frame + HEADER_LEN, 0x12, msg, ml);
    sign_frame(&s, frame, pl, 1700000000000000000LL);
    for (size_t i = 0; i < HEADER_LEN + pl; i++) printf("%02x", frame[i]);
    printf("\n");
    return 0;
}

/* --- sending ---------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr,
            "usage: sender --port N [--host 127.0.0.1] [--rate FPS|0] [--duration S] [--count N]\n"
            "              [--batch N] [--txt-len N] [--marker-every N] [--error-every N]\n"
            "              [--burst N] [--cpu N] [--env E] [--svc S] [--keys N] [--origin]\n"
            "              (secret: LOGD_WRITE_SECRET)\n"
            "       sender --test-vector\n");
    exit(2);
}

/* Room for one frame: per event its txt, names (svc-<key>: up to 16 more bytes) and at
 * most ~50 bytes of tags, lengths, level and time. */
static size_t frame_capacity(const struct opts *o) {
    size_t names = strlen(o->env) + strlen(o->svc) + 16 + (o->origin ? MAX_NAME + 8 : 0);
    return (size_t)o->batch * ((size_t)o->txt_len + names + 64) + HEADER_LEN + 24;
}

static void parse(int argc, char **argv, struct opts *o) {
    static const struct option longopts[] = {
        {"host", 1, 0, 'h'},        {"port", 1, 0, 'p'},        {"rate", 1, 0, 'r'},
        {"duration", 1, 0, 'd'},    {"count", 1, 0, 'c'},       {"batch", 1, 0, 'b'},
        {"txt-len", 1, 0, 't'},     {"marker-every", 1, 0, 'm'}, {"error-every", 1, 0, 'e'},
        {"burst", 1, 0, 'u'},       {"cpu", 1, 0, 'C'},         {"env", 1, 0, 'E'},
        {"svc", 1, 0, 'S'},         {"keys", 1, 0, 'K'},        {"test-vector", 0, 0, 'T'},
        {"origin", 0, 0, 'O'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': o->host = optarg; break;
        case 'p': o->port = atoi(optarg); break;
        case 'r': o->rate = atof(optarg); break;
        case 'd': o->duration = atof(optarg); break;
        case 'c': o->count = atoll(optarg); break;
        case 'b': o->batch = atoi(optarg); break;
        case 't': o->txt_len = atoi(optarg); break;
        case 'm': o->marker_every = atoi(optarg); break;
        case 'e': o->error_every = atoi(optarg); break;
        case 'u': o->burst = atoi(optarg); break;
        case 'C': o->cpu = atoi(optarg); break;
        case 'E': o->env = optarg; break;
        case 'S': o->svc = optarg; break;
        case 'K': o->keys = atoi(optarg); break;
        case 'O': o->origin = 1; break;
        case 'T': exit(test_vector());
        default: usage();
        }
    }
    if (o->port <= 0 || o->port > 65535) usage();
    if (o->batch < 1 || o->batch > 64) die("--batch must be 1..64");
    if (o->txt_len < 40 || o->txt_len > MAX_TXT) die("--txt-len must be 40..65000");
    if (o->keys < 0 || o->keys > 100000) die("--keys must be 0..100000");
    if (strlen(o->env) > MAX_NAME || strlen(o->svc) > MAX_NAME) die("--env/--svc: 64 bytes at most");
    if (o->burst < 1 || o->burst > MAX_BURST) die("--burst must be 1..256");
    if (o->rate < 0 || o->duration <= 0) die("--rate must be >= 0 and --duration > 0");
    if (frame_capacity(o) > MAX_FRAME)
        die("frames would exceed the UDP limit");
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
    struct opts o = {"127.0.0.1", 0, 0, 5.0, 0, 1, 100, 0, 0, 32, -1, "bench", "api", 0, 0};
    parse(argc, argv, &o);
    if (o.origin) {
        if (getrandom(origin_sender, sizeof origin_sender, 0) != sizeof origin_sender)
            die("cannot read 8 random bytes for --origin");
    }
    const char *secret = getenv("LOGD_WRITE_SECRET");
    if (!secret || !*secret) die("set LOGD_WRITE_SECRET to the server's write secret");
    struct signer s;
    signer_init(&s, secret);

    if (o.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(o.cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) die("cannot pin to --cpu");
    }
    prctl(PR_SET_TIMERSLACK, 1UL); /* precise sleeps for paced sending */
    struct sigaction sa = {.sa_handler = on_stop}; /* no SA_RESTART: a sleep ends at once */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("cannot create a UDP socket");
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
    if (inet_pton(AF_INET, o.host, &to.sin_addr) != 1) die("--host must be an IPv4 address");
    if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0) die("cannot connect the UDP socket");

    size_t frame_cap = frame_capacity(&o);
    unsigned char *frames = malloc(frame_cap * (size_t)o.burst);
    struct mmsghdr *msgs = calloc((size_t)o.burst, sizeof *msgs);
    struct iovec *iov = calloc((size_t)o.burst, sizeof *iov);
    if (!frames || !msgs || !iov) die("out of memory");

    long long sent = 0, errors = 0;
    size_t msg_bytes = 0, frame_bytes = 0;
    uint64_t seq = 0;
    double cpu0 = cpu_seconds();
    double start = mono_s(), end = start + o.duration;
    for (;;) {
        double now = mono_s();
        if (stopping || now >= end || (o.count && sent >= o.count)) break;
        long long want = o.burst;
        if (o.rate > 0) {
            long long due = (long long)((now - start) * o.rate) + 1 - sent;
            if (due <= 0) {
                double wait = start + (double)sent / o.rate - now; /* when frame `sent` is due */
                if (wait > 0) {
                    struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
                    nanosleep(&ts, NULL);
                }
                continue;
            }
            if (due < want) want = due;
        }
        if (o.count && o.count - sent < want) want = o.count - sent;
        for (long long i = 0; i < want; i++) {
            unsigned char *f = frames + (size_t)i * frame_cap;
            int64_t t = now_ns();
            char svc[MAX_NAME + 16];
            if (o.keys > 0)
                snprintf(svc, sizeof svc, "%s-%lld", o.svc, (sent + i) % o.keys);
            else
                snprintf(svc, sizeof svc, "%s", o.svc);
            size_t pl = encode_cmd(f + HEADER_LEN, &o, svc, seq,
                                   (uint64_t)(ORIGIN_FIRST_SEQ + sent + i), t,
                                   &msg_bytes);
            sign_frame(&s, f, pl, t);
            seq += (uint64_t)o.batch;
            iov[i].iov_base = f;
            iov[i].iov_len = HEADER_LEN + pl;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int done = 0;
        while (done < want) {
            int n = sendmmsg(fd, msgs + done, (unsigned)(want - done), 0);
            if (n < 0) {
                if (errno == EINTR) continue;
                errors++; /* ENOBUFS and the like: the frame is lost on our side */
                done++;
                continue;
            }
            for (int i = 0; i < n; i++) frame_bytes += iov[done + i].iov_len;
            done += n;
            sent += n;
        }
    }
    double elapsed = mono_s() - start;
    printf("{\"frames_sent\": %lld, \"events_sent\": %lld, \"send_errors\": %lld, "
           "\"elapsed_s\": %.6f, \"msg_bytes\": %zu, \"frame_bytes\": %zu, \"cpu_s\": %.4f}\n",
           sent, sent * o.batch, errors, elapsed, msg_bytes, frame_bytes, cpu_seconds() - cpu0);
    return 0;
}
