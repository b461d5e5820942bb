/* webgate native relay (issue 18): the whole per-packet work of a relayed RTP stream -- read,
 * source check, SRTP unprotect, header rewrite, SRTP protect, send -- for many UDP sockets in one
 * call per event-loop wake-up. Every datagram that is not relayed is copied out for Python.
 *
 * Single-threaded by design: it runs on the event loop's thread only (no locks); the SRTP
 * sessions are aiortc's own (pylibsrtp), used through the function pointers of the rule.
 * wg_relay_packet is the sans-IO core (tests and the fuzz target drive it with bytes). */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "relay.h"

#define MAX_FD (1 << 20)
#define MAX_DROPOUT 3000u
#define MAX_MISORDER 100u
#define SEQ_MOD 65536u
#define SLOT (WG_RECV_SIZE + 256) /* one receive buffer: a datagram + room for the SRTP trailer */
#define MAX_EVENTS 256

typedef struct {
    wg_rule_spec spec;
    wg_rule_stats st;
    int anchored, have_ssrc, have_stats_ssrc, have_transit, have_out;
    unsigned int cur_ssrc, seq_delta, ts_delta, transit;
} wg_rule;

struct wg_engine {
    int epfd;
    int nfds;          /* size of the two tables below, indexed by fd */
    unsigned char *registered;
    wg_rule **rules;
    unsigned char *bufs; /* WG_MAX_PER_SOCKET receive slots */
    struct mmsghdr rmsg[WG_MAX_PER_SOCKET], smsg[WG_MAX_PER_SOCKET];
    struct iovec riov[WG_MAX_PER_SOCKET], siov[WG_MAX_PER_SOCKET];
    struct sockaddr_storage raddr[WG_MAX_PER_SOCKET];
};

double wg_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

wg_engine *wg_engine_new(void)
{
    wg_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->bufs = malloc((size_t)SLOT * WG_MAX_PER_SOCKET);
    if (e->epfd < 0 || !e->bufs) {
        if (e->epfd >= 0)
            close(e->epfd);
        free(e->bufs);
        free(e);
        return NULL;
    }
    return e;
}

void wg_engine_free(wg_engine *e)
{
    if (!e)
        return;
    for (int i = 0; i < e->nfds; i++)
        free(e->rules[i]);
    free(e->rules);
    free(e->registered);
    free(e->bufs);
    close(e->epfd);
    free(e);
}

int wg_engine_fd(wg_engine *e) { return e ? e->epfd : -1; }

static int grow(wg_engine *e, int fd)
{
    if (!e || fd < 0 || fd >= MAX_FD)
        return -1;
    if (fd < e->nfds)
        return 0;
    int n = e->nfds ? e->nfds : 64;
    while (n <= fd)
        n *= 2;
    unsigned char *r = realloc(e->registered, (size_t)n);
    if (!r)
        return -1;
    e->registered = r;
    wg_rule **t = realloc(e->rules, sizeof(*t) * (size_t)n);
    if (!t)
        return -1;
    e->rules = t;
    memset(e->registered + e->nfds, 0, (size_t)(n - e->nfds));
    memset(e->rules + e->nfds, 0, sizeof(*t) * (size_t)(n - e->nfds));
    e->nfds = n;
    return 0;
}

int wg_add_socket(wg_engine *e, int fd)
{
    if (grow(e, fd) < 0) {
        errno = EINVAL;
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data = {.fd = fd}};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        if (errno != EEXIST || epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
            return -1;
    }
    e->registered[fd] = 1;
    return 0;
}

static wg_rule *rule_of(wg_engine *e, int fd)
{
    return (e && fd >= 0 && fd < e->nfds) ? e->rules[fd] : NULL;
}

int wg_remove_socket(wg_engine *e, int fd)
{
    if (!e || fd < 0 || fd >= e->nfds)
        return -1;
    e->registered[fd] = 0;
    free(e->rules[fd]);
    e->rules[fd] = NULL;
    /* may fail when the socket was closed already (epoll forgot it): not an error */
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
    return 0;
}

int wg_rule_set(wg_engine *e, const wg_rule_spec *spec)
{
    if (!spec || spec->in_pt < 0 || spec->in_pt > 127 || spec->out_pt < 0 || spec->out_pt > 127 ||
        spec->src_len < 0 || spec->src_len > 28 || spec->dst_len < 0 || spec->dst_len > 28 ||
        spec->clock_rate == 0 || grow(e, spec->in_fd) < 0)
        return -1;
    wg_rule *r = calloc(1, sizeof(*r));
    if (!r)
        return -1;
    r->spec = *spec;
    free(e->rules[spec->in_fd]);
    e->rules[spec->in_fd] = r;
    return 0;
}

int wg_rule_get(wg_engine *e, int in_fd, wg_rule_stats *out)
{
    wg_rule *r = rule_of(e, in_fd);
    if (!r)
        return -1;
    if (out)
        *out = r->st;
    return 0;
}

int wg_rule_clear(wg_engine *e, int in_fd, wg_rule_stats *out)
{
    wg_rule *r = rule_of(e, in_fd);
    if (!r)
        return -1;
    if (out)
        *out = r->st;
    free(r);
    e->rules[in_fd] = NULL;
    return 0;
}

/* family, port and address equal (IPv6 flowinfo and scope ignored) */
static int same_source(const unsigned char *a, int alen, const unsigned char *b, int blen)
{
    sa_family_t fa, fb;
    if (alen < (int)sizeof(fa) || blen < (int)sizeof(fb))
        return 0;
    memcpy(&fa, a, sizeof(fa));
    memcpy(&fb, b, sizeof(fb));
    if (fa != fb)
        return 0;
    if (fa == AF_INET) {
        if (alen < (int)sizeof(struct sockaddr_in) || blen < (int)sizeof(struct sockaddr_in))
            return 0;
        return memcmp(a + offsetof(struct sockaddr_in, sin_port), b + offsetof(struct sockaddr_in, sin_port), 2) == 0 &&
               memcmp(a + offsetof(struct sockaddr_in, sin_addr), b + offsetof(struct sockaddr_in, sin_addr), 4) == 0;
    }
    if (fa == AF_INET6) {
        if (alen < (int)sizeof(struct sockaddr_in6) || blen < (int)sizeof(struct sockaddr_in6))
            return 0;
        return memcmp(a + offsetof(struct sockaddr_in6, sin6_port), b + offsetof(struct sockaddr_in6, sin6_port), 2) == 0 &&
               memcmp(a + offsetof(struct sockaddr_in6, sin6_addr), b + offsetof(struct sockaddr_in6, sin6_addr), 16) == 0;
    }
    return 0;
}

static unsigned int get16(const unsigned char *p) { return ((unsigned int)p[0] << 8) | p[1]; }
static unsigned int get32(const unsigned char *p)
{
    return ((unsigned int)p[0] << 24) | ((unsigned int)p[1] << 16) | ((unsigned int)p[2] << 8) | p[3];
}
static void put16(unsigned char *p, unsigned int v) { p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v; }
static void put32(unsigned char *p, unsigned int v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16); p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

/* webgate/proto/rtp.py RtpStats._init_seq */
static void init_seq(wg_rule *r, unsigned int seq)
{
    wg_rule_stats *s = &r->st;
    s->base_seq = s->max_seq = seq;
    s->cycles = 0;
    s->has_bad_seq = 0;
    s->bad_seq = 0;
    s->received = 0;
    s->received_octets = 0;
    r->have_transit = 0;
    s->jitter = 0.0;
}

/* RtpStats.update (RFC 3550 A.1) and _update_jitter (A.8), the same arithmetic */
static void update_stats(wg_rule *r, unsigned int ssrc, unsigned int seq, unsigned int ts, int plen, double now)
{
    wg_rule_stats *s = &r->st;
    if (!r->have_stats_ssrc || s->last_in_ssrc != ssrc) {
        r->have_stats_ssrc = 1;
        s->last_in_ssrc = ssrc;
        init_seq(r, seq);
    } else {
        unsigned int udelta = (seq - s->max_seq) & 0xFFFFu;
        if (udelta < MAX_DROPOUT) {
            if (seq < s->max_seq)
                s->cycles += SEQ_MOD;
            s->max_seq = seq;
        } else if (udelta <= SEQ_MOD - MAX_MISORDER) {
            if (s->has_bad_seq && seq == s->bad_seq) {
                init_seq(r, seq);
            } else {
                s->bad_seq = (seq + 1) & 0xFFFFu;
                s->has_bad_seq = 1;
                return;
            }
        } else {
            s->duplicates_or_late++;
        }
    }
    s->received++;
    s->received_octets += (unsigned long long)plen;
    double a = now * (double)r->spec.clock_rate;
    long long arrival = 0;
    if (isfinite(a) && fabs(a) < 9.0e18)
        arrival = (long long)nearbyint(a); /* round half to even, as Python's round() */
    unsigned int transit = (unsigned int)((unsigned long long)arrival - ts);
    if (r->have_transit) {
        long long d = (int)(transit - r->transit);
        if (d < 0)
            d = -d;
        s->jitter += ((double)d - s->jitter) / 16.0;
    }
    r->transit = transit;
    r->have_transit = 1;
}

int wg_relay_packet(wg_engine *e, int in_fd, const unsigned char *src, int src_len,
                    unsigned char *buf, int len, int cap, double now)
{
    wg_rule *r = rule_of(e, in_fd);
    if (!r || !buf || len < 12 || len > cap)
        return -1;
    unsigned int b0 = buf[0], b1 = buf[1];
    if (b0 < 128 || b0 > 191 || (b1 >= 192 && b1 <= 223) || (int)(b1 & 0x7F) != r->spec.in_pt)
        return -1;
    if (!src || !same_source(src, src_len, r->spec.src, r->spec.src_len))
        return -1;
    int off = 12 + 4 * (int)(b0 & 0x0F);
    if (b0 & 0x10) {
        if (len < off + 4)
            return -1;
        off += 4 + 4 * (int)get16(buf + off + 2);
    }
    if (len < off)
        return -1;
    if (!r->spec.rx_fn && (b0 & 0x20) && (buf[len - 1] == 0 || len - buf[len - 1] < off))
        return -1; /* bad padding of plain RTP: Python's parser rejects it (counted there) */
    /* from here on the packet is the fast path's: dropped (-2) rather than handed back */
    if (r->spec.rx_fn) {
        int n = len;
        if (r->spec.rx_fn(r->spec.rx_ctx, buf, &n) != 0) {
            r->st.srtp_errors++;
            return -2;
        }
        if (n < off || n > len) {
            r->st.dropped++;
            return -2;
        }
        len = n;
    }
    int end = len;
    if (b0 & 0x20) {
        int pad = buf[len - 1];
        if (pad == 0 || end - pad < off) { /* only after SRTP (the padding is encrypted) */
            r->st.dropped++;
            return -2;
        }
        end -= pad;
    }
    int plen = end - off;
    if (r->spec.tx_fn && 12 + plen + WG_SRTP_TRAILER > cap) {
        r->st.send_errors++;
        return -2;
    }
    unsigned int seq = get16(buf + 2), ts = get32(buf + 4), ssrc = get32(buf + 8);
    int marker = (b1 & 0x80) != 0;
    wg_rule_stats *s = &r->st;

    if (!r->anchored) {
        r->anchored = 1;
        r->seq_delta = (r->spec.next_seq - seq) & 0xFFFFu;
        r->ts_delta = r->spec.next_ts - ts;
        r->cur_ssrc = ssrc;
        s->first_rx = now;
    } else if (ssrc != r->cur_ssrc) { /* a new source: continue the output where it was */
        unsigned int out_seq = s->last_out_seq + 1, out_ts = s->last_out_ts + (s->last_step ? s->last_step : 160);
        r->seq_delta = (out_seq - seq) & 0xFFFFu;
        r->ts_delta = out_ts - ts;
        r->cur_ssrc = ssrc;
        marker = 1;
        s->switches++;
    } else if (((seq - s->last_in_seq) & 0xFFFFu) == 1) {
        unsigned int step = ts - s->last_in_ts;
        if (step > 0 && step <= r->spec.clock_rate * 12u / 100u) /* a packet's duration: <= 120 ms, */
            s->last_step = step; /* as RtpAudioStream._payload_samples (DTX gaps are not durations) */
    }
    update_stats(r, ssrc, seq, ts, plen, now);
    s->last_in_ssrc = ssrc;
    s->last_in_seq = seq;
    s->last_in_ts = ts;
    s->last_rx = now;
    unsigned int out_seq = (seq + r->seq_delta) & 0xFFFFu, out_ts = ts + r->ts_delta;
    if (!r->have_out || (short)(unsigned short)(out_seq - s->last_out_seq) > 0) {
        r->have_out = 1;
        s->last_out_seq = out_seq;
        s->last_out_ts = out_ts;
    }
    if (marker)
        s->marker_seen = 1;

    if (off != 12 && plen > 0)
        memmove(buf + 12, buf + off, (size_t)plen);
    buf[0] = 0x80;
    buf[1] = (unsigned char)((marker ? 0x80 : 0) | (r->spec.out_pt & 0x7F));
    put16(buf + 2, out_seq);
    put32(buf + 4, out_ts);
    put32(buf + 8, r->spec.out_ssrc);
    int out_len = 12 + plen;
    if (r->spec.tx_fn) {
        int n = out_len;
        if (r->spec.tx_fn(r->spec.tx_ctx, buf, &n) != 0 || n < out_len || n > cap) {
            s->send_errors++;
            return -2;
        }
        out_len = n;
    }
    s->packets++;
    s->octets += (unsigned long long)plen;
    return out_len;
}

/* send the relayed datagrams of one input batch (all to the rule's out_fd and dst) */
static void flush(wg_engine *e, wg_rule *r, int n)
{
    int i = 0, retried = 0;
    while (i < n) {
        int k = sendmmsg(r->spec.out_fd, e->smsg + i, (unsigned int)(n - i), MSG_DONTWAIT);
        if (k > 0) {
            i += k;
            retried = 0;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == ECONNREFUSED && !retried) { /* an earlier ICMP error, reported once */
            retried = 1;
            continue;
        }
        r->st.send_errors++; /* this datagram is lost (a full socket buffer drops, as UDP does) */
        i++;
        retried = 0;
    }
}

int wg_drain(wg_engine *e, wg_dgram *out, int out_cap, unsigned char *data, int data_cap,
             wg_drain_counts *counts)
{
    struct epoll_event ev[MAX_EVENTS];
    wg_drain_counts dummy = {0, 0, 0, 0};
    if (!e || !out || !data)
        return 0;
    if (!counts)
        counts = &dummy;
    counts->wakeups++;
    int nev = epoll_wait(e->epfd, ev, MAX_EVENTS, 0);
    if (nev < 0)
        return errno == EINTR ? 0 : -1;
    int nout = 0, used = 0;
    double now = wg_monotonic();
    for (int j = 0; j < nev; j++) {
        int fd = ev[j].data.fd;
        if (fd < 0 || fd >= e->nfds || !e->registered[fd])
            continue;
        int budget = WG_MAX_PER_SOCKET;
        while (budget > 0) {
            /* reserve room for every datagram of the batch before reading it */
            int k = budget, room = (data_cap - used) / WG_RECV_SIZE;
            if (k > out_cap - nout)
                k = out_cap - nout;
            if (k > room)
                k = room;
            if (k <= 0)
                return nout;
            for (int i = 0; i < k; i++) {
                e->riov[i].iov_base = e->bufs + (size_t)i * SLOT;
                e->riov[i].iov_len = WG_RECV_SIZE;
                memset(&e->rmsg[i].msg_hdr, 0, sizeof(e->rmsg[i].msg_hdr));
                e->rmsg[i].msg_hdr.msg_iov = &e->riov[i];
                e->rmsg[i].msg_hdr.msg_iovlen = 1;
                e->rmsg[i].msg_hdr.msg_name = &e->raddr[i];
                e->rmsg[i].msg_hdr.msg_namelen = sizeof(e->raddr[i]);
            }
            int n = recvmmsg(fd, e->rmsg, (unsigned int)k, MSG_DONTWAIT, NULL);
            if (n < 0) {
                if (errno == EINTR || errno == ECONNREFUSED) /* ECONNREFUSED: an earlier send's ICMP */
                    continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                    counts->errors++;
                break;
            }
            if (n == 0)
                break;
            budget -= n;
            counts->datagrams += (unsigned long long)n;
            wg_rule *r = rule_of(e, fd);
            int nsend = 0;
            for (int i = 0; i < n; i++) {
                unsigned char *b = e->bufs + (size_t)i * SLOT;
                int len = (int)e->rmsg[i].msg_len, alen = (int)e->rmsg[i].msg_hdr.msg_namelen;
                if (len > WG_RECV_SIZE)
                    len = WG_RECV_SIZE;
                if (alen > 28)
                    alen = 28;
                int res = -1;
                if (r && !(e->rmsg[i].msg_hdr.msg_flags & MSG_TRUNC))
                    res = wg_relay_packet(e, fd, (const unsigned char *)&e->raddr[i], alen, b, len, SLOT, now);
                if (res >= 0) {
                    e->siov[nsend].iov_base = b;
                    e->siov[nsend].iov_len = (size_t)res;
                    memset(&e->smsg[nsend].msg_hdr, 0, sizeof(e->smsg[nsend].msg_hdr));
                    e->smsg[nsend].msg_hdr.msg_iov = &e->siov[nsend];
                    e->smsg[nsend].msg_hdr.msg_iovlen = 1;
                    e->smsg[nsend].msg_hdr.msg_name = r->spec.dst;
                    e->smsg[nsend].msg_hdr.msg_namelen = (socklen_t)r->spec.dst_len;
                    nsend++;
                } else if (res == -1) {
                    wg_dgram *d = &out[nout++];
                    d->fd = fd;
                    d->len = len;
                    d->offset = used;
                    d->addr_len = alen;
                    memset(d->addr, 0, sizeof(d->addr));
                    memcpy(d->addr, &e->raddr[i], (size_t)alen);
                    memcpy(data + used, b, (size_t)len);
                    used += len;
                }
            }
            if (nsend) {
                counts->relayed += (unsigned long long)nsend;
                flush(e, r, nsend);
            }
            if (n < k)
                break; /* drained */
        }
    }
    return nout;
}
