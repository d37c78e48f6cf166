/*
 * loop.c - the event loop: one epoll set, a wake-up eventfd, one-shot timers.
 *
 * What flows through it: fds registered with a 64-bit tag come back as events with that tag
 * when they are ready; concur__loop_wake (any thread, or a signal handler) makes the wait
 * return with a CONCUR__LOOP_WAKE event; timers armed with a tag come back as events with
 * events 0 once due. The wait's timeout is the nearest timer's deadline. A loop may also
 * have a ring (sys/ring.c): while its reads or writes are in flight it waits there.
 *
 * Timers live in a pairing heap of nodes embedded in their owners: arming and cancelling
 * never allocate (so they cannot fail), insertion is O(1), taking the earliest and
 * cancelling are O(log n) amortised. Ties are broken by arming order, so timers with one
 * deadline fire in the order they were armed.
 *
 * Invariants: the root has no prev and no next; within a heap every node is due no earlier
 * than its parent; an armed timer is in exactly one heap, a disarmed one in none, with its
 * links NULL. Only the loop's thread touches the heap.
 */
#include "sys/os.h"

#include <errno.h>
#include <limits.h>
#include <sys/epoll.h>
#include <time.h>

enum { WAIT_BATCH = 64 }; /* epoll events taken per wait at most */

/* ---------------------------------------------------------------- the timer heap */

static bool before(const concur__timer *a, const concur__timer *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

/* Joins two detached heaps (roots with no prev and next): the later root becomes the
 * first child of the earlier. */
static concur__timer *meld(concur__timer *a, concur__timer *b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    if (before(b, a)) {
        concur__timer *t = a;
        a = b;
        b = t;
    }
    b->prev = a;
    b->next = a->child;
    if (a->child)
        a->child->prev = b;
    a->child = b;
    return a;
}

/* One heap from a list of sibling heaps: meld them in pairs left to right, then the pairs
 * right to left (the two passes that give the pairing heap its bounds). */
static concur__timer *merge_pairs(concur__timer *first)
{
    concur__timer *pairs = NULL; /* melded pairs, last first, linked by next */
    while (first) {
        concur__timer *a = first, *b = a->next;
        first = b ? b->next : NULL;
        a->next = a->prev = NULL;
        if (b)
            b->next = b->prev = NULL;
        concur__timer *m = meld(a, b);
        m->next = pairs;
        pairs = m;
    }
    concur__timer *root = NULL;
    while (pairs) {
        concur__timer *n = pairs->next;
        pairs->next = NULL;
        root = meld(root, pairs);
        pairs = n;
    }
    return root;
}

static void detach(concur__timer *t)
{
    t->child = t->next = t->prev = NULL;
    t->armed = false;
}

void concur__timer_cancel(concur__loop *l, concur__timer *t)
{
    if (!t->armed)
        return;
    if (t == l->root) {
        l->root = merge_pairs(t->child);
    } else {
        /* Out of its sibling list: prev is its parent when it is the first child. */
        if (t->prev->child == t)
            t->prev->child = t->next;
        else
            t->prev->next = t->next;
        if (t->next)
            t->next->prev = t->prev;
        l->root = meld(l->root, merge_pairs(t->child));
    }
    detach(t);
}

void concur__timer_arm(concur__loop *l, concur__timer *t, uint64_t when, uint64_t tag)
{
    concur__timer_cancel(l, t);
    t->when = when;
    t->seq = l->seq++;
    t->tag = tag;
    t->armed = true;
    l->root = meld(l->root, t);
}

uint64_t concur__loop_next(const concur__loop *l)
{
    return l->root ? l->root->when : UINT64_MAX;
}

/* ---------------------------------------------------------------- the loop */

int concur__loop_init(concur__loop *l)
{
    *l = CONCUR__LOOP_NONE;
    int rc = 0;
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (l->ep < 0)
        rc = -errno;
    else if ((l->wake = concur__eventfd()) < 0)
        rc = l->wake;
    else
        rc = concur__loop_add(l, l->wake, EPOLLIN, CONCUR__LOOP_WAKE);
    if (rc)
        concur__loop_fini(l);
    return rc;
}

void concur__loop_fini(concur__loop *l)
{
    while (l->root)
        concur__timer_cancel(l, l->root);
    concur__ring_free(l->ring);
    l->ring = NULL;
    concur__close(&l->wake);
    concur__close(&l->ep);
}

static int ctl(concur__loop *l, int op, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    return epoll_ctl(l->ep, op, fd, &ev) == 0 ? 0 : -errno;
}

int concur__loop_add(concur__loop *l, int fd, uint32_t events, uint64_t tag)
{
    return ctl(l, EPOLL_CTL_ADD, fd, events, tag);
}

int concur__loop_mod(concur__loop *l, int fd, uint32_t events, uint64_t tag)
{
    return ctl(l, EPOLL_CTL_MOD, fd, events, tag);
}

int concur__loop_del(concur__loop *l, int fd)
{
    return ctl(l, EPOLL_CTL_DEL, fd, 0, 0);
}

void concur__loop_close(concur__loop *l, int *fd)
{
    if (*fd >= 0)
        (void)concur__loop_del(l, *fd); /* ENOENT: it was never added, or closed before */
    concur__close(fd);
}

int concur__loop_wake(concur__loop *l)
{
    return concur__event_post(l->wake);
}

/* The epoll timeout (ms, rounded up so that the nearest timer is due on return). */
static int timeout_ms(const concur__loop *l, bool poll)
{
    if (poll || !l->root)
        return poll ? 0 : -1;
    uint64_t now = concur__mono_ns(), next = l->root->when;
    if (next <= now)
        return 0;
    uint64_t ms = (next - now + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

_Thread_local int (*concur__loop_park)(int fd, int timeout_ms);

int concur__loop_wait(concur__loop *l, concur__event *ev, int max, bool poll)
{
    struct epoll_event eb[WAIT_BATCH];
    if (max < 1)
        return -EINVAL;
    int ms = timeout_ms(l, poll), k = 0;
    bool look = true; /* at the epoll set */
    if (concur__ring_busy(l->ring)) {
        /* Reads or writes in flight: wait in the ring, which watches the set too. */
        k = concur__ring_wait(l->ring, l->ep, ms, ev, max, &look);
        if (k < 0)
            return k;
        ms = 0;
    } else if (ms != 0 && concur__loop_park && !l->parked_rc) {
        int rc = concur__loop_park(l->ep, ms);
        if (rc <= 0) /* ready, the time passed, or interrupted: look without blocking */
            ms = 0;
        if (rc < 0)
            l->parked_rc = rc;
    }
    if (look && k < max) {
        int room = max - k < WAIT_BATCH ? max - k : WAIT_BATCH;
        int n = epoll_wait(l->ep, eb, room, ms);
        if (n < 0) {
            if (errno != EINTR)
                return -errno;
            n = 0;
        }
        for (int i = 0; i < n; i++) {
            if (eb[i].data.u64 == CONCUR__LOOP_WAKE)
                concur__event_drain(l->wake);
            ev[k++] = (concur__event){eb[i].data.u64, eb[i].events, 0};
        }
    }
    uint64_t now = l->root ? concur__mono_ns() : 0;
    while (k < max && l->root && l->root->when <= now) {
        concur__timer *t = l->root;
        l->root = merge_pairs(t->child);
        detach(t);
        ev[k++] = (concur__event){t->tag, 0, 0};
    }
    return k;
}
