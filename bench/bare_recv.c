/* The machine's limit for `make bench`: a bare C receiver that only counts datagrams.
 *
 * It blocks in recvmmsg(2) (MSG_WAITFORONE: it sleeps until a datagram comes, then takes
 * what is queued, up to BATCH) into buffers as logd's C engine reads them (BATCH of
 * 64 KiB), and does nothing else. What the kernel and a wake-up cost per datagram with no
 * work at all: logd fed live is compared with it, fed by the same sender.
 *
 * Usage: bare_recv [rcvbuf bytes]. Prints `ready <port>` once bound to 127.0.0.1; stops at
 * the first 4-byte datagram "stop" and then prints {"packets": N} (stop not counted), as
 * bench/bare_recv.py does.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define RECV_SIZE 65536

static unsigned char bufs[BATCH][RECV_SIZE];

int main(int argc, char **argv) {
    int rcvbuf = argc > 1 ? atoi(argv[1]) : 8 << 20;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("bare_recv: socket");
        return 1;
    }
    /* FORCE ignores net.core.rmem_max (root only); otherwise the kernel caps it. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, len) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
        perror("bare_recv: bind");
        return 1;
    }
    printf("ready %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = RECV_SIZE;
    }
    unsigned long long packets = 0;
    for (;;) {
        memset(msgs, 0, sizeof msgs);
        for (int i = 0; i < BATCH; i++) {
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int got = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (got < 0) {
            if (errno == EINTR) continue;
            perror("bare_recv: recvmmsg");
            return 1;
        }
        for (int i = 0; i < got; i++) {
            if (msgs[i].msg_len == 4 && memcmp(bufs[i], "stop", 4) == 0) {
                printf("{\"packets\": %llu}\n", packets);
                return 0;
            }
            packets++;
        }
    }
}
