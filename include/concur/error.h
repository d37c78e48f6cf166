/*
 * concur/error.h - error codes.
 *
 * Every concur call that can fail returns 0 or a negative code. Codes that have an errno
 * equivalent are the negated errno value (CONCUR_EINVAL == -EINVAL), so a task function may
 * return -errno directly. Codes specific to concur lie below CONCUR_ERRNO_MAX.
 * concur_strerror() and concur_err_name() accept any negative code, including plain -errno
 * values that have no CONCUR_ name.
 */
#ifndef CONCUR_ERROR_H
#define CONCUR_ERROR_H

#include <errno.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, message) */
#define CONCUR_ERRNO_MAP(X)                                                              \
    X(EINVAL, -EINVAL, "invalid argument")                                                \
    X(ENOMEM, -ENOMEM, "out of memory")                                                   \
    X(EAGAIN, -EAGAIN, "not ready yet")                                                   \
    X(EBUSY, -EBUSY, "busy: the pool is being joined")                                    \
    X(EDEADLK, -EDEADLK, "the call would deadlock (made from the pool's own worker)")     \
    X(ETIMEDOUT, -ETIMEDOUT, "the wait timed out (the task is still going)")              \
    X(ECANCELED, -ECANCELED, "the task was cancelled")                                    \
    X(ENOENT, -ENOENT, "no such file or directory")                                       \
    X(EACCES, -EACCES, "permission denied")                                               \
    X(EPIPE, -EPIPE, "broken pipe")                                                       \
    X(ENOSPC, -ENOSPC, "no space left on device")                                         \
    X(EIO, -EIO, "input/output error")                                                    \
    X(EINTR, -EINTR, "interrupted")                                                       \
    X(ENOTSUP, -ENOTSUP, "not supported by this pool's engine")                           \
    X(ECLOSED, -10001, "the pool is shut down")                                           \
    X(EBROKEN, -10002, "the pool is broken")                                              \
    X(EINITIALIZER, -10003, "the pool is broken: a worker initializer failed")            \
    X(EFINALIZER, -10004, "the pool is broken: a worker finalizer failed")                \
    X(EFULL, -10005, "the pool's queue is full")                                          \
    X(ETASKTIMEOUT, -10006, "the task ran past its timeout")                              \
    X(ESTATE, -10007, "the future is already done")                                       \
    X(ETASK, -10008, "the task failed")                                                   \
    X(ECRASHED, -10009, "the worker running the task died")                                \
    X(ENOTLOADED, -10010,                                                                 \
      "the function is not in code the worker processes have (loaded after the pool?)")   \
    X(ESIZE, -10011, "the bytes are not the size of the value asked for")

enum concur_errno {
#define CONCUR_ERR_ENUM_(name, value, msg) CONCUR_##name = (value),
    CONCUR_ERRNO_MAP(CONCUR_ERR_ENUM_)
#undef CONCUR_ERR_ENUM_
    CONCUR_ERRNO_MAX = -10000
};

/**
 * A static, human-readable message for @p code. Never NULL: unknown codes give
 * "unknown error", plain -errno values give strerror's text. Thread-safe.
 */
CONCUR_API const char *concur_strerror(int code);

/**
 * The symbolic name of @p code ("EINVAL", "ECLOSED", ...), or "UNKNOWN". Thread-safe.
 */
CONCUR_API const char *concur_err_name(int code);

#ifdef __cplusplus
}
#endif
#endif
