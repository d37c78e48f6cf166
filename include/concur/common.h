/*
 * concur/common.h - conventions shared by every concur header.
 *
 * Return values: every function that can fail returns an int that is 0 on success or a
 * negative error code (see concur/error.h). Functions returning a count return a negative
 * code on failure and the count otherwise.
 *
 * Time: durations are seconds as double. In an options struct, a timeout of 0 (or less)
 * means "no timeout". In a call that waits, timeout 0 means "do not block" and a negative
 * timeout means "wait forever" (CONCUR_FOREVER).
 *
 * Ownership: objects are opaque handles. Objects created by *_create are released by the
 * matching *_destroy, which accepts NULL. Futures are reference counted
 * (concur_future_retain / concur_future_release).
 */
#ifndef CONCUR_COMMON_H
#define CONCUR_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define CONCUR_API __attribute__((visibility("default")))
#define CONCUR_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CONCUR_API
#define CONCUR_PRINTF(f, a)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Pass as a wait timeout to wait without limit. */
#define CONCUR_FOREVER (-1.0)

/** Number of online CPUs (at least 1). Thread-safe. */
CONCUR_API int concur_cpu_count(void);

#ifdef __cplusplus
}
#endif
#endif
