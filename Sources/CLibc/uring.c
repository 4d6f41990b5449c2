// The spool's syncs through io_uring (cl_uring.h).
#define _GNU_SOURCE
#include "clibc.h"

#include <linux/io_uring.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>

struct cl_uring {
    int ring_fd;
    int event_fd;
    /* The submission ring (head, tail, mask, index array), the entries, and the
       completion ring, as the kernel mapped them (one mapping for both rings
       with IORING_FEAT_SINGLE_MMAP, Linux 5.4). */
    void *sq_map;
    size_t sq_map_len;
    void *cq_map;
    size_t cq_map_len;
    struct io_uring_sqe *sqes;
    size_t sqes_len;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned sq_entries;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_cqe *cqes;
    /* Queued in the submission ring and not yet taken by the kernel. */
    unsigned unsubmitted;
    /* Submitted and not yet completed. */
    unsigned inflight;
};

static int ring_enter(int fd, unsigned submit, unsigned min_complete, unsigned flags) {
    return (int)syscall(__NR_io_uring_enter, fd, submit, min_complete, flags, NULL, 0);
}

cl_uring *cl_uring_open(unsigned entries) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (fd < 0) return NULL;
    cl_uring *r = calloc(1, sizeof *r);
    if (!r) { close(fd); errno = ENOMEM; return NULL; }
    r->ring_fd = fd;
    r->event_fd = -1;
    r->sq_map = r->cq_map = MAP_FAILED;
    r->sqes = MAP_FAILED;

    r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single && r->cq_map_len > r->sq_map_len) r->sq_map_len = r->cq_map_len;
    r->sq_map = mmap(NULL, r->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED) goto fail;
    if (single) {
        r->cq_map = r->sq_map;
    } else {
        r->cq_map = mmap(NULL, r->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
        if (r->cq_map == MAP_FAILED) goto fail;
    }
    r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) goto fail;

    char *sq = r->sq_map, *cq = r->cq_map;
    r->sq_head = (unsigned *)(sq + p.sq_off.head);
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->sq_entries = p.sq_entries;
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);

    r->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->event_fd < 0) goto fail;
    if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_EVENTFD, &r->event_fd, 1) < 0) goto fail;
    return r;
fail:;
    int saved = errno;
    cl_uring_close(r);
    errno = saved;
    return NULL;
}

int cl_uring_event_fd(const cl_uring *r) { return r->event_fd; }

/* Hands the queued entries to the kernel; 0 once it took them all, -1 with errno. */
static int submit(cl_uring *r) {
    while (r->unsubmitted > 0) {
        int n = ring_enter(r->ring_fd, r->unsubmitted, 0, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) { errno = EAGAIN; return -1; }
        if ((unsigned)n > r->unsubmitted) n = (int)r->unsubmitted;
        r->unsubmitted -= (unsigned)n;
        r->inflight += (unsigned)n;
    }
    return 0;
}

/* Room for `count` more entries: in the submission queue, and in the completion
   queue (twice the submission queue) for everything outstanding. */
static int has_room(const cl_uring *r, unsigned count) {
    /* The kernel advances the head as it takes entries; ours is the tail. */
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    unsigned tail = *r->sq_tail;
    return r->sq_entries - (tail - head) >= count && r->inflight + r->unsubmitted + count <= r->sq_entries;
}

/* The next entry to fill, `i` places after the tail, zeroed and tagged. */
static struct io_uring_sqe *entry(cl_uring *r, unsigned i, uint64_t tag) {
    unsigned slot = (*r->sq_tail + i) & *r->sq_mask;
    struct io_uring_sqe *e = &r->sqes[slot];
    memset(e, 0, sizeof *e);
    e->user_data = tag;
    r->sq_array[slot] = slot;
    return e;
}

/* Publishes the `count` entries filled after the tail and submits them: 0 when
   the kernel took at least one (the rest go with the next submit), -1 with
   errno when it took none (they are taken back). */
static int publish(cl_uring *r, unsigned count) {
    unsigned tail = *r->sq_tail;
    __atomic_store_n(r->sq_tail, tail + count, __ATOMIC_RELEASE);
    unsigned before = r->unsubmitted;
    r->unsubmitted += count;
    if (submit(r) == 0) return 0;
    if (r->unsubmitted == before + count) {
        /* The kernel took none of them (it takes entries only inside
           io_uring_enter): take them back, and the caller does it another way. */
        int saved = errno;
        __atomic_store_n(r->sq_tail, tail, __ATOMIC_RELEASE);
        r->unsubmitted = before;
        errno = saved;
        return -1;
    }
    /* Some were taken: the rest go with the next submit (cl_uring_next). */
    return 0;
}

int cl_uring_sync(cl_uring *r, const int *files, int n, int directory_fd, uint64_t tag) {
    if (n < 0 || (n > 0 && !files)) { errno = EINVAL; return -1; }
    unsigned count = (unsigned)n + (directory_fd >= 0 ? 1u : 0u);
    if (count == 0) { errno = EINVAL; return -1; }
    if (!has_room(r, count)) { errno = EAGAIN; return -1; }
    for (unsigned i = 0; i < count; i++) {
        struct io_uring_sqe *e = entry(r, i, tag);
        e->opcode = IORING_OP_FSYNC;
        if (i < (unsigned)n) {
            e->fd = files[i];
            e->fsync_flags = IORING_FSYNC_DATASYNC;
        } else {
            e->fd = directory_fd;
        }
    }
    return publish(r, count);
}

int cl_uring_unlink(cl_uring *r, const char *path, uint64_t tag) {
    if (!path) { errno = EINVAL; return -1; }
    if (!has_room(r, 1)) { errno = EAGAIN; return -1; }
    struct io_uring_sqe *e = entry(r, 0, tag);
    e->opcode = IORING_OP_UNLINKAT;
    e->fd = AT_FDCWD;
    e->addr = (uint64_t)(uintptr_t)path;
    /* unlink_flags 0: a file, not a directory (AT_REMOVEDIR). The kernel copies
       the name while it takes the entry, inside publish's io_uring_enter. */
    return publish(r, 1);
}

int cl_uring_next(cl_uring *r, int wait, uint64_t *tag, int32_t *result) {
    if (r->unsubmitted > 0) (void)submit(r);
    for (;;) {
        unsigned head = *r->cq_head;
        unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
        if (head != tail) {
            struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
            *tag = c->user_data;
            *result = c->res;
            __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
            if (r->inflight > 0) r->inflight--;
            return 1;
        }
        if (!wait || r->inflight == 0) return 0;
        if (ring_enter(r->ring_fd, 0, 1, IORING_ENTER_GETEVENTS) < 0 && errno != EINTR) return 0;
    }
}

void cl_uring_clear(cl_uring *r) {
    uint64_t value;
    while (read(r->event_fd, &value, sizeof value) < 0 && errno == EINTR) {}
}

void cl_uring_close(cl_uring *r) {
    if (!r) return;
    if (r->sqes != MAP_FAILED) munmap(r->sqes, r->sqes_len);
    if (r->cq_map != MAP_FAILED && r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_map_len);
    if (r->sq_map != MAP_FAILED) munmap(r->sq_map, r->sq_map_len);
    if (r->event_fd >= 0) close(r->event_fd);
    close(r->ring_fd);
    free(r);
}
