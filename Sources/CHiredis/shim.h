// hiredis 0.14 (the old API). redisCommand is variadic: ChatCore uses the binary-safe
// redisCommandArgv / redisAppendCommandArgv instead.
#include <sys/time.h>
#include <hiredis/hiredis.h>
