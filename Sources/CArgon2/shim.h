// libargon2 (reference implementation): argon2id encoded hash and verify.
#include <argon2.h>
