// libcurl. curl_easy_setopt/getinfo are variadic: one fixed-type wrapper per argument kind.
#include <curl/curl.h>

typedef size_t (*swiftchat_curl_io_cb)(char *ptr, size_t size, size_t nmemb, void *userdata);

static inline CURLcode swiftchat_curl_setopt_long(CURL *h, CURLoption opt, long v) { return curl_easy_setopt(h, opt, v); }
static inline CURLcode swiftchat_curl_setopt_string(CURL *h, CURLoption opt, const char *v) { return curl_easy_setopt(h, opt, v); }
static inline CURLcode swiftchat_curl_setopt_pointer(CURL *h, CURLoption opt, void *v) { return curl_easy_setopt(h, opt, v); }
static inline CURLcode swiftchat_curl_setopt_slist(CURL *h, CURLoption opt, struct curl_slist *v) { return curl_easy_setopt(h, opt, v); }
static inline CURLcode swiftchat_curl_setopt_off(CURL *h, CURLoption opt, curl_off_t v) { return curl_easy_setopt(h, opt, v); }
static inline CURLcode swiftchat_curl_setopt_callback(CURL *h, CURLoption opt, swiftchat_curl_io_cb v) { return curl_easy_setopt(h, opt, v); }
static inline CURLcode swiftchat_curl_getinfo_long(CURL *h, CURLINFO info, long *v) { return curl_easy_getinfo(h, info, v); }
