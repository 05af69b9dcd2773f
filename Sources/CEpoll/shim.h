// epoll and eventfd for Swift: struct epoll_event is packed on x86-64, so it never crosses
// into Swift; these take and return the 64-bit tag (and the event bits) only. Used by the
// FastCGI server's readiness loop (ChatCore/FastCGI) and the bench's WebSocket clients.
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
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
