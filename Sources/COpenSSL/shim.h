// OpenSSL libcrypto: random bytes, SHA-256, HMAC-SHA256, constant-time compare.
#include <openssl/rand.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
