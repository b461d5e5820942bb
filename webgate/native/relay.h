/* webgate native relay: the per-packet work of relayed RTP streams (see relay.c).
 * Python side: webgate/adapters/native_reader.py. Everything here runs on one thread. */
#ifndef WEBGATE_RELAY_H
#define WEBGATE_RELAY_H

/* libsrtp 2.x srtp_protect / srtp_unprotect (pylibsrtp's static copy: aiortc's sessions) */
typedef int (*wg_srtp_fn)(void *ctx, void *buf, int *len);
typedef struct wg_engine wg_engine;

/* One rule per input socket: what it relays and where to. */
typedef struct {
    int in_fd;                                  /* the socket the relayed packets arrive on */
    unsigned char src[28]; int src_len;         /* the only accepted source (sockaddr_in/_in6 bytes) */
    int in_pt;                                  /* the payload type relayed; others go to Python */
    void *rx_ctx; wg_srtp_fn rx_fn;             /* NULL: plain RTP in; else SRTP, unprotected in place */
    int out_pt;
    unsigned int out_ssrc;
    unsigned int next_seq; unsigned int next_ts; /* what the first relayed packet gets */
    unsigned int clock_rate;                    /* of the input: jitter, last_step's bound */
    int out_fd; unsigned char dst[28]; int dst_len;
    void *tx_ctx; wg_srtp_fn tx_fn;             /* NULL: plain RTP out; else SRTP-protected in place */
} wg_rule_spec;

/* A rule's counters (reset by wg_rule_set). packets/octets: relayed (payload octets); srtp_errors:
 * unprotect failures (auth, replay); send_errors: protect or send failures (the packet is lost);
 * dropped: bad padding found after unprotecting. last_step: the input's timestamp step between
 * consecutive sequence numbers (0 < step <= 120 ms of clock_rate, as RtpAudioStream._payload_samples; 0 = unknown). last_out_*: the newest output
 * (a reordered packet does not move them back). base_seq .. jitter: webgate/proto/rtp.py RtpStats
 * (bad_seq valid when has_bad_seq). first_rx/last_rx: CLOCK_MONOTONIC s of the first/last relayed
 * packet. switches: input SSRC changes (the output continues: last_out_seq + 1, + last_step). */

typedef struct {
    unsigned long long packets, octets;
    unsigned long long srtp_errors, send_errors, dropped;
    unsigned int last_in_ssrc, last_in_seq, last_in_ts;
    unsigned int last_out_seq, last_out_ts;
    unsigned int last_step;
    int marker_seen;
    unsigned int base_seq, max_seq, cycles, received, bad_seq; int has_bad_seq;
    unsigned long long received_octets;
    double jitter;
    double first_rx, last_rx;
    unsigned long long duplicates_or_late;
    unsigned int switches;
} wg_rule_stats;

/* A datagram for Python: data[offset : offset + len] from addr (sockaddr bytes) on fd. */
typedef struct { int fd; int len; int offset; int addr_len; unsigned char addr[28]; } wg_dgram;
/* wg_drain ADDS to these (cumulative while the caller keeps the struct): calls, datagrams read,
 * datagrams relayed, read errors other than EAGAIN/EINTR/ECONNREFUSED. */
typedef struct { unsigned long long wakeups, datagrams, relayed, errors; } wg_drain_counts;

wg_engine *wg_engine_new(void);
void wg_engine_free(wg_engine *e);
int wg_engine_fd(wg_engine *e);
int wg_add_socket(wg_engine *e, int fd);
int wg_remove_socket(wg_engine *e, int fd);
int wg_rule_set(wg_engine *e, const wg_rule_spec *spec);
int wg_rule_get(wg_engine *e, int in_fd, wg_rule_stats *out);
int wg_rule_clear(wg_engine *e, int in_fd, wg_rule_stats *out);
/* The sans-IO core: >= 0 the length to send (buf rewritten in place); -1 not for the fast path (buf
 * unchanged: Python's); -2 dropped and counted (SRTP failure, bad padding after SRTP, no room for
 * the SRTP trailer: cap must exceed the output by WG_SRTP_TRAILER). */
int wg_relay_packet(wg_engine *e, int in_fd, const unsigned char *src, int src_len,
                    unsigned char *buf, int len, int cap, double now);
/* One wake-up (see relay.c); returns the records written to out, or -1 (errno) on an epoll error. */
int wg_drain(wg_engine *e, wg_dgram *out, int out_cap, unsigned char *data, int data_cap,
             wg_drain_counts *counts);
double wg_monotonic(void);

#define WG_RECV_SIZE 8192
#define WG_MAX_PER_SOCKET 64
#define WG_SRTP_TRAILER 148

#endif
