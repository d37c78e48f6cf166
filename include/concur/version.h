/*
 * concur/version.h - the version of the concur headers, and of the library at run time.
 *
 * The macros give the version of the headers a program was compiled with; the functions
 * give the version of the library it runs with (a shared library may have been updated
 * since). Versions follow semantic versioning: a program built against MAJOR.MINOR runs with
 * any library MAJOR.MINOR2 where MINOR2 >= MINOR (while MAJOR is 0, minor releases may
 * change the API; the CHANGELOG says how).
 *
 * This header is the one place the version is written: the build reads it from here.
 */
#ifndef CONCUR_VERSION_H
#define CONCUR_VERSION_H

#include "concur/common.h"

#define CONCUR_VERSION_MAJOR 0
#define CONCUR_VERSION_MINOR 1
#define CONCUR_VERSION_PATCH 0

/** The version as one number, MAJOR * 10000 + MINOR * 100 + PATCH, for preprocessor tests. */
#define CONCUR_VERSION_NUMBER                                                              \
    (CONCUR_VERSION_MAJOR * 10000 + CONCUR_VERSION_MINOR * 100 + CONCUR_VERSION_PATCH)

#define CONCUR_VERSION_STR_(x) #x
#define CONCUR_VERSION_STR(x) CONCUR_VERSION_STR_(x)
/** The version as a string, "MAJOR.MINOR.PATCH". */
#define CONCUR_VERSION_STRING                                                              \
    CONCUR_VERSION_STR(CONCUR_VERSION_MAJOR)                                               \
    "." CONCUR_VERSION_STR(CONCUR_VERSION_MINOR) "." CONCUR_VERSION_STR(CONCUR_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/** The running library's version as a string ("0.1.0"). Static storage. Thread-safe. */
CONCUR_API const char *concur_version(void);

/** The running library's version as CONCUR_VERSION_NUMBER computes it. Thread-safe. */
CONCUR_API int concur_version_number(void);

#ifdef __cplusplus
}
#endif
#endif
