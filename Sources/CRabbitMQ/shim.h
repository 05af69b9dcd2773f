// rabbitmq-c. Debian 0.11 ships flat headers; newer releases use <rabbitmq-c/...>.
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#include <rabbitmq-c/framing.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <amqp_framing.h>
#endif
#include <string.h>
#include <sys/time.h>

// amqp_login is variadic: a fixed-arity wrapper for PLAIN authentication. The client
// properties (merged by rabbitmq-c with its own) name the connection for
// `rabbitmqctl list_connections` and ask for consumer cancel notifications: without
// `consumer_cancel_notify` the broker cancels a consumer whose queue was deleted without
// a word, and the consumer waits forever on a queue that no longer exists.
static inline amqp_rpc_reply_t swiftchat_amqp_login_plain(amqp_connection_state_t state, const char *vhost,
                                                           int channel_max, int frame_max, int heartbeat,
                                                           const char *user, const char *password,
                                                           const char *connection_name) {
    amqp_table_entry_t capabilities[1];
    capabilities[0].key = amqp_cstring_bytes("consumer_cancel_notify");
    capabilities[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capabilities[0].value.value.boolean = 1;
    amqp_table_entry_t entries[2];
    entries[0].key = amqp_cstring_bytes("capabilities");
    entries[0].value.kind = AMQP_FIELD_KIND_TABLE;
    entries[0].value.value.table.num_entries = 1;
    entries[0].value.value.table.entries = capabilities;
    entries[1].key = amqp_cstring_bytes("connection_name");
    entries[1].value.kind = AMQP_FIELD_KIND_UTF8;
    entries[1].value.value.bytes = amqp_cstring_bytes(connection_name);
    amqp_table_t properties = { .num_entries = 2, .entries = entries };
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat, &properties,
                                      AMQP_SASL_METHOD_PLAIN, user, password);
}

// Table entries hold a tagged union; these setters keep the union handling in C.
static inline void swiftchat_amqp_entry_string(amqp_table_entry_t *entry, const char *key, const char *value) {
    entry->key = amqp_cstring_bytes(key);
    entry->value.kind = AMQP_FIELD_KIND_UTF8;
    entry->value.value.bytes = amqp_cstring_bytes(value);
}
static inline void swiftchat_amqp_entry_int(amqp_table_entry_t *entry, const char *key, int64_t value) {
    entry->key = amqp_cstring_bytes(key);
    entry->value.kind = AMQP_FIELD_KIND_I64;
    entry->value.value.i64 = value;
}
// An array of strings (such as RabbitMQ's CC header): values[0..<n] set with
// swiftchat_amqp_field_string, owned by the caller for as long as the entry is used.
static inline void swiftchat_amqp_field_string(amqp_field_value_t *value, const char *s) {
    value->kind = AMQP_FIELD_KIND_UTF8;
    value->value.bytes = amqp_cstring_bytes(s);
}
static inline void swiftchat_amqp_entry_array(amqp_table_entry_t *entry, const char *key, amqp_field_value_t *values, int n) {
    entry->key = amqp_cstring_bytes(key);
    entry->value.kind = AMQP_FIELD_KIND_ARRAY;
    entry->value.value.array.num_entries = n;
    entry->value.value.array.entries = values;
}
// The number of elements of an array header, or -1 when absent or not an array.
static inline int swiftchat_amqp_table_array_count(const amqp_table_t *table, const char *key) {
    size_t keylen = strlen(key);
    for (int i = 0; i < table->num_entries; i++) {
        const amqp_table_entry_t *e = &table->entries[i];
        if (e->key.len != keylen || memcmp(e->key.bytes, key, keylen) != 0) continue;
        return e->value.kind == AMQP_FIELD_KIND_ARRAY ? e->value.value.array.num_entries : -1;
    }
    return -1;
}
// Element `index` of an array header when it is a string: its length, with *out pointed
// at its bytes (the message's, living as long as it does); -1 otherwise.
static inline long swiftchat_amqp_table_array_string(const amqp_table_t *table, const char *key, int index, const void **out) {
    size_t keylen = strlen(key);
    for (int i = 0; i < table->num_entries; i++) {
        const amqp_table_entry_t *e = &table->entries[i];
        if (e->key.len != keylen || memcmp(e->key.bytes, key, keylen) != 0) continue;
        if (e->value.kind != AMQP_FIELD_KIND_ARRAY || index < 0 || index >= e->value.value.array.num_entries) return -1;
        const amqp_field_value_t *v = &e->value.value.array.entries[index];
        if (v->kind != AMQP_FIELD_KIND_UTF8 && v->kind != AMQP_FIELD_KIND_BYTES) return -1;
        *out = v->value.bytes.bytes;
        return (long)v->value.bytes.len;
    }
    return -1;
}
// Reads an integer header of any integer kind; returns 1 when found.
static inline int swiftchat_amqp_table_get_int(const amqp_table_t *table, const char *key, int64_t *out) {
    size_t keylen = strlen(key);
    for (int i = 0; i < table->num_entries; i++) {
        const amqp_table_entry_t *e = &table->entries[i];
        if (e->key.len != keylen || memcmp(e->key.bytes, key, keylen) != 0) continue;
        switch (e->value.kind) {
        case AMQP_FIELD_KIND_I8: *out = e->value.value.i8; return 1;
        case AMQP_FIELD_KIND_U8: *out = e->value.value.u8; return 1;
        case AMQP_FIELD_KIND_I16: *out = e->value.value.i16; return 1;
        case AMQP_FIELD_KIND_U16: *out = e->value.value.u16; return 1;
        case AMQP_FIELD_KIND_I32: *out = e->value.value.i32; return 1;
        case AMQP_FIELD_KIND_U32: *out = e->value.value.u32; return 1;
        case AMQP_FIELD_KIND_I64: *out = e->value.value.i64; return 1;
        case AMQP_FIELD_KIND_U64: *out = (int64_t)e->value.value.u64; return 1;
        default: return 0;
        }
    }
    return 0;
}
// The method of a frame and of an RPC reply live in unions too.
static inline amqp_method_number_t swiftchat_amqp_frame_method_id(const amqp_frame_t *frame) {
    return frame->payload.method.id;
}
static inline void *swiftchat_amqp_frame_method_decoded(const amqp_frame_t *frame) {
    return frame->payload.method.decoded;
}
static inline int swiftchat_amqp_frame_is_method(const amqp_frame_t *frame) {
    return frame->frame_type == AMQP_FRAME_METHOD;
}
static inline int swiftchat_amqp_frame_is_header(const amqp_frame_t *frame) {
    return frame->frame_type == AMQP_FRAME_HEADER;
}
static inline uint64_t swiftchat_amqp_frame_body_size(const amqp_frame_t *frame) {
    return frame->payload.properties.body_size;
}
static inline size_t swiftchat_amqp_frame_body_fragment_len(const amqp_frame_t *frame) {
    return frame->payload.body_fragment.len;
}

// The method-number macros are casts, which Swift does not import: constants instead.
static const amqp_method_number_t swiftchat_amqp_connection_close = AMQP_CONNECTION_CLOSE_METHOD;
static const amqp_method_number_t swiftchat_amqp_channel_close = AMQP_CHANNEL_CLOSE_METHOD;
static const amqp_method_number_t swiftchat_amqp_basic_ack = AMQP_BASIC_ACK_METHOD;
static const amqp_method_number_t swiftchat_amqp_basic_nack = AMQP_BASIC_NACK_METHOD;
static const amqp_method_number_t swiftchat_amqp_basic_return = AMQP_BASIC_RETURN_METHOD;
static const amqp_method_number_t swiftchat_amqp_basic_cancel = AMQP_BASIC_CANCEL_METHOD;

// Copies the reply code and text of a server exception (channel.close or
// connection.close) into buf; returns the code, or 0 when the reply holds neither.
static inline int swiftchat_amqp_server_error(amqp_rpc_reply_t r, char *buf, size_t buflen) {
    amqp_bytes_t text = {0, NULL};
    int code = 0;
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD && r.reply.decoded) {
        amqp_channel_close_t *m = (amqp_channel_close_t *)r.reply.decoded;
        code = m->reply_code; text = m->reply_text;
    } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD && r.reply.decoded) {
        amqp_connection_close_t *m = (amqp_connection_close_t *)r.reply.decoded;
        code = m->reply_code; text = m->reply_text;
    }
    size_t n = text.len < buflen - 1 ? text.len : buflen - 1;
    if (n > 0) memcpy(buf, text.bytes, n);
    buf[n] = 0;
    return code;
}

// Confirms: the delivery tag and the multiple flag of a basic.ack / basic.nack frame.
static inline uint64_t swiftchat_amqp_confirm_tag(const amqp_frame_t *frame, int *multiple) {
    if (frame->payload.method.id == AMQP_BASIC_ACK_METHOD) {
        amqp_basic_ack_t *m = (amqp_basic_ack_t *)frame->payload.method.decoded;
        *multiple = m->multiple; return m->delivery_tag;
    }
    amqp_basic_nack_t *m = (amqp_basic_nack_t *)frame->payload.method.decoded;
    *multiple = m->multiple; return m->delivery_tag;
}

// basic.get: returns 1 and the delivery tag when a message was taken (read it next with
// amqp_read_message), 0 when the queue is empty, -1 on any other reply.
static inline int swiftchat_amqp_basic_get(amqp_connection_state_t state, amqp_channel_t channel,
                                           amqp_bytes_t queue, amqp_boolean_t no_ack, uint64_t *delivery_tag) {
    amqp_rpc_reply_t r = amqp_basic_get(state, channel, queue, no_ack);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) return -1;
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) return 0;
    if (r.reply.id != AMQP_BASIC_GET_OK_METHOD) return -1;
    *delivery_tag = ((amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;
    return 1;
}

// Reads a string (longstr/bytes) header; returns its length and points *out at its bytes,
// or -1 when absent. The bytes belong to the message and live as long as it does.
static inline long swiftchat_amqp_table_get_string(const amqp_table_t *table, const char *key, const void **out) {
    size_t keylen = strlen(key);
    for (int i = 0; i < table->num_entries; i++) {
        const amqp_table_entry_t *e = &table->entries[i];
        if (e->key.len != keylen || memcmp(e->key.bytes, key, keylen) != 0) continue;
        if (e->value.kind != AMQP_FIELD_KIND_UTF8 && e->value.kind != AMQP_FIELD_KIND_BYTES) return -1;
        *out = e->value.value.bytes.bytes;
        return (long)e->value.value.bytes.len;
    }
    return -1;
}
