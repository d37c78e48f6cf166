/*
 * sys/code.h - addresses of code and static data that mean the same in another process of
 * the same program whose address layout differs (an MPI rank: its own ASLR, its own order
 * of loading). An address travels as (module, offset): the module is a hash of the loaded
 * object's name (the main executable: the empty name, as the dynamic loader reports it) and
 * the offset is from that object's load address. The receiving process finds the object of
 * that name among its own and adds its own load address.
 *
 * Both ends must run the same files: a module of the same name built differently gives a
 * wrong address, which nothing here can tell. The address must fall inside a loadable
 * segment of the object (an executable one for code), on both ends.
 */
#ifndef CONCUR_SYS_CODE_H
#define CONCUR_SYS_CODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct concur__code_ref {
    uint64_t module; /* hash of the object's name; 0 is never used: NULL travels as {0, 0} */
    uint64_t offset;
} concur__code_ref;

/* The reference of @addr in this process: 0, or CONCUR_ENOTLOADED when it lies in no
 * loaded object's segments (the heap, a stack, a mapping of its own); with @exec the segment
 * must be executable. NULL gives {0, 0} and 0. Thread-safe. */
int concur__code_ref_of(const void *addr, bool exec, concur__code_ref *ref);

/* The address @ref names in this process, or NULL when no loaded object has that name or
 * the offset falls outside its segments (executable ones with @exec). {0, 0} gives NULL.
 * Thread-safe. */
void *concur__code_addr(const concur__code_ref *ref, bool exec);

/* A function that travels inside a task's input (the map family's per-item function, a
 * runner function task's): as its pointer for workers that share this address layout, as a
 * reference (*ptr NULL) for those that do not (@remote: concur__pool_remote_code). */
static inline void concur__code_pack(const void *fn, bool remote, const void **ptr,
                                     concur__code_ref *ref)
{
    *ref = (concur__code_ref){0, 0};
    *ptr = fn;
    if (remote && concur__code_ref_of(fn, true, ref) == 0)
        *ptr = NULL;
}

/* Where the task runs: the function packed as @ptr / @ref, or NULL (not loaded here). */
static inline void *concur__code_unpack(const void *ptr, const concur__code_ref *ref)
{
    return ptr ? (void *)(uintptr_t)ptr : concur__code_addr(ref, true);
}

#endif
