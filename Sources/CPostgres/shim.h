// libpq: everything needed imports directly.
#include <libpq-fe.h>
