// libfcgi. FCGX_FPrintF is variadic and not importable; ChatCore uses FCGX_PutStr.
#include <fcgiapp.h>
#include <fcgios.h>
