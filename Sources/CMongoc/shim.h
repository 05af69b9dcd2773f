// libmongoc + libbson. bson_t imports as an opaque pointer (128-byte alignment), so
// documents are always heap-allocated with bson_new*/bson_destroy and never on the stack.
#include <mongoc/mongoc.h>

// bson_error_t.message is a fixed C array that imports as a tuple; copy it out here.
static inline const char *swiftchat_bson_error_message(const bson_error_t *error) {
    return error->message;
}
