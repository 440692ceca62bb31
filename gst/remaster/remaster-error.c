/* remaster-error.c — the error domain of ehat-remaster. */
#include "remaster-error.h"

G_DEFINE_QUARK (ehat-remaster-error-quark, remaster_error)
