// libargon2 (reference implementation): argon2id encoded hash and verify.
#include <argon2.h>

// argon2id allocates its whole memory cost (19 MiB by default) per hash with malloc. With
// glibc's dynamic mmap threshold those blocks end up in per-thread arenas that are never
// given back; a fixed threshold keeps them mmapped, so each hash returns its memory.
#include <malloc.h>
static inline void swiftchat_fix_mmap_threshold(int bytes) { mallopt(M_MMAP_THRESHOLD, bytes); }
