// epoll and eventfd for Swift: struct epoll_event is packed on x86-64, so it never crosses
// into Swift; these take and return the 64-bit tag (and the event bits) only. Used by the
// FastCGI server's readiness loop (ChatCore/FastCGI) and the bench's WebSocket clients,
// which also read through recvmsg here (its control messages are C macros Swift cannot use).
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline int swiftchat_epoll_arm(int epfd, int op, int fd, uint64_t tag, int oneshot) {
    struct epoll_event ev;
    ev.events = EPOLLIN | (oneshot ? EPOLLONESHOT : 0);
    ev.data.u64 = tag;
    return epoll_ctl(epfd, op, fd, &ev);
}

static inline int swiftchat_epoll_wait_one(int epfd, uint64_t *tag, int timeout_ms) {
    struct epoll_event ev;
    int n = epoll_wait(epfd, &ev, 1, timeout_ms);
    if (n == 1) *tag = ev.data.u64;
    return n;
}

// The shutdown wake-up: an eventfd that stays readable once written.
static inline int swiftchat_eventfd(void) {
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

static inline int swiftchat_eventfd_signal(int fd) {
    uint64_t one = 1;
    return (int)write(fd, &one, sizeof one);
}

// Several events at once (the bench's WebSocket clients): the tag of each.
static inline int swiftchat_epoll_wait_many(int epfd, uint64_t *tags, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) tags[i] = evs[i].data.u64;
    return n;
}

// read(2) on a socket with SO_TIMESTAMPNS set (the bench's WebSocket clients), giving the
// kernel's receive time of the newest segment read (CLOCK_REALTIME ns) in *stamp_ns, or 0
// when the kernel gave none. That is when the bytes reached the client's socket, however
// late the client process got to read them.
static inline long swiftchat_read_stamped(int fd, void *buf, unsigned long len, int64_t *stamp_ns) {
    union { char buf[CMSG_SPACE(sizeof(struct timespec))]; struct cmsghdr align; } control;
    struct iovec iov = { buf, len };
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    long n = (long)recvmsg(fd, &msg, 0);
    *stamp_ns = 0;
    if (n > 0) {
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof ts);
                *stamp_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
            }
        }
    }
    return n;
}

static inline int swiftchat_enable_rx_timestamps(int fd) {
    int one = 1;
    return setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
}
