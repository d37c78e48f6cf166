/*
 * sys/code.c - (module, offset) references to code and static data (sys/code.h), through
 * dl_iterate_phdr: each loaded object's name, load address and loadable segments.
 */
#include "sys/code.h"

#include "core/concur_impl.h"

#include <link.h>

/* FNV-1a, never 0 (0 stands for NULL). */
static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211u;
    }
    return h ? h : 1;
}

/* Whether @addr lies in a loadable segment of the object (executable ones with @exec). */
static bool in_segments(const struct dl_phdr_info *info, uintptr_t addr, bool exec)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || (exec && !(ph->p_flags & PF_X)))
            continue;
        uintptr_t lo = (uintptr_t)info->dlpi_addr + ph->p_vaddr;
        if (addr >= lo && addr - lo < ph->p_memsz)
            return true;
    }
    return false;
}

struct search {
    uintptr_t addr;
    bool exec;
    uint64_t module; /* to_addr: the module looked for */
    bool to_addr;    /* which way: address -> ref, or ref -> address */
    bool found;
    uintptr_t base;
    uint64_t hash;
};

static int visit(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct search *s = arg;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    if (s->to_addr) {
        if (name_hash(name) != s->module)
            return 0;
        uintptr_t a = (uintptr_t)info->dlpi_addr + s->addr;
        s->found = in_segments(info, a, s->exec);
        s->base = (uintptr_t)info->dlpi_addr;
        return 1; /* the first object of that name is the one: names are unique */
    }
    if (!in_segments(info, s->addr, s->exec))
        return 0;
    s->found = true;
    s->base = (uintptr_t)info->dlpi_addr;
    s->hash = name_hash(name);
    return 1;
}

int concur__code_ref_of(const void *addr, bool exec, concur__code_ref *ref)
{
    *ref = (concur__code_ref){0, 0};
    if (!addr)
        return 0;
    struct search s = {.addr = (uintptr_t)addr, .exec = exec};
    (void)dl_iterate_phdr(visit, &s);
    if (!s.found)
        return CONCUR_ENOTLOADED;
    ref->module = s.hash;
    ref->offset = (uint64_t)((uintptr_t)addr - s.base);
    return 0;
}

void *concur__code_addr(const concur__code_ref *ref, bool exec)
{
    if (!ref->module)
        return NULL;
    struct search s = {.addr = (uintptr_t)ref->offset, .exec = exec, .module = ref->module,
                       .to_addr = true};
    (void)dl_iterate_phdr(visit, &s);
    return s.found ? (void *)(s.base + (uintptr_t)ref->offset) : NULL;
}
